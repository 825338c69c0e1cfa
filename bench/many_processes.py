"""Many processes on one embedded store, and `toolkit serve` under load: the probes of issue 21.

    .venv/bin/python bench/many_processes.py [writers] [serve-tag] [load] [uploads] [kills]
        [--per-run 300] [--trials 3] [--requests 10000] [--rounds 3] [--concurrency 32]

Every process is the real `toolkit` command (shipped offline model, embedded store) on
127.0.0.1, with photos from the shared fashion set:

- writers: two `toolkit tag` runs of --per-run new photos each, started at once on one store,
  --trials times; then every photo is searched by image in a new process: found or not.
- serve-tag: `toolkit serve` answers a stream of requests while another process tags
  --per-run new photos: status counts, and seconds from the tag run's end until every new
  photo is found through the server.
- load: --rounds rounds of --requests mixed requests (text, filtered text, photo upload,
  more-like-this) at --concurrency, against `toolkit serve`: status counts, requests/s,
  p50/p95/p99 per kind, and the RSS of the server (with its `chroma run`) after each round
  and after 30 s idle.
- uploads: eight 7,000 x 7,000 PNGs (49 MP, a few hundred KB each) uploaded at once: peak RSS.
- kills: a tag run killed with SIGKILL at a random moment, 20 times, then run to the end:
  records lost and duplicated.

Prints a table per probe and writes bench/results/many_processes.json with the CPU it ran on.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common import CACHE, PHOTOS, RESULTS, ROOT, free_port, say  # noqa: E402

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
OUT = RESULTS / "many_processes.json"
WORK = CACHE / "many-processes"
DATA = WORK / "data"  # TOOLKIT_DATA_DIR: the model cache, shared by every probe


def cpu() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "cores": os.cpu_count(),
            "flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni")}}


def env_for(store: Path, code: Path = ROOT, extra: dict | None = None) -> dict:
    return {**os.environ, **(extra or {}), "PYTHONPATH": str(code), "TOOLKIT_DATA_DIR": str(DATA), "TOOLKIT_CHROMA_PATH": str(store),
            "ANONYMIZED_TELEMETRY": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def photos(start: int, n: int) -> list[Path]:
    paths = sorted((PHOTOS / "images").glob("*.jpg"))
    return paths[start:start + n]


def folder_of(name: str, start: int, n: int) -> Path:
    folder = WORK / "photos" / name
    if not folder.is_dir() or len(list(folder.iterdir())) != n:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for p in photos(start, n):
            shutil.copy(p, folder / p.name)
    return folder


def uris(photo: Path) -> set[str]:
    return {photo.absolute().as_uri(), photo.resolve().as_uri()}


def tag(folder: Path, store: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([TOOLKIT, "tag", str(folder), "--json"], env=env_for(store), text=True,
                            stdout=subprocess.PIPE, stderr=popen.pop("stderr", subprocess.PIPE), **popen)


def found_in_new_process(store: Path, folders: list[Path]) -> list[int]:
    """Per folder, how many of its photos a new process finds as their own best match."""
    code = f"""
import json, sys
from pathlib import Path
from toolkit import Toolkit
tk = Toolkit()
out = []
for folder in {[str(f) for f in folders]!r}:
    n = 0
    for p in sorted(Path(folder).iterdir()):
        # The sample set holds byte-identical photos under two ids: a tie with the best counts.
        hits = tk.search(image=p, k=5)
        n += any(h.media_uri in {{p.absolute().as_uri(), p.resolve().as_uri()}} and h.score >= hits[0].score - 1e-4
                 for h in hits)
    out.append(n)
