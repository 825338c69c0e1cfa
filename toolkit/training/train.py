"""`toolkit model train`: the projection heads trained from a catalog's photos and attributes.

Image side: frozen EfficientNet-Lite0 descriptor, the product-masked mean of four mid-level
blocks' outputs (they still see colour and texture) and colour features (toolkit/training/features.py).
Text side: frozen MiniLM embeddings of captions (toolkit/training/captions.py). The loop and its
loss: toolkit/training/loop.py and losses.py; the optional backbone fine-tuning: finetune.py;
the label classifiers trained beside the heads: tag_heads.py. Writes the heads, a JSON sidecar
saying how they were made, and (by default) the classifiers.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from taggers.offline import (BACKBONE_DIM, COLOUR_DIM, COLOUR_VERSION, LITE0, ImageFeaturizer, OfflineEmbedder,
                             TextFeaturizer, backbone_spec, model_prefix, read_sidecar, sha256_file, sidecar_path,
                             tag_heads_file)
from toolkit.ground.errors import ConfigError
from toolkit.ground.files import write_text_atomic
from toolkit.training.captions import COMBOS, REQUIRED_COLUMNS, TEMPLATES, build_captions, load_vocabulary
from toolkit.training.config import Progress, TrainConfig, TrainReport
from toolkit.training.features import augmented_features, text_features, training_cache
from toolkit.training.finetune import finetune_stage
from toolkit.training.loop import fit
from toolkit.training.sources import TrainingData, recorded_name, training_data, training_features
from toolkit.training.split import SPLIT_NAME
from toolkit.training.tag_heads import train_tag_heads

if TYPE_CHECKING:
    from taggers.offline import HeadsConfig


def train_heads(images_dir: Path, catalog_csv: Path, out: Path, epochs: int = 60, seed: int = 0,
                exclude_eval: bool = True, vocabulary: Path | None = None, progress: Progress | None = None,
                cache: Path | None = None, extra: Sequence[tuple[Path, Path]] = (),
                **options: object) -> TrainReport:
    """Train projection heads on the catalog's photos and write them (plus a JSON sidecar) to `out`.
    `cache`: the data directory's cache folder (default: that of the settings in force), where
    features are kept between runs. `extra`: more (images folder, catalog) pairs trained on
    beside the main one (toolkit/training/sources.py)."""
    from taggers.offline import HeadsConfig, save_heads

    cache = training_cache(cache)
    say = progress or (lambda _msg: None)
    cfg = TrainConfig(epochs=epochs, seed=seed, exclude_eval=exclude_eval, **options)  # type: ignore[arg-type]
    if cfg.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    size = backbone_spec(cfg.backbone).image_size  # an unknown backbone fails before any work
    if cfg.finetune_blocks and cfg.backbone != LITE0:
        raise ConfigError(f"--finetune-blocks works with {LITE0} only, not {cfg.backbone}")
    if cfg.finetune_blocks and extra:
        raise ConfigError("--finetune-blocks trains on one --images/--catalog pair only")
    if not 0.0 <= cfg.degrade < 1.0:
        raise ConfigError("--degrade must be at least 0 and under 1")
    if not 0.0 < cfg.extra_weight <= 1.0:
        raise ConfigError("--extra-weight must be over 0 and at most 1")
    t0 = time.time()
    data = training_data(Path(images_dir), Path(catalog_csv), extra, exclude_eval=cfg.exclude_eval,
                         limit=cfg.limit, hold_out=cfg.hold_out, required=REQUIRED_COLUMNS,
                         extra_share=cfg.extra_share)
    rows, excluded = data.rows, data.excluded
    say(f"training on {len(rows)} photos ({len(data.main.rows)} from {data.main.images}"
        + "".join(f", {len(s.rows)} from {s.images}" for s in data.extra)
        + f"; {excluded} eval/holdout/other items left out)")
    vocab = load_vocabulary(vocabulary)
    if cfg.mid_features is None:
        cfg.mid_features = backbone_spec(cfg.backbone).mid
    if cfg.finetune_blocks and cfg.mid_features:
        # The fine-tuned tail only produces the last layer's descriptor.
        say("fine-tuning: the image head sees the 1280-d descriptor and colour only (no mid-level features)")
        cfg.mid_features = ""
    # fp32: the heads learn from the exact features, whatever this CPU would run at.
    featurizer = ImageFeaturizer(cfg.runtime, 64, cfg.threads, mid=cfg.mid_features,  # type: ignore[arg-type]
                                 backbone=cfg.backbone, precision="fp32", cache=cache)
    paths = data.main.paths
    img_f, img_m, degraded = training_features(data, featurizer, cache / "features", cfg.flip, cfg.degrade > 0, say)
    caps = build_captions(rows, vocab)
    texts = TextFeaturizer(128, cfg.threads)
    txt_f = text_features(caps.texts, texts, cache / "features" / f"text-{texts.features_key}.npz", say)
    heads_cfg = HeadsConfig(backbone=cfg.backbone, image_size=size,
                            colour_dim=COLOUR_DIM, colour_version=COLOUR_VERSION, backbone_dim=BACKBONE_DIM,
                            mid_features=cfg.mid_features, mid_dim=featurizer.backbone_dim - BACKBONE_DIM,
                            hidden=cfg.hidden, dim=cfg.dim, dropout=cfg.dropout)
    views = []
    if cfg.augment_views:
        # Extra photos have no random views of their own: their features stand in.
        own = img_f[len(paths):]
        views = [np.concatenate([v, own]) for v in
                 augmented_features(paths, featurizer, cache / "features", cfg.augment_views, say)]
    if degraded is not None:
        views.append(degraded)
    share = cfg.degrade if degraded is not None and not cfg.augment_views else 0.5
    heads, loss = fit(img_f, img_m, txt_f, caps, cfg, heads_cfg, say, views or None, view_share=share,
                      n_main=len(paths))
    backbone_state = None
    if cfg.finetune_blocks:
        heads, backbone_state, loss = finetune_stage(heads, paths, img_f[:, BACKBONE_DIM:], txt_f, caps, cfg,
                                                     cache, say)
    save_heads(heads, out, backbone_state)
    sha = sha256_file(out)
    write_sidecar(out, sha, heads_cfg, cfg, data, excluded, len(caps.texts), loss)
    if cfg.tag_heads:
        train_tag_heads(Path(images_dir), Path(catalog_csv), heads_path=Path(out), exclude_eval=cfg.exclude_eval,
                        hold_out=cfg.hold_out, seed=cfg.seed, threads=cfg.threads, runtime=cfg.runtime,
                        limit=cfg.limit, vocabulary=vocabulary, progress=say, cache=cache, extra=extra,
                        degrade=cfg.degrade, extra_share=cfg.extra_share)
    return TrainReport(out=Path(out), sha256=sha, model_id=f"{model_prefix(cfg.backbone)}:{sha[:12]}",
                       n_train=len(rows), n_captions=len(caps.texts), epochs=cfg.epochs, final_loss=loss,
                       seconds=time.time() - t0, excluded_eval=excluded)


def write_sidecar(out: Path, sha: str, heads_cfg: "HeadsConfig", cfg: TrainConfig, data: TrainingData,
                  excluded: int, n_captions: int, loss: float) -> None:
    """What the heads are and how they were made: enough to check and reproduce them."""
    rows = data.rows
    ids = sorted(r["id"] for r in rows)
    meta = {
        "sha256": sha,
        "config": asdict(heads_cfg),
        "training": {**asdict(cfg), "split": SPLIT_NAME, "n_train": len(rows), "left_out": excluded,
                     "sources": [{"images": recorded_name(s.images), "catalog": recorded_name(s.catalog), "n_train": len(s.rows)}
                                 for s in (data.main, *data.extra)],
                     "train_ids_sha256": hashlib.sha256(",".join(ids).encode()).hexdigest(),
                     "n_captions": n_captions, "final_loss": round(loss, 5),
                     "loss": "multi-positive symmetric InfoNCE + per-group label cross-entropy + "
                             "same-look supervised contrastive",
                     "captions": {"title": "productDisplayName", "prompt": TEMPLATES, "combo": COMBOS}},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(sidecar_path(out), json.dumps(meta, indent=2) + "\n")


def heads_info(heads_path: Path | None = None) -> dict[str, object]:
    """What a heads file is (checked against its pinned or recorded hash) and how it was trained."""
    model = OfflineEmbedder(heads_path=heads_path)
    path = model.verified_heads
    meta = read_sidecar(path) if sidecar_path(path).is_file() else {}
    training = meta.get("training", {})
    return {"path": str(path), "model_id": model.model_id, "dim": model.dim,
            "backbone": meta.get("config", {}).get("backbone", ""),
            "finetuned": meta.get("config", {}).get("finetuned", []),
            "mid_features": meta.get("config", {}).get("mid_features", ""),
            "split": training.get("split"), "trained_on": training.get("n_train"),
            "epochs": training.get("epochs"), "created": meta.get("created"),
            "tag_classifiers": str(tags) if (tags := tag_heads_file(heads_path)) else
            "none (tags from label prompts alone)"}
