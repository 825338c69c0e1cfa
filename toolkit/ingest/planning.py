"""`toolkit tag --dry-run`: what would go to each tagger, and what it would cost, with no tagger called."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolkit.ingest.freshness import Existing, Freshness
from toolkit.media.decode import sniff
from toolkit.media.video import video_duration
from toolkit.ground.models import Media, MediaRef
from toolkit.ingest.readers import batched
from toolkit.records import media_id
from toolkit.ground.settings import Settings

if TYPE_CHECKING:
    from connectors.base import Connector
    from store.base import VectorStore
    from toolkit.ingest.tagging import TaggerPlan


@dataclass
class TaggerPlanLine:
    tagger: str
    unit: str
    unit_price_usd: float = 0.0
    items: list[str] = field(default_factory=list)
    units: float = 0.0
    cost_usd: float = 0.0


@dataclass
class DryRunReport:
    source: str
    lines: dict[str, TaggerPlanLine] = field(default_factory=dict)
    unchanged: int = 0
    #: Of the unchanged items, those an earlier version of a tagger tagged (as in RunReport).
    outdated: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def dry_run(connector: "Connector", uri: str, plan: "TaggerPlan", store: "VectorStore",
            settings: Settings, retag: bool = False) -> DryRunReport:
    """`retag` as in the run: current items that a changed or unversioned tagger would see
    again count as sent."""
    report = DryRunReport(source=uri)
    fresh = Freshness(store, plan, retag)
    for refs in batched(connector.list(uri), 64):
        existing = fresh.lookup(refs)
        for ref in refs:
            _plan_item(connector, ref, existing.get(media_id(ref.uri), []), fresh, plan, report)
    return report


def _plan_item(connector: "Connector", ref: MediaRef, existing: Existing, fresh: Freshness,
               plan: "TaggerPlan", report: DryRunReport) -> None:
    if _left_alone(fresh.status(ref, existing), report):
        return
    data = connector.read(ref)
    kind = sniff(data).kind if data else None
    if kind is None:
        report.skipped.append((ref.uri, "empty" if not data else "not an image or a video"))
        return
    if _left_alone(fresh.status(ref, existing, hashlib.sha256(data).hexdigest()), report):
        return  # same bytes under a new fingerprint: the run would not send it
    media = Media(ref=ref, data=data, kind=kind, sha256="", mime="",
                  duration=video_duration(data) if kind == "video" else None)
    for tagger in plan.get(kind, []):
        line = report.lines.setdefault(tagger.name, TaggerPlanLine(
            tagger.name, tagger.billing_unit, tagger.unit_price_usd))
        line.items.append(tagger.describe(media) or f"{tagger.name} {kind} {ref.uri}")
        line.units += float(tagger.billable_units(media))
        line.cost_usd = round(line.units * line.unit_price_usd, 4)


def _left_alone(status: tuple[str, bool], report: DryRunReport) -> bool:
    """Counts an item the run would leave unchanged (and whether it is outdated)."""
    if status[0] != "unchanged":
        return False
    report.unchanged += 1
    report.outdated += status[1]
    return True



