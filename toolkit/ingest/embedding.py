"""Embedding decoded media: every frame of a group of items in the embedder's batches."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from taggers.base import wants_features

if TYPE_CHECKING:
    from taggers.base import Embedder
    from toolkit.ground.models import Media


def embed_media(embedder: "Embedder", medias: Sequence["Media"], batch_size: int) -> None:
    """Set `embeddings` on each item, one row per frame, batching frames across items; and
    `features` too where the embedder has tag classifiers to read them."""
    frames = [f.image for m in medias for f in m.frames]
    if not frames:
        return
    batches = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
    feats = None
    if wants_features(embedder):
        pairs = [embedder.embed_images_with_features(b) for b in batches]  # type: ignore[union-attr]
        vecs, feats = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    else:
        vecs = np.concatenate([embedder.embed_images(b) for b in batches])
    pos = 0
    for m in medias:
        m.embeddings = vecs[pos:pos + len(m.frames)]
        if feats is not None:
            m.features = feats[pos:pos + len(m.frames)]
        pos += len(m.frames)
