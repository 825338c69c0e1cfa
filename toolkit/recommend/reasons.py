"""The reason shown with each pick: the rule with its confidence and lift, "because you bought <title>",
"trending in <segment>", "looks like <title>"."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import pandas as pd

from toolkit.recommend.models import Models
from toolkit.recommend.picks import Candidate
from toolkit.recommend.records import Item


@dataclass
class HistoryFacts:
    """What the reasons need from a shopper's events, worked out once per call."""

    last_bought: dict[str, datetime]


def facts(history: pd.DataFrame) -> HistoryFacts:
    bought = history[history["event_type"] == "purchase"]
    return HistoryFacts(bought.groupby("item_id")["ts"].max().to_dict() if len(bought) else {})


def title(items: Mapping[str, Item], item_id: str | None) -> str:
    item = items.get(item_id) if item_id else None
    return (item.title if item and item.title else item_id) or "?"


def together(models: Models, c: Candidate, items: Mapping[str, Item]) -> str:
    anchor = c.because or ""
    rule = next((x for x in models.complements.get(anchor, []) if x.item_id == c.item_id), None)
    stats = f"confidence {rule.confidence:.2f}, lift {rule.lift:.1f}, {rule.baskets} baskets" if rule else ""
    if c.source == "together-lookalike":
        return f"bought with {title(items, anchor)}, which looks like it ({stats})"
    return f"bought together: {stats}"


def for_user(c: Candidate, items: Mapping[str, Item], known: HistoryFacts) -> str:
    if c.source == "repurchase":
        return f"buy it again: you bought it on {known.last_bought.get(c.item_id, pd.NaT):%Y-%m-%d}"
    if c.source in ("item", "als", "bpr"):
        verb = "bought" if c.because in known.last_bought else "looked at"
        return f"because you {verb} {title(items, c.because)}"
    if c.source == "variant":
        return f"another colour of {title(items, c.because)}, which you bought"
    if c.source == "content":
        return f"looks like {title(items, c.because)}"
    if c.source == "two_tower":
        if c.because in known.last_bought or c.because in items:
            return f"for shoppers who bought {title(items, c.because)}"
        return f"for shoppers like you ({c.because})" if c.because else "picked for you"
    return f"trending in {c.because}" if c.because else "trending now"
