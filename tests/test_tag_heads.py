"""The label classifiers the local tagger blends with its prompts: training, file checks, and
their way through the real pipeline into stored tags."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from taggers.clip_local import LocalTagger, load_vocabulary
from taggers.offline.model import OfflineEmbedder
from taggers.offline.tag_heads import TagHeads, TagHeadsConfig, load_tag_heads, save_tag_heads
from taggers.weights import SHIPPED_HEADS, path_beside, sha256_file, sidecar_path
from tests.model_fixtures import offline, photo, shared_data  # noqa: F401 - fixtures
from toolkit.ground.errors import ModelError, SourceError
from toolkit.training import train_tag_heads

COLUMN_GROUPS = {"article_type", "colour", "gender", "usage", "season", "master_category"}


def user_heads(folder):
    """A copy of the shipped heads as a user's own (with its sidecar), without classifiers."""
    folder.mkdir(parents=True, exist_ok=True)
    heads = folder / "heads.safetensors"
    shutil.copyfile(SHIPPED_HEADS, heads)
    sidecar_path(heads).write_text(json.dumps({"sha256": sha256_file(heads)}), encoding="utf-8")
    return heads


def record(heads, tag_file) -> None:
    meta = json.loads(sidecar_path(heads).read_text(encoding="utf-8"))
    meta["tag_heads_sha256"] = sha256_file(tag_file)
    sidecar_path(heads).write_text(json.dumps(meta), encoding="utf-8")


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tags")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOOLKIT_DATA_DIR", str(tmp / "data"))
    try:
        heads = user_heads(tmp / "model")
        model_id = OfflineEmbedder(heads_path=heads).model_id
        report = train_tag_heads(shared_data / "images", shared_data / "styles.csv", heads_path=heads, limit=40,
                                 epochs=2, runtime="torch", threads=2)
        yield heads, report, model_id
    finally:
        mp.undo()


def test_classifiers_are_written_beside_the_heads_and_recorded_in_their_sidecar(trained) -> None:
    heads, report, model_id = trained
    assert report.out == path_beside(heads) == heads.parent / "heads.tags.safetensors"
    assert report.n_train == 40 and set(report.groups) == COLUMN_GROUPS
    meta = json.loads(sidecar_path(heads).read_text(encoding="utf-8"))
    assert meta["tag_heads_sha256"] == sha256_file(report.out) == report.sha256
    model = OfflineEmbedder(heads_path=heads, runtime="torch")
    assert model.model_id == model_id, "classifiers change tags, never the vectors' model id"
    classifiers = model.tag_heads()
    assert classifiers is not None and classifiers.cfg.heads_sha256 == sha256_file(heads)
    vocab = {g.name: list(g.labels) for g in load_vocabulary(None)}
    assert classifiers.cfg.groups == {name: vocab[name] for name in COLUMN_GROUPS}
    assert set(LocalTagger(model).classifier_columns()) == COLUMN_GROUPS


def test_blended_probabilities_are_distributions_that_move_with_the_features(trained, photo) -> None:
    heads, _, _ = trained
    model = OfflineEmbedder(heads_path=heads, runtime="torch")
    tagger = LocalTagger(model)
    embs, feats = model.embed_images_with_features([photo("tshirt"), photo("heels")])
    assert feats.shape == (2, model.heads().cfg.image_in)
    np.testing.assert_allclose(embs, model.embed_images([photo("tshirt"), photo("heels")]), atol=1e-6)
    prompts, blended = tagger.probabilities(embs), tagger.probabilities(embs, features=feats)
    for name, p in blended.items():
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        if name in COLUMN_GROUPS:
            assert not np.allclose(p, prompts[name]), name
        else:  # pattern is read from titles: no classifier, prompts alone
            np.testing.assert_array_equal(p, prompts[name])


def test_a_changed_classifier_file_is_refused_by_name(trained, tmp_path) -> None:
    heads, report, _ = trained
    copy = tmp_path / "heads.safetensors"
    shutil.copyfile(heads, copy)
    shutil.copyfile(sidecar_path(heads), sidecar_path(copy))
    data = bytearray(report.out.read_bytes())
    data[-1] ^= 0xFF
    path_beside(copy).write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        OfflineEmbedder(heads_path=copy, runtime="torch").tag_heads()
    assert "heads.tags.safetensors" in str(err.value) and "train-tags" in str(err.value)


def test_heads_without_classifiers_tag_with_prompts_alone(tmp_path, photo) -> None:
    heads = user_heads(tmp_path)
    model = OfflineEmbedder(heads_path=heads, runtime="torch")
    assert model.tag_heads() is None
    tagger = LocalTagger(model)
    assert tagger.classifier_columns() == {}
    embs, feats = model.embed_images_with_features([photo("watch")])
    for name, p in tagger.probabilities(embs, features=feats).items():
        np.testing.assert_array_equal(p, tagger.probabilities(embs)[name])


def test_a_group_whose_labels_the_classifier_does_not_know_keeps_its_prompts(trained, tmp_path, photo) -> None:
    heads, _, _ = trained
    vocab = tmp_path / "vocabulary.json"
    vocab.write_text(json.dumps({"groups": {
        "article_type": {"template": "a photo of {label}", "labels": ["Tshirts", "Watches", "Spacesuits"]},
        "gender": {"template": "a product for {label}", "labels": ["Men", "Women"]}}}), encoding="utf-8")
    model = OfflineEmbedder(heads_path=heads, runtime="torch")
    tagger = LocalTagger(model, vocabulary=vocab)
    assert set(tagger.classifier_columns()) == {"gender"}  # "Spacesuits" is no label it learned
    embs, feats = model.embed_images_with_features([photo("tshirt")])
    prompts, blended = tagger.probabilities(embs), tagger.probabilities(embs, features=feats)
    np.testing.assert_array_equal(blended["article_type"], prompts["article_type"])
    assert blended["gender"].shape == (1, 2) and not np.allclose(blended["gender"], prompts["gender"])


