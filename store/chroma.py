"""Chroma as the vector store: embedded PersistentClient by default, a Chroma server when host and port are set.

Each collection records the embedding model and dimension that built it, and refuses
vectors from any other model: mixing spaces would make every score meaningless.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from store.base import Match, Metadata, Record, recorded_model_id
from toolkit.ground.errors import ModelMismatchError, StoreError

if TYPE_CHECKING:
    from store.filtered import FilterIndex
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

_clients: dict[tuple, Any] = {}
_open_lock = threading.RLock()
#: From this size on, filtered queries go through store.filtered's exact in-memory index:
#: Chroma's own `where` took 29 ms at 50k records and 456 ms at 1M for a 5% filter.
FILTER_INDEX_MIN = 20_000
#: Chroma's count() scans the collection (0.9 ms at 10k records, 4.8 ms at 100k): queries use a
#: count this many seconds old at most. Writes through this store refresh it at once.
COUNT_TTL = 1.0
#: Whether a filtered query that finds no current filter index starts building one in the
#: background (and answers through Chroma meanwhile). Right for long-lived processes (`toolkit
#: serve`, a notebook); one-shot commands turn it off, since the process would exit mid-build:
#: they use a saved index when it is current (see ChromaStore._load_saved) and Chroma otherwise.
BUILD_FILTER_INDEX = True


def client_for(settings: "Settings"):
    """One client per location per process. An embedded folder is opened by one process at a
    time (store/owner.py): this one if it is free, else through the server the process that has
    it hosts (`toolkit serve`), else after waiting for that process to end."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if settings.uses_chroma_server:
        key = ("http", settings.chroma_host, settings.chroma_port)
        if key not in _clients:
            _clients[key] = _http_client(settings.chroma_host, settings.chroma_port,
                                         "start it or unset TOOLKIT_CHROMA_HOST")
        return _clients[key]
    path = settings.resolved_chroma_path.expanduser().resolve()
    key = ("path", str(path))
    with _open_lock:
        if key not in _clients:
            _clients[key] = _open_embedded(path, settings.store_wait)
    return _clients[key]


def _chroma_settings():
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def _http_client(host: str, port: int, fix: str):
    import chromadb

    try:
        client = chromadb.HttpClient(host=host, port=port, settings=_chroma_settings())
        client.heartbeat()
    except Exception as exc:
        raise StoreError(f"cannot reach the Chroma server at {host}:{port} ({type(exc).__name__}); {fix}") from exc
    return client


def _open_embedded(path: Path, wait: float):
    """The embedded folder behind a lease: opened on this process's turn (store/owner.py)."""
    import chromadb

    from store.owner import Lease, LeasedClient

    def embedded(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(folder), settings=_chroma_settings())

    def http(host: str, port: int):
        return _http_client(host, port, fix="the process hosting the store has just stopped; run the command again")

    return LeasedClient(Lease(path, wait, embedded, http))


def release(settings: "Settings") -> None:
    """Give the embedded store back to other processes now, instead of after a moment idle.
    Stores opened on it go on working: they take it again on their next call."""
    path = embedded_path(settings)
    if path is None:
        return
    with _open_lock:
        client = _clients.get(("path", str(path)))
        if client is not None and hasattr(client, "close"):
            client.close()
            if not hasattr(client, "_lease"):
                _clients.pop(("path", str(path)), None)


@contextmanager
def hosting(settings: "Settings") -> Iterator[None]:
    """For a long-lived process (`toolkit serve`): hold the embedded store and serve it to other
    processes through `chroma run` on 127.0.0.1, using it through that server too, so that
    everybody's writes are in one index and seen at once. A no-op on a Chroma server; when
    another process hosts the store already, this one uses its server."""
    from store.owner import Host, wait_for_store

    path = embedded_path(settings)
    if path is None:
        yield
        return
    release(settings)
    key = ("path", str(path))
    _clients.pop(key, None)
    got = wait_for_store(path, settings.store_wait)
    if isinstance(got, tuple):
        _clients[key] = _http_client(*got, fix="the process hosting the store has just stopped; start again")
        yield
        return
    host = Host(got)
    try:
        _clients[key] = _http_client(host.host, host.port, fix="see the .server.log beside the store")
        yield
    finally:
        _clients.pop(key, None)
        host.stop()
        got.release()


def embedded_path(settings: "Settings") -> Path | None:
    """The embedded store's folder, absolute; None when the store is a Chroma server."""
    return None if settings.uses_chroma_server else settings.resolved_chroma_path.expanduser().resolve()


def filter_index_dir(chroma_path: Path | None, collection_id: object) -> Path | None:
    """Where an embedded store's collection keeps its saved filter index (None on a server)."""
    if chroma_path is None:
        return None
    return chroma_path.parent / f"{chroma_path.name}-filter-index" / str(collection_id)