print(json.dumps({{"found": out, "records": tk.store.count()}}))
"""
    res = subprocess.run([sys.executable, "-c", code], env=env_for(store), capture_output=True, text=True,
                         timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def warm_cache() -> None:
    """One tag run of two photos, so that no probe times the first model export."""
    store = WORK / "warm-store"
    proc = tag(folder_of("warm", 8000, 2), store)
    proc.communicate(timeout=1800)


# ---- probes ----------------------------------------------------------------------------------------

def probe_writers(per_run: int, trials: int) -> dict:
    rows = []
    for trial in range(trials):
        store = WORK / f"writers-{trial}"
        shutil.rmtree(store, ignore_errors=True)
        start = trial * 2 * per_run
        folders = [folder_of(f"w{trial}-a", start, per_run), folder_of(f"w{trial}-b", start + per_run, per_run)]
        t0 = time.perf_counter()
        procs = [tag(f, store) for f in folders]
        outs = [p.communicate(timeout=3600) for p in procs]
        wall = time.perf_counter() - t0
        reports = [json.loads(o[0]) if p.returncode == 0 else {"error": o[1][-300:]} for p, o in zip(procs, outs)]
        waited = ["waiting for the store" in o[1] for o in outs]
        check = found_in_new_process(store, folders)
        row = {"trial": trial + 1, "new": [r.get("new") for r in reports], "exit": [p.returncode for p in procs],
               "waited": waited, "found": check["found"], "records": check["records"], "wall_s": round(wall, 1)}
        say(f"writers trial {trial + 1}: {row}")
        rows.append(row)
    return {"per_run": per_run, "trials": rows}


class Serve:
    """`toolkit serve` in a subprocess, with the RSS of it and its children (`chroma run`)."""

    def __init__(self, store: Path, code: Path = ROOT, extra: dict | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([TOOLKIT, "serve", "--port", str(self.port)], env=env_for(store, code, extra),
                                     stderr=subprocess.PIPE, text=True)
        import httpx

        for _ in range(1200):
            try:
                if httpx.get(f"{self.base}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read()[-2000:])
            time.sleep(0.25)
        raise RuntimeError("toolkit serve did not come up")

    def rss_mb(self) -> dict:
        pids = [self.proc.pid] + _children(self.proc.pid)
        per = {pid: _rss_kb(pid) for pid in pids}
        return {"serve": round(per[self.proc.pid] / 1024, 1),
                "chroma": round(sum(v for p, v in per.items() if p != self.proc.pid) / 1024, 1)}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k] + _children(k)
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _media_id(uri: str) -> str:
    from toolkit.records import media_id

    return media_id(uri)


def probe_serve_tag(per_run: int) -> dict:
    import httpx

    store = WORK / "serve-tag"
    shutil.rmtree(store, ignore_errors=True)
    base_folder = folder_of("st-base", 6000, 100)
    first = tag(base_folder, store)
    first.communicate(timeout=3600)
    new_folder = folder_of("st-new", 6100, per_run)
    new = sorted(new_folder.iterdir())
    serve = Serve(store)
    statuses: Counter = Counter()
    try:
        run = tag(new_folder, store)
        stop = threading.Event()

        def traffic() -> None:
            known = _media_id(sorted(base_folder.iterdir())[0].absolute().as_uri())
            with httpx.Client(base_url=serve.base, timeout=60) as c:
                while not stop.is_set():
                    for r in (lambda: c.post("/api/search", json={"text": "black shoes", "k": 10}),
                              lambda: c.get(f"/api/similar/{known}"),
                              lambda: c.get("/api/health")):
                        try:
                            statuses[r().status_code] += 1
                        except httpx.HTTPError as exc:
                            statuses[type(exc).__name__] += 1

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        out, err = run.communicate(timeout=3600)
        ended = time.perf_counter()
        report = json.loads(out)
        missing = {p: {_media_id(u) for u in uris(p)} for p in new}
        seconds, first_pass = None, None
        with httpx.Client(base_url=serve.base, timeout=60) as c:
            for attempt in range(600):
                for p, ids in list(missing.items()):
                    r = c.post("/api/search/image", files={"file": (p.name, p.read_bytes())}, data={"k": "5"})
                    statuses[r.status_code] += 1
                    hits = r.json()["hits"] if r.status_code == 200 else []
                    if any(h["media_id"] in ids and h["score"] >= hits[0]["score"] - 1e-4 for h in hits):
                        del missing[p]
                if attempt == 0:  # one upload per photo, right after the run: found already or not
                    first_pass = (per_run - len(missing), round(time.perf_counter() - ended, 2))
                if not missing:
                    seconds = round(time.perf_counter() - ended, 2)
                    break
                time.sleep(0.25)
        stop.set()
        for t in threads:
            t.join()
    finally:
        serve.stop()
    row = {"tagged": report.get("new"), "waited": "waiting for the store" in err, "found": per_run - len(missing),
           "of": per_run, "found_in_first_check": first_pass[0] if first_pass else None,
           "first_check_took_s": first_pass[1] if first_pass else None,
           "seconds_after_run_until_all_found": seconds,
           "statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))}}
    say(f"serve-tag: {row}")
    return row


def _png(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (180, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def probe_load(requests: int, rounds: int, concurrency: int, code: Path = ROOT, extra: dict | None = None) -> dict:
    """`code`: the toolkit checkout whose `toolkit serve` answers (--baseline: an earlier one)."""
    import httpx

    store = WORK / "serve-tag"  # the 100 + per-run photos of serve-tag
    if not store.is_dir():
        raise SystemExit("run serve-tag first: load uses its store")
    queries = ["black leather sandals", "red summer dress", "men running shoes", "blue denim jeans", "white t-shirt",
               "brown leather wallet", "women handbag", "sports watch", "green kurta", "formal shirt"]
    uploads = [p.read_bytes() for p in sorted((WORK / "photos" / "st-base").iterdir())[:20]]
    ids = [_media_id(p.absolute().as_uri()) for p in sorted((WORK / "photos" / "st-base").iterdir())[:50]]
    kinds = ["text"] * 4 + ["filtered"] * 2 + ["image"] * 2 + ["similar"] * 2
    serve = Serve(store, code, extra)
    out_rounds = []
    try:
        for n in range(rounds):
            rng = random.Random(n)
            plan = [rng.choice(kinds) for _ in range(requests)]
            lat: dict[str, list[float]] = {k: [] for k in set(kinds)}
            statuses: Counter = Counter()
            nxt = iter(range(requests))
            lock = threading.Lock()

            def worker() -> None:
                with httpx.Client(base_url=serve.base, timeout=120) as c:
                    while True:
                        with lock:
                            i = next(nxt, None)
                        if i is None:
                            return
                        kind = plan[i]
                        t = time.perf_counter()
                        try:
                            if kind == "text":
                                r = c.post("/api/search", json={"text": queries[i % len(queries)], "k": 10})
                            elif kind == "filtered":
                                r = c.post("/api/search", json={"text": queries[i % len(queries)], "k": 10,
                                                                "filters": {"gender": "Men"}})
                            elif kind == "image":
                                r = c.post("/api/search/image", files={"file": ("q.jpg", uploads[i % len(uploads)])})
                            else:
                                r = c.get(f"/api/similar/{ids[i % len(ids)]}")
                            code: object = r.status_code
                        except httpx.HTTPError as exc:
                            code = type(exc).__name__
                        with lock:
                            lat[kind].append((time.perf_counter() - t) * 1000)
                            statuses[code] += 1

            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            row = {"round": n + 1, "requests": requests, "rps": round(requests / wall, 1),
                   "statuses": {str(k): v for k, v in statuses.items()},
                   "latency_ms": {k: {q: round(float(np.percentile(v, q)), 1) for q in (50, 95, 99)}
                                  for k, v in sorted(lat.items()) if v},
                   "rss_mb": serve.rss_mb()}
            say(f"load round {n + 1}: {row}")
            out_rounds.append(row)
        time.sleep(30)
        idle = serve.rss_mb()
    finally:
        serve.stop()
    return {"code": str(code), "env": extra or {}, "concurrency": concurrency, "rounds": out_rounds, "rss_mb_after_30s_idle": idle}


def probe_uploads(n: int = 8, side: int = 7000, code: Path = ROOT) -> dict:
    import httpx

    store = WORK / "serve-tag"
    png = _png(side)
    serve = Serve(store, code)
    peak = {"serve": 0.0, "chroma": 0.0}
    try:
        before = serve.rss_mb()
        done = threading.Event()
        statuses: Counter = Counter()

        def sample() -> None:
            while not done.is_set():
                now = serve.rss_mb()
                for k in peak:
                    peak[k] = max(peak[k], now[k])
                time.sleep(0.02)

        def upload() -> None:
            r = httpx.post(f"{serve.base}/api/search/image", files={"file": ("big.png", png)}, timeout=600)
            statuses[r.status_code] += 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=upload) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        sampler.join()
        after = serve.rss_mb()
    finally:
        serve.stop()
    row = {"code": str(code), "uploads": n, "pixels": side * side, "png_kb": round(len(png) / 1024, 1), "rss_before_mb": before,
           "rss_peak_mb": peak, "rss_after_mb": after, "statuses": {str(k): v for k, v in statuses.items()}}
    say(f"uploads: {row}")
    return row


def _rows(store: Path) -> int:
    """Chroma's stored rows, read from its SQLite file without opening the store (which would
    wait for the running tag's turn)."""
    import sqlite3

    db = store / "chroma.sqlite3"
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _records(store: Path) -> int:
    code = "from toolkit import Toolkit; print(Toolkit().store.count())"
    res = subprocess.run([sys.executable, "-c", code], env=env_for(store), capture_output=True, text=True)
    return int(res.stdout.strip() or -1)


