"""Random training views of product photos, and training the heads with them."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from taggers.weights import sidecar_path
from tests.model_fixtures import shared_data  # noqa: F401 - fixture
from toolkit.training.augment import random_view, view_rng
from toolkit.training import train_heads


def _red_square_on_white() -> Image.Image:
    img = Image.new("RGB", (180, 240), (255, 255, 255))
    img.paste((200, 30, 40), (50, 60, 130, 180))
    return img


def test_a_view_is_fixed_by_photo_hash_and_number() -> None:
    img = _red_square_on_white()
    first = random_view(img, view_rng("ab" * 32, 0), 224)
    assert first.shape == (224, 224, 3) and first.dtype == np.uint8
    assert np.array_equal(first, random_view(img, view_rng("ab" * 32, 0), 224))
    others = [random_view(img, view_rng("ab" * 32, v), 224) for v in range(1, 6)]
    assert all(not np.array_equal(first, o) for o in others)


def test_views_move_and_resize_the_product_but_keep_its_colour() -> None:
    from scipy import ndimage

    img = _red_square_on_white()
    areas = []
    for v in range(12):
        arr = random_view(img, view_rng("cd" * 32, v), 224).astype(int)
        product = (arr < 232).any(axis=2)
        # Inside (away from the edge, which resampling blends with white) it is the same red.
        inside = ndimage.binary_erosion(product, iterations=3)
        assert inside.sum() > 1000
        assert np.abs(arr[inside] - [200, 30, 40]).max() < 25
        areas.append(product.mean())
    assert max(areas) > 1.3 * min(areas), "views zoom in and out"


def test_training_with_views_caches_them_and_is_reproducible(shared_data, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path / "data"))
    kwargs = dict(epochs=1, seed=5, limit=24, batch_size=8, runtime="torch", threads=2, augment_views=2)
    first = train_heads(shared_data / "images", shared_data / "styles.csv", tmp_path / "a.safetensors", **kwargs)
    caches = list((tmp_path / "data" / "cache" / "features").glob("views-*.npz"))
    assert len(caches) == 1
    with np.load(caches[0]) as z:
        assert len(z["keys"]) == 2 * 24 and z["feats"].shape[0] == 2 * 24
        assert {str(k).rsplit(":", 1)[1] for k in z["keys"]} == {"0", "1"}
    meta = json.loads(sidecar_path(tmp_path / "a.safetensors").read_text())
    assert meta["training"]["augment_views"] == 2
    again = train_heads(shared_data / "images", shared_data / "styles.csv", tmp_path / "b.safetensors", **kwargs)
    assert again.sha256 == first.sha256
    without = train_heads(shared_data / "images", shared_data / "styles.csv", tmp_path / "c.safetensors",
                          **{**kwargs, "augment_views": 0})
    assert without.sha256 != first.sha256
