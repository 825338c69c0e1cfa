"""One process at a time on an embedded Chroma folder; the others go through a server it hosts.

Chroma's embedded client is made for one process (its cookbook's "system constraints";
chroma-core/chroma#3769, #6975): each process keeps its own copy of the HNSW index in memory
and writes it back to the same files every `sync_threshold` records, so two processes on one
folder overwrite each other's index (measured here: a quarter to a third of one of two
concurrent tag runs could no longer be found) and a long-lived reader never sees another
process's writes. Even a reader is not safe: reading replays the write log into its own copy,
which it may persist over the writer's. A lock around each write call would not help either,
since the index flush happens later, inside whichever call crosses the threshold.

So the rule is Chroma's own: one process has the folder open at a time.

- The first process to open an embedded store takes an exclusive `flock` on `<folder>.lock`
  and keeps it until it ends (or `release`); the kernel drops it when the process dies, even
  on kill -9, so a crashed run never leaves the store locked.
- A process that finds the store taken waits, saying once which process it waits for (pid,
  command, since when), and goes on when that one ends; TOOLKIT_STORE_WAIT bounds the wait.
- A long-lived process (`toolkit serve`) hosts the store instead: holding the lock, it starts
  `chroma run` on the folder, on 127.0.0.1 and a free port, and publishes the address in
  `<folder>.server.json`. Every other process then talks to that one server through
  `HttpClient` (Chroma's documented way for several processes), so tag runs, a reindex and
  searches all go on at once, and the service sees their writes as soon as they are made.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from toolkit.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock; the embedded store stays single-process by convention
    fcntl = None  # type: ignore[assignment]

#: Seconds between two looks at a taken store.
POLL = 0.25


def lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def server_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".server.json")


def _command() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class Holder:
    pid: int | None
    command: str
    since: str

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "another process"
        return f"{who} (`{self.command}`, since {self.since})" if self.command else who


def holder(folder: Path) -> Holder:
    """Who holds the store, as it wrote itself into the lock file (best effort: it may be
    mid-write, or from a process that has ended)."""
    try:
        info = json.loads(lock_path(folder).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    return Holder(pid=info.get("pid"), command=str(info.get("command", "")), since=str(info.get("since", "?")))


class Ownership:
    """This process's exclusive hold on one embedded folder (a raw fd: never closed by the
    garbage collector at interpreter exit, so the lock outlives Chroma's last flush)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.fd = folder, fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def try_own(folder: Path) -> Ownership | None:
    """The store's lock if no other process has it (None otherwise)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    info = json.dumps({"pid": os.getpid(), "command": _command(),
                       "since": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return Ownership(folder, fd)


def published_server(folder: Path) -> tuple[str, int] | None:
    """(host, port) of the server a live process hosts for this folder, if it answers."""
    try:
        info = json.loads(server_path(folder).read_text())
        host, port = str(info["host"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        import httpx

        ok = httpx.get(f"http://{host}:{port}/api/v2/heartbeat", timeout=2).status_code == 200
    except Exception:
        return None
    return (host, port) if ok else None


def wait_for_store(folder: Path, wait: float, say=None) -> Ownership | tuple[str, int]:
    """Own the folder, or the address of the server that hosts it; wait while another process
    has it open embedded (at most `wait` seconds; 0: as long as it takes)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    deadline = time.monotonic() + wait if wait > 0 else None
    told = None
    while True:
        own = try_own(folder)
        if own is not None:
            server_path(folder).unlink(missing_ok=True)  # a host that died left its address behind
            return own
        address = published_server(folder)
        if address is not None:
            return address
        who = holder(folder)
        if deadline is not None and time.monotonic() >= deadline:
            raise StoreError(
                f"the store at {folder} is in use by {who.describe()}; wait for it to end (or raise "
                f"TOOLKIT_STORE_WAIT, now {wait:g} s), or keep `toolkit serve` running so that processes share it")
        if who.pid != told:
            told = who.pid
            say(f"waiting for the store at {folder}: {who.describe()} has it open; "
                f"this goes on when it ends (keep `toolkit serve` running to share the store)")
        time.sleep(POLL)


# ---- hosting --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's child process: Linux kills it when its parent (the host) dies, even
    by kill -9, so no orphan server keeps the folder open after the lock is gone."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Host:
    """A `chroma run` server over an owned folder, published for the other processes."""

    def __init__(self, own: Ownership, start_timeout: float = 120.0) -> None:
        self.own, self.folder = own, own.folder
        self.host, self.port = "127.0.0.1", _free_port()
        exe = Path(sys.executable).with_name("chroma")
        cmd = [str(exe) if exe.exists() else "chroma", "run", "--path", str(self.folder),
               "--host", self.host, "--port", str(self.port)]
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder.with_name(self.folder.name + ".server.log"), "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
                                         # the server holds the lock too: while it lives, nobody
                                         # else opens the folder embedded, even if this host died
                                         pass_fds=(own.fd,),
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            raise StoreError(f"cannot start `chroma run` to share the store at {self.folder} ({exc}); "
                             "check that chromadb is installed in this environment") from exc
        finally:
            log.close()
        self._wait_ready(start_timeout)
        tmp = server_path(self.folder).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"host": self.host, "port": self.port, "pid": os.getpid(),
                                   "server_pid": self.proc.pid}))
        os.replace(tmp, server_path(self.folder))

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"http://{self.host}:{self.port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise StoreError(f"`chroma run` did not start on {self.folder} (see "
                         f"{self.folder.name}.server.log beside it); fix what it says and start again")

    def stop(self) -> None:
        """Unpublish first (new processes then wait for the lock), then stop the server."""
        try:
            info = json.loads(server_path(self.folder).read_text())
            if info.get("pid") == os.getpid():
                server_path(self.folder).unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # it has ignored a first SIGTERM before
                self.proc.kill()
                self.proc.wait()
