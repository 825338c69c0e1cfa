"""Picks through the Python API on a small hand-made shop: bought together, for a user, trending, and the
answers for unknown users and products."""
from __future__ import annotations

from datetime import datetime

import pytest

from toolkit.recommend.errors import UnknownProduct
from toolkit.recommend.models import Options
from toolkit.recommend.evaluate import ap_at_k
from toolkit.recommend.records import Event
from toolkit.recommend.service import Recommender

ITEMS = """product_id,title,price,product_code,index_group_name
a1,Strap top black,10,P1,Ladieswear
a2,Strap top white,10,P1,Ladieswear
b1,Denim skirt,20,P2,Ladieswear
c1,Chino,30,P3,Menswear
d1,Socks,5,P4,Menswear
n1,Never bought,7,P5,Menswear
"""
USERS = "customer_id,age\nu1,23\nu2,22\nu3,41\nu9,24\nu8,70\n"
# One shopper's day is a basket: a1 with b1 twice, a1 with a2 (its other colour) twice.
EVENTS = """customer_id,article_id,t_dat
u1,a1,2024-03-01
u1,b1,2024-03-01
u2,a1,2024-03-02
u2,b1,2024-03-02
u3,a2,2024-03-03
u3,b1,2024-03-03
u4,a1,2024-03-04
u4,a2,2024-03-04
u5,a1,2024-03-05
u5,a2,2024-03-05
u3,c1,2024-03-06
u4,c1,2024-03-07
u4,d1,2024-03-07
"""


def shop(folder, catalog=None):
    for name, text in (("items.csv", ITEMS), ("users.csv", USERS), ("events.csv", EVENTS)):
        (folder / name).write_text(text)
    r = Recommender(folder / "data", catalog=lambda: catalog)
    r.import_items(folder / "items.csv")
    r.import_users(folder / "users.csv")
    assert r.import_events(folder / "events.csv").added == 13
    r.train()
    return r


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """One shop for the tests that only read; a test that records events makes its own."""
    with shop(tmp_path_factory.mktemp("shop")) as r:
        yield r


def ids(picks):
    return [p.product_id for p in picks.picks]


def test_bought_together_ranks_complements_with_confidence_and_lift_and_leaves_out_other_colours(rec):
    result = rec.together("a1")
    # 7 baskets; a1 is in 4, 2 of them with b1: confidence 0.5; b1 is in 3: lift 0.5 / (3/7) = 1.17.
    assert ids(result) == ["b1"]  # a2 (bought with a1 twice) is the same garment: left out
    assert result.picks[0].reason == "bought together: confidence 0.50, lift 1.2, 2 baskets"
    assert result.picks[0].title == "Denim skirt" and result.picks[0].price == 20


def test_an_unknown_product_is_an_error_with_the_fix(rec):
    with pytest.raises(UnknownProduct, match="product 'zzz' is in neither the events nor the items"):
        rec.together("zzz")


def test_a_product_no_basket_holds_is_an_empty_list_with_a_reason_or_its_lookalikes_complements(tmp_path, rec):
    result = rec.together("n1")
    assert result.picks == [] and result.note == ("no basket holds n1, and no vector store is attached "
                                                  "to find products like it")
    looks = Recommender(rec.data_dir, store=rec.events, neighbours=lambda pid, n: ["a1"])
    result = looks.together("n1")
    assert ids(result) == ["b1"] and result.picks[0].source == "together-lookalike"
    assert result.picks[0].reason.startswith("bought with Strap top black, which looks like it (confidence 0.50")



