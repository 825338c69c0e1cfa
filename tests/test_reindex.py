"""Changing models safely: `toolkit reindex` builds a new collection beside the old one and
switches to it when complete; `toolkit collections` lists, switches back and drops.

The registry's "offline" and "clip" names are served here by two small real embedders with
different model ids (the shipped model has its own tests): "offline" is ColourEmbedder
(192-d), "clip" a 4x4 thumbnail embedder (48-d), and "offline" with --heads gives the
192-d space reversed, under a model id naming the heads file, as retrained heads would.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from store import collections as colls
from store.base import Record
from tests.helpers import ColourEmbedder, copy_photos, read_styles, write_mp4, write_products_csv
from tests.test_cli import run
from toolkit import Toolkit, registry
from toolkit.ingest import reindex as reindex_mod
from toolkit.ground.errors import ConfigError, ModelMismatchError, StoreError
from toolkit.media.decode import decode
from toolkit.ground.models import MediaRef, Tag
from toolkit.records import stored_media_tags, tag_to_dict
from toolkit.ground.settings import load_settings

PHOTOS = 10
OLD = "catalog"


class SmallEmbedder(ColourEmbedder):
    """Another real model: 4x4 thumbnails, texts hashed into 48 dimensions."""

    model_id = "test-small-embedder-v1"
    dim = 48

    def embed_images(self, images):
        self.images_embedded += len(images)
        rows = np.stack([np.asarray(im.convert("RGB").resize((4, 4)), np.float32).ravel() / 255.0 - 0.5
                         for im in images])
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class ReversedEmbedder(ColourEmbedder):
    """ColourEmbedder's space reversed: same dimension, other vectors, another model id."""

    def __init__(self, heads: Path) -> None:
        super().__init__()
        self.model_id = f"test-colour-heads:{heads.name}"

    def embed_images(self, images):
        return np.ascontiguousarray(super().embed_images(images)[:, ::-1])

    def embed_texts(self, texts):
        return np.ascontiguousarray(super().embed_texts(texts)[:, ::-1])


@pytest.fixture
def models(monkeypatch):
    """Every embedder the registry builds, by model id, in order."""
    built: list = []

    def make(factory):
        def build(settings):
            built.append(factory(settings))
            return built[-1]
        return build

    monkeypatch.setitem(registry.EMBEDDERS, "offline", make(
        lambda s: ColourEmbedder() if s.heads_path is None else ReversedEmbedder(s.heads_path)))
    monkeypatch.setitem(registry.EMBEDDERS, "clip", make(lambda s: SmallEmbedder()))
    return built


def embedded_by(models, model_id: str) -> int:
    return sum(m.images_embedded for m in models if m.model_id == model_id)


@pytest.fixture
def photo_rows(shared_data):
    return read_styles(shared_data)[:PHOTOS]


@pytest.fixture
def source(tmp_path, shared_data, photo_rows):
    root = copy_photos(shared_data, photo_rows, tmp_path / "media")
    write_mp4(root / "lookbook.mp4", seconds_each=2.0)
    return root


@pytest.fixture
def tagged(settings, models, source, photo_rows, tmp_path):
    """A store built the usual way with the default model: tagged, catalog imported."""
    tk = Toolkit(settings)
    tk.import_catalog(write_products_csv(tmp_path / "products.csv", photo_rows))
    report = tk.tag(str(source), tagger="local")
    assert report.new == PHOTOS + 1 and tk.collection == OLD
    return tk


def target_of(model_id: str) -> str:
    return colls.target_name(load_settings(), OLD, model_id)


def media_ids(tk: Toolkit, name: str) -> set[str]:
    return {m["media_id"] for _, m in _store(tk, name).iter_metadata()}


def _store(tk: Toolkit, name: str):
    from store.chroma import ChromaStore

    model_id, dim = colls.built_by(tk.settings, name)
    return ChromaStore.open(tk.settings, name, model_id=model_id, dim=dim, create=False)


