"""Ranking: picks for a shopper from their history (a blend), bought-together for a product, trending.

Each signal is a score over every item, scaled to [0, 1]; the blend adds them with weights. A pick
keeps the signal that gave it most of its score, which becomes its reason.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Mapping

import numpy as np
import pandas as pd

from toolkit.recommend.cf import EVENT_WEIGHTS
from toolkit.recommend.models import Models, normalised

#: Days after which a purchase counts half as much for "buy it again" and "other colours".
REPURCHASE_HALF_LIFE = 30.0
#: The least a past purchase scores on "buy it again", however old (before its weight).
REPURCHASE_FLOOR = 0.5


@dataclass(frozen=True)
class Weights:
    """How much each signal adds to a pick's score. 0 turns one off (the evaluation's ablation does)."""

    repurchase: float = 1.0
    item: float = 0.6
    als: float = 0.3
    bpr: float = 0.0
    trending: float = 0.3
    variant: float = 0.2

    def without(self, *names: str) -> "Weights":
        return Weights(**{f.name: (0.0 if f.name in names else getattr(self, f.name)) for f in fields(self)})


@dataclass
class Candidate:
    item_id: str
    score: float
    source: str  # repurchase, item, als, bpr, trending, variant, together
    because: str | None = None  # the item that explains it, or the segment it trends in


def for_history(models: Models, history: pd.DataFrame, now: datetime, n: int, *, user_id: str | None = None,
                weights: Weights = Weights(), buy_again: bool = True, segment: str | None = None) -> list[Candidate]:
    """The best `n` items for a shopper whose events are `history` (item_id, event_type, ts, quantity)."""
    data = models.data
    size = len(data.items)
    known = history[history["item_id"].isin(data.item_index.keys())]
    cols = known["item_id"].map(data.item_index).to_numpy(dtype=np.int64)
    row = data.row(known["item_id"].tolist(),
                   (known["event_type"].map(EVENT_WEIGHTS).fillna(0) * known["quantity"]).tolist())
    signals: dict[str, np.ndarray] = {}
    bought = known[known["event_type"] == "purchase"]
    bought_cols = bought["item_id"].map(data.item_index).to_numpy(dtype=np.int64)
    if weights.repurchase and len(bought):
        # The latest purchase of each item sets its place (the most recent first, as the strong baseline
        # orders them); how many were bought only breaks ties within a day.
        age = (pd.Timestamp(now) - bought["ts"]).dt.total_seconds().to_numpy() / 86400.0
        rep = np.zeros(size, dtype=np.float64)
        np.maximum.at(rep, bought_cols, np.power(0.5, np.maximum(age, 0) / REPURCHASE_HALF_LIFE))
        count = np.zeros(size, dtype=np.float64)
        np.add.at(count, bought_cols, bought["quantity"].to_numpy())
        rep = np.where(rep > 0, rep * (1 + 0.001 * np.log1p(count)), 0.0)
        # Anything bought ranks above what was not (the strong baseline's order), the latest first.
        signals["repurchase"] = np.where(rep > 0, REPURCHASE_FLOOR + (1 - REPURCHASE_FLOOR) * normalised(rep), 0.0)
        if weights.variant:
            signals["variant"] = normalised(_variants(models, bought["item_id"].tolist(), rep[bought_cols], size))
    user = data.user_index.get(user_id) if user_id is not None else None
    for kind in ("item", "als", "bpr"):
        if getattr(weights, kind) and kind in models.cf and row.nnz:
            scores = np.maximum(models.cf[kind].scores(row, user), 0)
            scores[cols] = 0.0  # what they touched already is "buy it again"'s to bring back
            signals[kind] = normalised(scores)
    trend_group = segment if segment and (models.by_segment["group"] == segment).any() else "all"
    if weights.trending:
        signals["trending"] = normalised(_trending_vector(models, trend_group, size))
    total = np.zeros(size, dtype=np.float64)
    for name, vector in signals.items():
        total += getattr(weights, name) * vector
    if not buy_again and len(bought_cols):
        total[bought_cols] = 0.0
    best = _top(total, n)
    out = []
    for i in best:
        source = max(signals, key=lambda s: getattr(weights, s) * signals[s][i])
        out.append(Candidate(str(data.items[i]), float(total[i]), source,
                             _because(models, source, i, row, bought, trend_group)))
    return out


def trending(models: Models, n: int, group: str = "all",
             item_filter: Mapping[str, str] | None = None, attributes: Mapping[str, Mapping[str, str]] | None = None
             ) -> list[Candidate]:
    """Top sellers (decayed) overall or in a segment, optionally only items whose attributes match."""
    table = models.by_segment if group != "all" else models.trending
    rows = table[table["group"] == group]
    out = []
    for item, score in zip(rows["item_id"], rows["score"]):
        attrs = (attributes or {}).get(item, {})
        if item_filter and any(attrs.get(k) != v for k, v in item_filter.items()):
            continue
        out.append(Candidate(str(item), float(score), "trending", None if group == "all" else group))
        if len(out) >= n:
            break
    return out


def together(models: Models, item_id: str, n: int) -> list[Candidate]:
    """The items bought with `item_id`, best first, without its other colours."""
    key = models.variants.get(item_id)
    out = []
    for c in models.complements.get(item_id, []):
        if c.item_id == item_id or (key is not None and models.variants.get(c.item_id) == key):
            continue
        out.append(Candidate(c.item_id, c.confidence, "together", item_id))
        if len(out) >= n:
            break
    return out


def _variants(models: Models, items: list[str], strength: np.ndarray, size: int) -> np.ndarray:
    """The other colours of what the shopper bought, as strong as the purchase."""
    vector = np.zeros(size, dtype=np.float64)
    index = models.data.item_index
    for item, s in zip(items, strength):
        for other in models.variant_members.get(models.variants.get(item, ""), ()):
            if other != item and other in index:
                vector[index[other]] = max(vector[index[other]], s)
    return vector


def _trending_vector(models: Models, group: str, size: int) -> np.ndarray:
    table = models.by_segment if group != "all" else models.trending
    rows = table[table["group"] == group]
    vector = np.zeros(size, dtype=np.float64)
    index = models.data.item_index
    for item, score in zip(rows["item_id"], rows["score"]):
        if item in index:
            vector[index[item]] = score
    return vector


def _because(models: Models, source: str, i: int, row, bought: pd.DataFrame, group: str) -> str | None:
    if source in ("item", "als", "bpr"):
        j = models.cf[source].because(row, i)
        return None if j is None else str(models.data.items[j])
    if source == "variant":
        key = models.variants.get(str(models.data.items[i]))
        return next((b for b in reversed(bought["item_id"].tolist()) if models.variants.get(b) == key), None)
    if source == "trending":
        return None if group == "all" else group
    return str(models.data.items[i])


def _top(scores: np.ndarray, n: int) -> list[int]:
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0:
        return []
    n = min(n, positive.size)
    part = positive[np.argpartition(-scores[positive], n - 1)[:n]]
    return sorted(part.tolist(), key=lambda i: (-scores[i], i))
