"""`toolkit recommend eval`: train before a cutoff, score the week after, rolling over several weeks.

Per shopper who bought in a test week: MAP@k (the H&M competition's metric: precision at each hit,
averaged over min(k, items bought)), HR@k (any hit) and recall@k, pooled over every shopper-week
with a 95% bootstrap interval. Baselines run in the same pass: last-7-days and last-30-days
popularity, and the shopper's own recent purchases then popularity. Each blend variant is compared
with the best baseline by a paired bootstrap of the per-shopper difference ("margin").
Bought-together: basket completion (hide each test basket's last item, rank from the rest), HR@10.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from toolkit.recommend.baskets import baskets
from toolkit.recommend.content import ItemVectors
from toolkit.recommend.models import Models, Options, build
from toolkit.recommend.picks import Weights, cold_start, for_history
from toolkit.recommend.segments import segment

BOOTSTRAP = 1000
Progress = Callable[[str], None]


@dataclass
class Interval:
    mean: float
    low: float
    high: float


@dataclass
class MethodScore:
    method: str
    group: str  # "known users", "new users", "baskets"
    n: int
    map: Interval | None = None
    hr: Interval | None = None
    recall: Interval | None = None
    coverage: float | None = None
    never_bought_share: float | None = None  # of the hits, those of articles nobody bought before the cutoff
    margin: Interval | None = None  # MAP (HR for baskets) minus the group's best baseline's, paired
    baseline: bool = False


@dataclass
class WeekInfo:
    start: str
    users: int
    new_users: int
    baskets: int
    map: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalReport:
    k: int
    weeks: list[WeekInfo]
    scores: list[MethodScore]
    catalog: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def ap_at_k(predicted: list[str], actual: set[str], k: int) -> tuple[float, float, float]:
    """(average precision, hit, recall) at k for one shopper."""
    hits, total = 0, 0.0
    for rank, item in enumerate(predicted[:k], 1):
        if item in actual:
            hits += 1
            total += hits / rank
    if not actual:
        return 0.0, 0.0, 0.0
    return total / min(len(actual), k), float(hits > 0), hits / len(actual)


def interval(values: np.ndarray, rng: np.random.Generator) -> Interval:
    if values.size == 0:
        return Interval(0.0, 0.0, 0.0)
    samples = values[rng.integers(0, values.size, size=(BOOTSTRAP, values.size))].mean(axis=1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high))


def popularity(purchases: pd.DataFrame, now: datetime, days: int, n: int) -> list[str]:
    recent = purchases[purchases["ts"] >= pd.Timestamp(now - timedelta(days=days))]
    counts = recent.groupby("item_id")["quantity"].sum()
    return counts.sort_values(ascending=False, kind="stable").index[:n].tolist()


def repurchase_then(popular: list[str], history: pd.DataFrame, n: int) -> list[str]:
    """The shopper's own purchases, latest first, then `popular`. Ties within a day go to the higher
    product id: a plain date sort in pandas leaves them so, and on H&M that order is worth about
    0.003 MAP@12 (its ids grow with newer colours); the blend breaks ties the same way."""
    own = list(dict.fromkeys(history.sort_values(["ts", "item_id"], ascending=False)["item_id"]))
    return list(dict.fromkeys(own + popular))[:n]


#: The two-tower's weight in the ablation's "with two-tower" row while the shipped blend leaves it out: the
#: best of 0.3, 1 and 3 on the 4 weeks before those reported, with product vectors from photos and titles
#: (bench/recommend.py --jobs tune; 0.3 with photos alone).
TWO_TOWER_TRIAL = 1.0


def variants(weights: Weights, content: bool, two_tower: bool = False) -> dict[str, Weights]:
    """The blend and its ablation: each variant turns parts of the blend's weights off (or the two-tower on)."""
    only = Weights(repurchase=0, item=0, als=0, trending=0, variant=0, content=0, two_tower=0, repurchase_days=0)
    parts = ["repurchase", "item", "als", "trending", "variant"] + (["content"] if content else [])
    names = {"repurchase": "repurchase", "item": "item-item CF", "als": "ALS", "trending": "trending",
             "variant": "other colours", "content": "content", "two_tower": "two-tower"}
    out = {"blend (all signals)": weights}
    out.update({f"  without {names[p]}": weights.without(p) for p in parts})
    if two_tower:
        if weights.two_tower:
            out["  without two-tower"] = weights.without("two_tower")
        else:
            out[f"  with two-tower (weight {TWO_TOWER_TRIAL:g})"] = replace(weights, two_tower=TWO_TOWER_TRIAL)
    out.update({f"{names[p]} only": replace(only, **{p: 1}) for p in ["als", "item"] + (["content"] if content else [])
                + (["two_tower"] if two_tower else [])})
    return out


