"""The local tagger on real photos, through the Tagger protocol."""
from __future__ import annotations

import json

import numpy as np
import pytest

from taggers.clip_local import LocalTagger
from tests.fakes.fixtures import embedded_media
from tests.model_fixtures import offline, photo, shared_data  # noqa: F401 - fixtures
from toolkit.ground.errors import ConfigError
from toolkit.ground.models import Media


def as_media(offline, images, kind="image", stamps=None) -> Media:
    return embedded_media(offline, images, kind=kind, stamps=stamps)


def by_group(tags) -> dict[str, str]:
    return {t.group: t.label for t in tags}


@pytest.fixture(scope="module")
def tagger(offline) -> LocalTagger:
    return LocalTagger(offline, vocabulary=None, threshold=0.2)


def test_knows_the_catalog_groups(tagger) -> None:
    """Being a Tagger of images and videos: tests/contracts/test_tagger_contract.py."""
    groups = {g.name for g in tagger.groups}
    assert {"article_type", "colour", "gender", "usage", "season", "pattern", "master_category"} <= groups


@pytest.mark.parametrize("name, article, gender", [
    ("tshirt", "Tshirts", "Men"), ("watch", "Watches", None), ("heels", "Heels", "Women"),
    ("handbag", "Handbags", "Women"), ("casual_shoes", "Casual Shoes", "Men"),
])
def test_clear_photos_get_their_article_type_and_gender(offline, tagger, photo, name, article, gender) -> None:
    [result] = list(tagger.tag([as_media(offline, [photo(name)])]))
    labels = by_group(result.tags)
    assert labels["article_type"] == article
    if gender:
        assert labels["gender"] == gender
    assert all(t.provider == "local" and 0 < t.confidence <= 1 for t in result.tags)
    assert result.error is None and result.frame_tags == {}


def test_threshold_one_gives_no_label(offline, photo) -> None:
    strict = LocalTagger(offline, threshold=1.0)
    assert strict.tag_embeddings(offline.embed_images([photo("tshirt")])) == [[]]


def test_video_gets_frame_tags_and_a_summary(offline, tagger, photo) -> None:
    media = as_media(offline, [photo("tshirt"), photo("tshirt"), photo("watch")], kind="video",
                     stamps=[0.0, 2.0, 4.0])
    [result] = list(tagger.tag([media]))
    assert sorted(result.frame_tags) == [0, 1, 2]
    assert by_group(result.frame_tags[2])["article_type"] == "Watches"
    assert {t.start for t in result.frame_tags[1]} == {2.0}
    # Two of three frames show the t-shirt: the mean of the frame probabilities says so.
    assert by_group(result.tags)["article_type"] == "Tshirts"


def test_media_the_pipeline_did_not_embed_are_embedded_with_their_features(offline, tagger, photo) -> None:
    media = as_media(offline, [photo("heels"), photo("handbag")], kind="video", stamps=[0.0, 2.0])
    [given] = list(tagger.tag([media]))
    media.embeddings = media.features = None
    [own] = list(tagger.tag([media]))
    assert own.tags == given.tags and own.frame_tags == given.frame_tags
    assert tagger.classifier_columns(), "the shipped model's classifiers take part"


def test_tag_embeddings_without_media(offline, tagger, photo) -> None:
    embs = offline.embed_images([photo("watch"), photo("heels")])
    tags = tagger.tag_embeddings(embs)
    assert [by_group(t)["article_type"] for t in tags] == ["Watches", "Heels"]
    probs = tagger.probabilities(embs)
    np.testing.assert_allclose(probs["colour"].sum(axis=1), 1.0, atol=1e-5)


def test_custom_vocabulary_file(offline, photo, tmp_path) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"groups": {"kind": {"templates": ["a photo of {label}", "{label}"],
                                                     "labels": ["Watches", "Tshirts", "Heels"]}}}))
    custom = LocalTagger(offline, vocabulary=vocab, threshold=0.0)
    tags = custom.tag_embeddings(offline.embed_images([photo("heels"), photo("tshirt")]))
    assert [[(t.group, t.label) for t in row] for row in tags] == [[("kind", "Heels")], [("kind", "Tshirts")]]


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"groups": {}}', "non-empty"),
    ('{"groups": {"colour": {"template": "{label}", "labels": []}}}', "label strings"),
    ('{"groups": {"colour": {"template": "no placeholder", "labels": ["Red"]}}}', "{label}"),
])
def test_bad_vocabulary_says_what_is_wrong(offline, tmp_path, content, message) -> None:
    vocab = tmp_path / "v.json"
    vocab.write_text(content)
    with pytest.raises(ConfigError, match="TOOLKIT_VOCABULARY") as err:
        LocalTagger(offline, vocabulary=vocab, threshold=0.3)
    assert message in str(err.value)


def test_missing_vocabulary_file(offline, tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        LocalTagger(offline, vocabulary=tmp_path / "nope.json", threshold=0.3)
