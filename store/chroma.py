"""Chroma as the vector store: embedded PersistentClient by default, a Chroma server when host and port are set.

Each collection records the embedding model and dimension that built it, and refuses
vectors from any other model: mixing spaces would make every score meaningless.
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from store.base import Match, Metadata, Record
from toolkit.errors import ModelMismatchError, StoreError

if TYPE_CHECKING:
    from store.filtered import FilterIndex
    from toolkit.settings import Settings

#: Chroma 1.5 refuses add/upsert batches above 5,461 records.
MAX_BATCH = 5000
SCHEMA_VERSION = 1
#: Chroma's defaults recall poorly (0.16 recall@10 on 50k vectors); these are measured in bench/recall.py.
HNSW = {"space": "cosine", "ef_search": 400, "ef_construction": 200, "max_neighbors": 32}

_clients: dict[tuple, Any] = {}
#: From this size on, filtered queries go through store.filtered's exact in-memory index:
#: Chroma's own `where` took 29 ms at 50k records and 456 ms at 1M for a 5% filter.
FILTER_INDEX_MIN = 20_000
#: Chroma's count() scans the collection (0.9 ms at 10k records, 4.8 ms at 100k): queries use a
#: count this many seconds old at most. Writes through this store refresh it at once.
COUNT_TTL = 1.0


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
        self.filter_index_min = FILTER_INDEX_MIN
        self._index: "FilterIndex | None" = None
        self._writes = 0  # bumped by every write: an index built across a write is discarded
        self._count_cache: tuple[float, int, int] | None = None  # (time, writes then, count)
        self._building: threading.Thread | None = None
        self._index_lock = threading.Lock()

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
            self._writes += 1
            if self._index is not None:
                self._index.upsert(kwargs["ids"], kwargs["embeddings"], kwargs["metadatas"])

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            self._col.delete(ids=list(ids[start:start + MAX_BATCH]))
        self._writes += 1
        if self._index is not None:
            self._index.delete(ids)

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
        total = self.recent_count()
        n = min(k, max(total, 0))
        if n == 0:
            return []
        index = self._ready_index(total) if where and total >= self.filter_index_min else None
        found = index.query(vector, n, where) if index is not None else None
        if found is not None:
            return self._matches(found)
        res = self._col.query(query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=n,
                              where=where or None, include=["metadatas", "distances"])
        return [Match(id=i, score=1.0 - float(d), metadata=dict(m or {}))
                for i, d, m in zip(res["ids"][0], res["distances"][0], res["metadatas"][0])]

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            self._col.update(ids=list(ids[start:start + MAX_BATCH]),
                             metadatas=[_clean(m) for m in metadatas[start:start + MAX_BATCH]])
        self._writes += 1
        if self._index is not None:
            self._index.update_metadata(list(ids), [_clean(m) for m in metadatas])

    def filter_index(self, total: int | None = None) -> "FilterIndex":
        """The in-memory index for filtered queries (store/filtered.py), built now if it is
        missing or stale, and kept current by this store's own writes afterwards."""
        total = self.count() if total is None else total
        index = self._current(total)
        while index is None:
            self._build_index()
            index = self._current(self.count())
        return index

    def _current(self, total: int) -> "FilterIndex | None":
        """The index if it matches the collection: a count that differs means another process
        wrote (a metadata edit by another process is seen only after a restart)."""
        index = self._index
        return index if index is not None and len(index) == total else None

    def _ready_index(self, total: int) -> "FilterIndex | None":
        """The index if it is ready; otherwise start building it in the background and return
        None, so this query goes to Chroma: a one-shot CLI search never waits for a build
        (tens of seconds at 1M records), a long-lived server gets the index after warm-up."""
        index = self._current(total)
        if index is None:
            with self._index_lock:
                if self._building is None or not self._building.is_alive():
                    self._building = threading.Thread(target=self._build_index, daemon=True,
                                                      name="toolkit-filter-index")
                    self._building.start()
        return index

    def _build_index(self) -> None:
        from store.filtered import build

        writes = self._writes
        index = build(self._iter_records(), self.dim, capacity=max(self.count(), 1024))
        if writes == self._writes:  # else a write raced the build: the next query starts another
            self._index = index

    def _iter_records(self, batch: int = MAX_BATCH) -> Iterator[Record]:
        offset = 0
        while True:
            res = self._col.get(include=["embeddings", "metadatas"], limit=batch, offset=offset)
            for i, e, m in zip(res["ids"], res["embeddings"], res["metadatas"]):
                yield Record(id=i, embedding=np.asarray(e, np.float32), metadata=dict(m or {}))
            if len(res["ids"]) < batch:
                return
            offset += batch

    def _matches(self, found: list[tuple[str, float]]) -> list[Match]:
        """Matches for (id, score) pairs, best first, with their metadata read from Chroma."""
        if not found:
            return []
        res = self._col.get(ids=[i for i, _ in found], include=["metadatas"])
        meta = {i: dict(m or {}) for i, m in zip(res["ids"], res["metadatas"])}
        return [Match(id=i, score=s, metadata=meta[i]) for i, s in found if i in meta]

    def replace_metadata(self, records: Sequence[Record]) -> None:
        """Rewrite records' metadata whole (update merges keys; removed keys must go too)."""
        full = self.get(ids=[r.id for r in records], include_embeddings=True)
        by_id = {r.id: r for r in records}
        self.upsert([Record(id=f.id, embedding=f.embedding, metadata=by_id[f.id].metadata, document=f.document)
                     for f in full])

    def count(self) -> int:
        return self._col.count()

    def recent_count(self) -> int:
        """count(), at most COUNT_TTL seconds old (exact after this store's own writes)."""
        now, cached = time.monotonic(), self._count_cache
        if cached is None or cached[1] != self._writes or now - cached[0] > COUNT_TTL:
            cached = self._count_cache = (now, self._writes, self.count())
        return cached[2]


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
