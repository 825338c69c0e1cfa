"""Latency of the search API (`toolkit serve`) over a store of all 8,083 sample photos, real offline model.

    .venv/bin/python bench/api_latency.py [--cache DIR] [--photos DIR] [--requests 200] [--k 10] [--threads 1]

The first run tags every photo (local tagger) into a store under --cache, with a products
catalog made from styles.csv (made-up prices, links on shop.example.com); later runs reuse
it (a new model gets its own collection). Then it starts the real `toolkit serve` on
127.0.0.1 in a subprocess and sends, one at a time after a warm-up, --requests text queries,
--requests filtered text queries and --requests image uploads, timing each from the client
(request sent to response read). Prints a table and writes bench/results/api_latency.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from common import free_port, machine, say  # noqa: E402
from toolkit.core import Toolkit  # noqa: E402
from toolkit.ground.settings import load_settings  # noqa: E402

DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "fashion-products"
RESULTS = ROOT / "bench" / "results" / "api_latency.json"
WARMUP = 10


# -- the store ---------------------------------------------------------------------------------

def collection_for(model_id: str) -> str:
    """One collection per model: a retrained model builds its own store instead of failing on the old one."""
    return "bench-" + re.sub(r"[^A-Za-z0-9_-]+", "-", model_id)[:60]


def write_catalog(styles: list[dict], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "title", "price", "currency", "url", "media", "gender", "articleType", "baseColour",
                    "usage"])
        for r in styles:
            w.writerow([f"P{r['id']}", r["productDisplayName"], f"{10 + int(r['id']) % 90}.00", "EUR",
                        f"https://shop.example.com/p/{r['id']}", f"{r['id']}.jpg", r["gender"], r["articleType"],
                        r["baseColour"], r["usage"]])
    return path


def build_store(tk: Toolkit, photos: Path, styles: list[dict], cache: Path) -> None:
    """Tag every photo and import the catalog; both are no-ops when already done."""
    if tk.products_store.count() < len(styles):
        say(f"importing a catalog of {len(styles)} products")
        tk.import_catalog(write_catalog(styles, cache / "products.csv"))
    total = sum(1 for _ in (photos / "images").glob("*.jpg"))
    if tk.store.count() >= total:
        say(f"reusing the store: {tk.store.count()} records ({tk.settings.collection})")
        return
    say(f"tagging {total} photos into {cache} (once; later runs reuse it)")
    done = 0
    started = time.perf_counter()

    def progress(ref, status, reason) -> None:
        nonlocal done
        done += 1
        if done % 500 == 0 or done == total:
            say(f"  {done}/{total} ({done / (time.perf_counter() - started):.0f}/s)")

    report = tk.tag(photos / "images", tagger="local", on_item=progress)
    say(f"tagged: {report.new} new, {len(report.skipped)} skipped, {len(report.failed)} failed, {report.seconds:.0f}s")


# -- the server --------------------------------------------------------------------------------

def start_server(cache: Path, collection: str, threads: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "TOOLKIT_DATA_DIR": str(cache), "TOOLKIT_COLLECTION": collection,
           "TOOLKIT_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.faces.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=cache, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"toolkit serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit("toolkit serve did not answer /api/health within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- queries -----------------------------------------------------------------------------------

def text_queries(styles: list[dict], n: int, rng: random.Random) -> list[str]:
    """Queries like people type: brand + type, colour + type, gender + usage + type, a brand and a colour."""
    shapes: list[Callable[[dict], str]] = [
        lambda r: f"{r['productDisplayName'].split()[0]} {r['articleType']}",
        lambda r: f"{r['baseColour']} {r['articleType']}".lower(),
        lambda r: f"{r['gender']} {r['usage']} {r['articleType']}".lower(),
        lambda r: f"{r['productDisplayName'].split()[0]} {r['baseColour']}",
    ]
    return [rng.choice(shapes)(rng.choice(styles)) for _ in range(n)]


def timed(send: Callable[[], "object"]) -> tuple[float, float]:
    """(client ms, server ms) for one request; a non-200 stops the benchmark."""
    started = time.perf_counter()
    response = send()
    client_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"HTTP {response.status_code}: {response.text[:300]}")
    return client_ms, float(response.json()["took_ms"])


def measure(name: str, sends: list[Callable[[], object]]) -> dict:
    for send in sends[:WARMUP]:
        timed(send)
    samples = np.array([timed(send) for send in sends[WARMUP:]])
    client, server = samples[:, 0], samples[:, 1]
    row = {"requests": len(samples), "p50_ms": round(float(np.percentile(client, 50)), 1),
           "p99_ms": round(float(np.percentile(client, 99)), 1), "mean_ms": round(float(client.mean()), 1),
           "max_ms": round(float(client.max()), 1), "server_p50_ms": round(float(np.percentile(server, 50)), 1)}
    say(f"  {name}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")
    return row


def run_queries(base: str, styles: list[dict], photos: Path, n: int, k: int, seed: int) -> dict[str, dict]:
    import httpx

    rng = random.Random(seed)
    texts = text_queries(styles, n + WARMUP, rng)
    filtered = text_queries(styles, n + WARMUP, rng)
    colours = [r["baseColour"] for r in rng.sample(styles, n + WARMUP)]
    images = [(photos / "images" / f"{r['id']}.jpg").read_bytes() for r in rng.sample(styles, n + WARMUP)]
    with httpx.Client(base_url=base, timeout=60) as c:
        return {
            "text": measure("text", [lambda t=t: c.post("/api/search", json={"text": t, "k": k}) for t in texts]),
            "text + filter": measure("text + filter", [
                lambda t=t, col=col: c.post("/api/search", json={"text": t, "k": k,
                                                                 "filters": {"attr.baseColour": col}, "price_max": 60})
                for t, col in zip(filtered, colours)]),
            "image": measure("image", [
                lambda b=b: c.post("/api/search/image", files={"file": ("q.jpg", b, "image/jpeg")}, data={"k": str(k)})
                for b in images]),
        }


# -- main --------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / ".toolkit" / "bench-api-latency",
                    help="Folder for the store (built once, then reused).")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="The fashion-products folder.")
    ap.add_argument("--requests", type=int, default=200, help="Timed requests per kind of query.")
    ap.add_argument("-k", "--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="Inference threads (the machine is shared).")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with (args.photos / "styles.csv").open(newline="", encoding="utf-8") as fh:
        styles = list(csv.DictReader(fh))
    settings = load_settings(data_dir=cache, threads=args.threads)
    model_id = Toolkit(settings).embedder.model_id
    settings = load_settings(data_dir=cache, threads=args.threads, collection=collection_for(model_id))
    tk = Toolkit(settings)
    build_store(tk, args.photos, styles, cache)
    records, products = tk.store.count(), tk.products_store.count()

    port = free_port()
    say(f"starting toolkit serve on 127.0.0.1:{port}")
    server = start_server(cache, settings.collection, args.threads, port)
    try:
        results = run_queries(f"http://127.0.0.1:{port}", styles, args.photos, args.requests, args.k, args.seed)
    finally:
        stop_server(server)

    print(f"\nAPI latency over {records} photos ({model_id}), k={args.k}, one request at a time, "
          f"{args.threads} inference thread(s), {os.cpu_count()} cores")
    print(f"{'query':<15}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'max ms':>9}{'server p50':>12}")
    for name, r in results.items():
        print(f"{name:<15}{r['requests']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['mean_ms']:>9}{r['max_ms']:>9}"
              f"{r['server_p50_ms']:>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model_id": model_id,
        "records": records, "products": products, "k": args.k, "threads": args.threads,
        "machine": {**machine(), "platform": platform.platform()},
        "method": "client-side wall time per request over HTTP to `toolkit serve` on 127.0.0.1, sequential, "
                  f"after {WARMUP} warm-up requests per kind",
        "results": results}, indent=2) + "\n")
    say(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
