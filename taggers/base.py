"""Protocols for embedders (media and text to vectors) and taggers (media to tags).

What the core may ask of an embedder or a tagger is declared here, so a new backend knows what
to provide. The optional parts are their own protocols (checked with isinstance), not names
probed with getattr: an embedder that reads its vectors from features that classifiers can read
too is a `FeatureEmbedder`; one that can say how this machine computes its vectors is a
`TracedEmbedder`. Taggers get their optional parts' defaults from `TaggerBase`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from toolkit.ground.models import Media, TagResult

if TYPE_CHECKING:
    from taggers.offline.tag_heads import TagHeads
    from taggers.resilience import CallStats, RateLimiter


@runtime_checkable
class Embedder(Protocol):
    """Images and texts into one vector space; every row L2-normalised, float32."""

    #: Identifies the weights: a collection built with one model_id refuses vectors from another.
    model_id: str
    dim: int

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class FeatureEmbedder(Embedder, Protocol):
    """An embedder whose image vectors come from features that label classifiers read too
    (the offline model's): one forward pass gives both."""

    #: Identifies the classifiers: part of the local tagger's version.
    tags_id: str

    def embed_images_with_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]: ...

    def tag_heads(self) -> "TagHeads | None": ...


@runtime_checkable
class TracedEmbedder(Protocol):
    """An embedder that can say how this machine computes its image vectors (precision, CPU);
    a tag run records it on the collection it writes."""

    def provenance(self) -> str | None: ...


@runtime_checkable
class ScaledEmbedder(Protocol):
    """An embedder that knows the temperature its image-text similarities were trained with
    (CLIP's logit scale); label probabilities use it."""

    @property
    def logit_scale(self) -> float: ...


def wants_features(embedder: Embedder) -> bool:
    """Whether the embedder gives image features and has classifiers that read them."""
    return isinstance(embedder, FeatureEmbedder) and embedder.tag_heads() is not None


def provenance_of(embedder: Embedder) -> str | None:
    return embedder.provenance() if isinstance(embedder, TracedEmbedder) else None


@runtime_checkable
class Tagger(Protocol):
    name: ClassVar[str]
    #: Media kinds this tagger handles: {"image"}, {"video"} or both.
    media_types: ClassVar[frozenset[str]]
    #: Runs after the embedder filled media.embeddings (the local tagger reads them).
    needs_embeddings: ClassVar[bool]
    #: What a --dry-run counts and prices: "item", "image", "minute"; USD per unit.
    billing_unit: ClassVar[str]
    unit_price_usd: ClassVar[float]
    #: A cloud tagger's call counters and rate limiter, for the run summary; None for local ones.
    stats: "CallStats | None"
    limiter: "RateLimiter | None"

    @property
    def version(self) -> str | None:
        """What decides its tags, stored with them so `tag --retag` finds older ones; None: unversioned."""
        ...

    def tag(self, items: Sequence[Media]) -> Iterator[TagResult]:
        """One TagResult per item, in any order. A per-item failure is a TagResult with `error`
        set; a failure that dooms every item (bad key) raises FatalTaggerError."""
        ...

    def billable_units(self, media: Media) -> float: ...

    def describe(self, media: Media) -> str:
        """What a --dry-run says it would send for this item ("" for nothing to say)."""
        ...



class TaggerBase:
    """Defaults for a Tagger's optional parts: a local, free, unversioned tagger, one unit per item."""

    needs_embeddings: ClassVar[bool] = False
    billing_unit: ClassVar[str] = "item"
    unit_price_usd: ClassVar[float] = 0.0
    stats: "CallStats | None" = None
    limiter: "RateLimiter | None" = None

    @property
    def version(self) -> str | None:
        return None

    def billable_units(self, media: Media) -> float:
        return 1.0

    def describe(self, media: Media) -> str:
        return ""

