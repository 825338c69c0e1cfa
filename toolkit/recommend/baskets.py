"""Baskets from events: an order id where the events have one, else one user's purchases within a window."""
from __future__ import annotations

import pandas as pd

#: Baskets larger than this are cut to their first items: a few huge ones (a shop's stock-taking,
#: a bot) would otherwise dominate the itemsets and the miner's memory.
MAX_BASKET = 50


def baskets(events: pd.DataFrame, window_days: int = 1, max_items: int = MAX_BASKET) -> list[list[str]]:
    """Each basket's distinct items, in the order first bought. `events` is EventStore.frame()'s shape."""
    if events.empty:
        return []
    day = (events["ts"].astype("datetime64[s]").astype("int64") // (86400 * max(1, window_days))).astype(str)
    key = events["basket_id"].where(events["basket_id"].notna(), "u:" + events["user_id"] + "|" + day)
    grouped = events.assign(key=key).drop_duplicates(["key", "item_id"]).groupby("key", sort=False)["item_id"]
    return [items[:max_items] for items in grouped.agg(list).tolist()]
