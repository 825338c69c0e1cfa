"""Protocols for embedders (media and text to vectors) and taggers (media to tags)."""
from __future__ import annotations

from typing import ClassVar, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from toolkit.ground.models import Media, TagResult


@runtime_checkable
class Embedder(Protocol):
    """Images and texts into one vector space; every row L2-normalised, float32."""

    #: Identifies the weights: a collection built with one model_id refuses vectors from another.
    model_id: str
    dim: int

    # Optional, read with getattr by the pipeline and the local tagger:
    #   embed_images_with_features(images) -> (embeddings, features)  -- the features behind them
    #   tag_heads() -> TagHeads | None  -- label classifiers over those features (taggers/offline/tag_heads.py)
    #   tags_id: str  -- their identity, part of the local tagger's version
    #   provenance() -> str | None  -- how this machine computed its image vectors (precision, CPU),
    #                                  recorded on the collection a tag run writes

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Tagger(Protocol):
    name: ClassVar[str]
    #: Media kinds this tagger handles: {"image"}, {"video"} or both.
    media_types: ClassVar[frozenset[str]]
    # Optional capabilities, read with getattr by the pipeline and the dry run:
    #   needs_embeddings: ClassVar[bool]  -- runs after the embedder filled media.embeddings
    #   stats, limiter                   -- call counters and rate limiter, for the run summary
    #   billing_unit, unit_price_usd, billable_units(media), describe(media)  -- for --dry-run
    #   version: str | None  -- what decides its tags; stored with them, for `tag --retag`

    def tag(self, items: Sequence[Media]) -> Iterator[TagResult]:
        """One TagResult per item, in any order. A per-item failure is a TagResult with `error`
        set; a failure that dooms every item (bad key) raises FatalTaggerError."""
        ...
