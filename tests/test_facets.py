"""Facets: the filter fields a store has, and a cache that never makes a request wait for a rescan."""
from __future__ import annotations

import threading
import time

import numpy as np

from store.base import Record
from store.chroma import ChromaStore
from toolkit.search.facets import FacetCache, collect_facets


def record(rid: str, media: str, **meta) -> Record:
    return Record(rid, np.ones(3, np.float32) / np.sqrt(3), {"media_id": media, **meta})


def test_facets_count_media_once_and_name_every_filter_field(settings):
    store = ChromaStore.open(settings, "facets", model_id="m", dim=3)
    store.upsert([
        record("a-f0", "a", kind="video", tag_colour="Black", tags=["colour:black"], price=20.0),
        record("a-f1", "a", kind="video", tag_colour="Black", tags=["colour:black", "pattern:striped"], price=20.0),
        record("b", "b", kind="image", tag_colour="Red", attr_brand="Puma", tags=["colour:red"], price=80.0),
    ])
    f = collect_facets(store)
    # The video counts once; a group only one of its frames has is still a field.
    assert f.tags == {"colour": {"Black": 1, "Red": 1}, "pattern": {}}
    assert f.attributes == {"brand": {"Puma": 1}} and f.kinds == {"video": 1, "image": 1}
    assert (f.price_min, f.price_max, f.media) == (20.0, 80.0, 2)
    assert f.filter_fields() == ["colour", "pattern", "attr.brand", "kind", "product_id", "currency"]


class CountingStore:
    """A store whose scans can be held, to see what callers get while one runs."""

    def __init__(self) -> None:
        self.records = [("a", {"media_id": "a", "tag_colour": "Black"})]
        self.scans = 0
        self.release = threading.Event()
        self.release.set()

    def count(self) -> int:
        return len(self.records)

    def iter_metadata(self):
        self.release.wait(10)
        self.scans += 1
        return iter(list(self.records))


def test_a_changed_store_is_rescanned_in_the_background_while_callers_get_the_last_facets():
    store = CountingStore()
    cache = FacetCache(lambda: store, ttl=3600)
    assert set(cache.get().tags) == {"colour"} and store.scans == 1
    assert cache.get() is cache.get() and store.scans == 1  # unchanged: no rescan

    store.release.clear()  # the next scan waits until released
    store.records.append(("b", {"media_id": "b", "tag_season": "Summer"}))
    assert set(cache.get().tags) == {"colour"}  # answered at once, from the last scan
    store.release.set()
    deadline = time.monotonic() + 10
    while set(cache.get().tags) != {"colour", "season"}:
        assert time.monotonic() < deadline, "the background rescan never finished"
        time.sleep(0.01)
    assert store.scans == 2


def test_another_store_of_the_same_size_is_scanned_too():
    """After the service moves to a new collection (a reindex: the same items, so the same count),
    its facets are read from the new store, not kept from the old one."""
    old, new = CountingStore(), CountingStore()
    new.records = [("a", {"media_id": "a", "tag_season": "Winter"})]
    in_use = [old]
    cache = FacetCache(lambda: in_use[0], ttl=3600)
    assert set(cache.get().tags) == {"colour"}
    in_use[0] = new
    deadline = time.monotonic() + 10
    while set(cache.get().tags) != {"season"}:
        assert time.monotonic() < deadline, "the new store was never scanned"
        time.sleep(0.01)
    assert (old.scans, new.scans) == (1, 1)
