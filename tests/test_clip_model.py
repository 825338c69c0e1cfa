"""The CLIP embedder's code path, on a tiny random CLIP saved in a temp folder (no download)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from taggers.base import Embedder
from taggers.clip_local import LocalTagger
from taggers.clip_model import ClipEmbedder
from tests.model_fixtures import tiny_clip_dir  # noqa: F401 - fixture
from toolkit.ground.errors import ModelError


def test_images_and_texts_in_one_normalised_space(tiny_clip_dir) -> None:
    model = ClipEmbedder(str(tiny_clip_dir), batch_size=2)
    assert isinstance(model, Embedder)
    images = [Image.new("RGB", (64, 48), c) for c in ("red", "blue", "white")]
    imgs = model.embed_images(images)
    txts = model.embed_texts(["a photo of red shoes", "black dress for women", "unknown words here"])
    assert model.dim == 24
    assert imgs.shape == (3, 24) and txts.shape == (3, 24)
    assert imgs.dtype == np.float32 and txts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txts, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(imgs[0], imgs[1])


def test_model_id_follows_the_weights(tiny_clip_dir, tmp_path) -> None:
    a = ClipEmbedder(str(tiny_clip_dir)).model_id
    assert a.startswith("clip:") and a == ClipEmbedder(str(tiny_clip_dir)).model_id
    assert ClipEmbedder("openai/clip-vit-base-patch32").model_id == "clip:openai/clip-vit-base-patch32"
    other = tmp_path / tiny_clip_dir.name
    shutil.copytree(tiny_clip_dir, other)
    weights = other / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert ClipEmbedder(str(other)).model_id != a


def test_local_tagger_runs_on_clip(tiny_clip_dir, tmp_path) -> None:
    vocab = tmp_path / "v.json"
    vocab.write_text('{"groups": {"colour": {"template": "a photo of {label}", "labels": ["red", "blue"]}}}')
    model = ClipEmbedder(str(tiny_clip_dir))
    tagger = LocalTagger(model, vocabulary=vocab, threshold=0.0)
    [tags] = tagger.tag_embeddings(model.embed_images([Image.new("RGB", (32, 32), "red")]))
    assert [t.group for t in tags] == ["colour"] and tags[0].label in {"red", "blue"}


@pytest.mark.parametrize("name", ["/nonexistent/clip-folder", "openai/clip-vit-base-patch32"])
def test_unloadable_model_says_how_to_fix(name, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        ClipEmbedder(name).embed_texts(["a red dress"])
    message = str(err.value)
    assert "TOOLKIT_CLIP_MODEL" in message and "TOOLKIT_MODEL=offline" in message
    assert "\n" not in message