def test_reindex_builds_a_new_collection_then_searches_use_only_it(tagged, settings, models, source,
                                                                   photo_rows, monkeypatch):
    old_records = tagged.store.count()
    report = Toolkit(settings).reindex("clip")
    new = target_of(SmallEmbedder.model_id)
    assert (report.status, report.source, report.target) == ("switched", OLD, new)
    assert (report.media, report.embedded, report.done, report.missing) == (PHOTOS + 1, PHOTOS + 1, 0, [])
    assert (report.products, report.previous_model_id) == (PHOTOS, ColourEmbedder.model_id)
    # Both collections are there, each built by its own model, with the same items.
    assert colls.built_by(settings, new) == (SmallEmbedder.model_id, 48)
    assert colls.built_by(settings, OLD) == (ColourEmbedder.model_id, 192)
    assert _store(tagged, new).count() == old_records and media_ids(tagged, new) == media_ids(tagged, OLD)
    # The catalog is re-embedded by the new text tower, product fields carried onto the media.
    new_products = _store(tagged, f"{new}-products").get(include_embeddings=True)
    assert len(new_products) == PHOTOS
    p = new_products[0]
    np.testing.assert_allclose(p.embedding, SmallEmbedder().embed_texts([p.metadata["title"]])[0], atol=1e-5)
    linked = {m["product_id"] for _, m in _store(tagged, new).iter_metadata() if m.get("product_id")}
    assert linked == {f"P{r['id']}" for r in photo_rows}

    # A new Toolkit (a new `toolkit search`) uses the new collection and embeds the query with the new model.
    tk = Toolkit(settings)
    queried: list[str] = []
    original = type(tk.store).query

    def spy(store, vector, k, where=None):
        queried.append((store.name, len(vector)))
        return original(store, vector, k, where)

    monkeypatch.setattr(type(tk.store), "query", spy)
    before = embedded_by(models, SmallEmbedder.model_id)
    hit = tk.search(image=source / f"{photo_rows[2]['id']}.jpg", k=3)[0]
    monkeypatch.setattr(type(tk.store), "query", original)
    assert tk.collection == new and tk.embedder.model_id == SmallEmbedder.model_id
    assert embedded_by(models, SmallEmbedder.model_id) == before + 1
    assert queried and set(queried) == {(new, 48)}
    assert hit.product_id == f"P{photo_rows[2]['id']}" and hit.score == pytest.approx(1.0, abs=1e-4)
    # The old collection can go: searches never read it. Its saved filter index goes with it.
    from store.chroma import ChromaStore

    old_store = ChromaStore.open(settings, OLD, model_id=ColourEmbedder().model_id, dim=ColourEmbedder().dim)
    old_store.filter_index_min = 0
    old_store.filter_index()  # built and saved beside the store
    assert old_store.index_dir.is_dir()
    tk.drop_collection(OLD)
    assert not colls.exists(settings, OLD) and not colls.exists(settings, f"{OLD}-products")
    assert not old_store.index_dir.exists() and old_store.index_dir.parent.is_dir()
    again = Toolkit(settings).search(image=source / f"{photo_rows[2]['id']}.jpg", k=3)
    assert again[0].product_id == hit.product_id and again[0].score == pytest.approx(1.0, abs=1e-4)
    # A Toolkit given the old model refuses the new collection with the existing error.
    with pytest.raises(ModelMismatchError, match=f"built by model {SmallEmbedder.model_id}"):
        Toolkit(settings, embedder=ColourEmbedder()).search(text="shirt")


