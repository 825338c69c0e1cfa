"""Content picks: a shopper's profile is the mean of the store's vectors of what they bought and viewed,
weighted by recency, and every product is scored by its similarity to it. This reaches products
nobody has bought yet, which CF cannot.

A product's vector is its photos' mean image vector, joined with its title's text vector where the
catalog was imported (the products collection keeps one per product): each half unit length, the
whole scaled back to unit length, so the similarity of two products is the mean of their photos'
and their titles' similarities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from store.base import VectorStore


@dataclass
class ItemVectors:
    """One L2-normalised vector per product, from the model `model_id`."""

    ids: list[str]
    matrix: np.ndarray
    model_id: str

    def aligned(self, index: dict[str, int], size: int) -> np.ndarray:
        """Rows in the order of `index` (an item -> row map); zeros for products without a vector."""
        out = np.zeros((size, self.matrix.shape[1]), dtype=np.float32)
        for row, item in enumerate(self.ids):
            if item in index:
                out[index[item]] = self.matrix[row]
        return out


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1)).astype(np.float32)


def from_store(store: "VectorStore", products: "VectorStore | None" = None) -> ItemVectors | None:
    """The mean image vector of each product's media in the store, joined with its title's vector from
    `products` (the catalog's collection: one text vector per product) where that holds any (`joined`).
    None when no media names a product."""
    sums: dict[str, np.ndarray] = {}
    for record in store.get(include_embeddings=True):
        product = record.metadata.get("product_id")
        if product and record.embedding.size:
            sums[str(product)] = sums.get(str(product), 0) + record.embedding
    if not sums:
        return None
    ids = sorted(sums)
    images = ItemVectors(ids, normalise_rows(np.stack([sums[i] for i in ids])), store.model_id)
    titles = [(r.id, r.embedding) for r in products.get(include_embeddings=True)] if products is not None else []
    if not titles:
        return images
    texts = ItemVectors([i for i, _ in titles], normalise_rows(np.stack([v for _, v in titles])), store.model_id)
    return joined(images, texts)


def joined(images: ItemVectors, texts: ItemVectors) -> ItemVectors:
    """Each product's image and text vectors side by side, over the products either names; a product
    with only one of them keeps a zero half, so it is matched on what it has, at half strength."""
    ids = sorted(set(images.ids) | set(texts.ids))
    index = {item: row for row, item in enumerate(ids)}
    both = np.hstack([images.aligned(index, len(ids)), texts.aligned(index, len(ids))]) / np.sqrt(2)
    return ItemVectors(ids, both.astype(np.float32), images.model_id)


def profile_scores(content: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Similarity of every row of `content` to the weighted mean of the rows `cols`."""
    profile = weights.astype(np.float32) @ content[cols]
    norm = float(np.linalg.norm(profile))
    if norm == 0:
        return np.zeros(content.shape[0], dtype=np.float32)
    return content @ (profile / norm)


def closest(content: np.ndarray, cols: np.ndarray, items: np.ndarray) -> np.ndarray:
    """For each of `items`, the row of `cols` most like it."""
    return cols[np.argmax(content[cols] @ content[items].T, axis=0)]
