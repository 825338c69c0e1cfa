"""connector -> decode -> embed -> tag -> store, one bounded chunk at a time.

Reads and decodes run on I/O threads ahead of the model (a bounded queue keeps memory
flat however large the bucket), the model embeds whole batches, and each finished chunk
goes to a writer thread that builds its records at once and stores them, several chunks
to a write (up to WRITE_BATCH records, or what WRITE_MAX_WAIT seconds gathered), while the
model embeds the next chunks. Chroma's embedded write costs a fixed ~30 ms of CPU a call
plus ~0.7 ms a record and holds the GIL throughout, so fewer, larger writes leave more of
both cores to the model (one upsert per item had cost ~40 ms each).
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
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from toolkit.ingest.catalog import ProductIndex
from toolkit.ingest.embedding import embed_media
from toolkit.ground.errors import MediaError
from toolkit.ingest.freshness import Existing, Freshness, stored_versions, tagger_version
from toolkit.media.decode import decode
from toolkit.ground.models import ItemFailure, Media, MediaRef, RunReport, Tag
from toolkit.records import build_records, media_id, stored_media_tags
from toolkit.ground.settings import Settings

if TYPE_CHECKING:
    from connectors.base import Connector
    from store.chroma import ChromaStore
    from taggers.base import Embedder
    from toolkit.ingest.tagging import TaggerPlan

#: Callback for progress: (ref, status, reason). status is new/updated/retagged/unchanged/skipped/failed.
ItemCallback = Callable[[MediaRef, str, str | None], None]
#: Callback with each media item whose records were built: its frames' embeddings (and the
#: image features behind them, where the embedder gives them) are still on it. Called on the
#: writer thread, just before the item's pixels are freed.
MediaCallback = Callable[[Media], None]


@dataclass
class WorkItem:
    ref: MediaRef
    existing: Existing = field(default_factory=list)
    media: Media | None = None
    status: str = "new"  # new | updated | retagged | unchanged | skipped | failed
    reason: str | None = None
    refresh: bool = False
    #: Left unchanged although a tagger of the plan has changed since it tagged the item.
    outdated: bool = False


def batched(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


class ChunkWriter:
    """Writes submitted jobs on one thread, in submission order, several to a `write_many` call.

    The queue is bounded, so the model can run at most `depth` chunks ahead of the store
    and memory stays flat. The first error stops further writes and is re-raised to the
    submitting thread on its next `submit` or on `close`.

    Each job is passed through `prepare` as soon as it arrives, and the prepared jobs are
    written together once they hold `batch` units (by `size`; jobs of size 0 alone go at
    once), once the oldest has waited `max_wait` seconds, or on close. Chroma's embedded
    write costs a fixed ~30 ms of CPU a call plus ~0.7 ms a record: 256 records a call
    instead of 64 cut its CPU time by about 40% (bench/ingest.py).
    """

    def __init__(self, write_many: Callable[[list], None], depth: int = 2, *,
                 prepare: Callable[[object], object] = lambda job: job,
                 size: Callable[[object], int] = lambda job: 1, batch: int = 1,
                 max_wait: float = 1.0) -> None:
        self._write_many, self._prepare, self._size = write_many, prepare, size
        self._batch, self._max_wait = max(1, batch), max_wait
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="toolkit-writer")
        self._thread.start()

    def _loop(self) -> None:
        pending: list = []
        units, since = 0, 0.0
        while True:
            timeout = max(0.0, since + self._max_wait - time.monotonic()) if pending else None
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:  # the oldest pending job has waited long enough
                job = _FLUSH
            if job is not None and job is not _FLUSH:
                if self.error is not None:
                    continue  # keep draining so a blocked submit() can return
                try:
                    pending.append(self._prepare(job))
                except BaseException as exc:  # handed to the run's own thread
                    self.error = exc
                    continue
                units += self._size(pending[-1])
                since = since if len(pending) > 1 else time.monotonic()
                if 0 < units < self._batch:  # (chunks with nothing to store go at once: progress)
                    continue
            if pending and self.error is None:
                try:
                    self._write_many(pending)
                except BaseException as exc:  # handed to the run's own thread
                    self.error = exc
            pending, units = [], 0
            if job is None:
                return

    def submit(self, job: object) -> None:
        self.raise_error()
        self._jobs.put(job)

    def close(self, raise_error: bool = True) -> None:
        """Wait until every submitted job is written (so nothing finished is lost)."""
        self._jobs.put(None)
        self._thread.join()
        if raise_error:
            self.raise_error()

    def raise_error(self) -> None:
        """Raise the writer's error, once (the error itself stays set: later writes stay skipped)."""
        if self.error is not None and not self._reported:
            self._reported = True
            raise self.error


_FLUSH = object()
#: Records per store write (see ChunkWriter), and the longest a finished chunk waits for one.
WRITE_BATCH = 256
WRITE_MAX_WAIT = 2.0