def test_cloud_tags_are_carried_and_local_tags_recomputed(tagged, settings, models, source, photo_rows):
    """An item an (earlier) Azure run tagged keeps Azure's tags without a new call; the local
    tagger's tags come from the new model."""
    uri = (source / f"{photo_rows[0]['id']}.jpg").as_uri()
    old = tagged.store.get(where={"uri": uri})[0]
    azure = Tag(group="article_type", label="Sandals", confidence=0.99, provider="azure")
    meta = {**old.metadata, "providers": ["azure", "local"],
            "tags_json": json.dumps([*json.loads(old.metadata["tags_json"]), tag_to_dict(azure)])}
    tagged.store.replace_metadata([Record(old.id, np.empty(0), meta)])

    report = Toolkit(settings).reindex("clip")
    assert report.carried == {"azure": 1}
    new = _store(tagged, report.target)
    rec = new.get(where={"uri": uri})[0]
    tags = stored_media_tags(rec.metadata)
    assert rec.metadata["providers"] == ["azure", "local"]
    assert [t for t in tags if t.provider == "azure"] == [azure]
    assert rec.metadata["tag_article_type"] == "Sandals" and "article_type:sandals" in rec.metadata["tags"]
    # Local tags: exactly what the local tagger says with the new model.
    small = SmallEmbedder()
    media = decode(MediaRef(uri=uri, key=""), (source / f"{photo_rows[0]['id']}.jpg").read_bytes())
    media.embeddings = small.embed_images([f.image for f in media.frames])
    local = registry.tagger("local", settings, small)
    expected = next(local.tag([media])).tags
    assert [t for t in tags if t.provider == "local"] == expected
    # Stamped with the new model's tagger version: `tag --retag` has nothing to redo.
    assert json.loads(rec.metadata["tagger_versions"]) == {"local": local.version}
    assert local.version != registry.tagger("local", settings, tagged.embedder).version
    others = [m for _, m in new.iter_metadata() if m["uri"] != uri]
    assert all(m["providers"] == ["local"] for m in others)
    # Video frames: one record each, with their timestamps, as in the old collection.
    frames = sorted(m["timestamp"] for m in others if m["kind"] == "video")
    assert frames == pytest.approx([0.0, 2.0, 4.0], abs=0.15)


def test_an_interrupted_reindex_resumes_without_embedding_again(tagged, settings, models, monkeypatch):
    monkeypatch.setattr(reindex_mod, "CHUNK", 4)
    seen = []

    def stop(ref, status, reason):
        seen.append(status)
        if len(seen) == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Toolkit(settings).reindex("clip", on_item=stop)
    new = target_of(SmallEmbedder.model_id)
    written = media_ids(tagged, new)
    assert len(written) == 8  # two chunks stored
    # Not switched: searches still use the old collection; the unfinished one cannot be used.
    assert Toolkit(settings).collection == OLD
    listed = {c.name: c for c in Toolkit(settings).collections()}
    assert listed[new].complete is False and listed[OLD].active
    with pytest.raises(StoreError, match="incomplete.*toolkit reindex --model clip"):
        Toolkit(settings).use_collection(new)

    first = embedded_by(models, SmallEmbedder.model_id)
    report = Toolkit(settings).reindex("clip")
    assert (report.status, report.done, report.embedded) == ("switched", 8, PHOTOS + 1 - 8)
    # Only the three items not yet done were embedded: their frames (the video's three, or one each).
    rest = [m for _, m in tagged.store.iter_metadata() if m["media_id"] not in written]
    assert embedded_by(models, SmallEmbedder.model_id) - first == len(rest)
    assert Toolkit(settings).collection == new
    # Once more: same model as the one in use now, so nothing is done.
    same = Toolkit(settings).reindex("clip")
    assert same.status == "same-model" and embedded_by(models, SmallEmbedder.model_id) - first == len(rest)


def test_items_gone_from_the_source_block_the_switch_until_skipped(tagged, settings, models, source, photo_rows):
    gone = [source / f"{photo_rows[i]['id']}.jpg" for i in (1, 4)]
    for path in gone:
        path.unlink()
    report = Toolkit(settings).reindex("clip")
    assert report.status == "incomplete" and not report.switched
    assert sorted(f.uri for f in report.missing) == sorted(p.as_uri() for p in gone)
    assert all(f.reason == f"{f.uri}: no such file (moved or deleted); put it back, or it cannot be indexed"
               for f in report.missing)
    assert Toolkit(settings).collection == OLD  # searches still on the old, complete collection

    embedded = embedded_by(models, SmallEmbedder.model_id)
    report = Toolkit(settings).reindex("clip", skip_missing=True)
    assert report.status == "switched" and report.done == PHOTOS + 1 - 2 and len(report.missing) == 2
    assert embedded_by(models, SmallEmbedder.model_id) == embedded  # nothing embedded twice
    tk = Toolkit(settings)
    assert tk.collection == report.target and tk.stats().media == PHOTOS + 1 - 2
    # The items left out are still in the old collection.
    assert len(media_ids(tk, OLD)) == PHOTOS + 1