def probe_kills(kills: int, n: int, seed: int = 21) -> dict:
    """`kills` tag runs, each of a new part of n photos (n / kills each) into one store, each
    killed with SIGKILL at a random moment of its writing; then one run over all the parts."""
    store = WORK / "kills"
    shutil.rmtree(store, ignore_errors=True)
    root = WORK / "photos" / f"kills-{n}"
    per = n // kills
    parts = [folder_of(f"kills-{n}/part{i:02d}", 3000 + i * per, per) for i in range(kills)]
    rng = random.Random(seed)
    moments = []
    for part in parts:
        start = _rows(store)
        proc = tag(part, store, stderr=subprocess.DEVNULL)
        while proc.poll() is None and _rows(store) == start:  # until this run's first write lands
            time.sleep(0.05)
        moment = rng.uniform(0.0, 1.5)  # a part takes about 2-3 s to write
        try:
            proc.wait(moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        moments.append({"after_first_write_s": round(moment, 2), "exit": proc.returncode,
                        "rows_before": start, "rows_after": _rows(store)})
    before = _records(store)
    last = tag(root, store)
    out, err = last.communicate(timeout=3600)
    report = json.loads(out) if last.returncode == 0 else {"error": err[-500:]}
    again = tag(root, store)
    out2, _ = again.communicate(timeout=3600)
    check = found_in_new_process(store, parts)
    code = """
from collections import Counter
from toolkit import Toolkit
tk = Toolkit()
ids = Counter(m.get("media_id") for _, m in tk.store.iter_metadata())
print(sum(1 for v in ids.values() if v > 1), len(ids))
"""
    res = subprocess.run([sys.executable, "-c", code], env=env_for(store), capture_output=True, text=True)
    dup, unique = (int(x) for x in res.stdout.split())
    found = sum(check["found"])
    row = {"kills": kills, "photos": per * kills, "killed_at_s_and_exit": moments,
           "killed_runs": sum(1 for m in moments if m["exit"] == -signal.SIGKILL),
           "records_after_the_kills": before,
           "final_run": {k: report.get(k) for k in ("new", "unchanged", "updated")},
           "rerun": {k: json.loads(out2).get(k) for k in ("new", "unchanged", "updated")},
           "found": found, "records": check["records"], "unique_media": unique,
           "lost": per * kills - found, "duplicated_media": dup}
    say(f"kills: {row}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probes", nargs="*", default=["writers", "serve-tag", "load", "uploads", "kills"])
    ap.add_argument("--per-run", type=int, default=300)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--kill-photos", type=int, default=2000)
    ap.add_argument("--compare-requests", type=int, default=2000,
                    help="load: requests of the one-round comparisons (earlier checkout, batching off, on); 0: none")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="an earlier toolkit checkout: load and uploads run against its serve first, same settings")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    warm_cache()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results["cpu"] = cpu()
    results["when"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for probe in args.probes:
        if probe == "writers":
            results["writers"] = probe_writers(args.per_run, args.trials)
        elif probe == "serve-tag":
            results["serve_tag"] = probe_serve_tag(args.per_run)
        elif probe == "load":
            # Before and after in one run: the earlier checkout, this one without query batching,
            # then this one as it ships (--compare-requests each, one round), then the full rounds.
            n = args.compare_requests
            if args.baseline:
                results["load_baseline"] = probe_load(n, 1, args.concurrency, args.baseline)
            if n:
                results["load_unbatched"] = probe_load(n, 1, args.concurrency,
                                                       extra={"TOOLKIT_BATCH_QUERIES": "false"})
                results["load_batched"] = probe_load(n, 1, args.concurrency)
            results["load"] = probe_load(args.requests, args.rounds, args.concurrency)
        elif probe == "uploads":
            if args.baseline:
                results["uploads_baseline"] = probe_uploads(code=args.baseline)
            results["uploads"] = probe_uploads()
        elif probe == "kills":
            results["kills"] = probe_kills(args.kills, args.kill_photos)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
