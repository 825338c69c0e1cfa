"""Inference: ONNX Runtime against PyTorch (speed, and the same top-10), and int8 quantisation
(speed, and the spine's quality figures moved by how many points).

    .venv/bin/python bench/inference.py [--parity 500] [--speed-batches 8]

int8 is taggers/offline/quantize.py's model: static QDQ quantisation (per-channel weights, calibrated
on the shipped calibration photos) of the exported backbone; VNNI runs its integer convolutions.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import PHOTOS, say, summary  # noqa: E402

BATCH = 32


def squares(paths: list[Path], size: int = 224) -> np.ndarray:
    from PIL import Image

    from taggers.offline import to_square

    return np.stack([to_square(Image.open(p), size) for p in paths])


def rate(fn, arrs: np.ndarray) -> float:
    t = time.perf_counter()
    fn(arrs)
    return len(arrs) / (time.perf_counter() - t)


def speeds(runners: dict, arrs: np.ndarray, batches: int) -> dict:
    """Images a second per batch for each runner, interleaved so load drifts hit all alike."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for fn in runners.values():
        fn(arrs[:BATCH])  # warm
    for b in range(batches):
        x = arrs[(b * BATCH) % (len(arrs) - BATCH):][:BATCH]
        for name, fn in runners.items():
            samples[name].append(rate(fn, x))
    return {name: summary(s) for name, s in samples.items()}


def top10(gallery: np.ndarray, queries: np.ndarray, drop_self: bool) -> np.ndarray:
    sims = queries @ gallery.T
    if drop_self:
        np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :10]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of queries whose top-10 sets are identical."""
    return round(float(np.mean([set(x) == set(y) for x, y in zip(a, b)])), 4)


def parity(model, torch_bb, onnx_bb, arrs: np.ndarray, titles: list[str]) -> dict:
    """Same top-10 from PyTorch and ONNX embeddings: image->image and text->image queries."""
    from taggers.offline import colour_batch

    colour = colour_batch(arrs)

    def embed(bb) -> np.ndarray:
        feats = np.concatenate([bb(arrs[i:i + BATCH]) for i in range(0, len(arrs), BATCH)])
        return model.project_images(np.concatenate([feats, colour], axis=1))

    from taggers.offline import normalise

    t_img = embed(lambda x: torch_bb(normalise(x)))
    o_img = embed(lambda x: onnx_bb(normalise(x)))
    o_txt = model.embed_texts(titles)                       # ONNX text tower
    t_txt = model.project_texts(model.texts(titles))        # PyTorch text path
    return {"queries": 2 * len(arrs), "max_abs_diff_image": float(np.abs(t_img - o_img).max()),
            "max_abs_diff_text": float(np.abs(t_txt - o_txt).max()),
            "image_top10_same": agreement(top10(t_img, t_img, True), top10(o_img, o_img, True)),
            "text_top10_same": agreement(top10(t_img, t_txt, False), top10(o_img, o_txt, False))}


def quality(model, featurizer, int8_bb, int8_file: Path) -> dict:
    """The spine's figures (bench/quality.py) on the eval split, fp32 against int8 features."""
    from quality import image_to_image, tag_accuracy, text_to_image, GALLERY
    from taggers.clip_local import LocalTagger
    from taggers.offline import cache_dir
    from toolkit.training.features import image_features
    from toolkit.training.split import eval_rows

    from taggers.weights import file_sha256

    class Int8:
        # The features cache is keyed by this: a re-quantised model must not reuse old features.
        features_key = f"{featurizer.backbone_key}-int8-{file_sha256(int8_file)[:12]}"

        def backbone(self, arrs: np.ndarray) -> np.ndarray:
            from taggers.offline import normalise

            return np.concatenate([int8_bb(normalise(arrs[i:i + BATCH])) for i in range(0, len(arrs), BATCH)])

    images = PHOTOS / "images"
    ev = sorted(eval_rows(PHOTOS / "styles.csv", images), key=lambda r: int(r["id"]) if r["id"].isdigit() else r["id"])
    paths = [images / f"{r['id']}.jpg" for r in ev]
    tagger = LocalTagger(model, None, threshold=0.35)
    texts = model.embed_texts([r["productDisplayName"] for r in ev[:GALLERY]])
    out = {}
    for name, feat in (("fp32", featurizer), ("int8", Int8())):
        f, _ = image_features(paths, feat, cache_dir() / "features", False, say)
        emb = model.project_images(f)
        i2i = image_to_image(emb, ev)
        out[name] = {**{f"p@5 {a}": v["p@5"] for a, v in i2i.items()},
                     "text->image recall@10": text_to_image(emb[:GALLERY], texts)["recall@10"],
                     "tag accuracy article_type": tag_accuracy(tagger, emb, ev)["article_type"]["accuracy"]}
    out["delta_points"] = {k: round(100 * (out["int8"][k] - out["fp32"][k]), 2) for k in out["fp32"]}
    out["max_abs_delta_points"] = max(abs(v) for v in out["delta_points"].values())
    return out


