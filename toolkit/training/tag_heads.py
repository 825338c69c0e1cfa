"""Training the label classifiers the local tagger blends with its prompts (taggers/offline/tag_heads.py).

They read the same cached image features as the projection heads, so training them takes
under a minute on 2 cores once the features exist. They are trained beside a heads file,
for the photos that file's training saw, and written next to it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from taggers.offline import OfflineEmbedder, file_sha256, read_sidecar, sha256_file, sidecar_path, tag_heads_path
from toolkit.ground.errors import CatalogError
from toolkit.ground.files import write_text_atomic
from toolkit.training.captions import REQUIRED_COLUMNS, load_vocabulary
from toolkit.training.config import Progress
from toolkit.training.features import training_cache
from toolkit.training.sources import recorded_name, training_data, training_features
from toolkit.training.split import SPLIT_NAME

if TYPE_CHECKING:
    from taggers.offline import TagHeads


@dataclass
class TagTrainReport:
    out: Path
    sha256: str
    groups: dict[str, int]
    n_train: int
    seconds: float


def group_targets(rows: list[dict[str, str]], vocab: dict) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Per vocabulary group backed by a catalog column: its labels, and each row's label index
    (-1 where the row's value is empty or not in the vocabulary: such rows teach that group nothing)."""
    labels, targets = {}, {}
    for name, spec in vocab["groups"].items():
        column = spec.get("column")
        if not column or not rows or column not in rows[0]:
            continue
        labs = list(spec["labels"])
        index = {lab: i for i, lab in enumerate(labs)}
        y = np.array([index.get(r.get(column) or "", -1) for r in rows], dtype=np.int64)
        if (y >= 0).any():
            labels[name], targets[name] = labs, y
    return labels, targets


def fit_tag_heads(feats: np.ndarray, mirror: np.ndarray | None, labels: dict[str, list[str]],
                  targets: dict[str, np.ndarray], *, heads_sha256: str, epochs: int = 25, seed: int = 0,
                  progress: Progress | None = None, degraded: np.ndarray | None = None,
                  degrade: float = 0.0) -> "TagHeads":
    """One classifier per group on standardised features; each batch shows a photo or its
    mirror image (or, a `degrade` share of the time, its `degraded` copy). Cross-entropy with
    label smoothing, AdamW, one-cycle schedule."""
    import torch

    from taggers.offline import TagHeads, TagHeadsConfig

    say = progress or (lambda _msg: None)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TagHeads(TagHeadsConfig(image_in=feats.shape[1], groups=labels, heads_sha256=heads_sha256))
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    model.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    model.std.copy_(torch.from_numpy(std.astype(np.float32)))
    x = torch.tensor(feats, dtype=torch.float32)
    xm = torch.tensor(mirror, dtype=torch.float32) if mirror is not None else x
    xd = torch.tensor(degraded, dtype=torch.float32) if degraded is not None and degrade > 0 else None
    ys = {name: torch.from_numpy(y) for name, y in targets.items()}
    batch = 128
    steps = (len(x) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * steps)
    model.train()
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for s in range(steps):
            b = order[s * batch:(s + 1) * batch]
            flip = torch.from_numpy(rng.random(len(b)) < 0.5)[:, None]
            shown = torch.where(flip, xm[b], x[b])
            if xd is not None:
                worse = torch.from_numpy(rng.random(len(b)) < degrade)[:, None]
                shown = torch.where(worse, xd[b], shown)
            logits = model.logits(shown)
            losses = [torch.nn.functional.cross_entropy(logits[n], ys[n][b], ignore_index=-1, label_smoothing=0.1)
                      for n in logits if (ys[n][b] >= 0).any()]
            if not losses:
                continue
            loss = torch.stack(losses).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        say(f"tag classifiers: epoch {epoch + 1}/{epochs}, loss {total / steps:.4f}")
    model.eval()
    return model


def train_tag_heads(images_dir: Path, catalog_csv: Path, heads_path: Path | None = None, out: Path | None = None,
                    *, exclude_eval: bool = True, hold_out: bool = False, epochs: int = 25, seed: int = 0,
                    threads: int = 0, runtime: str = "auto", limit: int | None = None,
                    vocabulary: Path | None = None, progress: Progress | None = None,
                    cache: Path | None = None, extra: Sequence[tuple[Path, Path]] = (),
                    degrade: float = 0.0, extra_share: float = 1.0) -> TagTrainReport:
    """Train the classifiers for a heads file (default: the shipped one) on the catalog's photos
    and write them beside it; the heads' sidecar records their SHA-256 and training. `cache`:
    the data directory's cache folder (default: that of the settings in force). `extra` and
    `degrade`: more catalogs, and main photos shown degraded, as for the heads
    (toolkit/training/sources.py)."""
    from taggers.offline import save_tag_heads

    cache = training_cache(cache)
    say = progress or (lambda _msg: None)
    t0 = time.time()
    data = training_data(Path(images_dir), Path(catalog_csv), extra, exclude_eval=exclude_eval, limit=limit,
                         hold_out=hold_out, required=REQUIRED_COLUMNS, extra_share=extra_share)
    rows = data.rows
    labels, targets = group_targets(rows, load_vocabulary(vocabulary))
    if not labels:
        raise CatalogError(f"--catalog {catalog_csv}: no column of the tag vocabulary has labels to learn")
    # fp32 features: classifiers learn from the exact features, whatever this CPU would run at.
    model = OfflineEmbedder(heads_path=heads_path, runtime=runtime, threads=threads,  # type: ignore[arg-type]
                            precision="fp32", cache=cache)
    heads_file = model.verified_heads
    # The embedder's own featurizer: the backbone, fine-tuned blocks and mid-level taps the heads use.
    feats, mirror, degraded = training_features(data, model.images, cache / "features", True, degrade > 0, say)
    width = model.heads().cfg.image_in
    tag_heads = fit_tag_heads(feats[:, :width], mirror[:, :width] if mirror is not None else None, labels, targets,
                              heads_sha256=file_sha256(heads_file), epochs=epochs, seed=seed, progress=say,
                              degraded=degraded[:, :width] if degraded is not None else None, degrade=degrade)
    out = Path(out) if out else tag_heads_path(heads_file)
    save_tag_heads(tag_heads, out)
    sha = sha256_file(out)
    groups = {n: len(v) for n, v in labels.items()}
    _record_in_sidecar(heads_file, out, sha, {"n_train": len(rows), "epochs": epochs, "seed": seed,
                                              "split": SPLIT_NAME, "exclude_eval": exclude_eval,
                                              "hold_out": hold_out, "groups": groups, "degrade": degrade,
                                              "extra_share": extra_share,
                                              "sources": [recorded_name(s.images) for s in (data.main, *data.extra)]})
    return TagTrainReport(out=out, sha256=sha, groups=groups, n_train=len(rows), seconds=time.time() - t0)


def _record_in_sidecar(heads_path: Path, out: Path, sha: str, training: dict) -> None:
    """The heads' sidecar names the classifiers beside them (the hash the tagger checks them
    against) and how they were trained. The shipped heads are checked against a hash pinned
    in taggers/weights.py instead: after retraining them, pin the printed SHA-256 there."""
    sidecar = sidecar_path(heads_path)
    if out.resolve() != tag_heads_path(heads_path).resolve() or not sidecar.is_file():
        return  # written elsewhere on purpose: the heads keep tagging as they did
    meta = read_sidecar(heads_path)
    meta["tag_heads_sha256"] = sha
    meta["tag_heads_training"] = {**training, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text_atomic(sidecar, json.dumps(meta, indent=2) + "\n")
