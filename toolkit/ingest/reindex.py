"""`toolkit reindex`: rebuild the active collection with another model, beside the old one.

Every media item recorded in the active collection is read again through its connector (the
records carry its URI), embedded by the new model and written to a new collection named for
that model, with the products collection re-embedded by the new text tower. Tags from cloud
providers are carried over from the old records, never billed again; the local tagger's tags
are recomputed with the new model. Only when every item is in the new collection does
`TOOLKIT_COLLECTION` point at it; the old collection stays until `toolkit collections drop`.

Resumable: the new collection is written chunk by chunk, and an item already there with the
same content is not read or embedded again, so a killed run is continued by the same command.
Items that cannot be read again (source gone) are named, and the switch waits for them
unless `skip_missing` is given: then they are left out of the new collection.
"""
from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from store import collections as colls
from store.base import Record
from toolkit import registry
from toolkit.ingest.catalog import _product_text, product_from_meta
from toolkit.ingest.embedding import embed_media
from toolkit.ground.errors import StoreError
from toolkit.ingest.freshness import stored_versions, tagger_version
from toolkit.media.decode import decode
from toolkit.ground.models import ItemFailure, Media, MediaRef, Tag
from toolkit.records import (ATTR_PREFIX, PRODUCT_FIELDS, build_records, stored_frame_tags,
                             stored_media_tags)
from toolkit.ground.settings import Settings

if TYPE_CHECKING:
    from store.chroma import ChromaStore
    from taggers.base import Embedder

#: Media items per chunk: read, embedded and written together.
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


@dataclass
class _Item:
    media_id: str
    source: list[Record]                     # its records in the source, frame order
    existing: list[Record]                   # its records in the target
    media: Media | None = None
    status: str = "embedded"
    reason: str | None = None

    @property
    def meta(self) -> dict:
        return self.source[0].metadata

    @property
    def ref(self) -> MediaRef:
        m = self.meta
        return MediaRef(uri=m.get("uri", ""), key=m.get("key", ""), fingerprint=m.get("fingerprint"))