def run(parity_n: int = 500, speed_batches: int = 8) -> dict:
    from bench_embedder import embedder
    from taggers.offline.backbone import TorchBackbone, load_backbone
    from taggers.offline import normalise
    from taggers.offline.runners import OnnxBackbone, set_threads
    from taggers.offline.quantize import quantize_backbone
    from toolkit.training.split import eval_rows

    model = embedder(precision="fp32")
    feat = model.images
    onnx_bb = feat.runner()
    assert feat.runtime_used == "onnx", "the ONNX export failed; see the log"
    images = PHOTOS / "images"
    ev = eval_rows(PHOTOS / "styles.csv", images)[:parity_n]
    say("inference: int8 quantisation (once)")
    int8_file = quantize_backbone(feat.onnx_path(), feat.image_size)
    int8_bb = OnnxBackbone(int8_file, feat.threads)
    set_threads(feat.threads)
    torch_bb = TorchBackbone(load_backbone(feat.overrides, feat.backbone_name), feat.mid, feat.backbone_name)
    arrs = squares([images / f"{r['id']}.jpg" for r in ev], feat.image_size)
    say("inference: speed")
    backbone = speeds({"torch": lambda x: torch_bb(normalise(x)), "onnx": lambda x: onnx_bb(normalise(x)),
                       "onnx_int8": lambda x: int8_bb(normalise(x))}, arrs, speed_batches)

    def embedder_with(bb):
        def run_(x):
            feat._run = bb
            return model.project_images(feat.arrays(x))
        return run_

    whole = speeds({"onnx": embedder_with(onnx_bb), "onnx_int8": embedder_with(int8_bb)}, arrs, speed_batches)
    feat._run = onnx_bb
    say("inference: ONNX against PyTorch top-10")
    par = parity(model, torch_bb, onnx_bb, arrs, [r["productDisplayName"] for r in ev])
    say("inference: int8 quality on the eval split")
    qual = quality(model, feat, int8_bb, int8_file)
    b, w = backbone, whole
    result = {"backbone_images_per_s": b, "embedder_images_per_s": w,
              "onnx_over_torch": round(b["onnx"]["p50"] / b["torch"]["p50"], 2),
              "int8_over_fp32_backbone": round(b["onnx_int8"]["p50"] / b["onnx"]["p50"], 2),
              "int8_over_fp32_embedder": round(w["onnx_int8"]["p50"] / w["onnx"]["p50"], 2),
              "parity": par, "int8_quality": qual}
    result["int8_qualifies"] = bool(result["int8_over_fp32_embedder"] >= 1.5 and qual["max_abs_delta_points"] < 1.0)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--parity", type=int, default=500)
    ap.add_argument("--speed-batches", type=int, default=8)
    a = ap.parse_args()
    print(json.dumps(run(a.parity, a.speed_batches), indent=1))