@dataclass
class _Prepared:
    """A chunk ready to store: its records built (and its pixels freed)."""
    items: list[WorkItem]
    report: RunReport
    records: list
    stale: list[str]
    refresh: list[tuple[str, str]]


class Pipeline:
    def __init__(self, *, connector: "Connector", embedder: "Embedder", store: "ChromaStore",
                 plan: "TaggerPlan", products: ProductIndex, settings: Settings,
                 on_item: ItemCallback | None = None, on_listed: Callable[[int], None] | None = None,
                 chunk_size: int = 64, io_workers: int = 8, retag: bool = False,
                 on_media: MediaCallback | None = None) -> None:
        self.connector, self.embedder, self.store = connector, embedder, store
        self.plan, self.products, self.settings = plan, products, settings
        self.on_item = on_item or (lambda ref, status, reason: None)
        self.on_media = on_media
        self.on_listed = on_listed or (lambda n: None)
        self.chunk_size, self.io_workers = chunk_size, io_workers
        #: With `retag`, stored items go to the taggers that changed since they tagged them.
        self.freshness = Freshness(store, plan, retag)

    # -- producer side: list, look up, read, decode ---------------------------------------------

    def _load(self, item: WorkItem) -> WorkItem:
        s = self.settings
        try:
            data = self.connector.read(item.ref)
            item.media = decode(item.ref, data, max_pixels=s.max_image_pixels, video_interval=s.video_interval,
                                scene_threshold=s.video_scene_threshold, max_frames=s.video_max_frames)
            status, outdated = self.freshness.status(item.ref, item.existing, item.media.sha256)
            if status == "unchanged":
                # Same bytes under a new fingerprint (a touched file, a re-upload): remember the
                # new fingerprint so the next run need not read it again.
                item.status, item.media, item.refresh, item.outdated = "unchanged", None, True, outdated
            elif status == "retagged":
                item.status = "retagged"
        except MediaError as exc:
            item.status, item.reason = "skipped", str(exc)
        except Exception as exc:  # one bad item must never end the run
            item.status, item.reason = "failed", f"{item.ref.uri}: {type(exc).__name__}: {exc}"
        return item

    def _produce(self, uri: str, out: "queue.Queue", stop: threading.Event) -> None:
        try:
            listed = 0
            with ThreadPoolExecutor(self.io_workers, thread_name_prefix="toolkit-io") as pool:
                for refs in batched(self.connector.list(uri), self.chunk_size):
                    if stop.is_set():
                        return
                    listed += len(refs)
                    self.on_listed(listed)
                    existing = self.freshness.lookup(refs)
                    items = [WorkItem(ref=r, existing=existing.get(media_id(r.uri), [])) for r in refs]
                    for it in items:
                        if it.existing:
                            it.status, it.outdated = self.freshness.status(it.ref, it.existing)
                    todo = [it for it in items if it.status != "unchanged"]
                    list(pool.map(self._load, todo))
                    out.put(items)
        except BaseException as exc:  # surfaced in the consumer, which owns the run
            out.put(exc)
        finally:
            out.put(None)

    # -- consumer side: embed, tag, write ----------------------------------------------------------

    def run(self, uri: str) -> RunReport:
        report = RunReport(source=uri)
        started = time.perf_counter()
        out: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(uri, out, stop), daemon=True,
                                    name="toolkit-producer")
        producer.start()
        self._cloud = ThreadPoolExecutor(1, thread_name_prefix="toolkit-cloud")
        self._first_chunk = True
        writer = ChunkWriter(write_many=self._write_chunks, prepare=lambda job: self._prepare_chunk(*job),
                             size=lambda p: len(p.records), batch=WRITE_BATCH, max_wait=WRITE_MAX_WAIT, depth=4)
        try:
            while (items := out.get()) is not None:
                if isinstance(items, BaseException):
                    raise items
                results = self._process(items, report)
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
            report.services = self._service_stats()
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _service_stats(self) -> dict[str, dict]:
        out = {}
        for tagger in {id(t): t for ts in self.plan.values() for t in ts}.values():
            stats, limiter = getattr(tagger, "stats", None), getattr(tagger, "limiter", None)
            if stats is not None:
                out[tagger.name] = {**stats.as_dict(),
                                    "busiest_second": limiter.max_in_window(1.0) if limiter else None}
        return out

    def _process(self, items: list[WorkItem], report: RunReport) -> dict[str, dict[str, object]]:
        """Embed and tag one chunk; returns uri -> tagger name -> TagResult for the writer."""
        ready = [it for it in items if it.media is not None]
        # Cloud calls go out while the model embeds. On the first chunk they go first, so a
        # bad key stops the run before the model has even loaded.
        cloud = self._cloud.submit(self._tag, ready, report, False)
        if self._first_chunk:
            cloud.result()
            self._first_chunk = False
        embed_media(self.embedder, [it.media for it in ready], self.settings.batch_size)
        results = self._tag(ready, report, True)
        for uri, by_tagger in cloud.result().items():
            results.setdefault(uri, {}).update(by_tagger)
        return results

    def _prepare_chunk(self, items: list[WorkItem], results: dict[str, dict[str, object]],
                       report: RunReport) -> _Prepared:
        """One chunk's records (an item's records all go in the same write), the records they
        replace, and the fingerprints to refresh."""
        records, stale, refresh_ids = [], [], []
        for it in items:
            if it.media is not None:
                built = self._records(it, results.get(it.ref.uri, {}))
                if built is not None:
                    records.extend(built)
                    new_ids = {r.id for r in built}
                    stale.extend(rid for rid, _ in it.existing if rid not in new_ids)
            elif it.refresh and it.ref.fingerprint:
                refresh_ids.extend((rid, it.ref.fingerprint) for rid, _ in it.existing)
        return _Prepared(items, report, records, stale, refresh_ids)

    def _write_chunks(self, chunks: list[_Prepared]) -> None:
        """Store prepared chunks in one batched upsert, then drop replaced records, then report
        each item in the listing's order."""
        records = [r for c in chunks for r in c.records]
        stale = [rid for c in chunks for rid in c.stale]
        refresh_ids = [x for c in chunks for x in c.refresh]
        if records:
            self.store.upsert(records)
            for c in chunks:
                c.report.records_written += len(c.records)
        if stale:
            self.store.delete(stale)
        if refresh_ids:
            self.store.update_metadata([rid for rid, _ in refresh_ids],
                                       [{"fingerprint": fp} for _, fp in refresh_ids])
        for c in chunks:
            for it in c.items:
                self._count(it, c.report)

    def _tag(self, ready: list[WorkItem], report: RunReport, after_embedding: bool) -> dict[str, dict[str, object]]:
        """uri -> tagger name -> TagResult, from the taggers that run before or after embedding.
        A FatalTaggerError propagates and stops the run."""
        results: dict[str, dict[str, object]] = {}
        for kind in {it.media.kind for it in ready}:
            medias = [it.media for it in ready if it.media.kind == kind]
            for tagger in self.plan.get(kind, []):
                if bool(getattr(tagger, "needs_embeddings", False)) != after_embedding:
                    continue
                for res in tagger.tag(medias):
                    results.setdefault(res.ref.uri, {})[tagger.name] = res
                report.taggers[tagger.name] = report.taggers.get(tagger.name, 0) + len(medias)
        return results

    def _records(self, it: WorkItem, results: dict[str, object]) -> list | None:
        """The item's records, or None (and the item marked failed) when a tagger failed on it."""
        errors = [f"{name}: {res.error}" for name, res in results.items() if res.error]
        if errors:
            it.status, it.reason = "failed", f"{it.ref.uri}: " + "; ".join(errors)
            return None
        media_tags, frame_tags = self._merge_tags(it, results)
        records = build_records(it.media, media_tags, frame_tags, self.products.find(it.ref),
                                providers=self._providers(it, results), versions=self._versions(it, results))
        if self.on_media is not None:
            self.on_media(it.media)
        it.media = None  # free the pixels: the records hold all that is stored
        return records

    @staticmethod
    def _kept(it: WorkItem) -> dict:
        """The stored record whose earlier tags carry over: only for the same content ({} otherwise)."""
        if it.existing and it.existing[0][1].get("sha256") == it.media.sha256:
            return it.existing[0][1]
        return {}

    def _providers(self, it: WorkItem, results: dict[str, object]) -> set[str]:
        """The taggers that ran now, plus earlier ones whose tags are kept."""
        return set(results) | set(self._kept(it).get("providers", []))

    def _versions(self, it: WorkItem, results: dict[str, object]) -> dict[str, str]:
        """Versions of the taggers that ran now, plus those of earlier ones whose tags are kept."""
        kept = {k: v for k, v in stored_versions(self._kept(it)).items() if k not in results}
        now = {t.name: v for t in self.plan.get(it.media.kind, [])
               if t.name in results and (v := tagger_version(t)) is not None}
        return {**kept, **now}

    def _merge_tags(self, it: WorkItem, results: dict[str, object]) -> tuple[list[Tag], dict[int, list[Tag]]]:
        """This run's tags, plus earlier tags from providers not run now."""
        media_tags: list[Tag] = []
        frame_tags: dict[int, list[Tag]] = {}
        for res in results.values():
            media_tags.extend(res.tags)
            for i, tags in res.frame_tags.items():
                frame_tags.setdefault(i, []).extend(tags)
        media_tags.extend(t for t in stored_media_tags(self._kept(it)) if t.provider not in results)
        return media_tags, frame_tags

    def _count(self, it: WorkItem, report: RunReport) -> None:
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
        self.on_item(it.ref, it.status, it.reason)

