"""`toolkit reindex`: rebuild the active collection with another model, beside the old one.

Every media item recorded in the active collection is read again through its connector (the
records carry its URI), embedded by the new model and written to a new collection named for
that model, with the products collection re-embedded by the new text tower. Tags from cloud
providers are carried over from the old records, never billed again; the local tagger's tags
are recomputed with the new model. Only when every item is in the new collection does
`TOOLKIT_COLLECTION` point at it; the old collection stays until `toolkit collections drop`.

The items go through the same pipeline as `toolkit tag` (toolkit/ingest/pipeline.py): only
the reader differs. `StoredReader` lists the old collection's items, reads them again and
says which are already in the new one; decoding, embedding, merging tags, writing and
counting are the pipeline's.

Resumable: the new collection is written chunk by chunk, and an item already there with the
same content is not read or embedded again, so a killed run is continued by the same command.
Items that cannot be read again (source gone) are named, and the switch waits for them
unless `skip_missing` is given: then they are left out of the new collection.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from store import collections as colls
from store.base import Record
from toolkit import registry
from toolkit.ground.errors import StoreError
from toolkit.ground.models import ItemFailure, MediaRef, RunReport
from toolkit.ground.settings import Settings
from toolkit.ingest.catalog import _product_text, product_from_meta
from toolkit.ingest.pipeline import Pipeline
from toolkit.ingest.readers import WorkItem
from toolkit.records import ATTR_PREFIX, CATALOG_TAG_PREFIX, PRODUCT_FIELDS, linked_to

if TYPE_CHECKING:
    from connectors.base import Connector
    from store.base import Metadata, VectorStore
    from taggers.base import Embedder, Tagger

#: Media items per chunk: read, embedded and written together (one store write a chunk, so a
#: killed run keeps every chunk it finished).
CHUNK = 32
#: The tagger whose tags are recomputed; every other provider's are carried over.
LOCAL = "local"

#: Progress: (ref, status, reason); status is embedded, done (already there) or missing (could
#: not be read or tagged again: named in the report, and the switch waits for it).
ReindexCallback = Callable[[MediaRef, str, "str | None"], None]


@dataclass
class ReindexReport:
    """What one `reindex` run did."""

    source: str                 # the collection re-indexed (active before the run)
    target: str                 # the collection built (active after a switch)
    model_id: str               # the new model
    previous_model_id: str
    status: str = "switched"    # switched | same-model | incomplete
    media: int = 0              # media items in the source collection
    embedded: int = 0           # read and embedded by this run
    done: int = 0               # already in the target from an earlier run
    changed: list[str] = field(default_factory=list)       # content changed since tagged: cloud tags not carried
    missing: list[ItemFailure] = field(default_factory=list)  # could not be read (or tagged) again
    removed: int = 0            # items dropped from the target because the source no longer has them
    products: int = 0           # products in the new products collection
    products_embedded: int = 0  # of which embedded by this run
    carried: dict[str, int] = field(default_factory=dict)   # provider -> items whose tags were carried
    records_written: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def switched(self) -> bool:
        return self.status == "switched"

    def add(self, run: RunReport, pipeline: Pipeline) -> None:
        """The pipeline's counts, in reindex's words."""
        self.embedded += run.new + run.updated + run.retagged
        self.done += run.unchanged
        self.missing += run.skipped + run.failed
        self.records_written += run.records_written
        self.carried, self.changed = dict(pipeline.carried), list(pipeline.changed)


def product_of(meta: "Metadata") -> "Metadata":
    """The product fields of a stored media record."""
    return {k: v for k, v in meta.items()
            if k in PRODUCT_FIELDS or k.startswith((ATTR_PREFIX, CATALOG_TAG_PREFIX))}


class StoredReader:
    """The media items recorded in `source`, read again through their connectors and judged
    against what `target` (the collection being built) already holds."""

    names = {"new": "embedded", "updated": "embedded", "retagged": "embedded", "unchanged": "done",
             "skipped": "missing", "failed": "missing"}

    def __init__(self, settings: Settings, source: "VectorStore", target: "VectorStore", embedder: "Embedder",
                 on_listed: Callable[[int], None] | None = None) -> None:
        self.settings, self.source, self.target, self.embedder = settings, source, target, embedder
        self.on_listed = on_listed or (lambda n: None)
        #: Every media id of the source, once listed (what the target may keep).
        self.media_ids: list[str] = []
        self._connectors: dict[str, "Connector"] = {}
        self._local: "Tagger | None" = None

    def chunks(self, size: int) -> Iterator[list[WorkItem]]:
        self.media_ids = self._list()
        self.on_listed(len(self.media_ids))
        for start in range(0, len(self.media_ids), size):
            ids = self.media_ids[start:start + size]
            source, existing = _group(self.source, ids), _group(self.target, ids)
            yield [self._item(source[mid], existing.get(mid, [])) for mid in ids if source.get(mid)]

    def _list(self) -> list[str]:
        """Each media item once, in the source's stored order."""
        seen: dict[str, None] = {}
        for rid, meta in self.source.iter_metadata():
            seen.setdefault(meta.get("media_id") or rid, None)
        return list(seen)

    def _item(self, source: list[Record], existing: list[Record]) -> WorkItem:
        meta = source[0].metadata
        item = WorkItem(ref=MediaRef(uri=meta.get("uri", ""), key=meta.get("key", ""),
                                     fingerprint=meta.get("fingerprint")),
                        existing=[(r.id, r.metadata) for r in existing], earlier=[r.metadata for r in source],
                        product=product_of(meta), status="updated" if existing else "new")
        if _holds(item, meta.get("sha256")):
            self._done(item)
        return item

    def _done(self, item: WorkItem) -> None:
        """Already in the target with this content: left alone, but for a product link that
        changed in the source since (a catalog import)."""
        item.status, item.media = "unchanged", None
        for rid, meta in item.existing:
            if product_of(meta) != item.product:
                item.rewrites.append(Record(rid, np.empty(0), linked_to(meta, item.product)))

    def read(self, item: WorkItem) -> bytes:
        scheme = registry.scheme_of(item.ref.uri)
        if scheme not in self._connectors:
            self._connectors[scheme] = registry.connector_for(item.ref.uri, self.settings)
        return self._connectors[scheme].read(item.ref)

    def judge(self, item: WorkItem) -> None:
        assert item.media is not None
        sha = item.media.sha256
        if _holds(item, sha):
            self._done(item)  # changed at the source, but an earlier run already embedded it
        elif sha != item.earlier[0].get("sha256"):
            # No fingerprint on its new records, so the next `toolkit tag` looks at it again
            # with its own taggers (the cloud tags were of other content and are not carried).
            item.changed = True
            item.media = replace(item.media, ref=MediaRef(item.ref.uri, item.ref.key))

    def taggers(self, item: WorkItem) -> Sequence["Tagger"]:
        """The local tagger, for items it had tagged (its tags come from the new model)."""
        if LOCAL not in item.earlier[0].get("providers", []):
            return []
        if self._local is None:
            self._local = registry.tagger(LOCAL, self.settings, self.embedder)
        return [self._local]

    def planned(self) -> Iterable["Tagger"]:
        return [self._local] if self._local is not None else []


