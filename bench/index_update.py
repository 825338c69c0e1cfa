"""What a 10-item tag run costs the saved filter index, before and after the change log.

Before (commit 17dab49, store/filtered.py): `toolkit tag` loaded the saved index, applied the
writes in memory and saved the whole index again (about 1 KB a record). After
(store/index_files.py): each write appends its records to the change log beside the base.
Both are measured on the same synthetic records (bench/search_scale.py's vectors and
metadata), index files only: Chroma's own write, the same in both, is left out; the one
Chroma call the change log adds per write (moving the write generation in the collection's
metadata) is timed separately on a small collection.

    .venv/bin/python bench/index_update.py [--scales 100000,1000000] [--repeats 5]

Prints a table and merges {"index_update": ...} into bench/results/perf.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, load_average, machine, say, summary  # noqa: E402
from search_scale import BATCH, DIM, batch_metadata, batch_vectors  # noqa: E402

OLD_COMMIT = "17dab49"
TEN = 10


def old_module():
    """store/filtered.py as it was before the change log, imported from git."""
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:store/filtered.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "filtered_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("filtered_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fill(index, n: int) -> None:
    for b in range(n // BATCH):
        index.upsert([f"m{b}-{i}" for i in range(BATCH)], batch_vectors(b), batch_metadata(b))


def ten(run: int) -> tuple[list[str], np.ndarray, list[dict]]:
    meta = batch_metadata(10_000 + run)[:TEN]
    return [f"new-{run}-{i}" for i in range(TEN)], batch_vectors(10_000 + run)[:TEN], meta


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def before(n: int, repeats: int, work: Path) -> dict:
    old = old_module()
    index = old.FilterIndex(DIM, n)
    fill(index, n)
    index.stamp = {"count": len(index)}
    index.save(work / "old")
    times, written = [], []
    for r in range(repeats):
        t = time.perf_counter()
        loaded = old.FilterIndex.load(work / "old")   # keeping_saved_index: load, write, save whole
        loaded.upsert(*ten(r))
        loaded.stamp = {"count": len(loaded)}
        loaded.save(work / "old")
        times.append(time.perf_counter() - t)
        written.append(folder_bytes(work / "old"))
    return {"s": summary(times), "bytes_written": int(np.median(written))}


def after(n: int, repeats: int, work: Path) -> dict:
    from store.filter_index import FilterIndex
    from store.index_files import Change, IndexFiles

    index = FilterIndex(DIM, n)
    fill(index, n)
    files = IndexFiles(work / "new")
    with files.lock(True):
        files.save_base(index, "0")
    times, written, replay = [], [], []
    gen = "0"
    for r in range(repeats):
        before_bytes = files.head()["log_bytes"]
        ids, vecs, metas = ten(r)
        t = time.perf_counter()
        with files.lock(True):                        # what one write through the adapter adds
            head = files.append(Change("upsert", ids, vecs, metas), gen, str(r + 1))
        times.append(time.perf_counter() - t)
        gen = str(r + 1)
        written.append(head["log_bytes"] - before_bytes + (work / "new" / "head.json").stat().st_size)
    t = time.perf_counter()
    with files.lock(False):
        loaded = files.load(None)                    # a reader: map the base, replay the log
    replay.append(time.perf_counter() - t)
    assert loaded is not None and len(loaded) == n + repeats * TEN
    return {"s": summary(times), "bytes_written": int(np.median(written)), "reader_load_s": round(replay[0], 3),
            "base_bytes": files.head()["base_bytes"]}


def generation_move_ms() -> dict:
    """The Chroma call a write through the adapter adds: read and set the collection's metadata."""
    import chromadb

    client = chromadb.PersistentClient(path=tempfile.mkdtemp())
    col = client.get_or_create_collection("gen", metadata={"model_id": "m"}, embedding_function=None)
    times = []
    for r in range(30):
        t = time.perf_counter()
        meta = client.get_collection("gen", embedding_function=None).metadata
        col.modify(metadata={**meta, "write_gen": str(r)})
        times.append(time.perf_counter() - t)
    return summary([x * 1000 for x in times])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="100000,1000000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out = {"method": "load + 10 upserts + save whole (before) vs 10 upserts appended to the log (after), "
                     "synthetic 256-d records, index files only", "generation_move_ms": generation_move_ms(),
           "machine": machine(), "scales": {}}
    for n in (int(s) for s in args.scales.split(",")):
        work = Path(tempfile.mkdtemp(prefix="index-update-"))
        try:
            say(f"{n:,} records: before")
            b = before(n, args.repeats, work)
            say(f"{n:,} records: after")
            a = after(n, args.repeats, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out["scales"][str(n)] = {"before": b, "after": a, "load_1min": round(load_average(), 2)}
        print(f"{n:>9,}  before {b['s']['p50']:8.3f} s {b['bytes_written'] / 1e6:9.1f} MB   "
              f"after {a['s']['p50'] * 1000:7.2f} ms {a['bytes_written'] / 1e3:7.1f} KB   "
              f"reader load {a['reader_load_s']:.3f} s", flush=True)
    path = RESULTS / "perf.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["index_update"] = out
    path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
