"""The filter index's lifecycle: saved beside an embedded store, loaded by a new process when it
is current, kept current by an append-only change log that every adapter's writes extend,
detected as stale after writes that did not go through an adapter, and never built by a process
that says it is one-shot. Real Chroma, real files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from store.base import Record
from store.chroma import ChromaStore
from store.filter_index import FilterIndex
from store.index_files import IndexFiles
from tests.test_filtered_search import DIM, exact, make_records, queries
from toolkit.search.filters import to_chroma_where

WHERE = to_chroma_where(["article_type=type3"])
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def records():
    return make_records(1500, seed=3)


def open_fresh(settings, name: str, *, build: bool = True) -> ChromaStore:
    """Another handle on the collection, as a new process would have: no index in memory."""
    store = ChromaStore.open(settings, name, model_id="synthetic", dim=DIM)
    store.filter_index_min = 0
    store.build_filter_index = build
    return store


@pytest.fixture
def built(settings, records):
    store = open_fresh(settings, "lifecycle")
    store.upsert(records)
    store.filter_index()  # built now, and saved
    return store


def ids(matches) -> list[str]:
    return [m.id for m in matches]


def saved(store: ChromaStore) -> dict | None:
    """The saved index's head (None: nothing saved)."""
    return IndexFiles(store.index_dir).head()


def saved_index(store: ChromaStore) -> FilterIndex | None:
    return IndexFiles(store.index_dir).load(None)


def current(store: ChromaStore):
    """The in-memory index if it matches the collection now, read afresh."""
    store._keeper.forget()
    return store._keeper.current()


def behind_the_adapters_back(store: ChromaStore):
    """The raw Chroma collection, as another tool writing to the store would use it."""
    return store._col._col


def test_a_built_index_is_saved_beside_the_store_with_its_stamp(built, settings):
    assert built.index_dir is not None and built.index_dir.is_dir()
    assert built.index_dir.parent.parent == settings.resolved_chroma_path.parent
    head = saved(built)
    assert built.index_dir.name == built.collection_id
    assert head["gen"] == built._keeper.collection_gen() is not None
    assert head["log_bytes"] == 0 and len(saved_index(built)) == built.count()


def test_saved_and_loaded_index_equals_the_built_one(built):
    again = saved_index(built)
    mem = built.filter_index()
    assert len(again) == len(mem) and again.ids == mem.ids and set(again.tokens) == set(mem.tokens)
    for filters in (["article_type=type3"], ["colour=red", "kind=image"], ["price<40"], ["attr.brand=B1"]):
        where = to_chroma_where(filters)
        n = len(mem.ids)  # a saved base has room for the log's records: compare the rows in use
        assert np.array_equal(again.mask(where)[:n], mem.mask(where)[:n]) and not again.mask(where)[n:].any()
        for q in queries(3):
            assert again.query(q, 10, where) == mem.query(q, 10, where)


def test_a_new_handle_uses_the_saved_index_without_building(built, settings, records):
    fresh = open_fresh(settings, "lifecycle", build=False)
    for q in queries(5):
        assert ids(fresh.query(q, 10, where=WHERE)) == exact(records, q, 10, WHERE)
    assert fresh._keeper.index is not None and fresh._keeper.building is None


