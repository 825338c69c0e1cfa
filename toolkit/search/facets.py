"""What a store can be filtered on: its tag groups and labels, catalog attributes and price range.

The HTTP API uses it twice: to refuse a filter on a field the store does not have (a typo
would otherwise quietly return nothing) and to fill the search page's filter menus.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from toolkit.records import ATTR_PREFIX, MENU_FIELDS, TAG_PREFIX

if TYPE_CHECKING:
    from store.base import VectorStore

#: Attributes with more distinct values than this are not offered as a menu.
MAX_MENU_VALUES = 60


@dataclass
class Facets:
    """Counts are per media item (a video's frames count once)."""

    tags: dict[str, dict[str, int]] = field(default_factory=dict)
    attributes: dict[str, dict[str, int]] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    price_min: float | None = None
    price_max: float | None = None
    media: int = 0

    def filter_fields(self) -> list[str]:
        """Every field name a filter may use, as written in `--where`."""
        return sorted(self.tags) + sorted(f"attr.{a}" for a in self.attributes) + list(MENU_FIELDS)

    def menus(self) -> dict[str, dict[str, int]]:
        """Attributes with few enough values to offer as a menu."""
        return {a: v for a, v in self.attributes.items() if len(v) <= MAX_MENU_VALUES}


def collect_facets(store: "VectorStore") -> Facets:
    tags: dict[str, Counter] = {}
    attrs: dict[str, Counter] = {}
    kinds: Counter = Counter()
    prices: list[float] = []
    seen: set[str] = set()
    for rid, meta in store.iter_metadata():
        # A group may appear only among the filter tokens (a lower-confidence label, one video
        # frame's tag): it is still a field a filter can match.
        for token in meta.get("tags") or []:
            tags.setdefault(str(token).split(":", 1)[0], Counter())
        mid = meta.get("media_id") or rid
        if mid in seen:
            continue
        seen.add(mid)
        kinds[meta.get("kind", "image")] += 1
        _count_record(meta, tags, attrs)
        if isinstance(meta.get("price"), (int, float)):
            prices.append(float(meta["price"]))
    return Facets(tags={g: dict(c.most_common()) for g, c in sorted(tags.items())},
                  attributes={a: dict(c.most_common()) for a, c in sorted(attrs.items())},
                  kinds=dict(kinds), price_min=min(prices, default=None), price_max=max(prices, default=None),
                  media=len(seen))


def _count_record(meta: dict, tags: dict[str, Counter], attrs: dict[str, Counter]) -> None:
    for key, value in meta.items():
        if key.startswith(TAG_PREFIX):
            tags.setdefault(key[len(TAG_PREFIX):], Counter())[str(value)] += 1
        elif key.startswith(ATTR_PREFIX):
            attrs.setdefault(key[len(ATTR_PREFIX):], Counter())[str(value)] += 1


class FacetCache:
    """Facets kept in memory and refreshed in the background when the record count changes, the
    store is another one (the service moved to a new collection), or `ttl` seconds have passed
    (a catalog import changes labels without changing the count).

    A scan reads every record's metadata (about 3 s for 8,000 records on two busy cores), so
    only the very first call waits for one; later calls get the last facets at once while a
    thread computes the next.
    """

    def __init__(self, store: Callable[[], "VectorStore"], ttl: float = 300.0) -> None:
        self._store = store
        self._ttl = ttl
        self._lock = threading.Lock()
        self._scan = threading.Lock()  # one scan at a time
        self._facets: Facets | None = None
        self._of: tuple[object, int] | None = None  # (store, count) the facets were read from
        self._at = 0.0
        self._refreshing = False

    def get(self) -> Facets:
        store = self._store()
        count = store.count()
        with self._lock:
            facets, stale = self._facets, not self._read_from(store, count) or time.monotonic() - self._at > self._ttl
            if facets is not None and stale and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, args=(store, count), name="facets", daemon=True).start()
        return facets if facets is not None else self._refresh(store, count)

    def _read_from(self, store: "VectorStore", count: int) -> bool:
        return self._of is not None and self._of[0] is store and self._of[1] == count

    def _refresh(self, store: "VectorStore", count: int) -> Facets:
        with self._scan:
            if self._facets is not None and self._read_from(store, count) and not self._refreshing:
                return self._facets  # another caller scanned while this one waited
            try:
                facets = collect_facets(store)
                with self._lock:
                    self._facets, self._of, self._at = facets, (store, count), time.monotonic()
                return facets
            finally:
                with self._lock:
                    self._refreshing = False
