"""The in-memory filtered path (store/filtered.py) gives what an exact filtered search gives,
matches Chroma's own `where` semantics, stays current through writes, and answers the same
over an embedded store and a Chroma server."""
from __future__ import annotations

import numpy as np
import pytest

from store.base import Record
from store.chroma import ChromaStore
from toolkit.search.query import search_vector
from toolkit.search.filters import to_chroma_where

N, DIM = 3000, 32
COLOURS = ["red", "blue", "black", "white", "green"]
TYPES = [f"type{i}" for i in range(20)]  # 5% each
FILTERS = [
    ["article_type=type3"],                         # 5% of the records
    ["colour=red", "kind=image"],
    ["article_type=type7", "price<40"],
    ["colour!=black"],
    ["kind=video"],
    ["attr.brand=B1"],
    ["currency=EUR"],                                # no record has it
    ["price>=90"],
]


def make_records(n: int = N, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    out = []
    for i in range(n):
        meta = {"kind": "video" if i % 10 == 0 else "image", "media_id": f"m{i}",
                "tags": [f"colour:{COLOURS[i % 5]}", f"article_type:{TYPES[(i // 5) % 20]}"]}
        if i % 3:  # a third of the records have no product: no price, no brand
            meta.update(price=float(i % 100), currency="USD", attr_brand=f"B{i % 7}", product_id=f"P{i}")
        out.append(Record(id=f"r{i}", embedding=vecs[i], metadata=meta))
    return out


def exact(records: list[Record], vector: np.ndarray, k: int, where: dict) -> list[str]:
    """Brute force over the records Chroma's own `where` selects: the ground truth."""
    def norm(v):
        return v / np.linalg.norm(v)
    allowed = {r.id for r in records if matches(r.metadata, where)}
    scored = sorted(((float(norm(r.embedding) @ norm(vector)), r.id) for r in records if r.id in allowed),
                    reverse=True)
    return [i for _, i in scored[:k]]


def matches(meta: dict, where: dict) -> bool:
    if "$and" in where:
        return all(matches(meta, c) for c in where["$and"])
    (key, cond), = where.items()
    (op, value), = cond.items()
    if key == "tags":
        has = value in meta.get("tags", [])
        return has if op == "$contains" else not has
    if key not in meta:
        return False
    v = meta[key]
    return {"$eq": v == value, "$ne": v != value, "$lt": isinstance(v, float) and v < value,
            "$lte": isinstance(v, float) and v <= value, "$gt": isinstance(v, float) and v > value,
            "$gte": isinstance(v, float) and v >= value}[op]


def open_store(settings, name: str, records: list[Record]) -> ChromaStore:
    store = ChromaStore.open(settings, name, model_id="synthetic", dim=DIM)
    store.upsert(records)
    store.filter_index_min = 0  # the index serves every filtered query, however small the store
    store.filter_index()        # built now, not in the background after the first query
    return store


@pytest.fixture(scope="module")
def records():
    return make_records()


@pytest.fixture
def store(settings, records):
    return open_store(settings, "filtered", records)


def queries(n: int = 10, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f))
def test_index_selects_exactly_what_chroma_where_selects(store, filters):
    where = to_chroma_where(filters)
    mask = store.filter_index().mask(where)
    chosen = {store.filter_index().ids[i] for i in np.flatnonzero(mask & store.filter_index().alive)}
    assert chosen == {r.id for r in store.get(where=where)}


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f))
def test_filtered_top10_equals_exact_filtered_search(store, records, filters):
    where = to_chroma_where(filters)
    for q in queries():
        got = [m.id for m in store.query(q, 10, where=where)]
        assert got == exact(records, q, 10, where)


def test_scores_and_metadata_are_what_chroma_returns(store):
    where = to_chroma_where(["article_type=type3"])
    q = queries(1)[0]
    ours = store.query(q, 10, where=where)
    store.filter_index_min = 10**9  # Chroma's own path
    theirs = store.query(q, 10, where=where)
    assert [m.id for m in ours] == [m.id for m in theirs]
    assert [m.score for m in ours] == pytest.approx([m.score for m in theirs], abs=1e-4)
    assert [m.metadata for m in ours] == [m.metadata for m in theirs]


def test_writes_keep_the_index_current(store, records):
    where = to_chroma_where(["colour=red"])
    q = queries(1)[0]
    first = store.query(q, 5, where=where)[0]
    store.update_metadata([first.id], [{"tags": ["colour:blue"]}])       # no longer red
    assert first.id not in [m.id for m in store.query(q, 5, where=where)]
    store.upsert([Record(id="new", embedding=q * 3, metadata={"kind": "image", "tags": ["colour:red"]})])
    assert store.query(q, 1, where=where)[0].id == "new"
    store.delete(["new"])
    assert "new" not in [m.id for m in store.query(q, 5, where=where)]
    assert len(store.filter_index()) == store.count()


def test_filter_beyond_the_index_falls_back_to_chroma(store):
    where = {"media_id": {"$in": ["m1", "m2", "m4"]}}  # an operator the index does not evaluate
    assert store.filter_index().mask(where) is None
    assert {m.id for m in store.query(queries(1)[0], 10, where=where)} == {"r1", "r2", "r4"}


def test_product_search_through_the_index_matches_chroma(store):
    q = queries(1)[0]
    ours = search_vector(store, q, k=10, where=["article_type=type5"])
    store.filter_index_min = 10**9
    theirs = search_vector(store, q, k=10, where=["article_type=type5"])
    assert [h.media_id for h in ours] == [h.media_id for h in theirs]


def test_server_gives_what_the_embedded_store_gives(settings, records, chroma_server):
    from toolkit.ground.settings import load_settings

    embedded = open_store(settings, "filtered-e", records)
    served = open_store(load_settings(data_dir=settings.data_dir, chroma_host=chroma_server["host"],
                                      chroma_port=chroma_server["port"]), "filtered-s", records)
    for filters in FILTERS[:4]:
        where = to_chroma_where(filters)
        for q in queries(5):
            assert [m.id for m in embedded.query(q, 10, where=where)] == \
                   [m.id for m in served.query(q, 10, where=where)]


def test_a_query_before_the_index_is_ready_is_answered_by_chroma(settings, records):
    store = ChromaStore.open(settings, "filtered-cold", model_id="synthetic", dim=DIM)
    store.upsert(records)
    store.filter_index_min = 0
    where = to_chroma_where(["article_type=type3"])
    q = queries(1)[0]
    first = [m.id for m in store.query(q, 10, where=where)]  # starts the build, does not wait for it
    store._keeper.building.join(60)
    assert store._keeper.ready(store.count()) is not None
    assert [m.id for m in store.query(q, 10, where=where)] == first == exact(records, q, 10, where)