def test_a_new_process_loads_the_saved_index(built, settings, records):
    q = queries(1)[0]
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from store.chroma import ChromaStore
from toolkit.ground.settings import load_settings
st = ChromaStore.open(load_settings(data_dir={str(settings.data_dir)!r}), "lifecycle", model_id="synthetic", dim={DIM})
st.filter_index_min = 0
st.build_filter_index = False
t = time.perf_counter()
got = [m.id for m in st.query(np.array({q.tolist()}, np.float32), 10, where={WHERE!r})]
print(json.dumps({{"ids": got, "loaded": st._keeper.index is not None, "s": time.perf_counter() - t}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "ANONYMIZED_TELEMETRY": "False"})
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["loaded"] and res["ids"] == exact(records, q, 10, WHERE)


def test_another_writers_adds_make_the_saved_and_the_in_memory_index_stale(built, settings, records):
    q = queries(1)[0]
    new = Record(id="added-elsewhere", embedding=q * 2,
                 metadata={"kind": "image", "tags": ["article_type:type3", "colour:red"]})
    # another writer whose writes bypass every adapter (another tool on the same store)
    behind_the_adapters_back(built).upsert(ids=[new.id], embeddings=[new.embedding], metadatas=[new.metadata])
    assert current(built) is None                                         # in memory: stale
    fresh = open_fresh(settings, "lifecycle", build=False)
    assert fresh._keeper.load_saved() is None                             # on disk: stale
    truth = exact(records + [new], q, 10, WHERE)
    assert truth[0] == "added-elsewhere"
    assert ids(fresh.query(q, 10, where=WHERE)) == truth                  # answered by Chroma
    assert fresh._keeper.index is None and fresh._keeper.building is None  # and nothing built
    assert ids(built.query(q, 10, where=WHERE)) == truth                 # Chroma, while it rebuilds
    built._keeper.building.join(60)
    assert built.filter_index().gen == built._keeper.collection_gen() == saved(built)["gen"]
    assert ids(built.query(q, 10, where=WHERE)) == truth                 # the rebuilt index
    assert ids(open_fresh(settings, "lifecycle", build=False).query(q, 10, where=WHERE)) == truth  # re-saved


def test_another_writers_metadata_edit_makes_the_index_stale(built, settings, records):
    q = queries(1)[0]
    top = ids(built.query(q, 10, where=WHERE))[0]
    other = open_fresh(settings, "lifecycle", build=False)
    other.update_metadata([top], [{"tags": ["article_type:type4"]}])     # same count, different filter result
    fresh = open_fresh(settings, "lifecycle", build=False)
    assert top not in ids(fresh.query(q, 10, where=WHERE))
    built._keeper.forget()
    assert top not in ids(built.query(q, 10, where=WHERE))


def test_own_writes_keep_the_index_current_without_a_rebuild(built, records):
    q = queries(1)[0]
    index = built.filter_index()
    built.upsert([Record(id="mine", embedding=q, metadata={"kind": "image", "tags": ["article_type:type3"]})])
    built.update_metadata(["r1"], [{"kind": "video"}])
    built.delete(["r2"])
    assert current(built) is index                                        # same object, generation advanced
    assert ids(built.query(q, 1, where=WHERE)) == ["mine"]


def test_a_one_shot_process_never_starts_a_build(settings, records):
    store = open_fresh(settings, "one-shot", build=False)
    store.upsert(records)
    q = queries(1)[0]
    assert ids(store.query(q, 10, where=WHERE)) == exact(records, q, 10, WHERE)
    assert store._keeper.building is None and store._keeper.index is None
    assert saved(store) is None


def test_a_server_store_keeps_its_index_in_memory_only(settings, records, chroma_server):
    from toolkit.ground.settings import load_settings

    served = load_settings(data_dir=settings.data_dir, chroma_host=chroma_server["host"],
                           chroma_port=chroma_server["port"])
    store = open_fresh(served, "lifecycle-served")
    store.upsert(records)
    q = queries(1)[0]
    assert ids(store.filter_index() and store.query(q, 10, where=WHERE)) == exact(records, q, 10, WHERE)
    assert store.index_dir is None


def test_a_loaded_index_takes_writes_like_the_one_it_was_saved_from(tmp_path, records):
    from store.filter_index import build

    mem = build(records, DIM)
    mem.delete(["r5", "r6"])
    files = IndexFiles(tmp_path / "ix")
    files.save_base(mem, "1.x")
    loaded = files.load(None)
    assert len(loaded) == len(mem) == len(records) - 2 and loaded.ids[5] is None
    q = queries(1)[0]
    for index in (mem, loaded):  # the same writes to both: tags replaced, a row deleted, rows added
        index.update_metadata(["r10"], [{"tags": ["article_type:type3", "colour:red"]}])
        index.upsert(["r11", "fresh"], np.stack([q, q]), [{"tags": ["colour:red"], "kind": "video"},
                                                         {"tags": ["article_type:type3"], "price": 5.0}])
        index.delete(["r12"])
    for filters in (["article_type=type3"], ["colour=red"], ["kind=video"], ["price<10"], ["colour!=red"]):
        where = to_chroma_where(filters)
        n = len(mem.ids)  # capacities differ (growth doubles): compare the rows in use
        assert np.array_equal((loaded.mask(where) & loaded.alive)[:n], (mem.mask(where) & mem.alive)[:n])
        assert loaded.query(q, 10, where) == mem.query(q, 10, where)
    assert len(loaded) == len(mem)


def test_a_run_of_writes_keeps_the_saved_index_current(built, settings, records):
    q = queries(1)[0]
    writer = open_fresh(settings, "lifecycle", build=False)  # a new process's handle, e.g. `toolkit tag`
    new = Record(id="tagged-later", embedding=q * 2, metadata={"kind": "image", "tags": ["article_type:type3"]})
    writer.upsert([new])
    writer.delete(["r3"])
    assert saved(writer)["gen"] == writer._keeper.collection_gen()      # the log has the writes
    assert len(saved_index(writer)) == writer.count()
    reader = open_fresh(settings, "lifecycle", build=False)
    truth = exact([r for r in records if r.id != "r3"] + [new], q, 10, WHERE)
    assert truth[0] == "tagged-later"
    assert ids(reader.query(q, 10, where=WHERE)) == truth
    assert reader._keeper.index is not None and reader._keeper.building is None  # answered by the saved index


def test_a_run_of_writes_saves_no_index_where_none_was_saved(settings, records):
    store = open_fresh(settings, "never-indexed", build=False)
    store.upsert(records[:50])
    assert saved(store) is None and store._keeper.index is None


def test_toolkit_tag_keeps_a_saved_index_current(settings, shared_data, tmp_path):
    from tests.helpers import ColourEmbedder, copy_photos, read_styles
    from toolkit import Toolkit

    rows = read_styles(shared_data)[:12]
    folder = copy_photos(shared_data, rows[:8], tmp_path / "photos")
    first = Toolkit(settings, embedder=ColourEmbedder())
    first.tag(folder, tagger="local")
    first.store.filter_index_min = 0
    first.store.filter_index()  # built and saved, as `toolkit serve` would
    copy_photos(shared_data, rows[8:], folder)
    again = Toolkit(settings, embedder=ColourEmbedder())  # the next `toolkit tag`, another process
    assert again.tag(folder, tagger="local").new == 4
    store = again.store
    assert saved(store)["gen"] == store._keeper.collection_gen()
    from toolkit import registry

    reader = registry.store(settings, ColourEmbedder(), store.name)  # as every process opens it
    assert reader._keeper.load_saved() is not None and len(reader._keeper.index) == store.count() == 12


# ---- the change log ----------------------------------------------------------------------------------

def base_files(store: ChromaStore) -> dict[str, tuple[int, int]]:
    head = saved(store)
    folder = store.index_dir / f"base-{head['base']}"
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def ten_new(q: np.ndarray, tag: str = "article_type:type3") -> list[Record]:
    """Ten records near `q` (distinct directions: no ties in the ranking)."""
    noise = np.random.default_rng(99).normal(scale=0.05, size=(10, len(q))).astype(np.float32)
    return [Record(id=f"ten-{n}", embedding=q + noise[n] * np.linalg.norm(q), metadata={"kind": "image", "tags": [tag]})
            for n in range(10)]


def test_a_ten_item_write_appends_to_the_log_and_leaves_the_base_alone(built, settings, records):
    q = queries(1)[0]
    head, base = saved(built), base_files(built)
    writer = open_fresh(settings, "lifecycle", build=False)  # the next `toolkit tag`: no index in memory
    writer.upsert(ten_new(q))
    after = saved(writer)
    assert after["base"] == head["base"] and base_files(writer) == base      # the base is not rewritten
    log = writer.index_dir / f"log-{after['base']}"
    assert log.stat().st_size == after["log_bytes"] > 10 * DIM * 4           # ten vectors appended
    assert after["log_bytes"] < 0.05 * after["base_bytes"]
    reader = open_fresh(settings, "lifecycle", build=False)
    truth = exact(records + ten_new(q), q, 10, WHERE)
    assert ids(reader.query(q, 10, where=WHERE)) == truth and truth[0].startswith("ten-")
    assert reader._keeper.index is not None and reader._keeper.building is None


def test_another_process_sees_the_change_by_replaying_the_log(built, settings, records):
    q = queries(1)[0]
    index = built.filter_index()
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from store.base import Record
from store.chroma import ChromaStore
from toolkit.ground.settings import load_settings
st = ChromaStore.open(load_settings(data_dir={str(settings.data_dir)!r}), "lifecycle", model_id="synthetic", dim={DIM})
from tests.test_filter_index_lifecycle import ten_new
st.upsert(ten_new(np.array({q.tolist()}, np.float32)))
st.delete(["r4"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={**__import__("os").environ, "ANONYMIZED_TELEMETRY": "False"})
    assert out.returncode == 0, out.stderr
    built._keeper.forget()
    truth = exact([r for r in records if r.id != "r4"] + ten_new(q), q, 10, WHERE)
    assert ids(built.query(q, 10, where=WHERE)) == truth
    assert built._keeper.index is index and built._keeper.building is None  # caught up, not rebuilt
    assert "r4" not in index.row_of and len(index) == built.count()


def test_a_write_behind_the_adapters_back_is_rebuilt_into_a_new_base(built, settings, records):
    q = queries(1)[0]
    head = saved(built)
    behind_the_adapters_back(built).delete(ids=["r7", "r8"])
    reader = open_fresh(settings, "lifecycle", build=False)
    assert reader._keeper.load_saved() is None                            # the count tells
    built._keeper.forget()
    index = built.filter_index()                                          # rebuilt from Chroma's pages
    assert len(index) == len(records) - 2 and "r7" not in index.row_of
    after = saved(built)
    assert after["base"] != head["base"] and after["log_bytes"] == 0
    assert not (built.index_dir / f"base-{head['base']}").exists()
    assert ids(reader.query(q, 10, where=WHERE)) == exact([r for r in records if r.id not in ("r7", "r8")],
                                                          q, 10, WHERE)
    assert reader._keeper.index is not None


def test_a_long_log_is_folded_into_a_new_base(built, settings, records, monkeypatch):
    import store.index_files

    q = queries(1)[0]
    head = saved(built)
    monkeypatch.setattr(store.index_files, "COMPACT_SHARE", 0.002)
    writer = open_fresh(settings, "lifecycle", build=False)
    writer.upsert(ten_new(q))
    after = saved(writer)
    assert after["base"] != head["base"] and after["log_bytes"] == 0      # compacted by the writer
    assert sorted(p.name for p in writer.index_dir.iterdir() if p.name.startswith(("base-", "log-"))) == \
        [f"base-{after['base']}", f"log-{after['base']}"]
    built._keeper.forget()
    truth = exact(records + ten_new(q), q, 10, WHERE)
    assert ids(built.query(q, 10, where=WHERE)) == truth                 # reloaded from the new base
    assert ids(open_fresh(settings, "lifecycle", build=False).query(q, 10, where=WHERE)) == truth


def test_dropping_a_collection_removes_its_index_and_log(built, settings):
    from store.collections import drop

    built.upsert(ten_new(queries(1)[0]))
    folder = built.index_dir
    assert (folder / "head.json").is_file() and any(p.name.startswith("log-") for p in folder.iterdir())
    drop(settings, "lifecycle")
    assert not folder.exists()