def evaluate(events: pd.DataFrame, users: Mapping[str, Mapping[str, str]],
             item_attributes: Mapping[str, Mapping[str, str]], weeks: int = 8, k: int = 12,
             options: Options | None = None, end: datetime | None = None, progress: Progress | None = None,
             seed: int = 0, vectors: ItemVectors | None = None, weights: Weights | None = None) -> EvalReport:
    started = time.perf_counter()
    events = events.sort_values("ts", kind="stable")
    purchases = events[events["event_type"] == "purchase"]
    if purchases.empty:
        return EvalReport(k, [], [], len(item_attributes), 0.0, ["no purchases to evaluate on"])
    end = end or (purchases["ts"].max().to_pydatetime().replace(hour=0, minute=0, second=0, microsecond=0)
                  + timedelta(days=1))
    blends = variants(weights or Weights(), vectors is not None, (options or Options()).tower is not None)
    per: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    recommended: dict[tuple[str, str], set[str]] = {}
    never_hits: dict[tuple[str, str], list[int]] = {}
    infos: list[WeekInfo] = []
    for w in range(weeks, 0, -1):
        cutoff = end - timedelta(days=7 * w)
        test = purchases[(purchases["ts"] >= pd.Timestamp(cutoff)) & (purchases["ts"] < pd.Timestamp(cutoff + timedelta(days=7)))]
        if test.empty:
            continue
        train_all = events[events["ts"] < pd.Timestamp(cutoff)]
        train = purchases[purchases["ts"] < pd.Timestamp(cutoff)]
        if progress:
            progress(f"week from {cutoff:%Y-%m-%d}: training on {len(train_all)} events")
        models = build(train_all, cutoff, "eval", users, item_attributes, options, vectors=vectors)
        seen_items = set(train["item_id"])
        history = {u: h for u, h in train_all.groupby("user_id")}
        actual = test.groupby("user_id")["item_id"].agg(set)
        pop7, pop30 = popularity(train, cutoff, 7, k), popularity(train, cutoff, 30, k)
        info = WeekInfo(f"{cutoff:%Y-%m-%d}", 0, 0, 0)
        week_maps: dict[str, list[float]] = {}
        for user, items in actual.items():
            h = history.get(user)
            group = "known users" if h is not None and (h["event_type"] == "purchase").any() else "new users"
            info.users += group == "known users"
            info.new_users += group == "new users"
            lists = {(group, m): r for m, r in _methods(models, group, h, user, users, pop7, pop30, cutoff, k,
                                                        blends).items()}
            # Every shopper of the week again, as if they had no history: cold start with many more shoppers.
            lists.update({(AS_NEW, m): r for m, r in _cold(models, segment(users.get(user)), pop7, pop30, k).items()})
            for (g, method), ranked in lists.items():
                score = ap_at_k(ranked, items, k)
                per.setdefault((g, method), []).append(score)
                recommended.setdefault((g, method), set()).update(ranked)
                never_hits.setdefault((g, method), []).extend(
                    int(i not in seen_items) for i in ranked[:k] if i in items)
                if g == group:
                    week_maps.setdefault(method, []).append(score[0])
        info.baskets = _basket_completion(models, test, pop7, per, recommended)
        info.map = {m: round(float(np.mean(v)), 5) for m, v in week_maps.items()}
        infos.append(info)
    scores = _summarise(per, recommended, never_hits, len(item_attributes), seed)
    return EvalReport(k, infos, scores, len(item_attributes), round(time.perf_counter() - started, 1))


