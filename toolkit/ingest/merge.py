"""Merge: one decoded item's tags from this run, plus what carries over from its earlier records,
into the records the pipeline writes.

A tagger run now replaces its earlier tags; the tags of taggers not run now are kept, but only
for the same content (a changed file's earlier tags describe other pixels). Whichever reader fed
the item, this is the one place that decides what a record holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolkit.ingest.freshness import stored_versions, tagger_version
from toolkit.records import build_records, stored_frame_tags, stored_media_tags

if TYPE_CHECKING:
    from store.base import Metadata, Record
    from toolkit.ground.models import Tag, TagResult
    from toolkit.ingest.readers import WorkItem

#: Tagger name -> its result for one item.
Results = dict[str, "TagResult"]


@dataclass
class Merged:
    """An item's records, and the earlier providers whose tags they carry."""

    records: list["Record"]
    carried: set[str] = field(default_factory=set)


def tagger_errors(it: "WorkItem", results: Results) -> str | None:
    """Why the item cannot be stored now (a tagger failed on it), naming the file and each tagger."""
    errors = [f"{name}: {res.error}" for name, res in results.items() if res.error]
    return f"{it.ref.uri}: " + "; ".join(errors) if errors else None


def merge(it: "WorkItem", results: Results) -> Merged:
    """The decoded item's records: this run's tags, the earlier tags of taggers not run now,
    its product fields."""
    assert it.media is not None
    earlier = kept(it)
    media_tags, frame_tags = _tags(earlier, results)
    carried = set(earlier[0].get("providers", [])) - set(results) if earlier else set()
    records = build_records(it.media, media_tags, frame_tags, it.product, providers=set(results) | carried,
                            versions=_versions(it, earlier, results))
    return Merged(records, carried)


def kept(it: "WorkItem") -> list["Metadata"]:
    """The earlier records whose tags carry over: only for the same content ([] otherwise)."""
    assert it.media is not None
    if it.earlier and it.earlier[0].get("sha256") == it.media.sha256:
        return it.earlier
    return []


def _tags(earlier: list["Metadata"], results: Results) -> tuple[list["Tag"], dict[int, list["Tag"]]]:
    media_tags: list["Tag"] = []
    frame_tags: dict[int, list["Tag"]] = {}
    for res in results.values():
        media_tags.extend(res.tags)
        for i, tags in res.frame_tags.items():
            frame_tags.setdefault(i, []).extend(tags)
    if earlier:
        media_tags.extend(t for t in stored_media_tags(earlier[0]) if t.provider not in results)
        for i, meta in enumerate(earlier):
            if "frame_tags_json" in meta:  # (most records have none: skip the parse)
                frame_tags.setdefault(i, []).extend(t for t in stored_frame_tags(meta) if t.provider not in results)
    return media_tags, frame_tags


def _versions(it: "WorkItem", earlier: list["Metadata"], results: Results) -> dict[str, str]:
    """Versions of the taggers that ran now, plus those of earlier ones whose tags are kept."""
    before = {k: v for k, v in stored_versions(earlier[0]).items() if k not in results} if earlier else {}
    now = {t.name: v for t in it.taggers if t.name in results and (v := tagger_version(t)) is not None}
    return {**before, **now}
