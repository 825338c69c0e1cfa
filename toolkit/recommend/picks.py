"""Ranking: picks for a shopper from their history (a blend), bought-together for a product, trending.

Each signal is a score over every item, scaled to [0, 1]; the blend adds them with weights. A pick
keeps the signal that gave it most of its score, which becomes its reason. A pick's score is from 0
to 1 (`shown_score`): what the shopper bought in the last `Weights.repurchase_days` scores 0.75 or
more and comes first; every other pick scores half its share of the most the blend can give.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Mapping

import numpy as np
import pandas as pd

from toolkit.recommend.cf import EVENT_WEIGHTS
from toolkit.recommend.content import closest, profile_scores
from toolkit.recommend.models import Models, normalised
from toolkit.recommend.two_tower import recency

#: Days after which a purchase counts half as much for "buy it again" and "other colours".
REPURCHASE_HALF_LIFE = 30.0
#: The least a past purchase scores on "buy it again", however old (before its weight).
REPURCHASE_FLOOR = 0.5
#: Score offset that puts recent purchases ahead of every other pick while ranking (never shown).
FIRST = 100.0


@dataclass(frozen=True)
class Weights:
    """How much each signal adds to a pick's score. 0 turns one off (the evaluation's ablation does).

    The defaults were chosen on H&M's 8 weeks before the 8 that `toolkit recommend eval` reports
    (2020-06-03 to 2020-07-28), among 14 settings of the others (all within 0.0015 MAP@12 of each
    other there once recent purchases came first) and 4 of `content` (0, 0.3, 1, 2: 1 was best, 2 worst)."""

    repurchase: float = 2.0
    item: float = 0.3
    als: float = 0.3
    bpr: float = 0.0
    trending: float = 1.0
    variant: float = 0.5
    content: float = 1.0
    #: The two-tower model (two_tower.py): 0 unless the evaluation shows it wins (see README).
    two_tower: float = 0.0
    #: Purchases of the last this many days come first, latest first, whatever the other signals say
    #: (older ones compete through the `repurchase` weight). 0: none do.
    repurchase_days: float = 14.0

    def without(self, *names: str) -> "Weights":
        return Weights(**{f.name: (0.0 if f.name in names or (f.name == "repurchase_days" and "repurchase" in names)
                                   else getattr(self, f.name)) for f in fields(self)})


@dataclass
class Candidate:
    item_id: str
    score: float
    source: str  # repurchase, item, als, bpr, trending, variant, content, together
    because: str | None = None  # the item that explains it, or the segment it trends in


def for_history(models: Models, history: pd.DataFrame, now: datetime, n: int, *, user_id: str | None = None,
                weights: Weights = Weights(), buy_again: bool = True, segment: str | None = None) -> list[Candidate]:
    """The best `n` items for a shopper whose events are `history` (item_id, event_type, ts, quantity)."""
    data = models.data
    size = len(data.items)
    index = data.item_index
    known = history[[i in index for i in history["item_id"]]]
    cols = np.fromiter((index[i] for i in known["item_id"]), dtype=np.int64, count=len(known))
    weights_ = [EVENT_WEIGHTS.get(t, 0.0) * q for t, q in zip(known["event_type"], known["quantity"])]
    row = data.row(known["item_id"].tolist(), weights_)
    signals: dict[str, np.ndarray] = {}
    is_purchase = (known["event_type"] == "purchase").to_numpy()
    bought = known[is_purchase]
    bought_cols = cols[is_purchase]
    if (weights.repurchase or weights.repurchase_days) and len(bought):
        # The latest purchase of each item sets its place (the most recent first, as the strong baseline
        # orders them); ties within a day go to the higher product id, as in the baseline
        # (evaluate.repurchase_then). How many were bought does not count: it ranked worse.
        age = (pd.Timestamp(now) - bought["ts"]).dt.total_seconds().to_numpy() / 86400.0
        rep = np.zeros(size, dtype=np.float64)
        np.maximum.at(rep, bought_cols, np.power(0.5, np.maximum(age, 0) / REPURCHASE_HALF_LIFE))
        tie = np.arange(size, dtype=np.float64) / max(size, 1)
        rep = np.where(rep > 0, rep * (1 + 1e-6 * tie), 0.0)
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
    if weights.content and models.content is not None and len(cols):
        age = (pd.Timestamp(now) - known["ts"]).dt.total_seconds().to_numpy() / 86400.0
        recency = np.power(0.5, np.maximum(age, 0) / REPURCHASE_HALF_LIFE) * np.asarray(weights_)
        scores = np.maximum(profile_scores(models.content, cols, recency), 0)
        scores[cols] = 0.0
        signals["content"] = normalised(scores)
    if weights.two_tower and models.two_tower is not None:
        scores = np.maximum(_tower_scores(models, known, cols, weights_, now, segment), 0)
        scores[cols] = 0.0
        signals["two_tower"] = normalised(scores)
    trend_group = segment if segment and _trending_rows(models, segment) else "all"
    if weights.trending:
        signals["trending"] = normalised(_trending_vector(models, trend_group, size))
    total = np.zeros(size, dtype=np.float64)
    for name, vector in signals.items():
        total += getattr(weights, name) * vector
    if weights.repurchase_days > 0 and len(bought_cols) and "repurchase" in signals:
        age = (pd.Timestamp(now) - bought["ts"]).dt.total_seconds().to_numpy() / 86400.0
        first = np.unique(bought_cols[age <= weights.repurchase_days])
        total[first] = FIRST + signals["repurchase"][first]
    if not buy_again and len(bought_cols):
        total[bought_cols] = 0.0
    best = np.asarray(_top(total, n), dtype=np.int64)
    if not len(best):
        return []
    names = list(signals)
    parts = np.stack([getattr(weights, s) * signals[s][best] for s in names])
    sources = ["repurchase" if total[i] >= FIRST else names[j] for i, j in zip(best, np.argmax(parts, axis=0))]
    because: dict[int, str | None] = {}
    for kind in ("item", "als", "bpr"):
        mine = np.asarray([i for i, s in zip(best, sources) if s == kind], dtype=np.int64)
        if len(mine):
            because.update(zip(mine.tolist(), (str(data.items[j]) if j >= 0 else None
                                               for j in models.cf[kind].because(row, mine))))
    for kind, vectors in (("content", models.content),
                          ("two_tower", models.two_tower.item_vectors if models.two_tower else None)):
        looks = np.asarray([i for i, s in zip(best, sources) if s == kind], dtype=np.int64)
        if len(looks) and len(cols):
            because.update(zip(looks.tolist(), (str(data.items[j]) for j in closest(vectors, cols, looks))))
    most = sum(getattr(weights, name) for name in signals)
    out = []
    for i, source in zip(best.tolist(), sources):
        reason = because[i] if i in because else _because(models, source, i, bought, trend_group)
        out.append(Candidate(str(data.items[i]), shown_score(float(total[i]), most), source, reason))
    return out


def shown_score(total: float, most: float) -> float:
    """A blend's ranking score as shown, from 0 to 1 in the same order: a recent purchase (FIRST plus its
    "buy it again" signal, itself from REPURCHASE_FLOOR to 1) maps to 0.75..1, any other pick to half its
    share of `most`, the sum of the weights of the signals present."""
    if total >= FIRST:
        return 0.5 + 0.5 * min(total - FIRST, 1.0)
    return 0.5 * total / most if most > 0 else 0.0


def _tower_scores(models: Models, known: pd.DataFrame, cols: np.ndarray, event_weights: list[float],
                  now: datetime, segment: str | None) -> np.ndarray:
    """The two-tower's score of every item for a shopper: their latest events, weighted by type and recency."""
    tower = models.two_tower
    assert tower is not None
    age = (pd.Timestamp(now) - known["ts"]).dt.total_seconds().to_numpy() / 86400.0 if len(known) else np.zeros(0)
    latest = np.argsort(age, kind="stable")[:tower.options.history]
    weights = recency(age[latest], tower.options.half_life_days) * np.asarray(event_weights, dtype=np.float32)[latest]
    return tower.scores(cols[latest], weights, segment)


