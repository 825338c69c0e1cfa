"""The filter index on disk: a base snapshot, an append-only change log after it, and a head file.

One folder per collection, beside an embedded store (store.chroma_client.filter_index_dir):

    head.json     {"format", "base", "gen", "log_bytes", "base_bytes", "filterable"}, replaced atomically
    base-<id>/    the index as it was at some write: vecs.npy, alive.npy, ids.npy, tokens.npy, column<n>.npy
    log-<id>      every write through the store adapter since that base, appended in order
    lock          flock: exclusive to append or compact, shared to read

A tag run of ten items appends ten records' changes (about 1 KB each for 256-d vectors) instead
of rewriting a base of 1 KB a record. A reader maps the base (copy-on-write: pages are read as
queries touch them) and replays the log after it. When the log outgrows COMPACT_SHARE of the
base, the writer folds it in: a new base and an empty log, then the head points at them.

Each log entry carries the write generation it moved the collection from and to (`prev`, `gen`:
store.index_keeper keeps the collection's generation in its metadata); the head names the last
one, so a reader knows without parsing the log whether the files match the collection, and a
writer appends only where the chain is unbroken. The head's `log_bytes` bounds the log: a
writer that died mid-append leaves bytes past it, which the next writer cuts off.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from store.base import Metadata
from store.filter_index import Column, FilterIndex, Filterable

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer at a time by convention
    fcntl = None  # type: ignore[assignment]

#: On-disk layout version: files of another version are ignored (and rebuilt).
FORMAT = 2
#: The log is folded into a new base once it is this large a share of the base.
COMPACT_SHARE = 0.25
_FRAME = struct.Struct("<IQ")  # header bytes, body bytes


@dataclass
class Change:
    """One write as it reached the collection: upsert (ids, vectors, metadatas), update (ids,
    metadatas merged into the stored ones) or delete (ids)."""

    op: str
    ids: list[str]
    vectors: np.ndarray | None = None
    metadatas: list[Metadata] | None = None

    def apply(self, index: FilterIndex) -> None:
        if self.op == "upsert":
            index.upsert(self.ids, self.vectors, self.metadatas or [{} for _ in self.ids])
        elif self.op == "update":
            index.update_metadata(self.ids, self.metadatas or [])
        elif self.op == "delete":
            index.delete(self.ids)

    def encode(self, prev: str | None, gen: str) -> bytes:
        body = b"" if self.vectors is None else np.ascontiguousarray(self.vectors, np.float32).tobytes()
        header = json.dumps({"op": self.op, "ids": self.ids, "metas": self.metadatas, "prev": prev, "gen": gen,
                             "dim": 0 if self.vectors is None else int(self.vectors.shape[-1])}).encode()
        return _FRAME.pack(len(header), len(body)) + header + body


def _decode(data: bytes, pos: int) -> tuple[Change, dict, int] | None:
    if pos + _FRAME.size > len(data):
        return None
    hlen, blen = _FRAME.unpack_from(data, pos)
    start, end = pos + _FRAME.size, pos + _FRAME.size + hlen + blen
    if end > len(data):
        return None
    head = json.loads(data[start:start + hlen])
    vecs = np.frombuffer(data[start + hlen:end], np.float32).reshape(-1, head["dim"]) if blen else None
    return Change(head["op"], head["ids"], vecs, head["metas"]), head, end


def filterable_spec(filterable: Filterable | None) -> list | None:
    return None if filterable is None else [sorted(filterable.keys), list(filterable.prefixes)]


class IndexFiles:
    """The saved filter index of one collection (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    # ---- the head and the lock ---------------------------------------------------------------------

    def head(self) -> dict | None:
        """What is saved (None: nothing, or another format)."""
        try:
            head = json.loads((self.folder / "head.json").read_text())
        except (OSError, ValueError):
            return None
        return head if head.get("format") == FORMAT else None

    def _write_head(self, head: dict) -> None:
        tmp = self.folder / f".head.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({**head, "format": FORMAT}))
        os.replace(tmp, self.folder / "head.json")

    @contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """The folder's flock (none where the folder cannot be written: then nobody writes it)."""
        fd = -1
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            pass
        try:
            if fd >= 0 and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # drops the flock

    def remove(self) -> None:
        """Delete everything saved for the collection (it was dropped)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---- writing -----------------------------------------------------------------------------------

    def append(self, change: Change, prev: str | None, gen: str) -> dict | None:
        """Under the exclusive lock: add a write that moved the collection from generation `prev`
        to `gen`. Returns the new head; None when nothing is saved or the saved index does not end
        at `prev` (it missed a write: it stays stale until a long-lived process rebuilds it)."""
        head = self.head()
        if head is None or head.get("gen") != prev:
            return None
        entry = change.encode(prev, gen)
        log = self.folder / f"log-{head['base']}"
        try:
            with open(log, "r+b" if log.exists() else "wb") as f:
                f.truncate(head["log_bytes"])  # bytes past the head: a writer that died mid-append
                f.seek(head["log_bytes"])
                f.write(entry)
            new = {**head, "gen": gen, "log_bytes": head["log_bytes"] + len(entry)}
            self._write_head(new)
        except OSError:
            return None
        return new

    def needs_compaction(self) -> bool:
        head = self.head()
        return head is not None and head["log_bytes"] > COMPACT_SHARE * max(head.get("base_bytes", 0), 1)

    def save_base(self, index: FilterIndex, gen: str | None) -> int:
        """Under the exclusive lock: write `index` (at generation `gen`) as the new base with an
        empty log, and point the head at it. Returns the bytes written."""
        base = secrets.token_hex(6)
        folder = self.folder / f"base-{base}"
        old = self.head()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with index._lock:
            n = len(index.ids)
            cap = n + int(n * COMPACT_SHARE) + 1024  # room for the log's records: a reader replays without copying
            _save_padded(folder / "vecs.npy", index.vecs[:n], (cap, index.dim))
            _save_padded(folder / "alive.npy", index.alive[:n], (cap,))
            np.save(folder / "ids.npy", np.array([i if i is not None else "" for i in index.ids], dtype=str)
                    if n else np.zeros(0, "<U1"))
            tokens = list(index.tokens)
            if tokens:
                matrix = np.lib.format.open_memmap(folder / "tokens.npy", mode="w+", dtype=bool,
                                                   shape=(len(tokens), cap))
                for row, t in enumerate(tokens):
                    matrix[row, :n] = index.tokens[t][:n]
                matrix.flush()
                del matrix
            else:
                np.save(folder / "tokens.npy", np.zeros((0, cap), bool))
            columns = {}
            for c, (key, col) in enumerate(index.columns.items()):
                padded = np.full(cap, np.nan if col.numeric else -1, col.values.dtype)
                padded[:n] = col.values[:n]
                np.save(folder / f"column{c}.npy", padded)
                columns[key] = {"file": f"column{c}.npy", "numeric": col.numeric,
                                "codes": [[v, code] for v, code in col.codes.items()]}
            meta = {"dim": index.dim, "rows": n, "alive": len(index), "tokens": [list(t) for t in tokens],
                    "list_keys": sorted(index.list_keys), "skipped": sorted(index.skipped), "columns": columns}
        (folder / "index.json").write_text(json.dumps(meta))
        (self.folder / f"log-{base}").write_bytes(b"")
        size = sum(p.stat().st_blocks * 512 for p in folder.iterdir())  # on disk: the padding is sparse
        self._write_head({"base": base, "gen": gen, "log_bytes": 0, "base_bytes": size,
                          "filterable": filterable_spec(index.filterable)})
        index.gen, index.base, index.log_offset = gen, base, 0
        if old is not None and old.get("base") != base:  # readers that mapped it keep their pages
            shutil.rmtree(self.folder / f"base-{old['base']}", ignore_errors=True)
            (self.folder / f"log-{old['base']}").unlink(missing_ok=True)
        return size

    # ---- reading -----------------------------------------------------------------------------------

    def load(self, filterable: Filterable | None) -> FilterIndex | None:
        """Under the shared lock: the saved base with its log replayed (None: nothing saved, or
        saved for other filterable keys, or incomplete)."""
        head = self.head()
        if head is None or head.get("filterable") != filterable_spec(filterable):
            return None
        index = _load_base(self.folder / f"base-{head['base']}", filterable)
        if index is None:
            return None
        index.base, index.gen, index.log_offset = head["base"], None, 0
        return index if self.catch_up(index, head) else None

    def catch_up(self, index: FilterIndex, head: dict | None = None) -> bool:
        """Under the shared lock: replay into `index` the log entries it has not seen. False when
        the saved base has changed since `index` was read from it (load it again instead)."""
        head = head or self.head()
        if head is None or head["base"] != index.base:
            return False
        end = head["log_bytes"]
        if index.log_offset < end:
            try:
                with open(self.folder / f"log-{head['base']}", "rb") as f:
                    f.seek(index.log_offset)
                    data = f.read(end - index.log_offset)
            except OSError:
                return False
            pos = 0
            while (got := _decode(data, pos)) is not None:
                change, entry, pos = got
                change.apply(index)
                index.gen = entry["gen"]
            index.log_offset += pos
        if index.log_offset == 0:
            index.gen = head["gen"]  # a base with an empty log
        return index.log_offset == end and index.gen == head["gen"]


def _load_base(folder: Path, filterable: Filterable | None) -> FilterIndex | None:
    """A saved base, its arrays memory-mapped copy-on-write: loading a million records takes a
    fraction of a second, and writes stay private to this process."""
    try:
        meta = json.loads((folder / "index.json").read_text())
        index = FilterIndex(meta["dim"], 0, filterable)
        index.vecs = np.load(folder / "vecs.npy", mmap_mode="c")
        index.alive = np.load(folder / "alive.npy")
        index.ids = [i or None for i in np.load(folder / "ids.npy").tolist()]
        tokens = np.load(folder / "tokens.npy", mmap_mode="c")
        for key, spec in meta["columns"].items():
            col = Column(spec["numeric"], 0)
            col.values = np.load(folder / spec["file"])
            col.codes = {v: code for v, code in spec["codes"]}
            index.columns[key] = col
    except (OSError, ValueError, KeyError):
        return None
    index.tokens = {(k, t): tokens[n] for n, (k, t) in enumerate(meta["tokens"])}
    index.list_keys, index.skipped = set(meta["list_keys"]), set(meta["skipped"])
    for key, _ in index.tokens:
        index._token_count[key] = index._token_count.get(key, 0) + 1
    index._row_of = None
    index._row_tokens = {}
    index._loaded_rows = len(index.ids)
    index._alive_count = int(meta["alive"])
    if len(index.ids) != meta["rows"] or not len(index.vecs) == len(index.alive) >= meta["rows"]:
        return None
    return index


def _save_padded(path: Path, values: np.ndarray, shape: tuple[int, ...]) -> None:
    """Save `values` as the first rows of a zero-filled array of `shape`; the zeros past them are
    a hole in the file, not written."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=values.dtype, shape=shape)
    out[:len(values)] = values
    out.flush()
    del out
