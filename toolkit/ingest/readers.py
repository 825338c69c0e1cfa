"""What feeds the ingest pipeline: a reader lists a run's items, reads their bytes and judges them.

The pipeline (toolkit/ingest/pipeline.py) decodes, embeds, tags, merges, writes and counts
the same way whatever its reader. Two readers exist:

- `SourceReader` (`toolkit tag`): the objects under a folder or bucket, through a connector,
  each looked up in the store being written so that unchanged items are not read again;
- `StoredReader` (`toolkit reindex`, toolkit/ingest/reindex.py): the media items recorded in
  another collection, read again through their connectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from toolkit.ground.models import Media, MediaRef
from toolkit.ingest.freshness import Existing, Freshness
from toolkit.records import media_id, product_fields

if TYPE_CHECKING:
    from connectors.base import Connector
    from store.base import Metadata, Record
    from taggers.base import Tagger
    from toolkit.ingest.catalog import ProductIndex
    from toolkit.ingest.tagging import TaggerPlan


@dataclass
class WorkItem:
    """One media item on its way through the pipeline."""

    ref: MediaRef
    #: Its records in the store being written (replaced, or patched when it is unchanged).
    existing: Existing = field(default_factory=list)
    #: Stored records of it, in frame order, whose tags, providers and tagger versions carry
    #: over to the new records when the content is the same (only the taggers run now replace theirs).
    earlier: list["Metadata"] = field(default_factory=list)
    #: Product fields written on its records.
    product: "Metadata" = field(default_factory=dict)
    media: Media | None = None
    status: str = "new"  # new | updated | retagged | unchanged | skipped | failed
    reason: str | None = None
    #: Left unchanged although a tagger of the plan has changed since it tagged the item.
    outdated: bool = False
    #: The taggers to run on it, once decoded (the reader's choice).
    taggers: Sequence["Tagger"] = ()
    #: For an unchanged item: fields merged into its stored records (a new fingerprint) ...
    patches: list[tuple[str, "Metadata"]] = field(default_factory=list)
    #: ... and stored records whose metadata is replaced whole (a product link that changed).
    rewrites: list["Record"] = field(default_factory=list)
    #: Its content differs from the `earlier` records it was read for (so their tags are not carried).
    changed: bool = False


class Reader(Protocol):
    """Where one run's items come from, and what is already stored of each."""

    #: What progress callbacks call each pipeline status (a status not named keeps its own name).
    names: Mapping[str, str]

    def chunks(self, size: int) -> Iterator[list[WorkItem]]:
        """The run's items, `size` at a time, with their stored records looked up and a first
        status: "unchanged" items are neither read nor embedded."""
        ...

    def read(self, item: WorkItem) -> bytes:
        """The item's bytes; raises MediaError (skipped) or anything else (failed)."""
        ...

    def judge(self, item: WorkItem) -> None:
        """Once decoded (`item.media` set, with its content hash): mark the item unchanged when
        the store already holds this content, setting its patches or rewrites."""
        ...

    def taggers(self, item: WorkItem) -> Sequence["Tagger"]:
        """The taggers to run on the decoded item."""
        ...

    def planned(self) -> Iterable["Tagger"]:
        """Every tagger the run may call (their call statistics go in the run's report)."""
        ...


def batched(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def by_frame(metas: Iterable["Metadata"]) -> list["Metadata"]:
    return sorted(metas, key=lambda m: m.get("frame", 0))


class SourceReader:
    """`toolkit tag`: every object under `uri`, listed lazily through the connector."""

    names: Mapping[str, str] = {}

    def __init__(self, connector: "Connector", uri: str, freshness: Freshness, plan: "TaggerPlan",
                 products: "ProductIndex", on_listed: Callable[[int], None] | None = None) -> None:
        self.connector, self.uri, self.freshness = connector, uri, freshness
        self.plan, self.products = plan, products
        self.on_listed = on_listed or (lambda n: None)

    def chunks(self, size: int) -> Iterator[list[WorkItem]]:
        listed = 0
        for refs in batched(self.connector.list(self.uri), size):
            listed += len(refs)
            self.on_listed(listed)
            existing = self.freshness.lookup(refs)  # one store query a chunk
            yield [self._item(r, existing.get(media_id(r.uri), [])) for r in refs]

    def _item(self, ref: MediaRef, existing: Existing) -> WorkItem:
        item = WorkItem(ref=ref, existing=existing, earlier=by_frame(m for _, m in existing),
                        product=product_fields(self.products.find(ref)))
        if existing:  # by fingerprint: an unchanged item is not even read
            item.status, item.outdated = self.freshness.status(ref, existing)
        return item

    def read(self, item: WorkItem) -> bytes:
        return self.connector.read(item.ref)

    def judge(self, item: WorkItem) -> None:
        assert item.media is not None
        status, outdated = self.freshness.status(item.ref, item.existing, item.media.sha256)
        if status == "unchanged":
            # Same bytes under a new fingerprint (a touched file, a re-upload): remember the
            # new fingerprint so the next run need not read it again.
            item.status, item.media, item.outdated = "unchanged", None, outdated
            if item.ref.fingerprint:
                item.patches = [(rid, {"fingerprint": item.ref.fingerprint}) for rid, _ in item.existing]
        elif status == "retagged":
            item.status = "retagged"

    def taggers(self, item: WorkItem) -> Sequence["Tagger"]:
        assert item.media is not None
        return self.plan.get(item.media.kind, [])

    def planned(self) -> Iterable["Tagger"]:
        return [t for ts in self.plan.values() for t in ts]
