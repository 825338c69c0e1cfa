"""The alignment training of the projection heads over cached features (toolkit/training/features.py).

Each batch pairs photos with one sampled caption each (toolkit/training/captions.py) and
shows each photo as itself or its mirror image (or, with `augment_views`, one of its random
views); the objective is toolkit/training/losses.py's. Seeded: the same data, config and
seed give the same heads, byte for byte.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from toolkit.training.captions import Captions, sample_captions
from toolkit.training.config import Progress, TrainConfig
from toolkit.training.losses import batch_loss, look_codes

if TYPE_CHECKING:
    from taggers.offline import Heads, HeadsConfig


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_views(n_items: int, n_views: int, exclude: np.ndarray | None = None, share: float = 0.5) -> np.ndarray:
    """A view per item: 0 (the photo) or 1 (its mirror image), else (a `share` of the time) one
    of the other views 2..n_views-1; never the view `exclude` names for that item."""
    own = np.random.randint(0, 2, n_items)
    view = np.where(np.random.rand(n_items) >= share, own, np.random.randint(2, n_views, n_items))
    if exclude is not None:
        same = view == exclude
        view[same] = (view[same] + 1 + np.random.randint(0, n_views - 1, int(same.sum()))) % n_views
    return view


def fit(img_f: np.ndarray, img_m: np.ndarray | None, txt_f: np.ndarray, caps: Captions,
        cfg: TrainConfig, heads_cfg: HeadsConfig, progress: Progress,
        views: list[np.ndarray] | None = None, view_share: float = 0.5,
        n_main: int | None = None) -> tuple[Heads, float]:
    """The training loop over cached features; returns the heads and the last epoch's mean loss.
    `views`: features of other views of each photo (random views, `augmented_features`;
    degraded copies, `sources.training_features`), used with the photo and its mirror image as
    the batch's two views of each item, one of them a view `view_share` of the time.
    `n_main`: rows from there on come from extra catalogs; each epoch shows a
    `cfg.extra_weight` share of them (drawn anew each epoch) and every main row."""
    import torch

    from taggers.offline import Heads

    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    heads = Heads(heads_cfg)
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_main = len(img_f) if n_main is None else n_main
    n_extra = round((len(img_f) - n_main) * min(1.0, cfg.extra_weight))
    n = n_main + n_extra
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    look_keys = torch.from_numpy(look_codes(caps, cfg.look_fields))
    # Copies into torch-allocated (aligned) memory: MKL results may otherwise depend on alignment.
    imgs = torch.tensor(img_f)
    mirr = torch.tensor(img_m) if img_m is not None else None
    # With random views: (view, item, feature), view 0 the photo and 1 its mirror image.
    every = torch.stack([imgs, imgs if mirr is None else mirr, *map(torch.tensor, views)]) if views else None
    txts = torch.tensor(txt_f)
    loss_val = float("nan")
    for epoch in range(cfg.epochs):
        heads.train()
        perm = np.random.permutation(n)
        if n_main + n_extra < len(img_f):  # a fresh draw of the extra rows for this epoch
            drawn = n_main + np.random.permutation(len(img_f) - n_main)[:n_extra]
            perm = np.concatenate([np.arange(n_main), drawn])[perm]
        losses = []
        for s in range(steps_per_epoch):
            items = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            cand = sample_captions(caps, items, cfg.caption_weights, rng)
            if every is not None:
                a = pick_views(len(items), len(every), share=view_share)
                b = pick_views(len(items), len(every), exclude=a, share=view_share)
                idx = torch.from_numpy(items)
                x, other = every[torch.from_numpy(a), idx], every[torch.from_numpy(b), idx]
            else:
                x = other = imgs[items]
                if mirr is not None:
                    flip = torch.from_numpy(np.random.rand(len(items)) < 0.5)[:, None]
                    x, other = torch.where(flip, mirr[items], x), torch.where(flip, x, mirr[items])
            loss = batch_loss(heads, x, lambda: other, items, cand, caps, txts, look_keys, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        loss_val = float(np.mean(losses))
        progress(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_val:.4f}, scale {heads.scale():.1f}")
    heads.eval()
    return heads, loss_val