class Reindexer:
    def __init__(self, settings: Settings, source: "ChromaStore", source_products: "ChromaStore | None",
                 target: "ChromaStore", target_products: "ChromaStore", embedder: "Embedder",
                 report: ReindexReport, on_item: ReindexCallback | None = None,
                 on_listed: Callable[[int], None] | None = None, io_workers: int = 8) -> None:
        self.settings, self.embedder, self.report = settings, embedder, report
        self.source, self.source_products = source, source_products
        self.target, self.target_products = target, target_products
        self.on_item = on_item or (lambda ref, status, reason: None)
        self.on_listed = on_listed or (lambda n: None)
        self.io_workers = io_workers
        self._connectors: dict[str, object] = {}
        self._local = None

    def run(self) -> None:
        self.sync_products()
        ids = self._media_ids()
        self.report.media = len(ids)
        self.on_listed(len(ids))
        with ThreadPoolExecutor(self.io_workers, thread_name_prefix="toolkit-reindex-io") as pool:
            for start in range(0, len(ids), CHUNK):
                self._chunk(ids[start:start + CHUNK], pool)
        self._remove_gone(set(ids))

    # ---- products --------------------------------------------------------------------------

    def sync_products(self) -> None:
        """The catalog in the new products collection, titles embedded by the new text tower
        (a product already there with the same title keeps its vector)."""
        rows = self.source_products.get() if self.source_products is not None else []
        have = {r.id: r for r in self.target_products.get(ids=[r.id for r in rows])} if rows else {}
        todo = [r for r in rows if r.id not in have or have[r.id].document != r.document]
        same_text = [r for r in rows if r.id in have and have[r.id].document == r.document
                     and have[r.id].metadata != r.metadata]
        for start in range(0, len(todo), 256):
            chunk = todo[start:start + 256]
            vecs = self.embedder.embed_texts([_product_text(product_from_meta(r.metadata)) for r in chunk])
            self.target_products.upsert([Record(r.id, v, r.metadata, r.document) for r, v in zip(chunk, vecs)])
        if same_text:
            self.target_products.replace_metadata(same_text)
        gone = {i for i, _ in self.target_products.iter_metadata()} - {r.id for r in rows}
        if gone:
            self.target_products.delete(sorted(gone))
        self.report.products, self.report.products_embedded = len(rows), len(todo)

    # ---- media -----------------------------------------------------------------------------

    def _media_ids(self) -> list[str]:
        """Each media item once, in the source's stored order."""
        seen: dict[str, None] = {}
        for rid, meta in self.source.iter_metadata():
            seen.setdefault(meta.get("media_id") or rid, None)
        return list(seen)

    def _group(self, store: "ChromaStore", ids: list[str]) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = defaultdict(list)
        for r in store.get(where={"media_id": {"$in": ids}}):
            out[r.metadata.get("media_id", "")].append(r)
        for recs in out.values():
            recs.sort(key=lambda r: r.metadata.get("frame", 0))
        return out

    def _chunk(self, ids: list[str], pool: ThreadPoolExecutor) -> None:
        source, existing = self._group(self.source, ids), self._group(self.target, ids)
        items = [_Item(mid, source[mid], existing.get(mid, [])) for mid in ids if source.get(mid)]
        for it in items:
            if self._has(it, it.meta.get("sha256")):
                it.status = "done"
        list(pool.map(self._read, [it for it in items if it.status == "embedded"]))
        ready = [it for it in items if it.status == "embedded"]
        embed_media(self.embedder, [it.media for it in ready], self.settings.batch_size)
        local = self._local_tags([it for it in ready if LOCAL in it.meta.get("providers", [])])
        records, stale, product_fixes = [], [], []
        for it in items:
            if it.status == "embedded":
                built = self._records(it, local.get(it.ref.uri))
                if built:
                    records.extend(built)
                    keep = {r.id for r in built}
                    stale.extend(r.id for r in it.existing if r.id not in keep)
            elif it.status == "done":
                product_fixes.extend(self._product_fixes(it))
        if records:
            self.target.upsert(records)
            self.report.records_written += len(records)
        if stale:
            self.target.delete(stale)
        if product_fixes:
            self.target.replace_metadata(product_fixes)
        for it in items:
            self._count(it)

    def _has(self, it: _Item, sha: str | None) -> bool:
        return bool(sha) and any(r.metadata.get("sha256") == sha for r in it.existing)

    def _read(self, it: _Item) -> None:
        s, ref = self.settings, it.ref
        try:
            data = self._connector(ref.uri).read(ref)
            media = decode(ref, data, max_pixels=s.max_image_pixels, video_interval=s.video_interval,
                           scene_threshold=s.video_scene_threshold, max_frames=s.video_max_frames)
        except Exception as exc:  # one missing item must not end the run; it is reported by name
            it.status, it.reason = "missing", str(exc) if str(exc).startswith(ref.uri) else \
                f"{ref.uri}: {type(exc).__name__}: {exc}"
            return
        if self._has(it, media.sha256):  # changed at the source, but an earlier run already embedded it
            it.status = "done"
            return
        it.media = media

    def _connector(self, uri: str):
        scheme = registry.scheme_of(uri)
        if scheme not in self._connectors:
            self._connectors[scheme] = registry.connector_for(uri, self.settings)
        return self._connectors[scheme]

    def _local_tags(self, items: list[_Item]) -> dict[str, object]:
        if not items:
            return {}
        if self._local is None:
            self._local = registry.tagger(LOCAL, self.settings, self.embedder)
        return {res.ref.uri: res for res in self._local.tag([it.media for it in items])}

    def _records(self, it: _Item, local) -> list[Record]:
        """The item's new records: new vectors, local tags from the new model, cloud tags and
        product fields carried from the source records (cloud tags only for the same content)."""
        media, meta = it.media, it.meta
        same = media.sha256 == meta.get("sha256")
        if local is not None and local.error:
            it.status, it.reason = "missing", f"{it.ref.uri}: {LOCAL} tagger: {local.error}"
            return []
        if not same:  # no fingerprint: the next `toolkit tag` looks at it again
            media = replace(media, ref=MediaRef(it.ref.uri, it.ref.key))
            self.report.changed.append(it.ref.uri)
        media_tags: list[Tag] = list(local.tags) if local is not None else []
        frame_tags: dict[int, list[Tag]] = {i: list(t) for i, t in (local.frame_tags if local else {}).items()}
        providers = {LOCAL} if local is not None else set()
        versions = {LOCAL: v} if local is not None and (v := tagger_version(self._local)) else {}
        if same:
            carried = [t for t in stored_media_tags(meta) if t.provider != LOCAL]
            media_tags.extend(carried)
            for i, rec in enumerate(it.source):
                frame_tags.setdefault(i, []).extend(t for t in stored_frame_tags(rec.metadata)
                                                    if t.provider != LOCAL)
            cloud = set(meta.get("providers", [])) - {LOCAL}
            providers |= cloud
            versions |= {k: v for k, v in stored_versions(meta).items() if k in cloud}
            for name in cloud:
                self.report.carried[name] = self.report.carried.get(name, 0) + 1
        records = build_records(media, media_tags, frame_tags, None, providers=providers, versions=versions)
        product = {k: v for k, v in meta.items() if k in PRODUCT_FIELDS or k.startswith(ATTR_PREFIX)}
        for r in records:
            r.metadata.update(product)
        it.media = None  # the pixels are no longer needed
        return records

    def _product_fixes(self, it: _Item) -> list[Record]:
        """A done item whose product link changed in the source since (a catalog import)."""
        want = {k: v for k, v in it.meta.items() if k in PRODUCT_FIELDS or k.startswith(ATTR_PREFIX)}
        fixes = []
        for r in it.existing:
            have = {k: v for k, v in r.metadata.items() if k in PRODUCT_FIELDS or k.startswith(ATTR_PREFIX)}
            if have != want:
                rest = {k: v for k, v in r.metadata.items() if k not in have}
                fixes.append(Record(r.id, np.empty(0), {**rest, **want}))
        return fixes

    def _remove_gone(self, ids: set[str]) -> None:
        gone = [(rid, meta) for rid, meta in self.target.iter_metadata() if meta.get("media_id") not in ids]
        if gone:
            self.target.delete([rid for rid, _ in gone])
            self.report.removed = len({meta.get("media_id") for _, meta in gone})

    def _count(self, it: _Item) -> None:
        if it.status == "embedded":
            self.report.embedded += 1
        elif it.status == "done":
            self.report.done += 1
        else:
            self.report.missing.append(ItemFailure(it.ref.uri, it.reason or "could not be read again"))
        self.on_item(it.ref, it.status, it.reason)


