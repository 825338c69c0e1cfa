"""Chroma as the vector store: one collection behind the `VectorStore` protocol (store/base.py).

Each collection records the embedding model and dimension that built it, and refuses
vectors from any other model: mixing spaces would make every score meaningless.

Filtered queries on large collections go through an exact in-memory filter index
(store/filter_index.py), which every write here keeps current (store/index_keeper.py).
Connections and sharing the store between processes: store/chroma_client.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from store.base import Match, Metadata, Record, recorded_model_id
from store.chroma_client import (client_for, describe_location, embedded_path, filter_index_dir,  # noqa: F401
                                 hosting, release)
from store.filter_index import FilterIndex, Filterable
from store.index_files import Change, IndexFiles
from store.index_keeper import IndexKeeper
from toolkit.ground.errors import ModelMismatchError, StoreError

if TYPE_CHECKING:
    from toolkit.ground.settings import Settings

#: Chroma 1.5 refuses add/upsert batches above 5,461 records.
MAX_BATCH = 5000
#: Distinct machines' precision lines a collection keeps (`note_made_with`).
MADE_WITH_MAX = 8
SCHEMA_VERSION = 1
#: Chroma's defaults recall poorly (0.16 recall@10 on 50k vectors). ef_construction sets the
#: insert cost; ef_search and max_neighbors (M) the recall and query cost. Measured on 100k
#: vectors (bench/search_scale.py --hnsw, and README "Benchmarks"): ef_construction 100 inserts
#: 1.2-1.6x more records per CPU-second than 200, and ef_search 600 on its graph gives the
#: recall and latency that ef_construction 200 with ef_search 400 gave (text queries, same run:
#: synthetic vectors 0.924 vs 0.914, real-embedding vectors 0.958 vs 0.948, within 0.1 ms). Collections keep the
#: configuration they were created with (ef_construction and M cannot change later, and a
#: changed ef_search takes effect when a process next loads the index); new ones get this.
HNSW = {"space": "cosine", "ef_search": 600, "ef_construction": 100, "max_neighbors": 32}
#: From this size on, filtered queries go through the exact in-memory filter index:
#: Chroma's own `where` took 29 ms at 50k records and 456 ms at 1M for a 5% filter.
FILTER_INDEX_MIN = 20_000


class ChromaStore:
    """One Chroma collection; implements store.base.VectorStore."""

    def __init__(self, collection, model_id: str, dim: int, chroma_path: Path | None = None, *,
                 client=None, filterable: Filterable | None = None, build_index: bool = True) -> None:
        """`build_index`: whether a filtered query that finds no current filter index starts
        building one in the background (answering through Chroma meanwhile). Right for long-lived
        processes (`toolkit serve`, a notebook); a one-shot command passes False, since it would
        exit mid-build: it uses a saved index when current and Chroma otherwise."""
        self._col = _Guarded(collection)
        self._client = client
        self.model_id = model_id
        self.dim = dim
        self.name = collection.name
        self.filter_index_min = FILTER_INDEX_MIN
        #: Embedded stores keep the saved filter index and its change log beside Chroma's folder,
        #: one folder per collection id (a collection made again under its name gets a new one).
        self.index_dir = filter_index_dir(chroma_path, collection.id)
        hold = getattr(client, "held", None)
        self._keeper = IndexKeeper(self, dim, IndexFiles(self.index_dir) if self.index_dir else None,
                                   filterable, hold=hold)
        self._keeper.build_in_background = build_index

    @classmethod
    def open(cls, settings: "Settings", name: str, *, model_id: str, dim: int, create: bool = True,
             hnsw: dict | None = None, filterable: Filterable | None = None,
             build_index: bool = True) -> "ChromaStore":
        client = client_for(settings)
        meta = {"model_id": model_id, "dim": dim, "schema": SCHEMA_VERSION}
        try:
            col = client.get_collection(name=name, embedding_function=None)
        except Exception:
            if not create:
                raise StoreError(f"no collection named '{name}' in the store; run `toolkit tag SOURCE` first")
            col = client.get_or_create_collection(name=name, metadata=meta, embedding_function=None,
                                                  configuration={"hnsw": dict(hnsw or HNSW)})
        cls._check_model(col, model_id, dim)
        return cls(col, model_id, dim, chroma_path=embedded_path(settings), client=client, filterable=filterable,
                   build_index=build_index)

    @staticmethod
    def _check_model(col, model_id: str, dim: int) -> None:
        meta = col.metadata or {}
        built_by, built_dim = recorded_model_id(meta), meta.get("dim")
        if built_by != model_id or (built_dim is not None and int(built_dim) != dim):
            raise ModelMismatchError(
                f"collection '{col.name}' was built by model {built_by} (dim {built_dim}), "
                f"but the model in use is {model_id} (dim {dim}); run `toolkit reindex --model NAME` to "
                f"rebuild it with the model in use, or switch TOOLKIT_MODEL back to the one that built it")

    @property
    def collection_id(self) -> str:
        """Chroma's id of the collection: a collection dropped and made again under its name gets a new one."""
        return str(self._col.id)

    # ---- the collection's own metadata ------------------------------------------------------------

    def fresh_metadata(self) -> Metadata:
        """The collection's metadata as stored now (a collection handle keeps what it was opened with)."""
        if self._client is None:
            return dict(self._col.metadata or {})
        try:
            col = self._client.get_collection(name=self.name, embedding_function=None)
        except Exception as exc:
            if not _store_failure(exc):
                raise
            raise StoreError(f"the store cannot answer for collection '{self.name}' ({type(exc).__name__}); "
                             f"try again in a few seconds") from exc
        return dict(col.metadata or {})

    def modify_metadata(self, update: Metadata) -> None:
        """Set keys of the collection's metadata (None removes one); Chroma replaces it whole, so
        the rest is read afresh and kept."""
        meta = {**self.fresh_metadata(), **update}
        self._col.modify(metadata={k: v for k, v in meta.items() if v is not None})

    @property
    def made_with(self) -> list[str]:
        """How the machines that wrote this collection computed its vectors (`note_made_with`)."""
        try:
            return list(json.loads(self.fresh_metadata().get("made_with") or "[]"))
        except ValueError:
            return []

    def note_made_with(self, line: str) -> None:
        """Record a machine's precision and CPU on the collection, once each (at most MADE_WITH_MAX
        kept, the newest last): a store moved between machines says where its vectors came from."""
        before = self.made_with
        seen = [m for m in before if m != line]
        if seen + [line] == before:
            return
        self._keeper.modify_metadata({"made_with": json.dumps((seen + [line])[-MADE_WITH_MAX:])})

    # ---- writes -----------------------------------------------------------------------------------

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
            with self._keeper.write(Change("upsert", kwargs["ids"], kwargs["embeddings"], kwargs["metadatas"])):
                self._col.upsert(**kwargs)

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), MAX_BATCH):
            chunk = list(ids[start:start + MAX_BATCH])
            with self._keeper.write(Change("delete", chunk)):
                self._col.delete(ids=chunk)

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Merge keys into records' metadata (Chroma's update)."""
        for start in range(0, len(ids), MAX_BATCH):
            chunk = list(ids[start:start + MAX_BATCH])
            metas = [_clean(m) for m in metadatas[start:start + MAX_BATCH]]
            with self._keeper.write(Change("update", chunk, metadatas=metas)):
                self._col.update(ids=chunk, metadatas=metas)

    def replace_metadata(self, records: Sequence[Record]) -> None:
        """Rewrite records' metadata whole (update merges keys; removed keys must go too)."""
        full = self.get(ids=[r.id for r in records], include_embeddings=True)
        by_id = {r.id: r for r in records}
        self.upsert([Record(id=f.id, embedding=f.embedding, metadata=by_id[f.id].metadata, document=f.document)
                     for f in full])

    # ---- reads ------------------------------------------------------------------------------------

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

    def iter_records(self, batch: int = MAX_BATCH) -> Iterator[Record]:
        """Every record with its vector, in pages (what a filter index is built from)."""
        offset = 0
        while True:
            res = self._col.get(include=["embeddings", "metadatas"], limit=batch, offset=offset)
            for i, e, m in zip(res["ids"], res["embeddings"], res["metadatas"]):
                yield Record(id=i, embedding=np.asarray(e, np.float32), metadata=dict(m or {}))
            if len(res["ids"]) < batch:
                return
            offset += batch

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[Match]:
        total = self.recent_count()
        n = min(k, max(total, 0))
        if n == 0:
            return []
        index = self._keeper.ready(total) if where and total >= self.filter_index_min else None
        found = index.query(vector, n, where) if index is not None else None
        if found is not None:
            return self._matches(found)
        res = self._col.query(query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=n,
                              where=where or None, include=["metadatas", "distances"])
        return [Match(id=i, score=1.0 - float(d), metadata=dict(m or {}))
                for i, d, m in zip(res["ids"][0], res["distances"][0], res["metadatas"][0])]

    def _matches(self, found: list[tuple[str, float]]) -> list[Match]:
        """Matches for (id, score) pairs, best first, with their metadata read from Chroma."""
        if not found:
            return []
        res = self._col.get(ids=[i for i, _ in found], include=["metadatas"])
        meta = {i: dict(m or {}) for i, m in zip(res["ids"], res["metadatas"])}
        return [Match(id=i, score=s, metadata=meta[i]) for i, s in found if i in meta]

    def count(self) -> int:
        return self._col.count()

    def recent_count(self) -> int:
        """count(), at most a second old (exact after this store's own writes)."""
        return self._keeper.recent()[0]

    # ---- the filter index -------------------------------------------------------------------------

    @property
    def build_filter_index(self) -> bool:
        """Whether a filtered query that finds no current index starts building one."""
        return self._keeper.build_in_background

    @build_filter_index.setter
    def build_filter_index(self, value: bool) -> None:
        self._keeper.build_in_background = value

    def filter_index(self) -> FilterIndex:
        """The in-memory index for filtered queries: the one in memory or the saved one if current,
        else built now (and saved); kept current by every write through a store adapter."""
        return self._keeper.filter_index()

    def warm_filter_index(self) -> None:
        """For a long-lived process at start-up: load the saved filter index if it is current,
        else start building it in the background (a no-op under FILTER_INDEX_MIN records)."""
        if self.recent_count() >= self.filter_index_min:
            self._keeper.warm()


class _Guarded:
    """A Chroma collection whose failures to answer (Chroma's own errors, a server that does not
    respond) come out as StoreError, which the CLI prints as one line and the API answers 503
    with Retry-After. Chroma's ValueErrors (a malformed request) pass as they are."""

    def __init__(self, col) -> None:
        self._col = col

    def __getattr__(self, name: str):
        attr = getattr(self._col, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                if not _store_failure(exc):
                    raise
                what = (str(exc).strip().splitlines() or [""])[0][:160]
                raise StoreError(f"the store cannot answer {name} on collection '{self._col.name}' "
                                 f"({type(exc).__name__}: {what}); try again in a few seconds") from exc

        return call


def _store_failure(exc: Exception) -> bool:
    module = type(exc).__module__ or ""
    if module.startswith(("httpx", "httpcore")):
        return True
    if module.startswith("chromadb"):
        return not isinstance(exc, (ValueError, TypeError))
    return False


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