def _group(store: "VectorStore", ids: list[str]) -> dict[str, list[Record]]:
    """media id -> its records in `store`, in frame order."""
    out: dict[str, list[Record]] = defaultdict(list)
    for r in store.get(where={"media_id": {"$in": ids}}):
        out[r.metadata.get("media_id", "")].append(r)
    for recs in out.values():
        recs.sort(key=lambda r: r.metadata.get("frame", 0))
    return out


def _holds(item: WorkItem, sha: str | None) -> bool:
    """Whether the target already holds the item with this content."""
    return bool(sha) and any(meta.get("sha256") == sha for _, meta in item.existing)


def sync_products(source: "VectorStore | None", target: "VectorStore", embedder: "Embedder",
                  report: ReindexReport) -> None:
    """The catalog in the new products collection, titles embedded by the new text tower
    (a product already there with the same title keeps its vector)."""
    rows = source.get() if source is not None else []
    have = {r.id: r for r in target.get(ids=[r.id for r in rows])} if rows else {}
    todo = [r for r in rows if r.id not in have or have[r.id].document != r.document]
    same_text = [r for r in rows if r.id in have and have[r.id].document == r.document
                 and have[r.id].metadata != r.metadata]
    for start in range(0, len(todo), 256):
        chunk = todo[start:start + 256]
        vecs = embedder.embed_texts([_product_text(product_from_meta(r.metadata)) for r in chunk])
        target.upsert([Record(r.id, v, r.metadata, r.document) for r, v in zip(chunk, vecs)])
    if same_text:
        target.replace_metadata(same_text)
    gone = {i for i, _ in target.iter_metadata()} - {r.id for r in rows}
    if gone:
        target.delete(sorted(gone))
    report.products, report.products_embedded = len(rows), len(todo)


