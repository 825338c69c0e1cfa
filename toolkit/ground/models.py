"""Records that cross module lines: what connectors yield, taggers emit, the store keeps and search returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

MediaKind = Literal["image", "video"]


@dataclass(frozen=True)
class MediaRef:
    """One object at a source, before it is read.

    `uri` is absolute (file:///..., s3://bucket/key); `key` is the path relative to the
    source root, which is what a catalog CSV names. `fingerprint` is a cheap change marker
    the connector can give without reading the bytes (S3 ETag, or size+mtime locally).
    """

    uri: str
    key: str
    size: int | None = None
    fingerprint: str | None = None

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Box:
    """A bounding box in fractions of the image's width and height."""

    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class Tag:
    """One label from one provider. `start`/`end` are seconds for video segments."""

    group: str
    label: str
    confidence: float
    provider: str
    start: float | None = None
    end: float | None = None
    box: Box | None = None


@dataclass
class Frame:
    """A decoded picture of a media item: the image itself, or a sampled video frame."""

    image: Image.Image
    timestamp: float | None = None


@dataclass
class Media:
    """A media item read and decoded: its bytes, kind, content hash and frames."""

    ref: MediaRef
    data: bytes
    kind: MediaKind
    sha256: str
    mime: str
    frames: list[Frame] = field(default_factory=list)
    duration: float | None = None
    # Filled by the pipeline: one row per frame, L2-normalised.
    embeddings: np.ndarray | None = None
    # Filled too when the embedder gives them and has tag classifiers to read them: the image
    # features behind each embedding row.
    features: np.ndarray | None = None


@dataclass
class TagResult:
    """What one tagger says about one media item: media-level tags and, for video, per-frame tags."""

    ref: MediaRef
    provider: str
    tags: list[Tag] = field(default_factory=list)
    frame_tags: dict[int, list[Tag]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Product:
    """A catalog row: what a media item shows and where to buy it."""

    product_id: str
    title: str
    price: float | None = None
    currency: str | None = None
    url: str | None = None
    media: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Hit:
    """One search result: a product (or bare media item) and the media that matched."""

    product_id: str | None
    title: str | None
    price: float | None
    currency: str | None
    url: str | None
    score: float
    tags: dict[str, str]
    media_uri: str
    timestamp: float | None
    media_id: str
    kind: MediaKind = "image"
    attributes: dict[str, str] = field(default_factory=dict)
    #: The media's key relative to its source (`images/10001.jpg`, the S3 key under the prefix):
    #: what a client can show or match, where `media_uri` is the server's own address.
    media_key: str = ""
    #: Where the catalog states a tag group's value (its colour, article type, gender): that value,
    #: shown beside the model's in `tags`. A filter on the group matches either.
    catalog_tags: dict[str, str] = field(default_factory=dict)


@dataclass
class ItemFailure:
    uri: str
    reason: str


@dataclass
class RunReport:
    """What one `tag` run did. Every listed item ended in exactly one bucket."""

    source: str
    new: int = 0
    updated: int = 0
    #: Unchanged stored items tagged again because a tagger changed since (`tag --retag`).
    retagged: int = 0
    unchanged: int = 0
    #: Of the unchanged items, those tagged by an earlier version of a tagger of the run
    #: (the local model before its weights, classifiers, vocabulary or threshold changed):
    #: `--retag` refreshes them.
    outdated: int = 0
    skipped: list[ItemFailure] = field(default_factory=list)
    failed: list[ItemFailure] = field(default_factory=list)
    records_written: int = 0
    taggers: dict[str, int] = field(default_factory=dict)
    #: Per cloud service: calls, retries, throttled, busiest second against the configured rate.
    services: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        return self.new + self.updated + self.retagged
