"""Search at scale: unfiltered and 5%-filtered top-10 over synthetic stores of 10k, 100k, 1M
vectors, queries embedded by the real model; Chroma's own `where` beside the filter index
(store/filter_index.py), recall@10 of each against an exact filtered search, the filter index's
build / save / load times, and the insert rate into the largest store.

    .venv/bin/python bench/search_scale.py [--scales 10000,100000,1000000] [--queries 50]
    .venv/bin/python bench/search_scale.py --build 1000000     # only build (or resume) a store
    .venv/bin/python bench/search_scale.py --hnsw               # ef_construction 100 vs 200 at 100k

What a small tag run costs the saved filter index (a rewrite before, a log append now):
bench/index_update.py.

Built stores are cached outside the repository, under $TOOLKIT_BENCH_CACHE (default
~/.cache/toolkit-bench)/stores/<kind>-<n>-efc<ef_construction>-m<M>: a 1M store takes tens of
minutes to build here. Builds are resumable (a killed build continues) and log their insert
rate as the store grows (build.json beside the store), which is one measure of the insert rate
at 1M. The other, the headline figure: the cached store is copied (the copy is not timed) and
batches of new records are upserted into the copy through ChromaStore.upsert, so the cached
store is never modified and every run measures the same thing.

Two kinds of store: "synthetic" (200 clusters with heavy noise: nearly uniform in 256-d, a hard
case for HNSW) and "real" (the real model's embeddings of the 8,083 shared photos, mixed
pairwise with near neighbours plus a little noise: the low intrinsic dimension of a catalog).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import load_average, photo_paths, say, summary, time_ms  # noqa: E402

DIM = 256
BATCH = 5000
CLUSTERS = 200
TYPES = 20         # article_type:tN matches 5% of the records: the filter
COLOURS = 5
QUERIES = ["black leather sandals for men", "red summer dress", "blue denim jeans", "white sports shoes",
           "gold wrist watch", "green cotton t-shirt", "brown leather handbag", "pink lipstick",
           "grey hooded sweatshirt", "navy formal shirt", "silver earrings", "kids school backpack"]
BENCH_CACHE = Path(os.environ.get("TOOLKIT_BENCH_CACHE", Path.home() / ".cache" / "toolkit-bench"))
STORES = BENCH_CACHE / "stores"
LOAD_BATCHES = 4   # batches of 5,000 upserted into the copy of the largest store


def hnsw_config(ef_construction: int | None = None, ef_search: int | None = None) -> dict:
    from store.chroma import HNSW

    return {**HNSW, **({"ef_construction": ef_construction} if ef_construction else {}),
            **({"ef_search": ef_search} if ef_search else {})}


def ensure_ef_search(folder: Path, ef_search: int) -> None:
    """Set a cached store's ef_search (the one HNSW setting that can change) before this process
    opens it: Chroma applies a change when a process loads the index, so it is made in another."""
    if not (folder / "chroma" / "chroma.sqlite3").is_file():
        return
    code = f"""
import chromadb
col = chromadb.PersistentClient(path={str(folder / "chroma")!r}).get_collection("synthetic")
if col.configuration_json["hnsw"]["ef_search"] != {ef_search}:
    col.modify(configuration={{"hnsw": {{"ef_search": {ef_search}}}}})
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
                   capture_output=True)


# ---- the vectors ----------------------------------------------------------------------------------

def centres() -> np.ndarray:
    return np.random.default_rng(12345).normal(size=(CLUSTERS, DIM)).astype(np.float32)


_REAL: dict[str, np.ndarray] = {}


def real_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """The real model's image embeddings of the shared photos (cached), and each one's 10 nearest."""
    if not _REAL:
        path = BENCH_CACHE / "photo-embeddings.npy"
        if not path.is_file():
            from PIL import Image

            from bench_embedder import embedder

            emb, paths, out = embedder(), photo_paths(8083), []
            say(f"  embedding {len(paths)} photos for the real-embedding stores")
            for s in range(0, len(paths), 64):
                out.append(emb.embed_images([Image.open(p).convert("RGB") for p in paths[s:s + 64]]))
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.concatenate(out).astype(np.float32))
        e = np.load(path)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        near = np.argsort(-(e @ e.T), axis=1)[:, 1:11]
        _REAL.update(e=e.astype(np.float32), near=near)
    return _REAL["e"], _REAL["near"]