def reindex(settings: Settings, name: str, source: str, new_settings: Settings, *,
            source_model: dict[str, str] | None = None, skip_missing: bool = False,
            on_item: ReindexCallback | None = None, on_listed: Callable[[int], None] | None = None,
            embedder: "Embedder | None" = None) -> ReindexReport:
    """Rebuild collection `source` (what `name` points at) with the model `new_settings` pick,
    into `name--<model id>`; point `name` at it when every item is there (or `skip_missing`).
    `source_model`: the model settings that built `source`, recorded for `collections use`."""
    from store.chroma import ChromaStore

    started = time.perf_counter()
    if not colls.exists(settings, source):
        raise StoreError(f"nothing to re-index: there is no collection '{source}' yet; `toolkit tag SOURCE` makes it")
    old_id, old_dim = colls.built_by(settings, source)
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
    products = colls.products_name(source)
    Reindexer(
        settings,
        source=ChromaStore.open(settings, source, model_id=old_id, dim=old_dim, create=False),
        source_products=(ChromaStore.open(settings, products, model_id=old_id, dim=old_dim, create=False)
                         if colls.exists(settings, products) else None),
        target=ChromaStore.open(settings, target, model_id=embedder.model_id, dim=embedder.dim),
        target_products=ChromaStore.open(settings, colls.products_name(target),
                                         model_id=embedder.model_id, dim=embedder.dim),
        embedder=embedder, report=report, on_item=on_item, on_listed=on_listed,
    ).run()
    if report.missing and not skip_missing:
        report.status = "incomplete"
    else:
        colls.save_record(settings, target, complete=True)
        colls.point(settings, name, target)
    report.seconds = round(time.perf_counter() - started, 3)
    return report