def _methods(models: Models, group: str, history: pd.DataFrame | None, user: str,
             users: Mapping[str, Mapping[str, str]], pop7: list[str], pop30: list[str], now: datetime,
             k: int, blends: Mapping[str, Weights]) -> dict[str, list[str]]:
    seg = segment(users.get(user))
    if group == "new users":
        return _cold(models, seg, pop7, pop30, k)
    ranked = {"popularity, last 7 days": pop7, "popularity, last 30 days": pop30}
    bought = history[history["event_type"] == "purchase"]
    ranked["repurchase, then popularity"] = repurchase_then(pop7, bought, k)
    for name, weights in blends.items():
        ranked[name] = [c.item_id for c in for_history(models, history, now, k, user_id=user, weights=weights,
                                                       segment=seg)]
    return ranked


def _cold(models: Models, seg: str | None, pop7: list[str], pop30: list[str], k: int) -> dict[str, list[str]]:
    """The lists for a shopper with no history: baselines, trending overall and the segment's variants."""
    ranked = {"popularity, last 7 days": pop7, "popularity, last 30 days": pop30,
              "trending (decayed), everyone": [c.item_id for c in cold_start(models, k, None, "everyone")]}
    for name, how in COLD_METHODS.items():
        if how != "two-tower" or models.two_tower is not None:
            ranked[name] = [c.item_id for c in cold_start(models, k, seg, how)] or pop7
    return ranked


#: Cold-start lists scored against the baselines: name -> `picks.cold_start(how=...)`.
COLD_METHODS = {"trending in the user's segment": "segment",
                "segment's top sellers shrunk toward everyone's": "shrunk",
                "two-tower, segment only": "two-tower"}
AS_NEW = "every shopper as new"
GROUPS = ("known users", "new users", AS_NEW, "baskets")


BASELINES = {"popularity, last 7 days", "popularity, last 30 days", "repurchase, then popularity"}


def _basket_completion(models: Models, test: pd.DataFrame, pop: list[str], per, recommended) -> int:
    """Hide the last item of each test basket of 2+ items; rank from the rest with bought-together
    (filled up with popularity) and with popularity alone; a hit is the hidden item in the top 10."""
    from toolkit.recommend.picks import together

    count = 0
    for basket in baskets(test, models.options.basket_window_days):
        if len(basket) < 2:
            continue
        count += 1
        rest, hidden = basket[:-1], basket[-1]
        scored: dict[str, float] = {}
        for item in rest:
            for c in together(models, item, 50):
                scored[c.item_id] = max(scored.get(c.item_id, 0.0), c.score)
        ranked = [i for i, _ in sorted(scored.items(), key=lambda x: (-x[1], x[0])) if i not in rest]
        lists = {"bought together, then popularity": list(dict.fromkeys(ranked + [p for p in pop if p not in rest]))[:10],
                 "popularity, last 7 days": [p for p in pop if p not in rest][:10]}
        for method, items in lists.items():
            hit = float(hidden in items)
            per.setdefault(("baskets", method), []).append((hit, hit, hit))
            recommended.setdefault(("baskets", method), set()).update(items)
    return count


def _summarise(per, recommended, never_hits, catalog: int, seed: int) -> list[MethodScore]:
    rng = np.random.default_rng(seed)
    out: list[MethodScore] = []
    best_baseline: dict[str, np.ndarray] = {}
    for group in GROUPS:
        baselines = [(m, np.array(v)) for (g, m), v in per.items()
                     if g == group and (m in BASELINES or m.startswith("popularity"))]
        if baselines:
            best_baseline[group] = max(baselines, key=lambda mv: mv[1][:, 0].mean())[1]
    for (group, method), values in sorted(per.items(), key=lambda kv: GROUPS.index(kv[0][0])):
        v = np.array(values)
        hits = never_hits.get((group, method), [])
        score = MethodScore(method, group, len(v), coverage=round(len(recommended[(group, method)]) / max(catalog, 1), 4),
                            never_bought_share=round(float(np.mean(hits)), 3) if hits else None,
                            baseline=method in BASELINES or method.startswith("popularity"))
        if group == "baskets":
            score.hr = interval(v[:, 1], rng)
        else:
            score.map, score.hr, score.recall = (interval(v[:, i], rng) for i in range(3))
        base = best_baseline.get(group)
        if base is not None and not score.baseline and len(base) == len(v):
            col = 1 if group == "baskets" else 0
            score.margin = interval(v[:, col] - base[:, col], rng)
        out.append(score)
    return out
