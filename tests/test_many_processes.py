"""Several processes on one embedded store, each a real `toolkit` command: nothing written is
lost, a waiting process says whom it waits for, a killed one leaves nothing locked, and a
running `toolkit serve` shares the store and finds what other processes tag."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from store.owner import holder, server_path, try_own, wait_for_store
from toolkit.core import Toolkit
from toolkit.ground.errors import StoreError
from toolkit.records import media_id
from toolkit.ground.settings import Settings

TOOLKIT = str(Path(sys.executable).parent / "toolkit")
PER_RUN = 12


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, request):
    """Photo folders for two runs and a data dir whose model cache is warm (one export)."""
    shared = request.getfixturevalue("shared_data")
    root = tmp_path_factory.mktemp("many")
    names = sorted(p.name for p in (shared / "images").glob("*.jpg"))[200:200 + 3 * PER_RUN + 2]
    for n, folder in enumerate(("run-a", "run-b", "run-c")):
        (root / folder).mkdir()
        for name in names[n * PER_RUN:(n + 1) * PER_RUN]:
            shutil.copy(shared / "images" / name, root / folder / name)
    (root / "warm").mkdir()
    for name in names[-2:]:
        shutil.copy(shared / "images" / name, root / "warm" / name)
    env = {"TOOLKIT_DATA_DIR": str(root / "data"), "TOOLKIT_CHROMA_PATH": str(root / "warm-store")}
    warm = subprocess.run([TOOLKIT, "tag", str(root / "warm")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert warm.returncode == 0, warm.stderr
    return root


def toolkit(args: list[str], store: Path, root: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "TOOLKIT_DATA_DIR": str(root / "data"), "TOOLKIT_CHROMA_PATH": str(store)}
    return subprocess.Popen([TOOLKIT, *args], env=env, text=True, **popen)


def settings_for(root: Path, store: Path) -> Settings:
    return Settings(_env_file=None, data_dir=root / "data", chroma_path=store)


def found_by_image(tk: Toolkit, photos: list[Path]) -> int:
    """How many photos come back as their own best match (a lost record returns another one)."""
    found = 0
    for photo in photos:
        hits = tk.search(image=photo, k=1)
        found += bool(hits) and hits[0].media_id == media_id(photo.resolve().as_uri())
    return found


def wait_until(check, tries: int = 600, every: float = 0.2):
    for _ in range(tries):
        value = check()
        if value:
            return value
        time.sleep(every)
    return check()


def test_two_tag_runs_at_once_lose_nothing_and_say_whom_they_wait_for(workdir, tmp_path):
    store = tmp_path / "store"
    mine = try_own(store)                        # this test has the store: both runs must wait for it
    assert mine is not None
    logs = {name: tmp_path / f"{name}.err" for name in ("run-a", "run-b")}
    procs = {name: toolkit(["tag", str(workdir / name), "--json"], store, workdir,
                           stdout=subprocess.PIPE, stderr=logs[name].open("w"))
             for name in logs}
    said = wait_until(lambda: all("waiting for the store" in p.read_text() for p in logs.values()))
    assert said, {n: p.read_text()[-500:] for n, p in logs.items()}
    for log in logs.values():
        line = next(x for x in log.read_text().splitlines() if "waiting for the store" in x)
        assert f"pid {os.getpid()}" in line and str(store) in line
    mine.release()
    reports = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, logs[name].read_text()[-2000:]
        reports[name] = json.loads(out)
    assert all(r["new"] == PER_RUN and not r["failed"] for r in reports.values())
    tk = Toolkit(settings_for(workdir, store))
    photos = sorted((workdir / "run-a").iterdir()) + sorted((workdir / "run-b").iterdir())
    assert tk.store.count() == 2 * PER_RUN
    assert found_by_image(tk, photos) == 2 * PER_RUN


def test_a_killed_holder_leaves_the_store_free(tmp_path):
    store = tmp_path / "store"
    code = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
            f"from store.owner import try_own; own = try_own(__import__('pathlib').Path({str(store)!r})); "
            "print('held' if own else 'taken', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert try_own(store) is None
        assert holder(store).pid == proc.pid
        with pytest.raises(StoreError, match=rf"in use by pid {proc.pid} .*TOOLKIT_STORE_WAIT"):
            wait_for_store(store, wait=0.5, say=lambda line: None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    own = try_own(store)
    assert own is not None
    own.release()


def test_serve_shares_the_store_and_finds_what_another_process_tags(workdir, tmp_path):
    store = tmp_path / "store"
    first = toolkit(["tag", str(workdir / "run-a")], store, workdir, stderr=subprocess.PIPE)
    assert first.wait(600) == 0, first.stderr.read()
    port = free_port()
    serve = toolkit(["serve", "--port", str(port)], store, workdir, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        up = wait_until(lambda: _get(f"{base}/api/health") == 200, tries=900)
        assert up, "toolkit serve did not come up"
        assert json.loads(server_path(store).read_text())["pid"] == serve.pid
        tagging = toolkit(["tag", str(workdir / "run-c")], store, workdir, stderr=subprocess.PIPE)
        statuses: dict[int, int] = {}
        new = sorted((workdir / "run-c").iterdir())
        with httpx.Client(base_url=base, timeout=60) as client:
            while tagging.poll() is None:                 # requests all through the run
                for r in (client.post("/api/search", json={"text": "shoes", "k": 5}),
                          client.get(f"/api/similar/{media_id(new[0].resolve().as_uri())}")):
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            err = tagging.stderr.read()
            assert tagging.returncode == 0 and "waiting for the store" not in err, err
            missing = set(new)
            for _ in range(100):                           # bounded: each round asks for every missing photo
                for photo in list(missing):
                    r = client.post("/api/search/image", files={"file": (photo.name, photo.read_bytes())})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200 and r.json()["hits"] and \
                            r.json()["hits"][0]["media_id"] == media_id(photo.resolve().as_uri()):
                        missing.discard(photo)
                if not missing:
                    break
                time.sleep(0.2)
        assert not missing
        assert not [s for s in statuses if s >= 500], statuses
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(60)
    assert not server_path(store).exists()
    tk = Toolkit(settings_for(workdir, store))     # and a new process reads every record, too
    assert found_by_image(tk, sorted((workdir / "run-a").iterdir()) + new) == 2 * PER_RUN


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_a_killed_serve_takes_its_chroma_server_down_and_frees_the_store(workdir, tmp_path):
    store = tmp_path / "store"
    port = free_port()
    serve = toolkit(["serve", "--port", str(port)], store, workdir, stderr=subprocess.DEVNULL)
    try:
        up = wait_until(lambda: _get(f"http://127.0.0.1:{port}/api/health") == 200, tries=900)
        assert up, "toolkit serve did not come up"
        chroma_pid = json.loads(server_path(store).read_text())["server_pid"]
        assert try_own(store) is None                   # held by serve and by its chroma server
    finally:
        serve.send_signal(signal.SIGKILL)
        serve.wait()
    gone = wait_until(lambda: not _running(chroma_pid), tries=300, every=0.1)
    assert gone, f"chroma server {chroma_pid} outlived the serve that started it"
    own = wait_until(lambda: try_own(store), tries=100, every=0.1)
    assert own is not None
    own.release()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its (dead) parent's reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
