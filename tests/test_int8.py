"""The int8 image backbone: made from the shipped calibration photos, used by default through
the settings, close to fp32 (same nearest neighbours), and fp32 on request."""
from __future__ import annotations

import numpy as np
import pytest

from taggers.offline_model import OfflineEmbedder
from taggers.quantize import CALIBRATION
from tests.helpers import read_styles
from toolkit import registry


@pytest.fixture(scope="module")
def photos(shared_data):
    from PIL import Image

    return [Image.open(shared_data / "images" / f"{r['id']}.jpg").convert("RGB") for r in read_styles(shared_data)[:48]]


def test_settings_default_to_int8_and_fp32_is_a_setting(settings):
    assert registry.embedder(settings).precision == "int8"
    assert registry.embedder(settings.model_copy(update={"precision": "fp32"})).precision == "fp32"


def test_int8_is_close_to_fp32_and_keeps_neighbours(photos):
    assert len(list(CALIBRATION.glob("*.jpg"))) >= 32, "calibration photos ship with the package"
    int8, fp32 = OfflineEmbedder(precision="int8"), OfflineEmbedder(precision="fp32")
    a, b = int8.embed_images(photos), fp32.embed_images(photos)
    assert int8.images.precision_used == "int8" and int8.images.onnx_path().with_name(
        int8.images.onnx_path().stem + "-int8-qdq1.onnx").is_file()
    cos = (a * b).sum(axis=1)  # both L2-normalised
    assert cos.mean() > 0.98 and cos.min() > 0.95
    # Each photo's nearest other photo under fp32 stays among its 3 nearest under int8.
    ranked = np.argsort(-(a @ a.T), axis=1)[:, 1:4]
    nearest_fp32 = np.argsort(-(b @ b.T), axis=1)[:, 1]
    assert np.mean([n in r for n, r in zip(nearest_fp32, ranked)]) >= 0.95
    # Cached training features are kept apart by precision: int8 ones never stand in for fp32's.
    assert fp32.images.features_key == fp32.images.backbone_key == int8.images.backbone_key
    assert int8.images.features_key.startswith(int8.images.backbone_key + "-int8-")


def test_unknown_precision_is_a_model_error():
    from toolkit.errors import ModelError

    with pytest.raises(ModelError, match="TOOLKIT_PRECISION"):
        OfflineEmbedder(precision="int4")  # type: ignore[arg-type]
