"""Whether the store already holds a listed media item the way the current tagger plan would write it.

One check serves the tag run and its dry run, so `--dry-run` counts exactly the items (and
the billable calls) that the real run would send.

Taggers may declare a `version` (the local model does: its weights, label classifiers,
vocabulary and threshold); records remember the version of each tagger that looked at them.
A plain run ignores versions (it never re-sends an unchanged item); `--retag` re-sends an
item to every tagger of the plan whose version differs or that declares none, so a killed
`--retag` run picks up where it stopped.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

from toolkit.ground.models import MediaRef
from toolkit.records import media_id

if TYPE_CHECKING:
    from taggers.base import Tagger
    from store.base import VectorStore
    from toolkit.ingest.tagging import TaggerPlan

#: (record id, metadata) for each stored record of one media item.
Existing = list[tuple[str, dict]]


def tagger_version(tagger: "Tagger") -> str | None:
    return tagger.version or None


def stored_versions(meta: dict) -> dict[str, str]:
    try:
        versions = json.loads(meta.get("tagger_versions") or "{}")
    except ValueError:
        return {}
    return versions if isinstance(versions, dict) else {}


class Freshness:
    def __init__(self, store: "VectorStore", plan: "TaggerPlan", retag: bool = False) -> None:
        self.store, self.plan, self.retag = store, plan, retag

    def lookup(self, refs: Sequence[MediaRef]) -> dict[str, Existing]:
        """media id -> its stored records, in one query for a whole chunk of refs."""
        found: dict[str, Existing] = {}
        for rec in self.store.get(where={"media_id": {"$in": [media_id(r.uri) for r in refs]}}):
            found.setdefault(rec.metadata.get("media_id", ""), []).append((rec.id, rec.metadata))
        return found

    def is_current(self, ref: MediaRef, existing: Existing, sha: str | None = None) -> bool:
        """Same content (by content hash when given, else by the listing's fingerprint) and
        already tagged by every tagger the plan runs on its kind."""
        if not existing:
            return False
        meta = existing[0][1]
        if sha is not None:
            same = meta.get("sha256") == sha
        else:
            same = ref.fingerprint is not None and meta.get("fingerprint") == ref.fingerprint
        required = {t.name for t in self.plan.get(meta.get("kind", "image"), [])}
        return same and required <= set(meta.get("providers", []))

    def outdated(self, existing: Existing) -> set[str]:
        """The plan's versioned taggers whose version differs from the one that tagged the item."""
        if not existing:
            return set()
        meta = existing[0][1]
        had = stored_versions(meta)
        return {t.name for t in self.plan.get(meta.get("kind", "image"), [])
                if (v := tagger_version(t)) is not None and had.get(t.name) != v}

    def status(self, ref: MediaRef, existing: Existing, sha: str | None = None) -> tuple[str, bool]:
        """What the run does with a listed item: "unchanged" (left alone), "retagged" (current,
        but `--retag` sends it to a changed or unversioned tagger) or "updated" (new content,
        or a tagger of the plan has not seen it; also for an item not stored yet); and whether
        an earlier version of a tagger of the plan tagged it."""
        outdated = bool(self.outdated(existing))
        if not self.is_current(ref, existing, sha):
            return "updated", outdated
        kind = existing[0][1].get("kind", "image")
        if self.retag and (outdated or any(tagger_version(t) is None for t in self.plan.get(kind, []))):
            return "retagged", outdated
        return "unchanged", outdated