def test_a_product_only_the_vector_store_holds_is_known_by_its_looks_and_picks_take_the_stores_cards(rec):
    from toolkit.ground.errors import NotFoundError
    from toolkit.recommend.records import Item

    def neighbours(product_id, n):  # as Toolkit.more_like_this answers: unknown ids are an error
        if product_id != "s1":
            raise NotFoundError(f"no product or media '{product_id}' in the store")
        return ["a1"]

    def products(product_ids):  # the store's cards; the items table's fields win where it has them
        return {i: Item(i, title=f"Store title {i}", price=1.0, media_id=f"m-{i}", tags={"colour": "Blue"})
                for i in product_ids if i in ("s1", "b1", "a1")}

    looks = Recommender(rec.data_dir, store=rec.events, neighbours=neighbours, products=products)
    result = looks.together("s1")
    assert ids(result) == ["b1"] and result.picks[0].source == "together-lookalike"
    pick = result.picks[0]
    assert (pick.title, pick.price, pick.media_id, pick.tags) == ("Denim skirt", 20, "m-b1", {"colour": "Blue"})
    assert pick.reason.startswith("bought with Strap top black, which looks like it")
    with pytest.raises(UnknownProduct, match="product 'zzz' is in neither"):
        looks.together("zzz")

def test_a_known_user_gets_their_purchases_again_first_then_new_things_with_reasons(rec):
    result = rec.for_user("u1", k=5)
    assert ids(result)[:2] == ["b1", "a1"] or ids(result)[:2] == ["a1", "b1"]
    assert result.picks[0].reason == "buy it again: you bought it on 2024-03-01"
    others = result.picks[2:]
    assert "a2" in ids(result) and all(p.product_id not in ("a1", "b1") for p in others)
    # Scores run from 0 to 1 in the order shown: recent purchases 0.75 and up, every other pick at most 0.5.
    scores = [p.score for p in result.picks]
    assert scores == sorted(scores, reverse=True)
    assert all(0.75 <= s <= 1 for s in scores[:2]) and all(0 < s <= 0.5 for s in scores[2:])
    a2 = next(p for p in result.picks if p.product_id == "a2")
    assert a2.reason in ("another colour of Strap top black, which you bought", "because you bought Strap top black",
                         "because you bought Denim skirt")
    fresh = rec.for_user("u1", k=5, buy_again=False)
    assert "a1" not in ids(fresh) and "b1" not in ids(fresh) and fresh.picks


def test_filters_and_min_score_apply_to_picks(rec):
    result = rec.for_user("u1", k=5, where=["index_group_name=Menswear"])
    assert result.picks and {p.attributes["index_group_name"] for p in result.picks} == {"Menswear"}
    assert all(p.price < 25 for p in rec.for_user("u1", where=["price<25"]).picks)
    assert rec.for_user("u1", min_score=1e9).picks == []
    assert rec.for_user("u1", min_score=1e9).note == "no pick meets the filters"


def test_a_new_event_changes_a_users_picks_at_once(tmp_path):
    rec = shop(tmp_path)
    assert "d1" not in ids(rec.for_user("u1", k=3))
    rec.record([Event("u1", "d1", datetime(2024, 3, 8), quantity=3)])
    result = rec.for_user("u1", k=3)
    assert ids(result)[0] == "d1" and result.picks[0].reason == "buy it again: you bought it on 2024-03-08"


def test_a_user_with_no_events_gets_trending_in_their_segment_or_overall(rec, tmp_path):
    young = rec.for_user("u9", k=3)  # 24: u1 and u2 (22, 23) bought a1 and b1
    assert young.note == "no events for user 'u9': trending in their segment"
    # The segment's list shrunk toward everyone's (30 days, half-life 30, 100 pseudo-purchases): overall a1
    # (4 sold) leads a2 and b1 (3 each, a2's later); the segment's 2 purchases of b1 lift it over a2.
    # a1: (1.762 + 100 x 3.650 / 12.10) / (3.524 + 100) = 0.308; b1: 0.230; a2: 0.224.
    assert ids(young) == ["a1", "b1", "a2"] and young.picks[0].reason == "trending in age under 25"
    assert [p.score for p in young.picks] == pytest.approx([0.3084, 0.2304, 0.2235], abs=1e-4)
    own = Recommender(rec.data_dir, store=rec.events, options=Options(cold_start="segment"))
    assert set(ids(own.for_user("u9", k=3))) == {"a1", "b1"}  # the segment's own list: only what it bought
    nobody = rec.for_user("nobody", k=2)
    assert nobody.note == "no events for user 'nobody': trending overall"
    assert len(nobody.picks) == 2 and nobody.picks[0].reason == "trending now"
    assert rec.for_user("u8").note == "no events for user 'u8': trending overall"  # 55+ bought nothing


