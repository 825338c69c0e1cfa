"""Retrieval and tagging quality of the offline model on the fixed eval split.

    .venv/bin/python bench/quality.py [--data DIR] [--heads PATH] [--threads 2] [--no-speed]
        [--precision fp32|int8|auto]   (default: TOOLKIT_PRECISION, else fp32)
        [--split eval|holdout]    (holdout: for heads trained with --hold-out)

Prints a table and writes bench/results/quality.json (quality-int8.json for the int8 backbone,
quality-holdout*.json for the holdout). Eval photos are never trained on (toolkit/training/split.py);
their features are cached by file hash, so re-runs are quick.
Baselines: raw EfficientNet-Lite0 features, and a linear probe (logistic regression on
train-split Lite0 features) whose class probabilities serve as embeddings; for a model on another
backbone, that backbone's raw features too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "bench"))

from taggers.clip_local import LocalTagger  # noqa: E402
from taggers.offline import BACKBONE_DIM, LITE0, ImageFeaturizer, OfflineEmbedder, cache_dir  # noqa: E402
from taggers.offline import backbone_spec as spec  # noqa: E402
from toolkit.evaluation.metrics import (precision_at, query_ceilings, text_metrics, text_ranks,  # noqa: E402
                                        top_neighbours)
from toolkit.training.features import image_features  # noqa: E402
from toolkit.training.split import rows_for, train_rows  # noqa: E402
from common import machine  # noqa: E402

ATTRS = ["articleType", "baseColour", "gender"]
TAG_GROUPS = {"article_type": "articleType", "colour": "baseColour", "gender": "gender",
              "master_category": "masterCategory", "usage": "usage", "season": "season"}
GALLERY = 1500


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def l2(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def image_to_image(emb: np.ndarray, rows: list[dict], ks=(1, 5, 10)) -> dict:
    """Precision@k of same-attribute neighbours, each eval photo querying all the others,
    scored as `toolkit eval` scores them."""
    labels = {a: np.array([r[a] for r in rows], dtype=object) for a in ATTRS}
    return precision_at(top_neighbours(emb, max(ks)), labels, ks)


def text_to_image(img: np.ndarray, txt: np.ndarray) -> dict:
    """Title i queries the gallery for photo i, scored as `toolkit eval` scores it."""
    return {**text_metrics(text_ranks(img, txt, range(len(txt)))), "gallery": len(img)}


def attribute_queries(model: OfflineEmbedder, img: np.ndarray, rows: list[dict], k: int = 10) -> dict:
    """"Men Black Casual Shoes" for each gender/colour/type triple in the gallery (2+ items):
    the share of the top-k results matching each named attribute."""
    triples = Counter((r["gender"], r["baseColour"], r["articleType"]) for r in rows
                      if r["gender"] and r["baseColour"] and r["articleType"])
    queries = [t for t, n in triples.items() if n >= 2]
    q = model.embed_texts([f"{g} {c} {a}" for g, c, a in queries])
    top = np.argsort(-(q @ img.T), axis=1)[:, :k]
    named = ["gender", "baseColour", "articleType"]
    labels = {a: np.array([r[a] for r in rows], dtype=object) for a in named}
    asked = {a: np.array([t[i] for t in queries], dtype=object) for i, a in enumerate(named)}
    got = {a: by_k[f"p@{k}"] for a, by_k in precision_at(top, labels, ks=(k,), query_labels=asked).items()}
    out: dict = {"queries": len(queries), **{a: got[a] for a in named}, "all_three": got["all"]}
    out["mean"] = round(float(np.mean([out[a] for a in named])), 4)
    # The best any ranking could do with this gallery's labels (toolkit/evaluation/metrics.py).
    best = query_ceilings(labels, asked, k)
    out["ceiling"] = {**{a: best[a] for a in named}, "all_three": best["all"], "mean": best["mean"]}
    return out


def tag_accuracy(tagger: LocalTagger, emb: np.ndarray, rows: list[dict], features: np.ndarray | None = None) -> dict:
    probs = tagger.probabilities(emb, features=features)
    groups = {g.name: g for g in tagger.groups}
    out = {}
    for group, column in TAG_GROUPS.items():
        if group not in groups:
            continue
        labels = groups[group].labels
        pred = [labels[i] for i in probs[group].argmax(axis=1)]
        conf = probs[group].max(axis=1)
        truth = [r[column] for r in rows]
        keep = [i for i, t in enumerate(truth) if t]
        acc = np.mean([pred[i] == truth[i] for i in keep])
        confused = Counter((truth[i], pred[i]) for i in keep if pred[i] != truth[i]).most_common(5)
        shown = conf[keep] >= tagger.threshold
        out[group] = {"accuracy": round(float(acc), 4), "n": len(keep),
                      "coverage@threshold": round(float(shown.mean()), 4),
                      "accuracy@threshold": round(float(np.mean([pred[i] == truth[i] for i, s in zip(keep, shown) if s])), 4),
                      "most_confused": [f"{t} -> {p} ({n})" for (t, p), n in confused]}
    return out


def tagging_cost(tagger: LocalTagger, emb: np.ndarray, feats: np.ndarray, rounds: int = 5) -> dict:
    """Milliseconds per 1,000 photos to score every group, prompts alone and blended with the
    classifiers (the median of interleaved rounds; the backbone's cost is not in either)."""
    times: dict[str, list[float]] = {"prompts": [], "prompts+classifiers": []}
    for _ in range(rounds):
        for name, f in (("prompts", None), ("prompts+classifiers", feats)):
            t0 = time.perf_counter()
            tagger.probabilities(emb, rowwise=True, features=f)
            times[name].append((time.perf_counter() - t0) * 1000 * 1000 / len(emb))
    return {k: round(float(np.median(v)), 1) for k, v in times.items()}


def linear_probe(train_f: np.ndarray, train_r: list[dict], eval_f: np.ndarray, eval_r: list[dict]) -> tuple[np.ndarray, dict]:
    """Logistic regression per attribute on train-split features; eval class probabilities
    (concatenated) are the probe's embedding, and its accuracies a tagging baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_f)
    xt, xe = scaler.transform(train_f), scaler.transform(eval_f)
    parts, acc = [], {}
    for a in ATTRS + ["masterCategory", "usage"]:
        clf = LogisticRegression(max_iter=300, C=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not fully converged at 300 iterations; it is a baseline
            clf.fit(xt, [r[a] for r in train_r])
        acc[a] = round(float(np.mean(clf.predict(xe) == np.array([r[a] for r in eval_r]))), 4)
        if a in ATTRS:
            parts.append(clf.predict_proba(xe))
    return l2(np.concatenate(parts, axis=1)), acc


def features_of(model: OfflineEmbedder):
    """The model's own image featurizer (its mid-level features and precision), for image_features;
    its features_key keeps int8 features apart from fp32 ones."""
    feat = model.images
    if model.precision != "fp32":
        feat.runner()
        if feat.precision_used != "int8":
            say(f"image backbone runs fp32 here: {feat.choice.reason if feat.choice else 'see the log'}")
    return feat


def throughput(paths: list[Path], heads: Path | None, threads: int, precision: str) -> dict:
    """Images per second at the given precision (ONNX Runtime; PyTorch runs fp32 whatever it is)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    out: dict = {"precision": precision}
    for runtime in ("onnx", "torch"):
        model = OfflineEmbedder(heads, runtime=runtime, batch_size=32, threads=threads, precision=precision,
                                cache=cache_dir())
        model.embed_images(images[:32])  # load, export, warm up
        t = time.perf_counter()
        model.embed_images(images)
        out[f"{runtime}_images_per_s"] = round(len(images) / (time.perf_counter() - t), 1)
    titles = [f"Men Black Casual Shoes {i}" for i in range(256)]
    model.embed_texts(titles[:8])
    t = time.perf_counter()
    model.embed_texts(titles)
    out["texts_per_s"] = round(len(titles) / (time.perf_counter() - t), 1)
    out["threads"] = threads
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TOOLKIT_SHARED_DATA", str(ROOT.parent / "shared" / "data" / "fashion-products"))
    ap.add_argument("--data", type=Path, default=Path(default_data))
    ap.add_argument("--heads", type=Path, default=None, help="heads file (default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    ap.add_argument("--no-probe", action="store_true", help="skip the linear-probe baseline")
    ap.add_argument("--precision", choices=["fp32", "int8", "auto"],
                    default=os.environ.get("TOOLKIT_PRECISION") or "fp32",
                    help="image backbone precision (auto: the shipped default, int8 where it matches fp32 here; "
                         "not fp32: skips the probe baseline)")
    ap.add_argument("--split", choices=["eval", "holdout"], default="eval",
                    help="holdout: the training split's fixed fifth, for heads trained with --hold-out "
                         "(no probe: it trains on the whole training split)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = "quality" + ("" if args.split == "eval" else f"-{args.split}")
    args.out = args.out or ROOT / "bench" / "results" / (f"{name}.json" if args.precision == "fp32" else
                                                         f"{name}-{args.precision}.json")

    images, catalog = args.data / "images", args.data / "styles.csv"
    ev = sorted(rows_for(catalog, args.split, images), key=lambda r: int(r["id"]) if r["id"].isdigit() else r["id"])
    model = OfflineEmbedder(args.heads, threads=args.threads, precision=args.precision, cache=cache_dir())
    feat = features_of(model)
    cache = cache_dir() / "features"
    say(f"{args.split} split: {len(ev)} photos; features ...")
    ev_f, _ = image_features([images / f"{r['id']}.jpg" for r in ev], feat, cache, False, say)
    emb = model.project_images(ev_f)
    result: dict = {"model_id": model.model_id, "split": args.split, "eval_items": len(ev),
                    "precision": args.precision, "precision_used": feat.precision_used or "fp32"}

    # The baselines are EfficientNet-Lite0's (fp32), whatever backbone the model uses.
    lite0 = ImageFeaturizer("auto", 64, args.threads, mid=spec(LITE0).mid, backbone=LITE0, precision="fp32",
                            cache=cache_dir())
    ev_l0, _ = image_features([images / f"{r['id']}.jpg" for r in ev], lite0, cache, False, say)
    result["image_to_image"] = {"model": image_to_image(emb, ev),
                                "raw_effnet": image_to_image(l2(ev_l0[:, :BACKBONE_DIM]), ev)}
    if model.heads().cfg.backbone != LITE0:
        result["image_to_image"]["raw_model_backbone"] = image_to_image(l2(ev_f[:, :BACKBONE_DIM]), ev)
    gal = ev[:GALLERY]
    result["text_to_image"] = text_to_image(emb[:GALLERY], model.embed_texts([r["productDisplayName"] for r in gal]))
    result["attribute_queries@10"] = attribute_queries(model, emb[:GALLERY], gal)
    tagger = LocalTagger(model, None, threshold=0.35)
    result["tag_accuracy"] = tag_accuracy(tagger, emb, ev, ev_f)
    if tagger.classifier_columns():
        result["tag_accuracy_prompts_only"] = {g: v["accuracy"] for g, v in tag_accuracy(tagger, emb, ev).items()}
        result["tagging_ms_per_1000_photos"] = tagging_cost(tagger, emb, ev_f)
    if not args.no_probe and args.precision == "fp32" and args.split == "eval":
        say("linear probe baseline ...")
        tr = train_rows(catalog, images)
        tr_f, _ = image_features([images / f"{r['id']}.jpg" for r in tr], lite0, cache, False, say)
        probe_emb, probe_acc = linear_probe(tr_f[:, :BACKBONE_DIM], tr, ev_l0[:, :BACKBONE_DIM], ev)
        result["image_to_image"]["linear_probe_raw"] = image_to_image(probe_emb, ev)
        result["linear_probe_accuracy_raw"] = probe_acc
    if not args.no_speed:
        say("throughput ...")
        result["throughput"] = throughput([images / f"{r['id']}.jpg" for r in ev[:256]], args.heads, args.threads,
                                          args.precision)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["machine"] = machine(feat.precision_used or "fp32")
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(result)
    say(f"wrote {args.out}")


def print_table(r: dict) -> None:
    print(f"model {r['model_id']}  ({r.get('split', 'eval')} split: {r['eval_items']} photos)")
    print("\nimage-to-image precision@k        articleType          baseColour           gender")
    for name, res in r["image_to_image"].items():
        cells = "  ".join(" ".join(f"{res[a][f'p@{k}']:.3f}" for k in (1, 5, 10)) for a in ATTRS)
        print(f"  {name:30s} {cells}")
    t = r["text_to_image"]
    print(f"\ntext-to-image (title, {t['gallery']} gallery): R@1 {t['recall@1']:.3f}  R@10 {t['recall@10']:.3f}  MRR {t['mrr']:.3f}")
    q = r["attribute_queries@10"]
    print(f"attribute queries P@10 ({q['queries']} queries): gender {q['gender']:.3f}  colour {q['baseColour']:.3f}  "
          f"articleType {q['articleType']:.3f}  all three {q['all_three']:.3f}  mean {q['mean']:.3f}")
    if "ceiling" in q:
        b = q["ceiling"]
        print(f"  best possible with these labels:   gender {b['gender']:.3f}  colour {b['baseColour']:.3f}  "
              f"articleType {b['articleType']:.3f}  all three {b['all_three']:.3f}  mean {b['mean']:.3f}")
    print("\ntag accuracy (best label)   acc    cov@thr  acc@thr  most confused")
    for g, res in r["tag_accuracy"].items():
        print(f"  {g:24s} {res['accuracy']:.3f}  {res['coverage@threshold']:.3f}    {res['accuracy@threshold']:.3f}    "
              f"{'; '.join(res['most_confused'][:3])}")
    if "tag_accuracy_prompts_only" in r:
        print("label prompts alone (no classifiers) accuracy: " +
              ", ".join(f"{k} {v:.3f}" for k, v in r["tag_accuracy_prompts_only"].items()))
    if "tagging_ms_per_1000_photos" in r:
        print("tag scoring, ms per 1,000 photos (no backbone): " +
              ", ".join(f"{k} {v:.1f}" for k, v in r["tagging_ms_per_1000_photos"].items()))
    if "linear_probe_accuracy_raw" in r:
        print("linear probe (raw EfficientNet) accuracy: " +
              ", ".join(f"{k} {v:.3f}" for k, v in r["linear_probe_accuracy_raw"].items()))
    if "throughput" in r:
        s = r["throughput"]
        print(f"\nthroughput ({s['threads']} threads, {s.get('precision', 'fp32')}, incl. colour features and heads): "
              f"onnx {s['onnx_images_per_s']} img/s, "
              f"torch {s['torch_images_per_s']} img/s, text {s['texts_per_s']} texts/s")


if __name__ == "__main__":
    main()