def watches_only(heads) -> None:
    """Classifiers that call every photo a watch, recorded for `heads`: a classifier loud
    enough to see whether the pipeline hands it the features."""
    labels = list(next(g for g in load_vocabulary(None) if g.name == "article_type").labels)
    model = TagHeads(TagHeadsConfig(image_in=1848, groups={"article_type": labels}, heads_sha256=sha256_file(heads)))
    with torch.no_grad():
        last = model.classifiers["article_type"][-1]
        last.weight.zero_()
        last.bias.fill_(-50.0)
        last.bias[labels.index("Watches")] = 50.0
    save_tag_heads(model, path_beside(heads))
    record(heads, path_beside(heads))


def test_the_pipeline_hands_each_photo_s_features_to_the_classifiers(settings, shared_data, tmp_path) -> None:
    from tests.model_fixtures import CLEAR
    from toolkit.core import Toolkit

    heads = user_heads(tmp_path / "model")
    watches_only(heads)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("tshirt", "heels"):
        shutil.copyfile(shared_data / "images" / f"{CLEAR[name]}.jpg", folder / f"{name}.jpg")
    tk = Toolkit(settings.model_copy(update={"heads_path": heads}))
    seen = []
    report = tk.tag(folder, tagger="local", on_media=seen.append)
    assert report.failed == [] and report.skipped == []
    # What `toolkit eval` scores the tags from: each stored item, its features still on it.
    assert sorted(m.ref.key for m in seen) == ["heels.jpg", "tshirt.jpg"]
    assert all(m.features.shape == (1, 1848) and m.embeddings.shape == (1, tk.embedder.dim) for m in seen)
    stored = {r.metadata["key"]: r.metadata for r in tk.store.get(where={"key": {"$in": ["tshirt.jpg", "heels.jpg"]}})}
    assert {k: m["tag_article_type"] for k, m in stored.items()} == {"tshirt.jpg": "Watches", "heels.jpg": "Watches"}
    # Groups the classifier file leaves out still come from the prompts.
    assert stored["tshirt.jpg"]["tag_gender"] == "Men" and stored["heels.jpg"]["tag_gender"] == "Women"
    assert load_tag_heads(path_beside(heads)).cfg.groups.keys() == {"article_type"}


def test_the_shipped_model_has_classifiers_for_every_catalog_group(offline) -> None:
    classifiers = offline.tag_heads()
    assert classifiers is not None
    assert set(classifiers.cfg.groups) == COLUMN_GROUPS
    assert classifiers.cfg.heads_sha256 == sha256_file(SHIPPED_HEADS)
    assert set(LocalTagger(offline).classifier_columns()) == COLUMN_GROUPS


def test_cli_train_tags_is_thin_and_reports_user_errors(shared_data, tmp_path) -> None:
    from toolkit.faces.commands.model import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["train-tags", "--help"]).output
    assert "--heads" in help_text and "--images" in help_text and "--hold-out" in help_text
    result = runner.invoke(app, ["train-tags", "--images", str(tmp_path / "missing"), "--catalog",
                                 str(shared_data / "styles.csv"), "--out", str(tmp_path / "t.safetensors")])
    assert isinstance(result.exception, SourceError) and "missing" in str(result.exception)
    assert not (tmp_path / "t.safetensors").exists()


def test_retag_refreshes_stored_tags_after_the_classifiers_change(shared_data, tmp_path) -> None:
    """Unchanged photos are skipped by a plain re-run, so new classifiers reach stored items
    only through `--retag`: same records and vectors, new tags."""
    from tests.model_fixtures import CLEAR
    from toolkit.faces.cli import app
    from toolkit.core import Toolkit
    from toolkit.ground.settings import load_settings

    heads = user_heads(tmp_path / "model")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("tshirt", "heels"):
        shutil.copyfile(shared_data / "images" / f"{CLEAR[name]}.jpg", folder / f"{name}.jpg")
    env = {"TOOLKIT_DATA_DIR": str(tmp_path / "data"), "TOOLKIT_HEADS_PATH": str(heads)}
    runner = CliRunner()

    def tag(*extra: str):
        result = runner.invoke(app, ["tag", str(folder), "--tagger", "local", *extra], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    def stored():
        tk = Toolkit(load_settings(data_dir=tmp_path / "data", heads_path=heads))
        recs = tk.store.get(where={"key": {"$in": ["tshirt.jpg", "heels.jpg"]}}, include_embeddings=True)
        return {r.metadata["key"]: (r.id, r.metadata["tag_article_type"], r.embedding) for r in recs}

    assert "2 new" in tag()
    before = stored()
    assert "Watches" not in {t for _, t, _ in before.values()}

    watches_only(heads)
    plain = tag()
    assert "2 unchanged" in plain and "2 unchanged items were tagged by an earlier version" in plain
    assert "unchanged (not sent): 2 (2 tagged by an earlier version" in tag("--dry-run")
    assert {k: t for k, (_, t, _) in stored().items()} == {k: t for k, (_, t, _) in before.items()}

    assert "local: 2 items" in tag("--retag", "--dry-run")
    assert "2 retagged, 0 unchanged" in tag("--retag")
    after = stored()
    assert {k: t for k, (_, t, _) in after.items()} == {"tshirt.jpg": "Watches", "heels.jpg": "Watches"}
    for key, (rid, _, emb) in before.items():
        assert after[key][0] == rid
        np.testing.assert_allclose(after[key][2], emb, atol=1e-6)
    done = tag("--retag")
    assert "2 unchanged" in done and "earlier version" not in done
