"""The one ingest pipeline: reader -> read and decode -> embed and tag -> merge -> write, a bounded chunk at a time.

A reader (toolkit/ingest/readers.py) gives the items: the objects under a source for `toolkit
tag`, the media of a stored collection for `toolkit reindex`. Reads and decodes run on I/O
threads ahead of the model (a bounded queue keeps memory flat however large the bucket), the
model embeds whole batches, and each finished chunk goes to a writer thread
(toolkit/ingest/writer.py) that merges its records (toolkit/ingest/merge.py) and stores them,
several chunks to a write (up to WRITE_BATCH records, or what WRITE_MAX_WAIT seconds gathered),
while the model embeds the next chunks: one upsert per item had cost ~40 ms each.
A killed run loses at most the chunks in flight (embedded in the last WRITE_MAX_WAIT
seconds) and a re-run picks up where it stopped: unchanged items are recognised by
fingerprint or content hash and never read or embedded again.

The writer stays a thread of this process, not a process of its own: a second process
writing the same embedded store leaves this process's loaded vector index stale (its
searches miss the new vectors; measured with chromadb 1.5.9), and two processes that both
write would each persist their own copy of the index.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from toolkit.ground.errors import MediaError
from toolkit.ground.models import ItemFailure, Media, MediaRef, RunReport
from toolkit.ground.settings import Settings
from toolkit.ingest.catalog import ProductIndex
from toolkit.ingest.embedding import embed_media
from toolkit.ingest.freshness import Freshness
from toolkit.ingest.merge import Results, merge, tagger_errors
from toolkit.ingest.readers import Reader, SourceReader, WorkItem
from toolkit.ingest.writer import WRITE_BATCH, WRITE_MAX_WAIT, ChunkWriter
from toolkit.media.decode import decode

if TYPE_CHECKING:
    from connectors.base import Connector
    from store.base import VectorStore
    from taggers.base import Embedder, Tagger
    from toolkit.ingest.tagging import TaggerPlan

#: Callback for progress: (ref, status, reason). status is new/updated/retagged/unchanged/skipped/failed,
#: or what the reader calls them (`Reader.names`: reindex says embedded/done/missing).
ItemCallback = Callable[[MediaRef, str, str | None], None]
#: Callback with each media item whose records were built: its frames' embeddings (and the
#: image features behind them, where the embedder gives them) are still on it. Called on the
#: writer thread, just before the item's pixels are freed.
MediaCallback = Callable[[Media], None]


@dataclass
class _Prepared:
    """A chunk ready to store: its records built (and its pixels freed)."""
    items: list[WorkItem]
    report: RunReport
    records: list
    stale: list[str]


class Pipeline:
    """The one ingest pipeline. `run(uri)` tags a source (`toolkit tag`); `run_reader` runs any
    reader (toolkit/ingest/readers.py), e.g. reindex's stored collection, through the same stages."""

    def __init__(self, *, embedder: "Embedder", store: "VectorStore", settings: Settings,
                 connector: "Connector | None" = None, plan: "TaggerPlan | None" = None,
                 products: ProductIndex | None = None, on_item: ItemCallback | None = None,
                 on_listed: Callable[[int], None] | None = None, chunk_size: int = 64, io_workers: int = 8,
                 retag: bool = False, on_media: MediaCallback | None = None,
                 write_batch: int = WRITE_BATCH) -> None:
        self.embedder, self.store, self.settings = embedder, store, settings
        # For run(uri): where the source is read, which taggers run, the catalog to link.
        self.connector, self.plan, self.products = connector, plan or {}, products or ProductIndex([])
        self.on_item = on_item or (lambda ref, status, reason: None)
        self.on_media = on_media
        self.on_listed = on_listed
        self.chunk_size, self.io_workers, self.write_batch = chunk_size, io_workers, write_batch
        #: With `retag`, stored items go to the taggers that changed since they tagged them.
        self.freshness = Freshness(store, self.plan, retag)
        #: After a run: provider -> items whose earlier tags it carried over; and the items whose
        #: content differs from the earlier records their reader gave (their tags not carried).
        self.carried: dict[str, int] = {}
        self.changed: list[str] = []

    def run(self, uri: str) -> RunReport:
        """Tag and store every item under `uri`, read through the connector."""
        if self.connector is None:
            raise TypeError("Pipeline.run(uri) needs the connector to read the source with")
        reader = SourceReader(self.connector, uri, self.freshness, self.plan, self.products, self.on_listed)
        return self.run_reader(reader, RunReport(source=uri))

    # -- producer side: list, look up, read, decode ---------------------------------------------

    def _load(self, reader: Reader, item: WorkItem) -> WorkItem:
        s = self.settings
        try:
            data = reader.read(item)
            item.media = decode(item.ref, data, max_pixels=s.max_image_pixels, video_interval=s.video_interval,
                                scene_threshold=s.video_scene_threshold, max_frames=s.video_max_frames)
            reader.judge(item)
        except MediaError as exc:
            item.status, item.reason, item.media = "skipped", str(exc), None
        except Exception as exc:  # one bad item must never end the run
            item.status, item.reason, item.media = "failed", f"{item.ref.uri}: {type(exc).__name__}: {exc}", None
        return item

    def _produce(self, reader: Reader, out: "queue.Queue", stop: threading.Event) -> None:
        try:
            with ThreadPoolExecutor(self.io_workers, thread_name_prefix="toolkit-io") as pool:
                for items in reader.chunks(self.chunk_size):
                    if stop.is_set():
                        return
                    todo = [it for it in items if it.status != "unchanged"]
                    list(pool.map(lambda it: self._load(reader, it), todo))
                    out.put(items)
        except BaseException as exc:  # surfaced in the consumer, which owns the run
            out.put(exc)
        finally:
            out.put(None)

    # -- consumer side: embed, tag, write ----------------------------------------------------------

    def run_reader(self, reader: Reader, report: RunReport) -> RunReport:
        """Every item `reader` gives: read and decoded on I/O threads, embedded and tagged here,
        merged and written on the writer thread, counted into `report`."""
        started = time.perf_counter()
        out: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(reader, out, stop), daemon=True,
                                    name="toolkit-producer")
        producer.start()
        self._cloud = ThreadPoolExecutor(1, thread_name_prefix="toolkit-cloud")
        self._first_chunk = True
        writer = ChunkWriter(write_many=lambda chunks: self._write_chunks(chunks, reader),
                             prepare=lambda job: self._prepare_chunk(*job), size=lambda p: len(p.records),
                             batch=self.write_batch, max_wait=WRITE_MAX_WAIT, depth=4)
        try:
            while (items := out.get()) is not None:
                if isinstance(items, BaseException):
                    raise items
                results = self._process(reader, items, report)
                writer.submit((items, results, report))
        except BaseException:
            writer.close(raise_error=False)  # chunks already embedded are still stored
            raise
        else:
            writer.close()
        finally:
            stop.set()
            while producer.is_alive():  # drain so the producer can finish its put()
                try:
                    out.get(timeout=0.1)
                except queue.Empty:
                    pass
            self._cloud.shutdown(wait=False, cancel_futures=True)
            report.services = _service_stats(reader.planned())
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _process(self, reader: Reader, items: list[WorkItem], report: RunReport) -> dict[str, Results]:
        """Embed and tag one chunk; returns uri -> tagger name -> TagResult for the writer."""
        ready = [it for it in items if it.media is not None]
        for it in ready:
            it.taggers = reader.taggers(it)
        # Cloud calls go out while the model embeds. On the first chunk they go first, so a
        # bad key stops the run before the model has even loaded.
        cloud = self._cloud.submit(_tag, ready, report, False)
        if self._first_chunk:
            cloud.result()
            self._first_chunk = False
        embed_media(self.embedder, [it.media for it in ready], self.settings.batch_size)
        results = _tag(ready, report, True)
        for uri, by_tagger in cloud.result().items():
            results.setdefault(uri, {}).update(by_tagger)
        return results

    def _prepare_chunk(self, items: list[WorkItem], results: dict[str, Results], report: RunReport) -> _Prepared:
        """One chunk's records (an item's records all go in the same write) and the records they replace."""
        records, stale = [], []
        for it in items:
            if it.media is not None:
                built = self._records(it, results.get(it.ref.uri, {}))
                if built is not None:
                    records.extend(built)
                    new_ids = {r.id for r in built}
                    stale.extend(rid for rid, _ in it.existing if rid not in new_ids)
        return _Prepared(items, report, records, stale)

    def _records(self, it: WorkItem, results: Results) -> list | None:
        """The item's records, or None (and the item marked failed) when a tagger failed on it."""
        error = tagger_errors(it, results)
        if error:
            it.status, it.reason, it.media = "failed", error, None
            return None
        merged = merge(it, results)
        for name in merged.carried:
            self.carried[name] = self.carried.get(name, 0) + 1
        if it.changed:
            self.changed.append(it.ref.uri)
        if self.on_media is not None:
            self.on_media(it.media)
        it.media = None  # free the pixels: the records hold all that is stored
        return merged.records

    def _write_chunks(self, chunks: list[_Prepared], reader: Reader) -> None:
        """Store prepared chunks in one batched upsert, then drop replaced records, then fix up
        unchanged items' stored metadata, then report each item in the reader's order."""
        records = [r for c in chunks for r in c.records]
        stale = [rid for c in chunks for rid in c.stale]
        patches = [p for c in chunks for it in c.items for p in it.patches]
        rewrites = [r for c in chunks for it in c.items for r in it.rewrites]
        if records:
            self.store.upsert(records)
            for c in chunks:
                c.report.records_written += len(c.records)
        if stale:
            self.store.delete(stale)
        if patches:
            self.store.update_metadata([rid for rid, _ in patches], [meta for _, meta in patches])
        if rewrites:
            self.store.replace_metadata(rewrites)
        for c in chunks:
            for it in c.items:
                self._count(it, c.report, reader)

    def _count(self, it: WorkItem, report: RunReport, reader: Reader) -> None:
        if it.status == "new":
            report.new += 1
        elif it.status == "updated":
            report.updated += 1
        elif it.status == "retagged":
            report.retagged += 1
        elif it.status == "unchanged":
            report.unchanged += 1
            report.outdated += it.outdated
        elif it.status == "skipped":
            report.skipped.append(ItemFailure(it.ref.uri, it.reason or "skipped"))
        else:
            report.failed.append(ItemFailure(it.ref.uri, it.reason or "failed"))
        self.on_item(it.ref, reader.names.get(it.status, it.status), it.reason)


def _tag(ready: list[WorkItem], report: RunReport, after_embedding: bool) -> dict[str, Results]:
    """uri -> tagger name -> TagResult, from the items' taggers that run before or after
    embedding, one call per tagger and kind. A FatalTaggerError propagates and stops the run."""
    groups: dict[tuple[str, int], tuple["Tagger", list[Media]]] = {}
    for it in ready:
        assert it.media is not None
        for tagger in it.taggers:
            if tagger.needs_embeddings == after_embedding:
                groups.setdefault((it.media.kind, id(tagger)), (tagger, []))[1].append(it.media)
    results: dict[str, Results] = {}
    for tagger, medias in groups.values():
        for res in tagger.tag(medias):
            results.setdefault(res.ref.uri, {})[tagger.name] = res
        report.taggers[tagger.name] = report.taggers.get(tagger.name, 0) + len(medias)
    return results


def _service_stats(taggers: Iterable["Tagger"]) -> dict[str, dict]:
    out = {}
    for tagger in {id(t): t for t in taggers}.values():
        stats, limiter = tagger.stats, tagger.limiter
        if stats is not None:
            out[tagger.name] = {**stats.as_dict(),
                                "busiest_second": limiter.max_in_window(1.0) if limiter else None}
    return out