def test_retrained_heads_and_switching_back(tagged, settings, models, source, photo_rows, tmp_path):
    heads = tmp_path / "my-heads.safetensors"
    report = Toolkit(settings).reindex("offline", heads_path=heads)
    assert report.model_id == "test-colour-heads:my-heads.safetensors" and report.switched
    assert colls.record(settings, report.target)["model"]["heads_path"] == str(heads.resolve())
    photo = source / f"{photo_rows[5]['id']}.jpg"
    assert Toolkit(settings).search(image=photo, k=1)[0].score == pytest.approx(1.0, abs=1e-4)
    # Back to the collection before the reindex: its model was recorded, so searches work at once.
    tk = Toolkit(settings)
    info = tk.use_collection(OLD)
    assert info.active and tk.collection == OLD
    back = Toolkit(settings)
    assert back.search(image=photo, k=1)[0].score == pytest.approx(1.0, abs=1e-4)
    assert back.embedder.model_id == ColourEmbedder.model_id
    # A tag run goes to the collection in use.
    (source / "extra").mkdir()
    shutil.copy(photo, source / "extra" / "copy.jpg")
    assert back.tag(str(source), tagger="local").new == 1
    assert len(media_ids(back, OLD)) == PHOTOS + 2 and len(media_ids(back, report.target)) == PHOTOS + 1
    # --heads means nothing to CLIP.
    with pytest.raises(ConfigError, match="--heads does not apply to --model clip"):
        back.reindex("clip", heads_path=heads)