def test_trending_overall_and_per_facet_with_time_decay(rec):
    overall = rec.trending(k=10)
    # Half-life 7 days, now = 7 March: c1's 2 purchases on 6-7 March (0.91 + 1.0) outweigh b1's 3 on
    # 1-3 March (0.55 + 0.61 + 0.67); a2's 3 on 3-5 March outweigh both.
    assert ids(overall)[:4] == ["a1", "a2", "c1", "b1"]
    assert overall.picks[2].score == pytest.approx(0.5 ** (1 / 7) + 1, abs=1e-3)
    assert overall.picks[3].score == pytest.approx(sum(0.5 ** (d / 7) for d in (6, 5, 4)), abs=1e-3)
    men = rec.trending(facet={"index_group_name": "Menswear"})
    assert ids(men) == ["c1", "d1"] and men.picks[0].reason == "trending in Menswear"
    assert rec.trending(facet={"index_group_name": "Kids"}).note == "nothing bought in the last 30 days in Kids"


def test_a_session_without_an_account_gets_item_based_picks(rec):
    result = rec.for_session(["a2"], k=3)
    assert "a2" not in ids(result)
    # Item-item cosine over shoppers: a2's buyers (u3, u4, u5) bought c1 (u3, u4): 2/sqrt(6) = 0.82;
    # a1 (u1, u2, u4, u5): 2/sqrt(12) = 0.58; b1 (u1, u2, u3): 1/3.
    assert ids(result)[:2] == ["c1", "a1"]
    assert result.picks[0].reason == "because you looked at Strap top white"


def test_trained_models_are_read_back_and_not_rebuilt(rec, monkeypatch):
    import toolkit.recommend.service as service

    again = Recommender(rec.data_dir, store=rec.events)
    monkeypatch.setattr(service, "build", lambda *a, **k: pytest.fail("serving rebuilt the models"))
    assert ids(again.together("a1")) == ["b1"]


def test_ap_hr_and_recall_at_k_by_hand():
    ap, hit, recall = ap_at_k(["x", "a", "y", "b"], {"a", "b", "c"}, 12)
    assert ap == pytest.approx((1 / 2 + 2 / 4) / 3) and hit == 1.0 and recall == pytest.approx(2 / 3)
    assert ap_at_k(["x"], {"a"}, 12) == (0.0, 0.0, 0.0)
    assert ap_at_k(["a", "b"], {"a", "b"}, 1) == (1.0, 1.0, 0.5)


def content_shop(folder, vectors):
    """The shop's items, u1 who bought a1 and u2 who bought c1, and picks from the content profile alone."""
    from toolkit.recommend.picks import Weights

    for name, text in (("items.csv", ITEMS), ("events.csv", "customer_id,article_id,t_dat\nu1,a1,2024-03-01\n"
                                                                "u2,c1,2024-03-02\n")):
        (folder / name).write_text(text)
    weights = Weights(repurchase=0, repurchase_days=0, item=0, als=0, trending=0, variant=0, content=1)
    rec = Recommender(folder / "data", vectors=lambda: vectors, weights=weights)
    rec.import_items(folder / "items.csv")
    rec.import_events(folder / "events.csv")
    return rec


def test_content_picks_reach_a_product_nobody_bought_by_its_looks(tmp_path):
    import numpy as np

    from store.base import Record
    from toolkit.recommend.content import from_store

    class Store:  # the store's records: two media of a1, one of n1 (looks like a1), one of c1
        model_id = "test-model"

        def get(self, include_embeddings=False):
            def rec(i, product, v):
                return Record(id=i, embedding=np.asarray(v, dtype=np.float32), metadata={"product_id": product})
            return [rec("m1", "a1", [1, 0, 0]), rec("m2", "a1", [1, 0.2, 0]), rec("m3", "n1", [1, 0.1, 0]),
                    rec("m4", "c1", [0, 0, 1]), rec("m5", None, [0, 1, 0])]

    vectors = from_store(Store())
    assert vectors.ids == ["a1", "c1", "n1"] and vectors.model_id == "test-model"
    assert np.allclose(np.linalg.norm(vectors.matrix, axis=1), 1)
    rec = content_shop(tmp_path, vectors)
    result = rec.for_user("u1", k=2)
    assert ids(result)[0] == "n1" and result.picks[0].reason == "looks like Strap top black"
    assert rec.models().content_model == "test-model"