def batch_vectors(b: int, kind: str = "synthetic") -> np.ndarray:
    """Batch b's vectors, unit length. synthetic: clustered (a catalog is clumps of similar
    products) with heavy noise; real: a point between a photo's embedding and one of its 10
    nearest photos', plus noise of 2% of the vector's norm."""
    rng = np.random.default_rng(b)
    if kind == "real":
        e, near = real_embeddings()
        j = rng.integers(0, len(e), BATCH)
        k = near[j, rng.integers(0, near.shape[1], BATCH)]
        t = rng.random((BATCH, 1), dtype=np.float32)
        v = (1 - t) * e[j] + t * e[k] + rng.normal(scale=0.02 / np.sqrt(DIM), size=(BATCH, DIM)).astype(np.float32)
    else:
        v = centres()[rng.integers(0, CLUSTERS, BATCH)] + rng.normal(scale=0.8, size=(BATCH, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def batch_metadata(b: int) -> list[dict]:
    """Like real records: a tags list, kind, price and the tag JSON that rides along."""
    rng = np.random.default_rng(10_000 + b)
    types, colours = rng.integers(0, TYPES, BATCH), rng.integers(0, COLOURS, BATCH)
    out = []
    for i in range(BATCH):
        tags = [f"article_type:t{types[i]}", f"colour:c{colours[i]}"]
        out.append({"media_id": f"m{b}-{i}", "kind": "video" if i % 10 == 0 else "image",
                    "price": float(rng.integers(1, 200)), "tags": tags,
                    "tags_json": json.dumps([{"group": t.split(":")[0], "label": t.split(":")[1],
                                              "confidence": 0.9, "provider": "local"} for t in tags])})
    return out


# ---- the stores -----------------------------------------------------------------------------------

def store_dir(n: int, kind: str, hnsw: dict) -> Path:
    return STORES / f"{kind}-{n}-efc{hnsw['ef_construction']}-m{hnsw['max_neighbors']}"


def open_store(folder: Path, hnsw: dict | None = None):
    from store.chroma import ChromaStore
    from toolkit.ground.settings import load_settings

    return ChromaStore.open(load_settings(data_dir=folder), "synthetic", model_id="synthetic", dim=DIM, hnsw=hnsw)


def insert_batch(store, b: int, kind: str, prefix: str = "") -> None:
    from store.base import Record

    vecs, metas = batch_vectors(b, kind), batch_metadata(b)
    store.upsert([Record(id=f"{prefix}{b}-{i}", embedding=vecs[i], metadata=metas[i]) for i in range(BATCH)])


def build(n: int, kind: str = "synthetic", hnsw: dict | None = None):
    """The cached store of n vectors, built (or resumed) first if need be; build.json beside it
    logs the insert rate as it grew."""
    hnsw = hnsw or hnsw_config()
    folder = store_dir(n, kind, hnsw)
    store = open_store(folder, hnsw)
    log_path = folder / "build.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {"hnsw": hnsw, "batches": []}
    have = store.count() // BATCH
    t0 = time.perf_counter()
    for b in range(have, n // BATCH):
        t = time.perf_counter()
        insert_batch(store, b, kind)
        log["batches"].append({"at": (b + 1) * BATCH, "per_s": round(BATCH / (time.perf_counter() - t), 1),
                               "load": round(load_average(), 2)})
        if b % 10 == 0 or b == n // BATCH - 1:
            log_path.write_text(json.dumps(log))
            say(f"  {folder.name}: {(b + 1) * BATCH} vectors ({time.perf_counter() - t0:.0f} s, "
                f"{log['batches'][-1]['per_s']}/s, load {load_average():.1f})")
    return store


def build_rates(n: int, kind: str = "synthetic", hnsw: dict | None = None) -> dict | None:
    """Insert rate logged while the cached store grew through its last 10%."""
    path = store_dir(n, kind, hnsw or hnsw_config()) / "build.json"
    if not path.is_file():
        return None
    tail = [b for b in json.loads(path.read_text())["batches"] if b["at"] > 0.9 * n]
    if not tail:
        return None
    return {"from": int(0.9 * n), "to": n, "vectors_per_s": summary([b["per_s"] for b in tail]),
            "load_1min": summary([b["load"] for b in tail])}


def ground_truth(n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """All vectors and their article types, regenerated from the seeds."""
    vecs = np.concatenate([batch_vectors(b, kind) for b in range(n // BATCH)])
    types = np.concatenate([[int(m["tags"][0].split(":t")[1]) for m in batch_metadata(b)]
                            for b in range(n // BATCH)])
    return vecs, types


def exact_top(vecs: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> set[str]:
    rows = np.arange(len(vecs)) if rows is None else rows
    s = vecs[rows] @ q
    best = rows[np.argpartition(-s, k)[:k]]
    return {f"{r // BATCH}-{r % BATCH}" for r in best}


def recall(found: list[set[str]], truth: list[set[str]]) -> float:
    return round(float(np.mean([len(f & t) / len(t) for f, t in zip(found, truth)])), 4)


# ---- measurements ---------------------------------------------------------------------------------

def measure(n: int, qvecs: np.ndarray, repeats: int, kind: str = "synthetic", hnsw: dict | None = None,
            filtered: bool = True) -> dict:
    hnsw = hnsw or hnsw_config()
    ensure_ef_search(store_dir(n, kind, hnsw), hnsw["ef_search"])
    store = build(n, kind, hnsw)
    vecs, types = ground_truth(n, kind)
    qtype = [i % TYPES for i in range(len(qvecs))]
    where = [{"tags": {"$contains": f"article_type:t{t}"}} for t in qtype]
    truth_all = [exact_top(vecs, q, 10) for q in qvecs]
    truth_f = [exact_top(vecs, q, 10, np.flatnonzero(types == t)) for q, t in zip(qvecs, qtype)]
    del vecs
    out = {"n": store.count(), "kind": kind, "load_1min": round(load_average(), 2),
           "hnsw": store._col.configuration_json["hnsw"]}

    def run(filtered: bool) -> tuple[dict, float]:
        found = [{m.id for m in store.query(q, 10, where=w if filtered else None)} for q, w in zip(qvecs, where)]
        i = iter(range(10**9))
        ms = time_ms(lambda: store.query(qvecs[(j := next(i)) % len(qvecs)], 10,
                                         where=where[j % len(qvecs)] if filtered else None), repeats)
        return ms, recall(found, truth_f if filtered else truth_all)

    out["unfiltered_ms"], out["unfiltered_recall"] = run(False)
    if not filtered:
        return out
    store.filter_index_min = 10**12
    out["chroma_where_ms"], out["chroma_where_recall"] = run(True)
    store.filter_index_min = 0
    from store.index_files import IndexFiles

    if store.index_dir is not None:
        shutil.rmtree(store.index_dir, ignore_errors=True)  # time a build from Chroma, then a load
    t = time.perf_counter()
    store.filter_index()
    out["index_build_s"] = round(time.perf_counter() - t, 2)  # read back from Chroma, then saved
    t = time.perf_counter()
    IndexFiles(store.index_dir).load(None)
    out["index_load_s"] = round(time.perf_counter() - t, 3)   # what a new process pays instead
    out["index_ms"], out["index_recall"] = run(True)
    out["load_1min_after"] = round(load_average(), 2)
    return out


def thread_cpu() -> dict[str, float]:
    """CPU-seconds used so far by this process's threads, by thread name (Linux): Chroma's tokio
    workers (HNSW construction, log materialisation), its SQLite workers, and Python."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "python" if name.startswith("python") else name.rstrip("+-")
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def timed_inserts(store, batches: int, kind: str, prefix: str) -> tuple[list[float], list[float], list[float]]:
    """Upsert `batches` new batches; per batch, vectors a second, vectors per CPU-second of this
    process (all its threads) and the load average after it."""
    rates, cpu_rates, loads = [], [], []
    for b in range(batches):
        t, cpu = time.perf_counter(), sum(os.times()[:2])
        insert_batch(store, 900_000 + b, kind, prefix=prefix)
        rates.append(BATCH / (time.perf_counter() - t))
        cpu_rates.append(BATCH / max(sum(os.times()[:2]) - cpu, 1e-9))
        loads.append(load_average())
    return rates, cpu_rates, loads


def load_rate(n: int, kind: str = "synthetic", batches: int = LOAD_BATCHES, hnsw: dict | None = None) -> dict:
    """Vectors a second upserted into a copy of the cached store of n (the copy is not timed)."""
    hnsw = hnsw or hnsw_config()
    src = store_dir(n, kind, hnsw)
    build(n, kind, hnsw)
    tmp = Path(tempfile.mkdtemp(prefix="load-", dir=BENCH_CACHE))
    try:
        t = time.perf_counter()
        subprocess.run(["cp", "-r", "--reflink=auto", str(src), str(tmp / "store")], check=True)
        shutil.rmtree(tmp / "store" / "chroma-filter-index", ignore_errors=True)
        copy_s = time.perf_counter() - t
        store = open_store(tmp / "store")
        store.recent_count()
        threads_before = thread_cpu()
        rates, cpu_rates, loads = timed_inserts(store, batches, kind, prefix="load-")
        threads = {k: round(v - threads_before.get(k, 0.0), 2) for k, v in thread_cpu().items()}
        count = store.count()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"store": n, "kind": kind, "hnsw": {k: hnsw[k] for k in ("ef_construction", "max_neighbors")},
            "method": f"upsert {batches} x {BATCH} new records into a copy of the cached store",
            "copy_s": round(copy_s, 1), "count_after": count, "vectors_per_s": summary(rates),
            "vectors_per_cpu_s": summary(cpu_rates),  # per CPU-second of this process, all its threads
            "load_1min": summary(loads), "during_build": build_rates(n, kind, hnsw),
            "cpu_s_by_thread": {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0}}


def empty_store_rate(batches: int = LOAD_BATCHES, kind: str = "synthetic") -> dict:
    """The same upserts into a new, empty collection: Chroma's own floor on this machine (log,
    metadata and a graph too small to cost much), beside the rate into the large store."""
    tmp = Path(tempfile.mkdtemp(prefix="empty-", dir=BENCH_CACHE))
    try:
        rates, cpu_rates, loads = timed_inserts(open_store(tmp / "store", hnsw_config()), batches, kind, prefix="empty-")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"vectors_per_s": summary(rates), "vectors_per_cpu_s": summary(cpu_rates), "load_1min": loads[-1]}


def hnsw_tradeoff(qvecs: np.ndarray, repeats: int, n: int = 100_000) -> dict:
    """The previous HNSW configuration (ef_construction 200, ef_search 400) against the current
    one (M 32 for both): recall@10 and latency of unfiltered top-10 on a synthetic and a
    real-embedding store of n, and the insert rate logged while each was built."""
    out = {}
    for kind in ("synthetic", "real"):
        for efc, efs in ((200, 400), (hnsw_config()["ef_construction"], hnsw_config()["ef_search"])):
            hnsw = hnsw_config(efc, efs)
            say(f"hnsw: {kind} {n} ef_construction {efc} ef_search {efs}")
            r = measure(n, qvecs, repeats, kind, hnsw, filtered=False)  # text queries through the real model
            log_path = store_dir(n, kind, hnsw) / "build.json"  # absent for a store built before logs were kept
            log = json.loads(log_path.read_text())["batches"] if log_path.is_file() else []
            tail = [b for b in log if b["at"] > n // 2]
            r["build_per_s_second_half"] = summary([b["per_s"] for b in tail]) if tail else None
            r["build_load_second_half"] = summary([b["load"] for b in tail]) if tail else None
            r["insert"] = load_rate(n, kind, batches=2, hnsw=hnsw)
            out[f"{kind}-efc{efc}-efs{efs}"] = r
    return out


def query_vectors(n: int) -> tuple[np.ndarray, dict]:
    from bench_embedder import embedder

    emb = embedder()
    texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(n)]
    vecs = emb.embed_texts(texts)
    i = iter(range(10**9))
    return vecs, time_ms(lambda: emb.embed_texts([texts[next(i) % n]]), 30)


def run(scales: tuple[int, ...], queries: int = 50, repeats: int = 100, hnsw: bool = False,
        real_scales: tuple[int, ...] = ()) -> dict:
    """`real_scales`: also stores of real-embedding vectors (built once, cached like the others),
    unfiltered only: how HNSW recalls on vectors shaped like the model's, where uniform
    synthetic vectors are its worst case (the filtered path is exact either way)."""
    qvecs, embed_ms = query_vectors(queries)
    result = {"query_embedding_ms": embed_ms, "hnsw_config": hnsw_config(), "store_cache": str(STORES),
              "scales": {}}
    for n in scales:
        say(f"search: store of {n} (load {load_average():.2f})")
        result["scales"][n] = measure(n, qvecs, repeats)
    for n in real_scales:
        say(f"search: real-embedding store of {n} (load {load_average():.2f})")
        result.setdefault("real_scales", {})[n] = measure(n, qvecs, repeats, kind="real", filtered=False)
    say(f"load: insert into a copy of the store of {max(scales)} (load {load_average():.2f})")
    result["load"] = load_rate(max(scales))
    say(f"load: the same inserts into an empty store (load {load_average():.2f})")
    result["load"]["into_empty_store"] = empty_store_rate()
    if hnsw:
        result["hnsw_tradeoff"] = hnsw_tradeoff(qvecs, repeats)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--build", help="only build (or resume) the stores of these sizes, e.g. 1000000")
    ap.add_argument("--kind", default="synthetic")
    ap.add_argument("--efc", type=int, default=None, help="ef_construction for --build")
    ap.add_argument("--hnsw", action="store_true", help="also measure ef_construction 100 against 200")
    a = ap.parse_args()
    if a.build:
        for n in a.build.split(","):
            build(int(n), a.kind, hnsw_config(a.efc))
    else:
        print(json.dumps(run(tuple(int(s) for s in a.scales.split(",")), a.queries, hnsw=a.hnsw), indent=1))
