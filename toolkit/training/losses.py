"""The training objective of the projection heads, for one batch.

CLIP's symmetric InfoNCE with a learnable temperature, extended to several positives per
row: a caption is a positive for every image whose attributes it names, so "Men Black
Casual Shoes" does not push apart two pairs of men's black casual shoes in one batch. Plus
a per-group label loss (what the tagger decides) and an image-image loss (photos of the
same look pulled together, so photo search returns look-alikes).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from toolkit.training.captions import FIELDS, Captions
from toolkit.training.config import TrainConfig


def multi_positive_clip_loss(img, txt, scale, match, ignore):
    """Symmetric InfoNCE where row i's target is spread evenly over every caption that matches
    image i (and vice versa); `ignore` pairs (attribute unknown) count neither way."""
    import torch

    logits = (img @ txt.T) * scale
    logits = logits.masked_fill(ignore, float("-inf"))
    target = match.float()
    lp_i = torch.log_softmax(logits, dim=1).masked_fill(ignore, 0.0)
    lp_t = torch.log_softmax(logits, dim=0).masked_fill(ignore, 0.0)
    loss_i = -(target * lp_i).sum(1) / target.sum(1)
    loss_t = -(target * lp_t).sum(0) / target.sum(0)
    return (loss_i.mean() + loss_t.mean()) / 2


def group_label_loss(img, txt_all, scale, caps: Captions, items: np.ndarray, heads):
    """Mean over vocabulary groups of the cross-entropy of each image against all of its group's
    label prompts: exactly the choice the tagger makes, so this trains the tagger directly."""
    import torch

    losses = []
    for text_idx, item_label in caps.groups.values():
        y = torch.from_numpy(item_label[items])
        if bool((y >= 0).any()):
            labels = heads.encode_text(txt_all[torch.from_numpy(text_idx)])
            losses.append(torch.nn.functional.cross_entropy((img @ labels.T) * scale, y, ignore_index=-1))
    return torch.stack(losses).mean() if losses else img.sum() * 0


def same_look_loss(views, keys, temperature: float):
    """Supervised contrastive loss over the images' two views (photo and mirror image):
    positives of an anchor are every other view with the same (article type, colour) key."""
    import torch

    z = torch.cat(views)
    k = torch.cat([keys] * len(views))
    sims = (z @ z.T) / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    sims = sims.masked_fill(self_mask, float("-inf"))
    pos = (k[:, None] == k[None, :]) & ~self_mask
    logp = torch.log_softmax(sims, dim=1).masked_fill(self_mask, 0.0)
    return (-(logp * pos).sum(1) / pos.sum(1).clamp(min=1)).mean()


def match_matrix(item_codes: np.ndarray, req: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B images x B captions): does each caption describe each image, and is it unknowable."""
    it = item_codes[:, None, :]
    rq = req[None, :, :]
    named = rq >= 0
    match = (~named | (it == rq)).all(-1)
    ignore = (named & (it < 0)).any(-1) & ~match
    return match, ignore


def look_codes(caps: Captions, fields: Iterable[str] = ("article_type", "colour")) -> np.ndarray:
    """One code per item for its (article type, colour, ...) values; items missing any get a code of their own."""
    pairs = caps.item_codes[:, [FIELDS.index(f) for f in fields]]
    codes = np.zeros(len(pairs), dtype=np.int64)
    for col in pairs.T:
        codes = codes * 100_000 + col
    unknown = (pairs < 0).any(axis=1)
    codes[unknown] = -1 - np.arange(int(unknown.sum()))
    return codes


def batch_loss(heads, x, other, items: np.ndarray, cand: np.ndarray, caps: Captions, txts, look_keys,
               cfg: TrainConfig):
    """The training objective for one batch: image-caption InfoNCE, plus the per-group label loss
    and the image-image loss (`other()` gives the batch's other view, only computed when needed)."""
    import torch

    match, ignore = match_matrix(caps.item_codes[items], caps.cap_req[cand])
    img = heads.encode_image(x)
    scale = heads.logit_scale.exp().clamp(max=100.0)
    loss = multi_positive_clip_loss(img, heads.encode_text(txts[caps.cap_text[cand]]), scale,
                                    torch.from_numpy(match), torch.from_numpy(ignore))
    if cfg.group_loss:
        loss = loss + cfg.group_loss * group_label_loss(img, txts, scale, caps, items, heads)
    if cfg.image_loss:
        loss = loss + cfg.image_loss * same_look_loss([img, heads.encode_image(other())], look_keys[items],
                                                      cfg.image_temperature)
    return loss

