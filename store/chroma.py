"""Chroma as the vector store: embedded PersistentClient by default, a Chroma server when host and port are set.

Each collection records the embedding model and dimension that built it, and refuses
vectors from any other model: mixing spaces would make every score meaningless.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from store.base import Match, Metadata, Record
from toolkit.errors import ModelMismatchError, StoreError

if TYPE_CHECKING:
    from toolkit.settings import Settings

#: Chroma 1.5 refuses add/upsert batches above 5,461 records.
MAX_BATCH = 5000
SCHEMA_VERSION = 1
#: Chroma's defaults recall poorly (0.16 recall@10 on 50k vectors); these are measured in bench/recall.py.
HNSW = {"space": "cosine", "ef_search": 400, "ef_construction": 200, "max_neighbors": 32}

_clients: dict[tuple, Any] = {}


def client_for(settings: "Settings"):
    """One client per location per process: Chroma's embedded client dislikes being opened twice."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.uses_chroma_server:
        key = ("http", settings.chroma_host, settings.chroma_port)
        if key not in _clients:
            try:
                _clients[key] = chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port,
                                                    settings=chroma_settings)
                _clients[key].heartbeat()
            except Exception as exc:
                _clients.pop(key, None)
                raise StoreError(f"cannot reach the Chroma server at {settings.chroma_host}:{settings.chroma_port} "
                                 f"({type(exc).__name__}); start it or unset TOOLKIT_CHROMA_HOST") from exc
        return _clients[key]
    path = settings.resolved_chroma_path.expanduser().resolve()
    key = ("path", str(path))
    if key not in _clients:
        path.mkdir(parents=True, exist_ok=True)
        _clients[key] = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
    return _clients[key]


def describe_location(settings: "Settings") -> str:
    if settings.uses_chroma_server:
        return f"chroma server {settings.chroma_host}:{settings.chroma_port}"
    return f"embedded chroma at {settings.resolved_chroma_path}"


class ChromaStore:
    """One Chroma collection; implements store.base.VectorStore."""

    def __init__(self, collection, model_id: str, dim: int) -> None:
        self._col = collection
        self.model_id = model_id
        self.dim = dim
        self.name = collection.name

    @classmethod
    def open(cls, settings: "Settings", name: str, *, model_id: str, dim: int,
             create: bool = True) -> "ChromaStore":
        client = client_for(settings)
        meta = {"model_id": model_id, "dim": dim, "schema": SCHEMA_VERSION}
        try:
            col = client.get_collection(name=name, embedding_function=None)
        except Exception:
            if not create:
                raise StoreError(f"no collection named '{name}' in the store; run `toolkit tag SOURCE` first")
            col = client.get_or_create_collection(name=name, metadata=meta, embedding_function=None,
                                                  configuration={"hnsw": dict(HNSW)})
        cls._check_model(col, model_id, dim)
        return cls(col, model_id, dim)

    @staticmethod
    def _check_model(col, model_id: str, dim: int) -> None:
        meta = col.metadata or {}
        built_by, built_dim = meta.get("model_id"), meta.get("dim")
        if built_by != model_id or (built_dim is not None and int(built_dim) != dim):
            raise ModelMismatchError(
                f"collection '{col.name}' was built by model {built_by} (dim {built_dim}), "
                f"but the model in use is {model_id} (dim {dim}); set TOOLKIT_COLLECTION to a new name "
                f"and run `toolkit tag` again, or switch TOOLKIT_MODEL back to the one that built it")

    def upsert(self, records: Sequence[Record]) -> None:
        for start in range(0, len(records), MAX_BATCH):
            chunk = records[start:start + MAX_BATCH]
            for r in chunk:
                if r.embedding.shape[-1] != self.dim:
                    raise ModelMismatchError(
                        f"record {r.id} has a {r.embedding.shape[-1]}-d vector but collection "
                        f"'{self.name}' holds {self.dim}-d vectors from {self.model_id}")
            kwargs = dict(ids=[r.id for r in chunk],
                          embeddings=np.stack([r.embedding for r in chunk]).astype(np.float32),
                          metadatas=[_clean(r.metadata) for r in chunk])
            if any(r.document is not None for r in chunk):
                kwargs["documents"] = [r.document or "" for r in chunk]
            self._col.upsert(**kwargs)

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            self._col.delete(ids=list(ids[start:start + MAX_BATCH]))

    def get(self, ids: Sequence[str] | None = None, where: dict | None = None,
            include_embeddings: bool = False) -> list[Record]:
        include = ["metadatas", "documents"] + (["embeddings"] if include_embeddings else [])
        res = self._col.get(ids=list(ids) if ids is not None else None, where=where or None, include=include)
        embs = res.get("embeddings") if include_embeddings else None
        docs = res.get("documents") or [None] * len(res["ids"])
        return [Record(id=i, embedding=np.asarray(embs[n], dtype=np.float32) if embs is not None else np.empty(0),
                       metadata=dict(res["metadatas"][n] or {}), document=docs[n])
                for n, i in enumerate(res["ids"])]

    def iter_metadata(self, where: dict | None = None, batch: int = 5000) -> Iterator[tuple[str, Metadata]]:
        offset = 0
        while True:
            res = self._col.get(where=where or None, include=["metadatas"], limit=batch, offset=offset)
            for i, m in zip(res["ids"], res["metadatas"]):
                yield i, dict(m or {})
            if len(res["ids"]) < batch:
                return
            offset += batch

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[Match]:
        n = min(k, max(self.count(), 0))
        if n == 0:
            return []
        res = self._col.query(query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=n,
                              where=where or None, include=["metadatas", "distances"])
        return [Match(id=i, score=1.0 - float(d), metadata=dict(m or {}))
                for i, d, m in zip(res["ids"][0], res["distances"][0], res["metadatas"][0])]

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            self._col.update(ids=list(ids[start:start + MAX_BATCH]),
                             metadatas=[_clean(m) for m in metadatas[start:start + MAX_BATCH]])

    def replace_metadata(self, records: Sequence[Record]) -> None:
        """Rewrite records' metadata whole (update merges keys; removed keys must go too)."""
        full = self.get(ids=[r.id for r in records], include_embeddings=True)
        by_id = {r.id: r for r in records}
        self.upsert([Record(id=f.id, embedding=f.embedding, metadata=by_id[f.id].metadata, document=f.document)
                     for f in full])

    def count(self) -> int:
        return self._col.count()


def _clean(meta: Metadata) -> Metadata:
    """Chroma takes str/int/float/bool and non-empty lists of those; drop the rest."""
    out: Metadata = {}
    for k, v in meta.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            if v:
                out[k] = list(v)
        elif isinstance(v, (str, int, float, bool)):
            out[k] = v
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = str(v)
    return out
