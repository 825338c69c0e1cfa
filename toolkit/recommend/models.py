"""Every model the recommendations serve from, built from the events in one pass (`toolkit recommend train`).

A `Models` bundle is built at a moment (`now`): CF over the purchases before it, bought-together
complements over the baskets before it, trending over the window before it. Evaluation builds one
per cutoff; serving builds one from all events and keeps it on disk beside the events database.
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from toolkit.recommend.baskets import baskets
from toolkit.recommend.cf import CF, Interactions, interactions
from toolkit.recommend.content import ItemVectors
from toolkit.recommend.rules import Complement, complements
from toolkit.recommend.segments import segment
from toolkit.recommend import two_tower
from toolkit.recommend.trending import decayed_counts, shrunk
from toolkit.recommend.two_tower import TowerOptions, TwoTower

FORMAT = 4
#: Item attribute that names the garment shared by its colours (H&M's first 7 digits of article_id).
VARIANT_ATTRIBUTE = "product_code"

StepCallback = Callable[[str, float], None]


@dataclass
class Options:
    basket_window_days: int = 1
    min_baskets: int = 2
    #: Pairs must also be in this share of baskets: at millions of baskets, 2 would keep every pair.
    min_pair_support: float = 1e-5
    trending_window_days: float = 30
    trending_half_life_days: float = 7
    cf_kinds: tuple[str, ...] = ("als", "item")
    factors: int = 64
    iterations: int = 15
    #: Train the two-tower model (two_tower.py) with these options; None: do not.
    tower: TowerOptions | None = field(default_factory=TowerOptions)
    #: Cold start: a segment's top sellers over this window, shrunk toward everyone's (trending.shrunk).
    #: (30, 30, 100): the best of 3 x 2 x 4 settings on the 4 weeks before those `eval` reports (README).
    segment_window_days: float = 30
    segment_half_life_days: float = 30
    segment_prior: float = 100.0
    #: How a shopper with no events is served: picks.cold_start's `how`. "shrunk" beat "segment" on the 4 weeks
    #: it was chosen on and on the 8 reported after them, and ties global popularity there (README).
    cold_start: str = "shrunk"


@dataclass
class Models:
    now: datetime
    stamp: str
    data: Interactions
    cf: dict[str, CF]
    complements: dict[str, list[Complement]]
    trending: pd.DataFrame  # group "all"
    by_segment: pd.DataFrame  # group = segment
    segments: dict[str, str]  # user -> segment
    variants: dict[str, str]  # item -> variant key (product code)
    variant_members: dict[str, list[str]]
    options: Options = field(default_factory=Options)
    seconds: dict[str, float] = field(default_factory=dict)
    format: int = FORMAT
    #: Tables derived at serving time (trending lists and vectors per group), kept for the next call.
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    #: The store's vector of each item (rows as data.items; zeros where none), and the model that made them.
    content: np.ndarray | None = None
    content_model: str | None = None
    #: The collection the models were built beside (`Catalog.as_dict()`); None when no store was attached.
    catalog: dict | None = None
    two_tower: TwoTower | None = None
    #: Cold start: top sellers per segment, shrunk toward everyone's (group = segment).
    by_segment_shrunk: pd.DataFrame | None = None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> "Models | None":
        """The models at `path`; None where an older toolkit wrote them (their fields may not fit this one)."""
        if not path.is_file():
            return None
        with path.open("rb") as f:
            models = pickle.load(f)
        return models if getattr(models, "format", None) == FORMAT else None


@dataclass(frozen=True)
class Catalog:
    """What a trained model depends on in the vector store: the collection (its name and Chroma's id, which
    changes when a collection is dropped and made again) and the embedding model that filled it."""

    collection: str
    collection_id: str
    model_id: str

    def as_dict(self) -> dict:
        return {"collection": self.collection, "collection_id": self.collection_id, "model_id": self.model_id}

    def describe(self) -> str:
        return f"collection '{self.collection}' (model {self.model_id})"


def describe(catalog: dict | None) -> str:
    if not catalog:
        return "no collection"
    return f"collection '{catalog.get('collection')}' (model {catalog.get('model_id')})"


def build(events: pd.DataFrame, now: datetime, stamp: str, users: Mapping[str, Mapping[str, str]],
          item_attributes: Mapping[str, Mapping[str, str]], options: Options | None = None,
          on_step: StepCallback | None = None, vectors: ItemVectors | None = None) -> Models:
    """Models from `events` (EventStore.frame() of every type) before `now`."""
    options = options or Options()
    seconds: dict[str, float] = {}

    def step(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 3)
        if on_step:
            on_step(name, seconds[name])

    events = events[events["ts"] < pd.Timestamp(now)]
    purchases = events[events["event_type"] == "purchase"]
    started = time.perf_counter()
    data = interactions(events, all_items=list(item_attributes))
    step("matrix", started)
    cf: dict[str, CF] = {}
    for kind in options.cf_kinds:
        started = time.perf_counter()
        cf[kind] = CF(kind, factors=options.factors, iterations=options.iterations).fit(data)  # type: ignore[arg-type]
        step(f"cf {kind}", started)
    started = time.perf_counter()
    found = baskets(purchases, options.basket_window_days)
    together = complements(found, max(options.min_baskets, int(options.min_pair_support * len(found))))
    step("bought together (fp-growth)", started)
    started = time.perf_counter()
    segments = {u: s for u, attrs in users.items() if (s := segment(attrs))}
    trend = decayed_counts(purchases, now, options.trending_window_days, options.trending_half_life_days)
    by_segment = decayed_counts(purchases, now, options.trending_window_days, options.trending_half_life_days,
                                groups=segments)
    shrunk = shrunk_by_segment(purchases, now, segments, options)
    step("trending", started)
    variants = {i: a[VARIANT_ATTRIBUTE] for i, a in item_attributes.items() if a.get(VARIANT_ATTRIBUTE)}
    members: dict[str, list[str]] = {}
    for item, key in variants.items():
        members.setdefault(key, []).append(item)
    content = vectors.aligned(data.item_index, len(data.items)) if vectors is not None else None
    tower = None
    if options.tower is not None:
        started = time.perf_counter()
        tower = two_tower.train(data, purchases, now, content, item_attributes, segments, options.tower)
        step("two-tower", started)
    return Models(now, stamp, data, cf, together, trend, by_segment, segments, variants, members, options, seconds,
                  content=content, content_model=vectors.model_id if vectors is not None else None,
                  two_tower=tower, by_segment_shrunk=shrunk)


def shrunk_by_segment(purchases: pd.DataFrame, now: datetime, segments: Mapping[str, str],
                      options: Options) -> pd.DataFrame:
    """Each segment's decayed top sellers over `segment_window_days`, shrunk toward everyone's: the share of
    an item in a segment is (its segment score + prior x its share of everyone's) / (the segment's total +
    prior), a Bayesian average with `segment_prior` pseudo-purchases, so a segment with few purchases
    gets nearly everyone's list and a large one its own."""
    window, half = options.segment_window_days, options.segment_half_life_days
    return shrunk(decayed_counts(purchases, now, window, half, groups=segments),
                  decayed_counts(purchases, now, window, half), options.segment_prior)


def normalised(vector: np.ndarray) -> np.ndarray:
    top = float(vector.max()) if vector.size else 0.0
    return vector / top if top > 0 else np.zeros_like(vector)
