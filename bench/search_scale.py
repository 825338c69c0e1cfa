"""Search at scale: unfiltered and 5%-filtered top-10 over synthetic stores of 10k, 100k, 1M
vectors, queries embedded by the real model; Chroma's own `where` beside the in-memory
filtered index (store/filtered.py), recall@10 of each against an exact filtered search,
and the insert rate into the largest store.

    .venv/bin/python bench/search_scale.py [--scales 10000,100000,1000000] [--queries 50]

Stores are built once under bench/.cache/stores/N (resumable: a killed build continues).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from common import CACHE, say, summary, time_ms  # noqa: E402

DIM = 256
BATCH = 5000
CLUSTERS = 200
TYPES = 20         # article_type:tN matches 5% of the records: the filter
COLOURS = 5
QUERIES = ["black leather sandals for men", "red summer dress", "blue denim jeans", "white sports shoes",
           "gold wrist watch", "green cotton t-shirt", "brown leather handbag", "pink lipstick",
           "grey hooded sweatshirt", "navy formal shirt", "silver earrings", "kids school backpack"]


def centres() -> np.ndarray:
    return np.random.default_rng(12345).normal(size=(CLUSTERS, DIM)).astype(np.float32)


def batch_vectors(b: int) -> np.ndarray:
    """Batch b's vectors: clustered (a catalog is clumps of similar products), unit length."""
    rng = np.random.default_rng(b)
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


def open_store(n: int):
    from store.chroma import ChromaStore
    from toolkit.settings import load_settings

    return ChromaStore.open(load_settings(data_dir=CACHE / "stores" / str(n)), "synthetic",
                            model_id="synthetic", dim=DIM)


def insert_batch(store, b: int, prefix: str = "") -> None:
    from store.base import Record

    vecs, metas = batch_vectors(b), batch_metadata(b)
    store.upsert([Record(id=f"{prefix}{b}-{i}", embedding=vecs[i], metadata=metas[i]) for i in range(BATCH)])


def build(n: int):
    store = open_store(n)
    have = store.count() // BATCH
    t = time.perf_counter()
    for b in range(have, n // BATCH):
        insert_batch(store, b)
        if b % 20 == 0:
            say(f"  store {n}: {(b + 1) * BATCH} vectors ({time.perf_counter() - t:.0f} s)")
    return store


def ground_truth(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All vectors and their article types, regenerated from the seeds."""
    vecs = np.concatenate([batch_vectors(b) for b in range(n // BATCH)])
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


def measure(n: int, qvecs: np.ndarray, repeats: int) -> dict:
    store = build(n)
    vecs, types = ground_truth(n)
    qtype = [i % TYPES for i in range(len(qvecs))]
    where = [{"tags": {"$contains": f"article_type:t{t}"}} for t in qtype]
    truth_all = [exact_top(vecs, q, 10) for q in qvecs]
    truth_f = [exact_top(vecs, q, 10, np.flatnonzero(types == t)) for q, t in zip(qvecs, qtype)]
    out = {"n": store.count()}

    def run(filtered: bool) -> tuple[dict, float]:
        found = [{m.id for m in store.query(q, 10, where=w if filtered else None)} for q, w in zip(qvecs, where)]
        i = iter(range(10**9))
        ms = time_ms(lambda: store.query(qvecs[(j := next(i)) % len(qvecs)], 10,
                                         where=where[j % len(qvecs)] if filtered else None), repeats)
        return ms, recall(found, truth_f if filtered else truth_all)

    out["unfiltered_ms"], out["unfiltered_recall"] = run(False)
    store.filter_index_min = 10**12
    out["chroma_where_ms"], out["chroma_where_recall"] = run(True)
    store.filter_index_min = 0
    t = time.perf_counter()
    store.filter_index()
    out["index_build_s"] = round(time.perf_counter() - t, 2)
    out["index_ms"], out["index_recall"] = run(True)
    return out


def load_rate(n: int, batches: int = 2) -> dict:
    """Vectors a second upserted into the store of n, then removed again (untimed)."""
    store = open_store(n)
    times = []
    for b in range(batches):
        t = time.perf_counter()
        insert_batch(store, 900_000 + b, prefix="load-")
        times.append(BATCH / (time.perf_counter() - t))
    store.delete([f"load-{900_000 + b}-{i}" for b in range(batches) for i in range(BATCH)])
    return {"store": n, "vectors_per_s": summary(times)}


def query_vectors(n: int) -> tuple[np.ndarray, dict]:
    from bench_embedder import embedder

    emb = embedder()
    texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(n)]
    vecs = emb.embed_texts(texts)
    i = iter(range(10**9))
    return vecs, time_ms(lambda: emb.embed_texts([texts[next(i) % n]]), 30)


def run(scales: tuple[int, ...], queries: int = 50, repeats: int = 100) -> dict:
    qvecs, embed_ms = query_vectors(queries)
    result = {"query_embedding_ms": embed_ms, "scales": {}}
    for n in scales:
        say(f"search: store of {n}")
        result["scales"][n] = measure(n, qvecs, repeats)
    result["load"] = load_rate(max(scales))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    a = ap.parse_args()
    print(json.dumps(run(tuple(int(s) for s in a.scales.split(",")), a.queries), indent=1))
