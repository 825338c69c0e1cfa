"""Text or image -> vector -> store query -> products with their links.

One search function serves the Python API, the CLI and the HTTP API, so a query gives the
same result whichever way it comes in.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from toolkit.ground.errors import NotFoundError, QueryError, shown
from toolkit.search.filters import Where, to_chroma_where
from toolkit.media.decode import decode_image
from toolkit.ground.models import Hit
from toolkit.search.ranking import query_words, rerank
from toolkit.records import hit_from_metadata
from toolkit.ground.settings import default_of

if TYPE_CHECKING:
    from store.base import VectorStore
    from taggers.base import Embedder

MAX_K = 200
#: Hybrid ranking re-ranks the products among this many nearest records (at least 4 x k), so an
#: exact word can lift a product from well below the top k. Each record read costs about
#: 0.25 ms of metadata (bench/api_latency.py), so this is a latency budget as much as a depth.
HYBRID_RECORDS = 100
DEFAULT_HYBRID_WEIGHT: float = default_of("hybrid_weight")


ImageQuery = str | Path | bytes | Image.Image
#: Query photos are shrunk to this side as they are decoded: the model sees 224 px, and a
#: 49-megapixel upload then holds 4 MP, not 147 MB, while its query is embedded.
QUERY_MAX_SIDE = 2048


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
        return decode_image(bytes(image), name="query image", max_side=QUERY_MAX_SIDE)
    path = Path(image).expanduser()
    if not path.is_file():
        raise QueryError(f"{path}: no such image file; check the path")
    return decode_image(path.read_bytes(), name=str(path), max_side=QUERY_MAX_SIDE)


def validate_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k={k} is out of range; use 1 to {MAX_K}")


def group_key(meta: dict) -> str:
    """Results are products: several photos or frames of one product count once."""
    return f"p:{meta['product_id']}" if meta.get("product_id") else f"m:{meta.get('media_id')}"


def search_vector(store: "VectorStore", vector: np.ndarray, k: int = 10, where: Where = None,
                  min_score: float | None = None, exclude: set[str] | None = None) -> list[Hit]:
    validate_k(k)
    hits = nearest_products(store, vector, k, where, exclude)[:k]
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return hits


def nearest_products(store: "VectorStore", vector: np.ndarray, k: int, where: Where = None,
                     exclude: set[str] | None = None, records: int | None = None) -> list[Hit]:
    """The nearest products (best record per product), best first: all those among the nearest
    `records` records (default 4 x k), and more records are read until there are at least k."""
    chroma_where = to_chroma_where(where)
    # Chroma's count() scans the collection (4.8 ms at 100k records): use the store's recent one.
    total = getattr(store, "recent_count", store.count)()
    n = min(total, max(records or 0, k * 4))
    while True:
        matches = store.query(vector, n, where=chroma_where)
        hits = _best_per_group(matches, exclude or set())
        if len(hits) >= k or n >= total or len(matches) < n:
            break
        n = min(total, n * 4)
    return hits


def _best_per_group(matches, exclude: set[str]) -> list[Hit]:
    best: dict[str, Hit] = {}
    for m in matches:  # already sorted by score, best first
        key = group_key(m.metadata)
        if key in best or key in exclude:
            continue
        best[key] = hit_from_metadata(m.metadata, m.score)
    return list(best.values())


def search(embedder: "Embedder", store: "VectorStore", *, text: str | None = None,
           image: ImageQuery | None = None, k: int = 10, where: Where = None,
           min_score: float | None = None, hybrid_weight: float = DEFAULT_HYBRID_WEIGHT) -> list[Hit]:
    """Products for a text, an image or both. When the text has words, exact word matches
    re-rank the nearest candidates (toolkit.search.ranking); min_score applies to the final score."""
    validate_k(k)
    to_chroma_where(where)  # a bad filter fails before the model loads
    vector = query_vector(embedder, text=text, image=image)
    if hybrid_weight <= 0 or not query_words(text):
        return search_vector(store, vector, k=k, where=where, min_score=min_score)
    pool = nearest_products(store, vector, k, where, records=HYBRID_RECORDS)
    hits = rerank(pool, text, hybrid_weight)[:k]
    return [h for h in hits if min_score is None or h.score >= min_score]


def more_like_this(store: "VectorStore", id: str, k: int = 10, where: Where = None,
                   min_score: float | None = None) -> list[Hit]:
    """Products like a product (by product id) or a media item (by media id) already in the store.

    The query is the mean of the item's stored vectors (every photo of a product, every kept
    frame of a video), so no model runs; the item's own product is left out of the results.
    """
    validate_k(k)
    to_chroma_where(where)
    records = store.get(where={"$or": [{"product_id": id}, {"media_id": id}]}, include_embeddings=True)
    if not records:
        raise NotFoundError(f"no product or media with id {shown(id)} in the store; "
                            "use a product_id or media_id from a search result")
    v = np.mean([r.embedding for r in records], axis=0)
    vector = (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)
    exclude = {group_key(r.metadata) for r in records}
    return search_vector(store, vector, k=k, where=where, min_score=min_score, exclude=exclude)
