"""Embedding decoded media: every frame of a group of items in the embedder's batches."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from taggers.base import Embedder
    from toolkit.models import Media


def embed_media(embedder: "Embedder", medias: Sequence["Media"], batch_size: int) -> None:
    """Set `embeddings` on each item, one row per frame, batching frames across items."""
    frames = [f.image for m in medias for f in m.frames]
    if not frames:
        return
    vecs = np.concatenate([embedder.embed_images(frames[i:i + batch_size])
                           for i in range(0, len(frames), batch_size)])
    pos = 0
    for m in medias:
        m.embeddings = vecs[pos:pos + len(m.frames)]
        pos += len(m.frames)