def remove_gone(target: "VectorStore", ids: set[str], report: ReindexReport) -> None:
    """Drop the target's items that the source no longer has (a rerun after `tag` removed some)."""
    gone = [(rid, meta) for rid, meta in target.iter_metadata() if meta.get("media_id") not in ids]
    if gone:
        target.delete([rid for rid, _ in gone])
        report.removed = len({meta.get("media_id") for _, meta in gone})


def reindex(settings: Settings, name: str, source: str, new_settings: Settings, *,
            source_model: dict[str, str] | None = None, skip_missing: bool = False,
            on_item: ReindexCallback | None = None, on_listed: Callable[[int], None] | None = None,
            embedder: "Embedder | None" = None) -> ReindexReport:
    """Rebuild collection `source` (what `name` points at) with the model `new_settings` pick,
    into `name--<model id>`; point `name` at it when every item is there (or `skip_missing`).
    `source_model`: the model settings that built `source`, recorded for `collections use`."""
    started = time.perf_counter()
    old = registry.stored(settings, source)
    if old is None:
        raise StoreError(f"nothing to re-index: there is no collection '{source}' yet; `toolkit tag SOURCE` makes it")
    old_id = colls.built_by(settings, source)[0]
    embedder = embedder or registry.embedder(new_settings)
    report = ReindexReport(source=source, target=source, model_id=embedder.model_id,
                           previous_model_id=old_id or "unknown")
    if embedder.model_id == old_id:
        report.status = "same-model"
        return report
    embedder.embed_texts(["a model that cannot load fails here, before any collection is made"])
    if source_model and not colls.record(settings, source).get("model"):
        colls.save_record(settings, source, model=source_model)
    target = report.target = colls.target_name(settings, name, embedder.model_id)
    colls.save_record(settings, target, model=registry.model_spec(new_settings), complete=False,
                      source=source, alias=name)
    _rebuild(settings, old, target, embedder, report, on_item, on_listed)
    if report.missing and not skip_missing:
        report.status = "incomplete"
    else:
        colls.save_record(settings, target, complete=True)
        colls.point(settings, name, target)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _rebuild(settings: Settings, old: "VectorStore", target: str, embedder: "Embedder", report: ReindexReport,
             on_item: ReindexCallback | None, on_listed: Callable[[int], None] | None) -> None:
    """Products first, then every media item through the pipeline, then the items gone from the source."""
    new = registry.store(settings, embedder, collection=target)
    sync_products(registry.stored(settings, colls.products_name(report.source)),
                  registry.store(settings, embedder, collection=colls.products_name(target)), embedder, report)
    reader = StoredReader(settings, old, new, embedder, on_listed=on_listed)
    # One store write a chunk (write_batch=1), as a killed run keeps whole chunks.
    pipeline = Pipeline(embedder=embedder, store=new, settings=settings, on_item=on_item,
                        chunk_size=CHUNK, write_batch=1)
    report.add(pipeline.run_reader(reader, RunReport(source=report.source)), pipeline)
    report.media = len(reader.media_ids)
    remove_gone(new, set(reader.media_ids), report)
