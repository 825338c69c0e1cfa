"""The two-tower model on hand-made shops, and cold start by segment shrunk toward everyone's top sellers."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from toolkit.recommend.cf import interactions
from toolkit.recommend.content import ItemVectors, normalise_rows
from toolkit.recommend.errors import StaleModels
from toolkit.recommend.models import Catalog, Options, build
from toolkit.recommend.picks import Weights, cold_start, for_history
from toolkit.recommend.records import Event
from toolkit.recommend.service import Recommender
from toolkit.recommend.trending import shrunk
from toolkit.recommend.two_tower import TowerOptions, train

FAST = TowerOptions(epochs=30, batch=16, dim=16, hidden=32, attribute_dim=8, image_components=4, lr=1e-2)
NOW = datetime(2024, 4, 1)
# Two kinds of product: "a" ones look alike (vectors near e1), "b" ones too (near e2). a9 and b9 nobody bought.
ITEMS = [f"a{i}" for i in range(1, 6)] + ["a9"] + [f"b{i}" for i in range(1, 6)] + ["b9"]
ATTRIBUTES = {i: {"index_group_name": "Ladieswear" if i[0] == "a" else "Menswear",
                  "product_code": f"P{i}"} for i in ITEMS}


def vectors() -> ItemVectors:
    rng = np.random.default_rng(0)
    base = {"a": np.eye(6)[0], "b": np.eye(6)[1]}
    matrix = np.stack([base[i[0]] + 0.2 * rng.standard_normal(6) for i in ITEMS])
    return ItemVectors(list(ITEMS), normalise_rows(matrix), "test-model")


def events() -> pd.DataFrame:
    """Twelve shoppers of "a" products and twelve of "b" ones, each buying two or three of their kind."""
    rng = np.random.default_rng(1)
    rows = []
    for kind in "ab":
        for u in range(12):
            for day, item in enumerate(rng.choice(5, size=3, replace=False)):
                rows.append({"user_id": f"{kind}-shopper-{u}", "item_id": f"{kind}{item + 1}", "event_type": "purchase",
                             "ts": pd.Timestamp(NOW - timedelta(days=30 - 7 * day - u % 3)), "basket_id": None,
                             "quantity": 1.0, "price": None})
    return pd.DataFrame(rows)


def towers(**changes):
    frame = events()
    data = interactions(frame, all_items=ITEMS)
    content = vectors().aligned(data.item_index, len(data.items))
    segments = {u: ("age under 25" if u.startswith("a") else "age 55+") for u in frame["user_id"]}
    return data, train(data, frame, NOW, content, ATTRIBUTES, segments, replace(FAST, **changes))


def test_the_two_tower_trains_deterministically():
    _, one = towers()
    _, two = towers()
    assert one.pairs == two.pairs > 0
    assert np.array_equal(one.item_vectors, two.item_vectors)
    assert one.losses == two.losses and one.losses[-1] < one.losses[0]


def test_it_ranks_what_similar_shoppers_bought_above_the_rest_and_scores_never_bought_products():
    data, tower = towers()
    col = data.item_index["a1"]
    scores = tower.scores(np.array([col]), np.array([1.0], dtype=np.float32), None)
    score = dict(zip(data.items.tolist(), scores.tolist()))
    assert min(score[f"a{i}"] for i in range(2, 6)) > max(score[f"b{i}"] for i in range(1, 6))
    # a9 was never bought: its photo and attributes alone put it with the "a" products.
    assert np.isfinite(score["a9"]) and score["a9"] > max(score[f"b{i}"] for i in range(1, 6))
    # A new shopper of a segment gets that segment's kind of product from the shopper tower alone.
    young = dict(zip(data.items.tolist(), tower.scores(np.zeros(0, np.int64), np.zeros(0, np.float32),
                                                       "age under 25").tolist()))
    assert np.mean([young[f"a{i}"] for i in range(1, 6)]) > np.mean([young[f"b{i}"] for i in range(1, 6)])


def test_the_two_tower_is_a_signal_of_the_blend_and_picks_say_why():
    frame = events()
    options = Options(tower=FAST, cf_kinds=())
    models = build(frame, NOW, "t", {}, ATTRIBUTES, options, vectors=vectors())
    history = frame[frame["user_id"] == "a-shopper-0"]
    only = Weights(repurchase=0, item=0, als=0, trending=0, variant=0, content=0, two_tower=1, repurchase_days=0)
    picks = for_history(models, history, NOW, 3, weights=only)
    assert picks and all(p.item_id.startswith("a") and p.source == "two_tower" for p in picks)
    assert all(p.because in set(history["item_id"]) for p in picks)


def test_models_with_a_two_tower_built_for_another_catalog_are_refused(tmp_path):
    frame = events()
    catalog = Catalog("shop", "id-1", "test-model")
    rec = Recommender(tmp_path, catalog=lambda: catalog, vectors=vectors, options=Options(tower=FAST, cf_kinds=()))
    items = tmp_path / "items.csv"
    pd.DataFrame([{"product_id": i, **a} for i, a in ATTRIBUTES.items()]).to_csv(items, index=False)
    rec.import_items(items)
    rec.record([Event(r.user_id, r.item_id, r.ts.to_pydatetime()) for r in frame.itertuples()])
    rec.train()
    assert rec.models().two_tower is not None
    rec.close()
    with Recommender(tmp_path, catalog=lambda: replace(catalog, model_id="another-model")) as other:
        with pytest.raises(StaleModels, match="built from collection 'shop' \\(model test-model\\)"):
            other.models()


def test_segment_top_sellers_shrink_toward_everyones_by_a_prior():
    by_group = pd.DataFrame({"group": ["young", "young"], "item_id": ["x", "y"], "score": [3.0, 1.0]})
    overall = pd.DataFrame({"group": ["all"] * 3, "item_id": ["z", "x", "y"], "score": [6.0, 3.0, 1.0]})
    # Shares overall: z 0.6, x 0.3, y 0.1; the segment's total is 4. With a prior of 4 purchases:
    # x (3 + 4 * 0.3) / 8 = 0.525, z (0 + 4 * 0.6) / 8 = 0.3, y (1 + 4 * 0.1) / 8 = 0.175.
    table = shrunk(by_group, overall, 4.0)
    assert table["item_id"].tolist() == ["x", "z", "y"]
    assert table["score"].tolist() == pytest.approx([0.525, 0.3, 0.175])
    assert shrunk(by_group, overall, 0.0)["item_id"].tolist() == ["x", "y", "z"]  # the segment's own order
    assert shrunk(by_group, overall, 1e6)["item_id"].tolist() == ["z", "x", "y"]  # everyone's


def test_cold_start_serves_the_shrunk_segment_list_and_falls_back_to_trending_overall():
    frame = events()
    segments = {u: ("age under 25" if u.startswith("a") else "age 55+") for u in frame["user_id"]}
    users = {u: {"age": "20" if s == "age under 25" else "60"} for u, s in segments.items()}
    models = build(frame, NOW, "t", users, ATTRIBUTES, Options(tower=None, cf_kinds=(), segment_prior=1.0))
    young = cold_start(models, 3, "age under 25", "shrunk")
    assert [c.item_id[0] for c in young] == ["a", "a", "a"] and young[0].because == "age under 25"
    assert [c.item_id for c in cold_start(models, 3, "age 35-44", "shrunk")] == \
        [c.item_id for c in cold_start(models, 3, None, "everyone")]  # a segment that bought nothing
