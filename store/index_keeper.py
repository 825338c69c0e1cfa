"""Keeps one collection's filter index current: in memory, on disk, and across processes.

Every write through the store adapter goes through `IndexKeeper.write`: under the index
folder's lock it moves the collection's write generation (a token kept in the collection's
own metadata, through Chroma's public modify) to a new value, lets the write happen, applies
it to the index in memory, and appends it to the saved index's change log
(store/index_files.py). So:

- an index is current when its generation is the collection's and it holds as many records
  as the collection counts. A write by another process through its adapter moves the
  generation: a reader replays the log's new entries (a few ms) instead of rebuilding;
- a write that did not go through an adapter (another tool) changes the count but not the
  generation: the index is stale, and a long-lived process rebuilds it from the collection
  (paged `get`) and saves a new base. Such a tool's metadata-only edit changes neither, and is
  seen after the next rebuild: tools should write through the store adapter;
- the generation moves before the write, so a process that dies between the two leaves the
  saved index stale (rebuilt), never wrong.

A store without a folder (a remote Chroma server) keeps its index in memory only; there the
generation has no lock around it, so two clients writing at the same instant may each miss
the other's write until the count differs.
"""
from __future__ import annotations

import secrets
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Protocol

from store.base import Metadata, Record
from store.filter_index import FilterIndex, Filterable, build
from store.index_files import Change, IndexFiles

#: The collection metadata key that holds the write generation.
GEN_KEY = "write_gen"
#: Counting a Chroma collection scans it (0.9 ms at 10k records, 4.8 ms at 100k): queries use
#: a count and generation this many seconds old at most. Writes through this keeper refresh them.
COUNT_TTL = 1.0


class IndexSource(Protocol):
    """What the keeper needs from the collection (store.chroma.ChromaStore provides it)."""

    def count(self) -> int: ...

    def fresh_metadata(self) -> Metadata: ...

    def modify_metadata(self, update: Metadata) -> None: ...

    def iter_records(self) -> Iterator[Record]: ...


def next_gen(prev: str | None) -> str:
    """A new generation: a counter (for people reading it) and a random part (so two writers
    that both read the same previous one still leave different ones)."""
    try:
        n = int(str(prev).split(".")[0]) + 1
    except ValueError:
        n = 1
    return f"{n}.{secrets.token_hex(4)}"


