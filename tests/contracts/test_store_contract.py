"""What every store promises (store/base.py), checked on each backend: Chroma embedded and a real
Chroma server, both opened through the StoreBackend protocol the registry uses."""
from __future__ import annotations

import numpy as np
import pytest

from store.base import Record
from store.backend import ChromaBackend
from store.base import StoreBackend, VectorStore
from toolkit.ground.errors import ModelMismatchError, StoreError
from toolkit.ground.settings import Settings


@pytest.fixture(params=["embedded", "server"])
def store_settings(request, tmp_path):
    if request.param == "embedded":
        return Settings(data_dir=tmp_path / "data")
    server = request.getfixturevalue("chroma_server")
    return Settings(chroma_host=server["host"], chroma_port=server["port"])


def unit(*xs) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_upsert_query_filter_delete(store_settings, request):
    name = f"contract-{request.node.callspec.id}"
    st = ChromaBackend(store_settings).open(name, model_id="m", dim=3)
    st.upsert([
        Record("a", unit(1, 0, 0), {"tags": ["colour:black"], "price": 20.0, "title": "A"}),
        Record("b", unit(0.9, 0.1, 0), {"tags": ["colour:red"], "price": 80.0}),
        Record("c", unit(0, 0, 1), {"tags": ["colour:black", "pattern:solid"], "price": 5.0}),
    ])
    st.upsert([Record("a", unit(1, 0, 0), {"tags": ["colour:black"], "price": 20.0, "title": "A2"})])
    assert st.count() == 3  # upsert by id never duplicates
    hits = st.query(unit(1, 0, 0), 3)
    assert [h.id for h in hits] == ["a", "b", "c"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4) and hits[0].metadata["title"] == "A2"
    black = st.query(unit(1, 0, 0), 3, where={"tags": {"$contains": "colour:black"}})
    assert [h.id for h in black] == ["a", "c"]
    cheap = st.query(unit(1, 0, 0), 3, where={"price": {"$lt": 50}})
    assert {h.id for h in cheap} == {"a", "c"}
    st.delete(["b"])
    assert st.count() == 2 and st.get(ids=["b"]) == []


def test_collection_refuses_another_model(store_settings, request):
    name = f"mismatch-{request.node.callspec.id}"
    ChromaBackend(store_settings).open(name, model_id="offline-v1", dim=3)
    with pytest.raises(ModelMismatchError, match="built by model offline-v1.*toolkit reindex --model NAME"):
        ChromaBackend(store_settings).open(name, model_id="clip-vit-b32", dim=512)
    st = ChromaBackend(store_settings).open(name, model_id="offline-v1", dim=3)
    with pytest.raises(ModelMismatchError, match="4-d vector"):
        st.upsert([Record("x", unit(1, 0, 0, 0), {})])


def test_the_server_and_the_embedded_client_read_one_folder(chroma_server):
    """`chroma run --path DIR` serves what a PersistentClient wrote there."""
    served = Settings(chroma_host=chroma_server["host"], chroma_port=chroma_server["port"])
    st = ChromaBackend(served).open("shared-folder", model_id="m", dim=3)
    st.upsert([Record("z", unit(0, 1, 0), {"title": "Z"})])
    again = ChromaBackend(served).open("shared-folder", model_id="m", dim=3)
    assert again.get(ids=["z"])[0].metadata["title"] == "Z"


def test_unreachable_server_says_what_to_do():
    with pytest.raises(StoreError, match="cannot reach the Chroma server.*TOOLKIT_CHROMA_HOST"):
        ChromaBackend(Settings(chroma_host="127.0.0.1", chroma_port=9)).open("x-y-z", model_id="m", dim=3)


def test_batches_above_chroma_limit(tmp_path):
    st = ChromaBackend(Settings(data_dir=tmp_path)).open("big-batch", model_id="m", dim=8)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(6000, 8)).astype(np.float32)
    st.upsert([Record(f"r{i}", v / np.linalg.norm(v), {"i": i}) for i, v in enumerate(vecs)])
    assert st.count() == 6000
    assert sum(1 for _ in st.iter_metadata(batch=2500)) == 6000


def test_a_backend_opens_lists_and_drops_collections(store_settings, request):
    backend = ChromaBackend(store_settings)
    assert isinstance(backend, StoreBackend)
    name = f"lifecycle-{request.node.callspec.id}"
    st = backend.open(name, model_id="m", dim=3)
    assert isinstance(st, VectorStore)
    st.upsert([Record("a", unit(1, 0, 0), {"kind": "image"})])
    assert backend.exists(name)
    listed = {c.name: c for c in backend.collections()}[name]
    assert (listed.model_id, listed.dim, listed.count) == ("m", 3, 1)
    assert backend.drop(name) is True
    assert not backend.exists(name) and backend.drop(name) is False
