"""Each image precision on this machine: which one `auto` picks and why, how close its final
embeddings are to fp32's on eval photos, and how fast the whole image embedder runs.

    .venv/bin/python bench/precision.py [--photos 256] [--rounds 3] [--threads 2]

Runs in a fresh data directory (a temporary one unless TOOLKIT_DATA_DIR is set), as a new user
would: the export, the quantisation and the int8 check all happen inside the run. Prints a table
and writes bench/results/precision.json with the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import PHOTOS, RESULTS, machine, say

from taggers.offline import OfflineEmbedder  # noqa: E402
from taggers.offline.precision import parity  # noqa: E402
from toolkit.training.split import rows_for  # noqa: E402

PRECISIONS = ("fp32", "auto", "int8")


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """`taggers.offline.precision.parity` of embeddings `a` against fp32's `b` (cosine, nearest kept in
    the top 3), plus the share of each photo's 5 nearest others that stay the same set."""
    p = parity(b, a)
    top_a, top_b = np.argsort(-(a @ a.T), axis=1)[:, 1:6], np.argsort(-(b @ b.T), axis=1)[:, 1:6]
    overlap = np.mean([len(set(x) & set(y)) / 5 for x, y in zip(top_a, top_b)])
    return {"mean_cosine": p.mean_cosine, "min_cosine": p.min_cosine,
            "top5_overlap": round(float(overlap), 4), "nearest_in_top3": p.neighbours}


def run(photos: int, rounds: int, threads: int, data_dir: Path) -> dict:
    from PIL import Image

    rows = rows_for(PHOTOS / "styles.csv", "eval", PHOTOS / "images")[:photos]
    images = [Image.open(PHOTOS / "images" / f"{r['id']}.jpg").convert("RGB") for r in rows]
    models = {p: OfflineEmbedder(precision=p, threads=threads, cache=data_dir / "cache") for p in PRECISIONS}
    out: dict = {}
    for p, m in models.items():
        t = time.perf_counter()
        choice = m.precision_choice()  # export, quantise, check: a new user's first run
        out[p] = {"in_force": choice.precision, "reason": choice.reason, "first_load_s": round(time.perf_counter() - t, 1)}
        say(f"{p}: {choice.precision} ({choice.reason})")
    emb = {p: m.embed_images(images) for p, m in models.items()}
    for p in PRECISIONS:
        out[p].update(agreement(emb[p], emb["fp32"]))
    best = {p: float("inf") for p in PRECISIONS}
    for _ in range(rounds):  # interleaved, so a neighbour's load hits each alike
        for p, m in models.items():
            t = time.perf_counter()
            m.embed_images(images)
            best[p] = min(best[p], time.perf_counter() - t)
    for p in PRECISIONS:
        out[p]["images_per_s"] = round(len(images) / best[p], 1)
        out[p]["speed_over_fp32"] = round(best["fp32"] / best[p], 2)
    return {"photos": len(images), "rounds": rounds, "threads": threads, "precisions": out}


def print_table(result: dict) -> None:
    print(f"\n{result['photos']} eval photos, {result['threads']} threads, best of {result['rounds']}: "
          f"{result['machine']['cpu']} {' '.join(result['machine']['flags'])}, "
          f"onnxruntime {result['machine']['onnxruntime']}")
    print(f"{'setting':<8}{'in force':<10}{'cos mean':>9}{'cos min':>9}{'top-5':>7}{'nn@3':>7}{'img/s':>8}{'x fp32':>8}")
    for p, r in result["precisions"].items():
        print(f"{p:<8}{r['in_force']:<10}{r['mean_cosine']:>9}{r['min_cosine']:>9}{r['top5_overlap']:>7}"
              f"{r['nearest_in_top3']:>7}{r['images_per_s']:>8}{r['speed_over_fp32']:>8}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="toolkit-precision-") as tmp:
        data_dir = Path(os.environ.get("TOOLKIT_DATA_DIR") or tmp)
        result = run(a.photos, a.rounds, a.threads, data_dir)
    result["machine"] = machine(result["precisions"]["auto"]["in_force"])
    print_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    say(f"wrote {RESULTS / 'precision.json'}")


if __name__ == "__main__":
    main()
