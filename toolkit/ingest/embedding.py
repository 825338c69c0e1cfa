"""Embedding decoded media: every frame of a group of items in the embedder's batches."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

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
        pairs = [embedder.embed_images_with_features(b) for b in batches]  # type: ignore[attr-defined]
        vecs, feats = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    else:
        vecs = np.concatenate([embedder.embed_images(b) for b in batches])
    pos = 0
    for m in medias:
        m.embeddings = vecs[pos:pos + len(m.frames)]
        if feats is not None:
            m.features = feats[pos:pos + len(m.frames)]
        pos += len(m.frames)


def wants_features(embedder: "Embedder") -> bool:
    """Whether the embedder gives image features and has classifiers that read them."""
    tag_heads = getattr(embedder, "tag_heads", None)
    return callable(getattr(embedder, "embed_images_with_features", None)) and callable(tag_heads) \
        and tag_heads() is not None
