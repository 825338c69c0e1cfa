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

- A process that uses an embedded store takes an exclusive `flock` on `<folder>.lock` for
  its turn: from its first store call until it has made none for IDLE seconds (a tag run
  keeps it to the end; a notebook gives it back between cells). The client is closed at the
  end of the turn and opened afresh at the next, so each turn starts from what is on disk,
  other processes' writes included. The kernel drops the lock when the process dies, even on
  kill -9, so a crashed run never leaves the store locked.
- A process that finds the store taken waits, saying which process it waits for (pid,
  command, since when) once the wait is more than a moment, and goes on when that one gives
  it back; TOOLKIT_STORE_WAIT bounds the wait.
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
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from toolkit.ground.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock; the embedded store stays single-process by convention
    fcntl = None  # type: ignore[assignment]

#: Seconds between two looks at a taken store.
POLL = 0.25
#: A wait this long is worth a line on stderr; a shorter one is another process's last
#: seconds before it gives the store back (IDLE).
SAY_AFTER = 3.0


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
    started = time.monotonic()
    deadline = started + wait if wait > 0 else None
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
        if who.pid != told and time.monotonic() - started >= SAY_AFTER:
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


# ---- a process's turn on the folder ----------------------------------------------------------------

#: Seconds without a store call after which a process gives the folder back, so that a
#: notebook or a finished step of a longer process does not keep other commands waiting.
IDLE = 2.0


class Lease:
    """This process's turn on an embedded folder: taken (waiting if need be) by the first call,
    given back IDLE seconds after the last one ended. A turn may also be a server's address,
    when a `toolkit serve` hosts the folder. Each new turn has a new `generation`: collections
    opened in an earlier one are opened again (see LeasedClient)."""

    def __init__(self, folder: Path, wait: float, open_embedded, open_http) -> None:
        self.folder, self.wait = folder, wait
        self._open_embedded, self._open_http = open_embedded, open_http
        self._lock = threading.RLock()
        self.client = None
        self.generation = 0
        self._own: Ownership | None = None
        self._busy = 0
        self._last = 0.0
        self._timer: threading.Thread | None = None

    @contextmanager
    def use(self):
        with self._lock:
            if self.client is None:
                self._take()
            self._busy += 1
        try:
            yield self.client
        finally:
            with self._lock:
                self._busy -= 1
                self._last = time.monotonic()
                self._watch()

    def _take(self) -> None:
        got = wait_for_store(self.folder, self.wait)
        if isinstance(got, tuple):
            self.client = self._open_http(*got)
        else:
            self._own = got
            try:
                self.client = self._open_embedded(self.folder)
            except BaseException:
                self._give_back()
                raise
        self.generation += 1

    def release(self) -> None:
        with self._lock:
            self._give_back()

    def _give_back(self) -> None:
        client, self.client = self.client, None
        if client is not None and hasattr(client, "close"):
            try:
                client.close()  # Chroma stops its system: the folder's files are left as they are on disk
            except Exception:
                pass
        if self._own is not None:
            self._own.release()
            self._own = None

    def _watch(self) -> None:
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Thread(target=self._idle_loop, name="toolkit-store-lease", daemon=True)
            self._timer.start()

    def _idle_loop(self) -> None:
        while True:
            with self._lock:
                if self.client is None:
                    return
                due = self._last + IDLE - time.monotonic()
                if self._busy == 0 and due <= 0:
                    self._give_back()
                    return
            time.sleep(max(due, 0.05) if self._busy == 0 else IDLE)


class LeasedClient:
    """A Chroma client whose every call runs inside the process's turn on the folder, and whose
    collections follow the turn (LeasedCollection)."""

    def __init__(self, lease: Lease) -> None:
        self._lease = lease

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            with self._lease.use() as client:
                result = getattr(client, name)(*args, **kwargs)
            return _wrap(self._lease, result)

        return call

    def close(self) -> None:
        self._lease.release()

    def held(self):
        """Hold this process's turn across several calls (a context manager): taken before any
        other lock, so that a process waiting for the turn never holds a lock another needs."""
        return self._lease.use()


def _wrap(lease: Lease, result):
    if isinstance(result, list):
        return [_wrap(lease, r) for r in result]
    if hasattr(result, "name") and hasattr(result, "query") and hasattr(result, "upsert"):
        return LeasedCollection(lease, result)
    return result


class LeasedCollection:
    """A collection handle that survives the process giving the folder back: in a later turn it
    is looked up again by name before use."""

    def __init__(self, lease: Lease, col) -> None:
        self._lease, self._col, self._gen, self.name = lease, col, lease.generation, col.name

    def _current(self, client):
        if self._gen != self._lease.generation:
            self._col = client.get_collection(name=self.name, embedding_function=None)
            self._gen = self._lease.generation
        return self._col

    def __getattr__(self, name: str):
        with self._lease.use() as client:
            attr = getattr(self._current(client), name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._lease.use() as client:
                return getattr(self._current(client), name)(*args, **kwargs)

        return call
