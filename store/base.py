"""The VectorStore protocol: records keyed by stable ids, nearest-neighbour queries with filters."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

Metadata = dict[str, Any]
#: Collections made before the image backbone's precision was checked per machine recorded the
#: int8 backbone in their model id; its vectors are the same model's, so the suffix is dropped.
LEGACY_PRECISION_SUFFIX = "-int8"


def recorded_model_id(meta: Metadata | None) -> str | None:
    """The model id a collection's metadata records, in today's form."""
    model_id = (meta or {}).get("model_id")
    if isinstance(model_id, str) and model_id.endswith(LEGACY_PRECISION_SUFFIX):
        return model_id[: -len(LEGACY_PRECISION_SUFFIX)]
    return model_id


@dataclass
class Record:
    id: str
    embedding: np.ndarray
    metadata: Metadata = field(default_factory=dict)
    document: str | None = None


@dataclass
class Match:
    id: str
    score: float  # cosine similarity, higher is closer
    metadata: Metadata


@runtime_checkable
class VectorStore(Protocol):
    """One collection of vectors built by one embedding model."""

    def upsert(self, records: Sequence[Record]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include_embeddings: bool = False) -> list[Record]: ...

    def iter_metadata(self, where: dict | None = None, batch: int = 5000) -> Iterator[tuple[str, Metadata]]: ...

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[Match]: ...

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None: ...

    def count(self) -> int: ...

    #: How the machines that wrote it computed its vectors (precision, CPU), oldest first.
    made_with: list[str]

    def note_made_with(self, line: str) -> None: ...
