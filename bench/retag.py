"""`toolkit tag --retag` against a first tag of the same photos, and what an up-to-date re-run costs.

    .venv/bin/python bench/retag.py [--photos 1000] [--repeats 2]

Each repeat, into a new store and with the shipped model already loaded: a first `tag` of the
folder, a plain re-run (nothing to do), a plain re-run after the local tagger changed (its
threshold: every item is now outdated, none is read), the `--retag` that re-tags them all,
and a second `--retag` (nothing left to do). Retagging reads, embeds and tags every outdated
item again, so its throughput is compared with the first tag's in the same repeat.
Prints a table and writes bench/results/retag.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CACHE, RESULTS, machine, photo_folder, say  # noqa: E402
from ingest import embedder  # noqa: E402

STEPS = ("first tag", "re-run, unchanged", "re-run, tagger changed", "--retag", "--retag again")


def timed(tk, source: str, **kw) -> tuple[float, object]:
    t = time.perf_counter()
    report = tk.tag(source, tagger="local", **kw)
    return time.perf_counter() - t, report


def one_repeat(emb, folder: str, n: int) -> dict[str, float]:
    from toolkit.core import Toolkit
    from toolkit.ground.settings import load_settings

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        before = Toolkit(load_settings(data_dir=Path(tmp)), embedder=emb)
        before.tag(str(photo_folder(32)))  # warm: store opened, label prompts loaded
        after = Toolkit(load_settings(data_dir=Path(tmp), tag_threshold=0.3), embedder=emb)
        runs = [timed(before, folder), timed(before, folder), timed(after, folder),
                timed(after, folder, retag=True), timed(after, folder, retag=True)]
    (first, r1), (_, r2), (_, r3), (_, r4), (_, r5) = runs
    assert r1.new == n and r2.unchanged == n and (r3.unchanged, r3.outdated) == (n, n), (r1, r2, r3)
    assert r4.retagged == n and (r5.unchanged, r5.outdated) == (n, 0), (r4, r5)
    out = {step: round(s, 2) for step, (s, _) in zip(STEPS, runs)}
    out["retag_over_first"] = round(first / runs[3][0], 3)
    out["load_1min"] = round(os.getloadavg()[0], 2)
    return out


def run(photos: int, repeats: int) -> dict:
    emb = embedder()
    folder = str(photo_folder(photos))
    rounds = []
    for r in range(repeats):
        say(f"retag: repeat {r + 1}/{repeats} over {photos} photos (load {os.getloadavg()[0]:.2f})")
        rounds.append(one_repeat(emb, folder, photos))
    median = {k: round(float(np.median([x[k] for x in rounds])), 3) for k in rounds[0]}
    return {"photos": photos, "repeats": repeats, "runtime": f"{emb.runtime_used} {emb.images.precision_used}",
            "seconds_median": median, "rounds": rounds}


def print_table(r: dict) -> None:
    n, m = r["photos"], r["seconds_median"]
    print(f"{'step':26s} {'seconds':>8s} {'photos/s':>9s}   ({n} photos, median of {r['repeats']}, {r['runtime']})")
    for step in STEPS:
        print(f"{step:26s} {m[step]:8.2f} {n / m[step]:9.1f}")
    print(f"--retag throughput over the first tag's: {m['retag_over_first']:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    result = run(a.photos, a.repeats)
    print_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "retag.json").write_text(json.dumps({**result, "machine": machine()}, indent=1) + "\n",
                                        encoding="utf-8")
