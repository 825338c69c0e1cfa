"""Whether the store already holds a listed media item the way the current tagger plan would write it.

One check serves the tag run and its dry run, so `--dry-run` counts exactly the items (and
the billable calls) that the real run would send.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from toolkit.models import MediaRef
from toolkit.records import media_id

if TYPE_CHECKING:
    from store.chroma import ChromaStore
    from toolkit.tagging import TaggerPlan

#: (record id, metadata) for each stored record of one media item.
Existing = list[tuple[str, dict]]


class Freshness:
    def __init__(self, store: "ChromaStore", plan: "TaggerPlan") -> None:
        self.store, self.plan = store, plan

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