class IndexKeeper:
    """The filter index of one collection: `ready` for queries, `write` around every write."""

    def __init__(self, source: IndexSource, dim: int, files: IndexFiles | None,
                 filterable: Filterable | None = None, hold: Callable[[], object] | None = None) -> None:
        self.source, self.dim, self.files, self.filterable = source, dim, files, filterable
        self._hold = hold or nullcontext  # the store's turn (store.owner): always taken before the index lock
        self.index: FilterIndex | None = None
        self.building: threading.Thread | None = None
        self.build_in_background = True
        self._writes = 0  # bumped by every write here: a build across one is discarded
        self._state: tuple[float, int, int, str | None] | None = None  # (time, writes then, count, gen)
        self._start_lock = threading.Lock()

    # ---- what the collection looks like now ---------------------------------------------------------

    def collection_gen(self) -> str | None:
        gen = self.source.fresh_metadata().get(GEN_KEY)
        return None if gen is None else str(gen)

    def recent(self) -> tuple[int, str | None]:
        """(count, generation), at most COUNT_TTL seconds old (exact after this keeper's writes)."""
        now, cached = time.monotonic(), self._state
        if cached is None or cached[1] != self._writes or now - cached[0] > COUNT_TTL:
            gen = self.collection_gen()  # before the count: a write in between reads as stale, never current
            cached = self._state = (now, self._writes, self.source.count(), gen)
        return cached[2], cached[3]

    def forget(self) -> None:
        """Read the count and generation afresh next time."""
        self._state = None

    # ---- writes -----------------------------------------------------------------------------------

    @contextmanager
    def write(self, change: Change) -> Iterator[None]:
        """Around one write to the collection: the body writes it to Chroma."""
        with self._hold(), (self.files.lock(True) if self.files is not None else nullcontext()):
            prev = self.collection_gen()
            gen = next_gen(prev)
            self._set_gen(gen)
            try:
                yield
            except (ValueError, TypeError):  # refused before anything was written
                self._set_gen(prev)
                raise
            finally:
                self._writes += 1
                self._state = None
            index = self.index
            applied = index is not None and index.gen == prev
            if applied:
                change.apply(index)
                index.gen = gen
            if self.files is not None:
                self._log(change, prev, gen, index if applied else None)

    def modify_metadata(self, update: Metadata) -> None:
        """Change the collection's own metadata without losing the generation another writer set."""
        with self._hold(), (self.files.lock(True) if self.files is not None else nullcontext()):
            self.source.modify_metadata(update)

    def _set_gen(self, gen: str | None) -> None:
        self.source.modify_metadata({GEN_KEY: gen})

    def _log(self, change: Change, prev: str | None, gen: str, index: FilterIndex | None) -> None:
        before = self.files.head()
        head = self.files.append(change, prev, gen)
        if head is None:
            return
        if index is not None and index.base == head["base"] and before and index.log_offset == before["log_bytes"]:
            index.log_offset = head["log_bytes"]  # its own entry: already applied
        if self.files.needs_compaction():
            self._compact(gen)

    def _compact(self, gen: str) -> None:
        """Under the exclusive lock: fold the log into a new base."""
        index = self.index if self.index is not None and self.index.gen == gen else None
        if index is None or index.base != self.files.head()["base"]:
            index = self.files.load(self.filterable)
        if index is not None and index.gen == gen:
            try:
                self.files.save_base(index, gen)
            except OSError:
                return
            self.index = index

    # ---- reads ------------------------------------------------------------------------------------

    def current(self, total: int | None = None) -> FilterIndex | None:
        """The in-memory index if it matches the collection now."""
        count, gen = self.recent()
        index = self.index
        if index is None or len(index) != (count if total is None else total) or index.gen != gen:
            return None
        return index

    def load_saved(self) -> FilterIndex | None:
        """The saved index (by any process), brought up to date from its log, if it matches the
        collection now; the index in memory is caught up rather than loaded again."""
        if self.files is None:
            return None
        count, gen = self.recent()
        with self.files.lock(False):
            head = self.files.head()
            if head is None or head.get("gen") != gen:
                return None
            index = self.index
            if index is None or not self.files.catch_up(index, head):
                index = self.files.load(self.filterable)
        if index is None or index.dim != self.dim or len(index) != count or index.gen != gen:
            return None
        self.index = index
        return index

    def ready(self, total: int) -> FilterIndex | None:
        """The index if it is ready (in memory, or saved and current); otherwise, where builds are
        allowed, start one in the background and return None, so this query goes to Chroma: a
        query never waits for a build (tens of seconds at 1M records)."""
        index = self.current(total)
        building = self.building is not None and self.building.is_alive()
        if index is None and not building:
            index = self.load_saved()
        if index is None and self.build_in_background and not building:
            with self._start_lock:
                if self.building is None or not self.building.is_alive():
                    self.building = threading.Thread(target=self.build, daemon=True, name="toolkit-filter-index")
                    self.building.start()
        return index

    def filter_index(self) -> FilterIndex:
        """The index, built now if neither the one in memory nor the saved one is current."""
        self._state = None
        index = self.current() or self.load_saved()
        while index is None:
            self.build()
            self._state = None
            index = self.current()
        return index

    def build(self) -> None:
        """Read every record from the collection into a new index, and save it as the base."""
        writes, gen, total = self._writes, self.collection_gen(), self.source.count()
        index = build(self.source.iter_records(), self.dim, capacity=max(total, 1024), filterable=self.filterable)
        if writes != self._writes or self.collection_gen() != gen:  # a write raced the build
            return
        index.gen = gen if len(index) == total else "unmatched"
        self.index = index
        if self.files is None or index.gen != gen:
            return
        try:
            with self._hold(), self.files.lock(True):
                self.files.save_base(index, gen)
        except OSError:
            pass  # a read-only folder: this process still has it in memory

    def warm(self) -> None:
        """For a long-lived process at start-up: the saved index if current, else a build started."""
        count, _ = self.recent()
        self.ready(count)