def describe_location(settings: "Settings") -> str:
    if settings.uses_chroma_server:
        return f"chroma server {settings.chroma_host}:{settings.chroma_port}"
    return f"embedded chroma at {embedded_path(settings)}"


class ChromaStore:
    """One Chroma collection; implements store.base.VectorStore."""

    def __init__(self, collection, model_id: str, dim: int, chroma_path: Path | None = None) -> None:
        self._col = _Guarded(collection)
        self.model_id = model_id
        self.dim = dim
        self.name = collection.name
        self.filter_index_min = FILTER_INDEX_MIN
        self.build_filter_index = BUILD_FILTER_INDEX
        self._index: "FilterIndex | None" = None
        self._writes = 0  # bumped by every write: an index built across a write is discarded
        self._count_cache: tuple[float, int, int, int | None] | None = None  # (time, writes then, count, seq)
        self._building: threading.Thread | None = None
        self._index_lock = threading.Lock()
        # Embedded stores keep a saved filter index beside Chroma's folder, one per collection id;
        # its stamp is Chroma's write sequence number, which every write by any process advances.
        self._sqlite = chroma_path / "chroma.sqlite3" if chroma_path is not None else None
        self.index_dir = filter_index_dir(chroma_path, collection.id)

    @classmethod
    def open(cls, settings: "Settings", name: str, *, model_id: str, dim: int,
             create: bool = True, hnsw: dict | None = None) -> "ChromaStore":
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
        return cls(col, model_id, dim, chroma_path=embedded_path(settings))

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

    @property
    def made_with(self) -> list[str]:
        """How the machines that wrote this collection computed its vectors (`note_made_with`)."""
        try:
            return list(json.loads((self._col.metadata or {}).get("made_with") or "[]"))
        except ValueError:
            return []

    def note_made_with(self, line: str) -> None:
        """Record a machine's precision and CPU on the collection, once each (at most MADE_WITH_MAX
        kept, the newest last): a store moved between machines says where its vectors came from."""
        before = self.made_with
        seen = [m for m in before if m != line]
        if seen + [line] == before:
            return
        kept = (seen + [line])[-MADE_WITH_MAX:]
        # Chroma replaces a collection's metadata whole on modify: keep the rest.
        self._col.modify(metadata={**(self._col.metadata or {}), "made_with": json.dumps(kept)})

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
            before = self._index_seq() if self._index is not None else None
            self._col.upsert(**kwargs)
            self._writes += 1
            if self._index is not None:
                self._index.upsert(kwargs["ids"], kwargs["embeddings"], kwargs["metadatas"])
                self._advance_stamp(before, len(chunk))

    def delete(self, ids: Sequence[str]) -> None:
        before = self._index_seq() if self._index is not None else None
        for start in range(0, len(ids), MAX_BATCH):
            self._col.delete(ids=list(ids[start:start + MAX_BATCH]))
        self._writes += 1
        if self._index is not None:
            self._index.delete(ids)
            self._advance_stamp(before, len(ids))

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
        before = self._index_seq() if self._index is not None else None
        for start in range(0, len(ids), MAX_BATCH):
            self._col.update(ids=list(ids[start:start + MAX_BATCH]),
                             metadatas=[_clean(m) for m in metadatas[start:start + MAX_BATCH]])
        self._writes += 1
        if self._index is not None:
            self._index.update_metadata(list(ids), [_clean(m) for m in metadatas])
            self._advance_stamp(before, len(ids))

    def filter_index(self, total: int | None = None) -> "FilterIndex":
        """The in-memory index for filtered queries (store/filtered.py): the one in memory or the
        saved one if current, else built now (and saved); kept current by this store's own writes."""
        self._count_cache = None
        index = self._current(self.recent_count()) or self._load_saved()
        while index is None:
            self._build_index()
            self._count_cache = None
            index = self._current(self.recent_count())
        return index

    @contextmanager
    def keeping_saved_index(self) -> Iterator[None]:
        """Around a run of writes (`toolkit tag`): if a current filter index is saved beside the
        store, load it first so the writes keep it current, and save it back after (+0.9 s for
        2,000 writes into 100k records). Otherwise the run would leave it stale, and filtered
        searches would fall back to Chroma's scan (405 ms at 1M records) until a rebuild (155 s
        at 1M). A store with no saved index gets none."""
        kept = self._index is not None or (self.index_dir is not None and self.index_dir.is_dir()
                                           and self._load_saved() is not None)
        try:
            yield
        finally:
            if kept:
                self.save_filter_index()

    def save_filter_index(self) -> bool:
        """Save the in-memory filter index beside the store if it matches the collection now."""
        self._count_cache = None
        index = self._current(self.recent_count())
        if index is None or self.index_dir is None or index.stamp is None:
            return False
        from store.filtered import saved_stamp

        if saved_stamp(self.index_dir) == index.stamp:
            return True  # nothing written since it was loaded or last saved
        try:
            index.save(self.index_dir)
        except OSError:
            return False  # a read-only folder: this process still has it in memory
        return True

    def warm_filter_index(self) -> None:
        """For a long-lived process at start-up: load the saved filter index if it is current,
        else start building it in the background (a no-op under FILTER_INDEX_MIN records)."""
        total = self.recent_count()
        if total >= self.filter_index_min:
            self._ready_index(total)

    # ---- the filter index's lifecycle --------------------------------------------------------------
    # An index is current when its stamp equals the collection's: the collection id, the record
    # count and, for an embedded store, Chroma's write sequence number (one per record written,
    # deleted or updated, by any process), so another process's writes, metadata edits included,
    # make it stale. On a Chroma server there is no sequence number: the count alone tells, so a
    # metadata edit by another client is seen after a restart, and nothing is saved.

    def _index_seq(self) -> int | None:
        """Chroma's last applied write sequence number for this collection (embedded stores)."""
        if self._sqlite is None:
            return None
        try:
            con = sqlite3.connect(f"file:{self._sqlite}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute("SELECT MAX(m.seq_id) FROM max_seq_id m JOIN segments s ON s.id = m.segment_id "
                                  "WHERE s.collection = ?", (str(self._col.id),)).fetchone()
            finally:
                con.close()
        except sqlite3.Error:  # another Chroma layout: fall back to the count, and save nothing
            self._sqlite = None
            return None
        return int(row[0]) if row and row[0] is not None else 0

    def _stamp(self, total: int, seq: int | None) -> dict:
        return {"collection": str(self._col.id), "count": total, "seq": seq}

    def _advance_stamp(self, before: int | None, ops: int) -> None:
        """After this store's own write of `ops` records: the in-memory index saw the write, so
        it stays current, unless the sequence moved by more: another process wrote meanwhile, or
        (the numbers are shared by a store's collections) wrote another collection; either way
        the index is then treated as stale and rebuilt, which is safe."""
        index = self._index
        if index is None or index.stamp is None:
            return
        after = self._index_seq()
        self._count_cache = None
        if after is None:  # a Chroma server: the count alone tells
            return
        fresh = index.stamp.get("seq") == before and after == before + ops
        index.stamp = self._stamp(len(index), after) if fresh else None

    def _current(self, total: int) -> "FilterIndex | None":
        """The in-memory index if it matches the collection now."""
        index = self._index
        if index is None or len(index) != total:
            return None
        if self._sqlite is not None:
            seq = self._recent_seq()
            if index.stamp is None or index.stamp.get("seq") != seq or seq is None:
                return None
        return index

    def _load_saved(self) -> "FilterIndex | None":
        """The index saved beside the store (by any process), if it is current."""
        if self.index_dir is None or self._sqlite is None:
            return None
        from store.filtered import FilterIndex, saved_stamp

        want = self._stamp(self.recent_count(), self._recent_seq())  # at most COUNT_TTL old, like queries
        if saved_stamp(self.index_dir) != want:  # a small file: cheap enough to check on every miss
            return None
        index = FilterIndex.load(self.index_dir)
        if index is None or index.dim != self.dim or index.stamp != want or len(index) != want["count"]:
            return None
        self._index = index
        return index

    def _ready_index(self, total: int) -> "FilterIndex | None":
        """The index if it is ready (in memory, or saved and current); otherwise, in a process that
        builds indexes, start building it in the background and return None, so this query goes
        to Chroma: a query never waits for a build (tens of seconds at 1M records)."""
        index = self._current(total)
        building = self._building is not None and self._building.is_alive()
        if index is None and not building:
            index = self._load_saved()
        if index is None and self.build_filter_index and not building:
            with self._index_lock:
                if self._building is None or not self._building.is_alive():
                    self._building = threading.Thread(target=self._build_index, daemon=True,
                                                      name="toolkit-filter-index")
                    self._building.start()
        return index

    def _build_index(self) -> None:
        from store.filtered import build

        writes = self._writes
        seq, total = self._index_seq(), self.count()  # read before the records: a write during the scan makes it stale
        index = build(self._iter_records(), self.dim, capacity=max(total, 1024))
        if writes != self._writes:  # a write raced the build: the next query starts another
            return
        index.stamp = self._stamp(total, seq) if len(index) == total else None
        self._index = index
        if self.index_dir is not None and seq is not None and index.stamp is not None:
            try:
                index.save(self.index_dir)
            except OSError:
                pass  # a read-only folder: this process still has it in memory

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
        return self._recent()[2]

    def _recent_seq(self) -> int | None:
        return self._recent()[3]

    def _recent(self) -> tuple[float, int, int, int | None]:
        now, cached = time.monotonic(), self._count_cache
        if cached is None or cached[1] != self._writes or now - cached[0] > COUNT_TTL:
            seq = self._index_seq()  # before the count: a write in between reads as stale, never as current
            cached = self._count_cache = (now, self._writes, self.count(), seq)
        return cached


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