def cli(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """The `toolkit` command in this process (so the test models are registered)."""
    import io

    from toolkit.faces.cli import main

    monkeypatch.setattr(sys, "argv", ["toolkit", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_reindex_collections_and_errors(tagged, settings, models, monkeypatch, capsys, source, photo_rows):
    code, _, err = cli(monkeypatch, capsys, "reindex", "--model", "offline")
    assert code == 0 and f"'{OLD}' is already built by {ColourEmbedder.model_id}; nothing to do" in err
    assert [c.name for c in Toolkit(settings).collections()] == [OLD]

    code, _, err = cli(monkeypatch, capsys, "reindex", "--model", "nope")
    assert code == 2 and err.strip() == "error: --model 'nope' is not a model; use one of offline, clip"

    code, out, err = cli(monkeypatch, capsys, "reindex", "--model", "clip", "--json")
    new = target_of(SmallEmbedder.model_id)
    assert code == 0 and json.loads(out)["target"] == new and json.loads(out)["switched"] is True

    code, out, _ = cli(monkeypatch, capsys, "collections", "list", "--json")
    rows = {c["name"]: c for c in json.loads(out)}
    assert set(rows) == {OLD, new}
    assert rows[new]["active"] and not rows[OLD]["active"] and rows[new]["active_for"] == [OLD]
    assert (rows[new]["model_id"], rows[new]["records"], rows[new]["products"]) == \
        (SmallEmbedder.model_id, rows[OLD]["records"], f"{new}-products")

    code, out, err = cli(monkeypatch, capsys, "search", "--image", str(source / f"{photo_rows[0]['id']}.jpg"),
                         "-k", "1", "--json")
    assert code == 0 and json.loads(out)[0]["score"] == pytest.approx(1.0, abs=1e-4), err

    # TOOLKIT_MODEL set explicitly to the old model wins, and the mismatch says which setting to unset.
    monkeypatch.setenv("TOOLKIT_MODEL", "offline")
    code, _, err = cli(monkeypatch, capsys, "search", "shirt")
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert f"collection '{new}' was built by model {SmallEmbedder.model_id}" in err
    assert "TOOLKIT_MODEL=offline (environment or .env) overrides the model recorded for it" in err
    monkeypatch.delenv("TOOLKIT_MODEL")

    code, _, err = cli(monkeypatch, capsys, "collections", "drop", new, "--yes")
    assert code == 1 and err.strip() == (f"error: '{new}' is the active collection for '{OLD}'; "
                                         f"switch to another with `toolkit collections use NAME` first")
    code, _, err = cli(monkeypatch, capsys, "collections", "drop", f"{new}-products", "--yes")
    assert code == 1 and f"holds the products of '{new}'" in err
    code, _, err = cli(monkeypatch, capsys, "collections", "use", OLD)
    assert code == 0 and f"searches for '{OLD}' now use collection '{OLD}'" in err
    code, _, err = cli(monkeypatch, capsys, "collections", "drop", new, stdin="n\n")
    assert code == 1 and "nothing dropped" in err and colls.exists(settings, new)
    code, _, err = cli(monkeypatch, capsys, "collections", "drop", new, stdin="y\n")
    assert code == 0 and f"dropped '{new}' and '{new}-products'" in err
    assert not colls.exists(settings, new) and not colls.exists(settings, f"{new}-products")
    code, out, _ = cli(monkeypatch, capsys, "collections", "list", "--json")
    assert [c["name"] for c in json.loads(out)] == [OLD]


def test_a_running_search_service_follows_a_switch_made_elsewhere(tagged, settings, models, source, photo_rows,
                                                                   monkeypatch):
    """`toolkit serve` keeps running while another shell re-indexes: its searches move to the new
    collection and model once the switch is made, and back after `collections use`."""
    import httpx

    from tests.service_helpers import running_server
    from toolkit.faces import current
    from toolkit.faces.api import create_app

    monkeypatch.setattr(current, "CHECK_EVERY", 0.0)  # re-read the pointer (in the background) on every request
    photo = (source / f"{photo_rows[2]['id']}.jpg").read_bytes()
    with running_server(create_app(Toolkit(settings))) as url, httpx.Client(base_url=url, timeout=60) as client:
        def state() -> tuple[str, str, int]:
            body = client.get("/api/health").json()
            return body["store"]["collection"], body["model"]["id"], body["model"]["dim"]

        def moved_to(expected: tuple[str, str, int]) -> tuple[str, str, int]:
            """The service's state once it has loaded the new collection (in the background)."""
            deadline = time.monotonic() + 30
            while (now := state()) != expected and time.monotonic() < deadline:
                time.sleep(0.05)
            return now

        def top_hit() -> dict:
            res = client.post("/api/search/image", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"k": "3"})
            assert res.status_code == 200, res.text
            return res.json()["hits"][0]

        assert state() == (OLD, ColourEmbedder.model_id, 192)
        assert top_hit()["product_id"] == f"P{photo_rows[2]['id']}"

        Toolkit(settings).reindex("clip")  # as `toolkit reindex clip` from another shell
        new = target_of(SmallEmbedder.model_id)
        assert moved_to((new, SmallEmbedder.model_id, 48)) == (new, SmallEmbedder.model_id, 48)
        before = embedded_by(models, SmallEmbedder.model_id)
        hit = top_hit()
        # The query was embedded by the new model and matched against its own vectors.
        assert embedded_by(models, SmallEmbedder.model_id) == before + 1
        assert hit["product_id"] == f"P{photo_rows[2]['id']}" and hit["score"] == pytest.approx(1.0, abs=1e-4)
        facets = client.get("/api/facets").json()
        assert facets["fields"], facets

        Toolkit(settings).use_collection(OLD)
        assert moved_to((OLD, ColourEmbedder.model_id, 192)) == (OLD, ColourEmbedder.model_id, 192)
        assert top_hit()["score"] == pytest.approx(1.0, abs=1e-4)


def test_an_in_flight_request_keeps_the_toolkit_it_started_with(tagged, settings, models):
    from toolkit.faces.current import CurrentToolkit

    current = CurrentToolkit(Toolkit(settings), every=0.0)
    first = current.get()
    assert first.collection == OLD and current.get() is first  # nothing moved: the same Toolkit
    Toolkit(settings).reindex("clip")
    deadline = time.monotonic() + 30
    while (after := current.get()) is first:  # the new collection and model load in the background
        assert time.monotonic() < deadline, "the service never moved to the new collection"
        time.sleep(0.01)
    assert after.collection == target_of(SmallEmbedder.model_id)
    assert after.embedder.model_id == SmallEmbedder.model_id
    # The request that got `first` before the switch still searches the old collection with the old model.
    assert first.collection == OLD and first.embedder.model_id == ColourEmbedder.model_id
    assert first.search(text="shirt", k=3)


def test_collections_commands_need_no_model(tagged, settings, models):
    """The real `toolkit` process: list, use and drop touch only the store."""
    report = Toolkit(settings).reindex("clip")
    env = {"TOOLKIT_DATA_DIR": str(settings.data_dir)}
    listed = run("collections", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if report.target in ln)
    assert line.lstrip().startswith("*") and SmallEmbedder.model_id in line
    refused = run("collections", "drop", report.target, "--yes", env=env)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "is the active collection for 'catalog'" in refused.stderr and "Traceback" not in refused.stderr
    missing = run("collections", "use", "nope", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("error: no collection named 'nope' in the store; "
                                      "`toolkit collections list` shows them")
    assert run("collections", "use", OLD, env=env).returncode == 0
    assert Toolkit(settings).collection == OLD


def test_a_store_without_pointers_is_unchanged(settings, models, source):
    """Stores made before pointers existed: the name is the collection, nothing is written."""
    tk = Toolkit(settings)
    tk.tag(str(source), tagger="local")
    assert tk.collection == OLD and tk.store.name == OLD and tk.products_store.name == f"{OLD}-products"
    assert not colls.exists(settings, colls.META)


def test_reindex_against_a_chroma_server(chroma_server, models, source, photo_rows, tmp_path):
    served = load_settings(chroma_host=chroma_server["host"], chroma_port=chroma_server["port"],
                           collection="reindex-served")
    tk = Toolkit(served)
    tk.tag(str(source), tagger="local")
    report = tk.reindex("clip")
    assert report.switched and report.target == "reindex-served--test-small-embedder-v1"
    again = Toolkit(served)
    assert again.collection == report.target and again.embedder.model_id == SmallEmbedder.model_id
    assert again.store.count() == Toolkit(served, embedder=ColourEmbedder())._open("reindex-served").count()
    hit = again.search(image=source / f"{photo_rows[1]['id']}.jpg", k=1)[0]
    assert hit.score == pytest.approx(1.0, abs=1e-4)
    assert again.use_collection("reindex-served").active
    assert Toolkit(served).embedder.model_id == ColourEmbedder.model_id


def test_model_info_describes_the_model_of_the_collection_in_use(tmp_path):
    """`toolkit model info` without --heads: the configured model on a fresh machine (creating no
    store), and after a switch, the model recorded for the collection in use."""
    env = {"TOOLKIT_DATA_DIR": str(tmp_path / "data")}
    fresh = run("model", "info", env=env)
    assert fresh.returncode == 0, fresh.stderr
    assert "model_id: offline-effnetlite0-minilm:" in fresh.stdout
    assert "tag_classifiers: " in fresh.stdout and "heads.tags.safetensors" in fresh.stdout
    assert not (tmp_path / "data" / "chroma").exists()
    settings = load_settings(data_dir=tmp_path / "data")
    from store.chroma import ChromaStore

    ChromaStore.open(settings, "catalog--small", model_id="m", dim=4)
    colls.save_record(settings, "catalog--small", model={"model": "clip", "clip_model": "/models/small-clip"},
                      complete=True)
    colls.point(settings, "catalog", "catalog--small")
    switched = run("model", "info", env=env)
    assert switched.returncode == 0, switched.stderr
    assert switched.stdout.strip().splitlines()[0].startswith("model: clip (/models/small-clip)")
