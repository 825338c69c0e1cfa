"""Top sellers over a recent window, each purchase weighted down by its age (half-life), overall or per group."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Mapping

import numpy as np
import pandas as pd


def decayed_counts(events: pd.DataFrame, now: datetime, window_days: float = 30, half_life_days: float = 7,
                   groups: Mapping[str, str] | None = None, group_of: str = "user_id") -> pd.DataFrame:
    """(group, item_id, score) sorted best first: score is the sum of quantity * 0.5 ** (age / half-life)
    over purchases in the window. With `groups` (a user or item -> group value map, e.g. age band or
    index group), scores are per group; without, the single group is "all"."""
    recent = events[(events["ts"] >= pd.Timestamp(now - timedelta(days=window_days))) & (events["ts"] < pd.Timestamp(now))]
    if recent.empty:
        return pd.DataFrame({"group": [], "item_id": [], "score": []})
    age = (pd.Timestamp(now) - recent["ts"]).dt.total_seconds().to_numpy() / 86400.0
    weight = recent["quantity"].to_numpy() * np.power(0.5, age / max(half_life_days, 1e-9))
    group = recent[group_of].map(lambda key: groups.get(key, "")) if groups is not None else "all"
    scored = pd.DataFrame({"group": group, "item_id": recent["item_id"].to_numpy(), "score": weight})
    scored = scored[scored["group"] != ""]
    table = scored.groupby(["group", "item_id"], as_index=False)["score"].sum()
    return table.sort_values(["group", "score", "item_id"], ascending=[True, False, True], ignore_index=True)


def top(table: pd.DataFrame, group: str = "all", n: int | None = None) -> list[tuple[str, float]]:
    rows = table[table["group"] == group]
    if n is not None:
        rows = rows.head(n)
    return list(zip(rows["item_id"].tolist(), rows["score"].astype(float).tolist()))


def shrunk(by_group: pd.DataFrame, overall: pd.DataFrame, prior: float) -> pd.DataFrame:
    """Per-group scores (decayed_counts with groups) shrunk toward the overall ones (decayed_counts without):
    (group score + prior * overall share) / (group total + prior), for every item sold overall. `prior` is
    how many (decayed) purchases the overall list counts for: a group with far fewer follows it, one with
    far more keeps its own order. (group, item_id, score) sorted best first, like decayed_counts."""
    if overall.empty or by_group.empty:
        return by_group.iloc[0:0]
    share = overall.set_index("item_id")["score"]
    share = share / share.sum()
    tables = []
    for group, rows in by_group.groupby("group", sort=True):
        own = rows.set_index("item_id")["score"]
        score = (own.reindex(share.index.union(own.index), fill_value=0.0)
                 + prior * share.reindex(share.index.union(own.index), fill_value=0.0)) / (own.sum() + prior)
        tables.append(pd.DataFrame({"group": group, "item_id": score.index, "score": score.to_numpy()}))
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["group", "score", "item_id"], ascending=[True, False, True], ignore_index=True)
