"""Text or image -> vector -> store query -> products with their links.

One search function serves the Python API, the CLI and the HTTP API, so a query gives the
same result whichever way it comes in.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from toolkit.errors import QueryError
from toolkit.filters import Where, to_chroma_where
from toolkit.media import decode_image
from toolkit.models import Hit
from toolkit.records import hit_from_metadata

if TYPE_CHECKING:
    from store.chroma import ChromaStore
    from taggers.base import Embedder

MAX_K = 200


ImageQuery = str | Path | bytes | Image.Image


def query_vector(embedder: "Embedder", text: str | None = None,
                 image: ImageQuery | None = None) -> np.ndarray:
    """One L2-normalised vector for a text, an image, or both (their normalised sum)."""
    vecs = []
    if text is not None and text.strip():
        vecs.append(embedder.embed_texts([text.strip()])[0])
    if image is not None:
        picture = image if isinstance(image, Image.Image) else load_query_image(image)
        vecs.append(embedder.embed_images([picture])[0])
    if not vecs:
        raise QueryError("nothing to search for; give a text query, an image, or both")
    v = np.sum(vecs, axis=0)
    return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)


def load_query_image(image: ImageQuery) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image), name="query image")
    path = Path(image).expanduser()
    if not path.is_file():
        raise QueryError(f"{path}: no such image file; check the path")
    return decode_image(path.read_bytes(), name=str(path))


def validate_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k={k} is out of range; use 1 to {MAX_K}")


def group_key(meta: dict) -> str:
    """Results are products: several photos or frames of one product count once."""
    return f"p:{meta['product_id']}" if meta.get("product_id") else f"m:{meta.get('media_id')}"


def search_vector(store: "ChromaStore", vector: np.ndarray, k: int = 10, where: Where = None,
                  min_score: float | None = None, exclude: set[str] | None = None) -> list[Hit]:
    validate_k(k)
    chroma_where = to_chroma_where(where)
    total = store.count()
    n = min(total, k * 4)
    while True:
        matches = store.query(vector, n, where=chroma_where)
        hits = _best_per_group(matches, exclude or set())
        if len(hits) >= k or n >= total or len(matches) < n:
            break
        n = min(total, n * 4)
    hits = hits[:k]
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return hits


def _best_per_group(matches, exclude: set[str]) -> list[Hit]:
    best: dict[str, Hit] = {}
    for m in matches:  # already sorted by score, best first
        key = group_key(m.metadata)
        if key in best or key in exclude:
            continue
        best[key] = hit_from_metadata(m.metadata, m.score)
    return list(best.values())


def search(embedder: "Embedder", store: "ChromaStore", *, text: str | None = None,
           image: ImageQuery | None = None, k: int = 10, where: Where = None,
           min_score: float | None = None) -> list[Hit]:
    to_chroma_where(where)  # a bad filter fails before the model loads
    vector = query_vector(embedder, text=text, image=image)
    return search_vector(store, vector, k=k, where=where, min_score=min_score)