def cold_start(models: Models, n: int, segment: str | None, how: str = "shrunk") -> list[Candidate]:
    """Picks for a shopper with no events: "shrunk" (their segment's top sellers shrunk toward everyone's),
    "segment" (their segment's alone), "two-tower" (its shopper tower on the segment alone) or "everyone"
    (trending overall). Without a segment, or where the segment sold nothing, trending overall."""
    if segment and how == "two-tower" and models.two_tower is not None:
        scores = np.maximum(models.two_tower.scores(np.zeros(0, np.int64), np.zeros(0, np.float32), segment), 0)
        return [Candidate(str(models.data.items[i]), float(scores[i]), "two_tower", segment) for i in _top(scores, n)]
    if segment and how == "shrunk" and models.by_segment_shrunk is not None:
        rows = models.by_segment_shrunk
        rows = rows[(rows["group"] == segment) & (rows["score"] > 0)].head(n)
        if len(rows):
            return [Candidate(str(i), float(s), "trending", segment) for i, s in zip(rows["item_id"], rows["score"])]
    if segment and how in ("segment", "shrunk"):
        found = trending(models, n, segment)
        if found:
            return found
    return trending(models, n)


def trending(models: Models, n: int, group: str = "all",
             item_filter: Mapping[str, str] | None = None, attributes: Mapping[str, Mapping[str, str]] | None = None
             ) -> list[Candidate]:
    """Top sellers (decayed) overall or in a segment, optionally only items whose attributes match."""
    out = []
    for item, score in _trending_rows(models, group):
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


def _trending_rows(models: Models, group: str) -> list[tuple[str, float]]:
    key = ("trending rows", group)
    if key not in models.cache:
        table = models.by_segment if group != "all" else models.trending
        rows = table[table["group"] == group]
        models.cache[key] = list(zip(rows["item_id"].tolist(), rows["score"].astype(float).tolist()))
    return models.cache[key]


def _trending_vector(models: Models, group: str, size: int) -> np.ndarray:
    key = ("trending vector", group)
    if key not in models.cache:
        vector = np.zeros(size, dtype=np.float64)
        index = models.data.item_index
        for item, score in _trending_rows(models, group):
            if item in index:
                vector[index[item]] = score
        vector.setflags(write=False)
        models.cache[key] = vector
    return models.cache[key]


def _because(models: Models, source: str, i: int, bought: pd.DataFrame, group: str) -> str | None:
    if source == "variant":
        key = models.variants.get(str(models.data.items[i]))
        return next((b for b in reversed(bought["item_id"].tolist()) if models.variants.get(b) == key), None)
    if source in ("trending", "two_tower"):  # the two-tower without a history to point at: the segment spoke
        return None if group == "all" else group
    return str(models.data.items[i])


def _top(scores: np.ndarray, n: int) -> list[int]:
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0:
        return []
    n = min(n, positive.size)
    part = positive[np.argpartition(-scores[positive], n - 1)[:n]]
    return sorted(part.tolist(), key=lambda i: (-scores[i], i))