def test_models_are_kept_per_collection_and_refused_for_another_collection_or_model(tmp_path):
    from toolkit.recommend.errors import StaleModels
    from toolkit.recommend.models import Catalog

    trained = Catalog("catalog", "id-1", "clip-a")
    first = shop(tmp_path, trained)
    assert first.models_path == tmp_path / "data" / "recommend" / "catalog" / "models.pkl"
    assert first.models().catalog == trained.as_dict()

    def serving(catalog):
        return Recommender(tmp_path / "data", catalog=lambda: catalog)

    assert ids(serving(trained).together("a1")) == ["b1"]
    for other, why in ((Catalog("catalog", "id-2", "clip-a"), "collection 'catalog' (model clip-a)"),
                       (Catalog("catalog", "id-1", "clip-b"), "collection 'catalog' (model clip-b)"),
                       (Catalog("catalog-v2", "id-3", "clip-b"), "collection 'catalog-v2' (model clip-b)")):
        with pytest.raises(StaleModels) as caught:
            serving(other).together("a1")
        message = str(caught.value)
        assert "\n" not in message and why in message and message.endswith("run `toolkit recommend train`")

    retrained = serving(Catalog("catalog-v2", "id-3", "clip-b"))
    retrained.train()
    assert ids(retrained.together("a1")) == ["b1"]
    assert ids(serving(trained).together("a1")) == ["b1"]  # the first collection's models are still there


def test_models_an_older_toolkit_wrote_are_refused_with_the_fix(tmp_path):
    import pickle

    from toolkit.recommend.errors import StaleModels

    rec = shop(tmp_path)
    models = rec.models()
    models.format = 2
    rec.models_path.write_bytes(pickle.dumps(models))
    with pytest.raises(StaleModels, match=r"older toolkit; run `toolkit recommend train`$"):
        Recommender(tmp_path / "data").together("a1")



def test_a_products_vector_joins_its_photos_and_its_titles_so_a_product_without_photos_is_reached(tmp_path):
    import numpy as np

    from store.base import Record
    from toolkit.recommend.content import from_store

    class Collection:
        model_id = "test-model"

        def __init__(self, records):
            self.records = records

        def get(self, include_embeddings=False):
            return self.records

    def rec(i, product, v):
        return Record(id=i, embedding=np.asarray(v, dtype=np.float32), metadata={"product_id": product})

    media = Collection([rec("m1", "a1", [1, 0]), rec("m2", "n1", [0.6, 0.8]), rec("m3", "c1", [0, 1])])
    # The catalog's titles: n1's reads like a1's; d1 has a title and no photo yet.
    titles = Collection([rec("a1", "a1", [1, 0]), rec("n1", "n1", [3, 0]), rec("d1", "d1", [0.8, 0.6])])
    vectors = from_store(media, titles)
    assert vectors.ids == ["a1", "c1", "d1", "n1"]
    m = dict(zip(vectors.ids, vectors.matrix))
    # Similarity: the mean of the photos' and the titles' cosines; a missing half adds nothing.
    assert float(m["a1"] @ m["n1"]) == pytest.approx((0.6 + 1.0) / 2)
    assert float(m["a1"] @ m["d1"]) == pytest.approx(0.8 / 2)
    assert float(m["a1"] @ m["c1"]) == pytest.approx(0.0)
    assert from_store(media, Collection([])).matrix.shape == (3, 2)  # no titles: the photos alone

    assert ids(content_shop(tmp_path, vectors).for_user("u1", k=3)) == ["n1", "d1"]  # c1 shares nothing with a1: no pick
