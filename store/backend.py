"""Chroma behind the `StoreBackend` protocol (store/base.py): the one public way to open stores
and manage collections, so that nothing outside store/ needs a Chroma client.

    backend = ChromaBackend(settings)
    store = backend.open("catalog", model_id=embedder.model_id, dim=embedder.dim)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from store import chroma_client
from store.base import CollectionStat, recorded_model_id
from store.chroma import ChromaStore
from store.filter_index import Filterable
from store.index_files import IndexFiles

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from toolkit.ground.settings import Settings


class ChromaBackend:
    """An embedded Chroma folder (shared between processes, store/owner.py) or a Chroma server."""

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings

    @property
    def client(self):
        return chroma_client.client_for(self.settings)

    @property
    def location(self) -> Path | None:
        """The embedded folder, absolute (None on a Chroma server)."""
        return chroma_client.embedded_path(self.settings)

    def open(self, name: str, *, model_id: str, dim: int, create: bool = True,
             filterable: Filterable | None = None, build_index: bool = True) -> ChromaStore:
        return ChromaStore.open(self.settings, name, model_id=model_id, dim=dim, create=create,
                                filterable=filterable, build_index=build_index)

    def _get(self, name: str):
        from chromadb.errors import NotFoundError

        try:
            return self.client.get_collection(name=name, embedding_function=None)
        except (NotFoundError, ValueError):
            return None

    def exists(self, name: str) -> bool:
        return self._get(name) is not None

    def collections(self) -> list[CollectionStat]:
        out = []
        for col in self.client.list_collections():
            meta = col.metadata or {}
            dim = meta.get("dim")
            out.append(CollectionStat(col.name, recorded_model_id(meta), int(dim) if dim is not None else None,
                                      col.count()))
        return out

    def drop(self, name: str) -> bool:
        col = self._get(name)
        if col is None:
            return False
        self.client.delete_collection(name)
        folder = chroma_client.filter_index_dir(self.location, col.id)
        if folder is not None:
            IndexFiles(folder).remove()  # the filter index (about 1 KB a record) and its log go with it
        return True

    def rename(self, name: str, new_name: str) -> None:
        """The filter index is kept by collection id: it follows the collection."""
        from toolkit.ground.errors import StoreError

        col = self._get(name)
        if col is None:
            raise StoreError(f"no collection named '{name}' in the store; `toolkit collections list` shows them")
        col.modify(name=new_name)

    def describe_location(self) -> str:
        return chroma_client.describe_location(self.settings)

    def hosting(self) -> "AbstractContextManager[None]":
        return chroma_client.hosting(self.settings)

    def release(self) -> None:
        chroma_client.release(self.settings)



