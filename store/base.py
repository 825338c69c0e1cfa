"""What the core may ask of a store: `VectorStore` (one collection: records keyed by stable ids,
nearest-neighbour queries with filters) and `StoreBackend` (opening collections and managing them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from contextlib import AbstractContextManager
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

    name: str
    model_id: str
    dim: int

    @property
    def collection_id(self) -> str:
        """The backend's id of the collection: one dropped and made again under its name gets a new one."""

    def upsert(self, records: Sequence[Record]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Merge keys into records' metadata."""

    def replace_metadata(self, records: Sequence[Record]) -> None:
        """Rewrite records' metadata whole (their vectors stay)."""

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include_embeddings: bool = False) -> list[Record]: ...

    def iter_metadata(self, where: dict | None = None, batch: int = 5000) -> Iterator[tuple[str, Metadata]]: ...

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[Match]: ...

    def count(self) -> int: ...

    def recent_count(self) -> int:
        """count(), at most about a second old: what a query path may use."""

    def warm_filter_index(self) -> None:
        """For a long-lived process: make filtered queries fast from the first (a no-op where
        the backend filters fast on its own)."""

    #: How the machines that wrote it computed its vectors (precision, CPU), oldest first.
    @property
    def made_with(self) -> list[str]: ...

    def note_made_with(self, line: str) -> None: ...


@dataclass
class CollectionStat:
    """A collection as the backend lists it."""

    name: str
    model_id: str | None
    dim: int | None
    count: int


@runtime_checkable
class StoreBackend(Protocol):
    """Where the collections live (one Chroma folder or server): the one way the rest of the
    toolkit opens and manages them."""

    def open(self, name: str, *, model_id: str, dim: int, create: bool = True,
             filterable: Any = None, build_index: bool = True) -> VectorStore:
        """The collection, made if `create` and missing; refuses one built by another model.
        `filterable`: the metadata the filter index keeps (default: every key); `build_index`:
        False for a one-shot process (use a saved index or the store's own filtering)."""

    def collections(self) -> list[CollectionStat]: ...

    def exists(self, name: str) -> bool: ...

    def drop(self, name: str) -> bool:
        """Delete a collection and everything kept beside it (its filter index and change log);
        False when there is none by that name. No checks: see store.collections.drop for those."""

    def rename(self, name: str, new_name: str) -> None: ...

    def describe_location(self) -> str: ...

    def hosting(self) -> AbstractContextManager[None]:
        """For a long-lived process: share the store with other processes while it runs."""

    def release(self) -> None:
        """Give the store back to other processes now (a one-shot command that is done with it)."""
