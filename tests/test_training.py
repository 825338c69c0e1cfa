"""Training the heads on real photos, and the split it must respect."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from taggers.offline.model import OfflineEmbedder
from taggers.weights import sha256_file, sidecar_path
from tests.model_fixtures import photo, shared_data  # noqa: F401 - fixtures
from toolkit.ground.errors import CatalogError, ConfigError, ModelError, SourceError
from toolkit.training.split import EVAL_FRACTION, HOLDOUT_FRACTION, eval_rows, is_eval, is_holdout, rows_for, train_rows
from toolkit.training import train_heads
from toolkit.training.captions import build_captions, load_vocabulary, pattern_of
from toolkit.training.losses import match_matrix
from toolkit.training.split import training_rows


def test_split_is_fixed_and_big_enough(shared_data) -> None:
    ev = eval_rows(shared_data / "styles.csv", shared_data / "images")
    tr = train_rows(shared_data / "styles.csv", shared_data / "images")
    assert len(ev) >= 1500
    assert abs(len(ev) / (len(ev) + len(tr)) - EVAL_FRACTION) < 0.02
    assert not {r["id"] for r in ev} & {r["id"] for r in tr}
    assert is_eval("13430") and is_eval("10000") and not is_eval("10002")  # pinned: the split must never move
    assert is_eval(" 10031 ") == is_eval("10031")


def test_holdout_is_a_fixed_fifth_of_the_training_split(shared_data) -> None:
    tr = {r["id"] for r in train_rows(shared_data / "styles.csv", shared_data / "images")}
    held = {r["id"] for r in rows_for(shared_data / "styles.csv", "holdout", shared_data / "images")}
    assert held < tr and not any(is_eval(i) for i in held)
    assert abs(len(held) / len(tr) - HOLDOUT_FRACTION) < 0.02
    assert is_holdout("10012") and is_holdout("10015") and not is_holdout("10002")  # pinned, like the split
    rows, left_out = training_rows(shared_data / "images", shared_data / "styles.csv", exclude_eval=True,
                                   limit=None, hold_out=True)
    assert {r["id"] for r in rows} == tr - held
    assert left_out == len(eval_rows(shared_data / "styles.csv", shared_data / "images")) + len(held)


def test_training_never_sees_eval_items(shared_data) -> None:
    rows, left_out = training_rows(shared_data / "images", shared_data / "styles.csv", exclude_eval=True, limit=None)
    assert rows and not any(is_eval(r["id"]) for r in rows)
    assert left_out == len(eval_rows(shared_data / "styles.csv", shared_data / "images"))


@pytest.fixture(scope="module")
def small_run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOOLKIT_DATA_DIR", str(tmp / "data"))  # feature caches stay in tmp (tests reset it: set it again)
    try:
        out = tmp / "heads.safetensors"
        report = train_heads(shared_data / "images", shared_data / "styles.csv", out, epochs=1, seed=3,
                             limit=40, batch_size=16, runtime="torch", threads=2)
        yield tmp, out, report, mp
    finally:
        mp.undo()


def test_one_epoch_on_forty_photos_gives_usable_heads(small_run, photo) -> None:
    _, out, report, _ = small_run
    assert report.n_train == 40 and report.epochs == 1
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["sha256"] == sha256_file(out) == report.sha256
    assert meta["training"]["split"] and meta["training"]["exclude_eval"] is True
    model = OfflineEmbedder(heads_path=out, runtime="torch", threads=2)
    assert model.model_id == report.model_id
    imgs = model.embed_images([photo("tshirt"), photo("watch")])
    txts = model.embed_texts(["Men Navy Blue Tshirts"])
    assert imgs.shape == (2, model.dim) and txts.shape == (1, model.dim)
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)


def test_same_seed_same_heads(small_run, shared_data, monkeypatch) -> None:
    tmp, out, report, _ = small_run
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp / "data"))
    again = train_heads(shared_data / "images", shared_data / "styles.csv", tmp / "again.safetensors", epochs=1,
                        seed=3, limit=40, batch_size=16, runtime="torch", threads=2)
    assert again.sha256 == report.sha256
    assert list((tmp / "data" / "cache" / "features").glob("backbone-*.npz")), "features are cached on disk"


def test_captions_name_attributes_and_match_every_fitting_image(shared_data) -> None:
    rows = train_rows(shared_data / "styles.csv", shared_data / "images")[:200]
    caps = build_captions(rows, load_vocabulary())
    assert "a photo of Tshirts" in caps.texts
    assert any(t.startswith("Men Black ") for t in caps.texts)
    items = np.arange(len(rows))
    cands = np.array([caps.by_item[i]["title"][0] for i in items])
    match, ignore = match_matrix(caps.item_codes[items], caps.cap_req[cands])
    assert match.diagonal().all() and not ignore.diagonal().any()


def test_pattern_words_from_titles() -> None:
    assert pattern_of("Nike Men Striped Polo Tshirt") == "striped"
    assert pattern_of("Jealous 21 Women Checked Shirt") == "checked"
    assert pattern_of("Puma Men Black Shoes") is None


def test_bad_inputs_are_user_errors(shared_data, tmp_path) -> None:
    with pytest.raises(SourceError, match="--images"):
        train_heads(tmp_path / "none", shared_data / "styles.csv", tmp_path / "h.safetensors")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\n1,x\n")
    with pytest.raises(CatalogError, match="missing columns"):
        train_heads(shared_data / "images", bad, tmp_path / "h.safetensors")


def test_cli_train_command_is_thin_and_reports_user_errors(tmp_path, shared_data) -> None:
    from toolkit.faces.commands.model import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "--images" in help_text and "--epochs" in help_text
    assert "--augment-views" in help_text and "--hold-out" in help_text
    result = runner.invoke(app, ["train", "--images", str(tmp_path / "missing"), "--catalog",
                                 str(shared_data / "styles.csv"), "--out", str(tmp_path / "h.safetensors")])
    assert isinstance(result.exception, SourceError)
    result = runner.invoke(app, ["train", "--images", str(shared_data / "images"), "--catalog",
                                 str(shared_data / "styles.csv"), "--backbone", "resnet50"])
    assert isinstance(result.exception, ModelError)
    message = str(result.exception)
    assert "unknown image backbone 'resnet50'" in message and "efficientnet-lite2" in message


def test_fine_tuned_last_block_travels_in_the_heads_file(shared_data, tmp_path, monkeypatch, photo) -> None:
    from taggers.offline.heads import load_heads

    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "ft.safetensors"
    train_heads(shared_data / "images", shared_data / "styles.csv", out, epochs=1, limit=24, batch_size=8,
                runtime="onnx", threads=2, finetune_blocks=1, finetune_epochs=1, finetune_batch_size=8,
                backbone="efficientnet-lite0")
    heads, overrides = load_heads(out)
    assert heads.cfg.finetuned[0] == "_blocks.15" and any(k.startswith("_blocks.15.") for k in overrides)
    pics = [photo("tshirt"), photo("heels")]
    onnx = OfflineEmbedder(heads_path=out, runtime="onnx", threads=2, precision="fp32")
    torch_ = OfflineEmbedder(heads_path=out, runtime="torch", threads=2)
    np.testing.assert_allclose(onnx.embed_images(pics), torch_.embed_images(pics), atol=1e-4)
    # The export of fine-tuned weights is its own file, never the ImageNet one.
    assert onnx.images.onnx_path() != OfflineEmbedder(runtime="onnx").images.onnx_path()


def test_fine_tuning_is_refused_for_lite2(shared_data, tmp_path) -> None:
    with pytest.raises(ConfigError, match="--finetune-blocks works with efficientnet-lite0 only"):
        train_heads(shared_data / "images", shared_data / "styles.csv", tmp_path / "h.safetensors", limit=8,
                    finetune_blocks=1, backbone="efficientnet-lite2")


@pytest.mark.parametrize("backbone,size,mid_dim", [("efficientnet-lite0", 224, 424), ("efficientnet-lite2", 256, 464)])
def test_each_backbone_trains_heads_named_and_sized_for_it(shared_data, tmp_path, monkeypatch, photo,
                                                           backbone, size, mid_dim) -> None:
    from taggers.offline.heads import read_config

    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "heads.safetensors"
    report = train_heads(shared_data / "images", shared_data / "styles.csv", out, epochs=1, limit=16,
                         batch_size=8, runtime="onnx", threads=2, backbone=backbone)
    cfg = read_config(out)
    assert (cfg.backbone, cfg.image_size, cfg.mid_dim) == (backbone, size, mid_dim)
    short = backbone.replace("efficientnet-", "effnet").replace("-", "")
    assert report.model_id.startswith(f"offline-{short}-minilm:")
    onnx = OfflineEmbedder(heads_path=out, runtime="onnx", threads=2, precision="fp32")
    assert onnx.model_id == report.model_id and onnx.images.image_size == size
    assert onnx.images.onnx_path().name.startswith(backbone.replace("efficientnet-", "effnet-"))
    pics = [photo("tshirt"), photo("heels")]
    torch_ = OfflineEmbedder(heads_path=out, runtime="torch", threads=2)
    np.testing.assert_allclose(onnx.embed_images(pics), torch_.embed_images(pics), atol=1e-4)
    # Colour features are read from the pictures the backbone sees: one cache per picture size.
    names = sorted(p.name for p in (tmp_path / "data" / "cache" / "features").glob("colour-*.npz"))
    assert names == [f"colour-hsv-lab-fg-v2{'' if size == 224 else f'-{size}px'}.npz"]


def _tiny_catalog(folder: Path, rows: list[dict[str, str]], source: Path, size: tuple[int, int] | None,
                  ids: list[str] | None = None) -> Path:
    """A hand-made catalog: `rows`' photos copied into `folder` (resized to `size`), under `ids`."""
    import csv

    from PIL import Image

    (folder / "images").mkdir(parents=True)
    out = []
    for i, row in enumerate(rows):
        new = dict(row, id=ids[i] if ids else row["id"])
        img = Image.open(source / f"{row['id']}.jpg").convert("RGB")
        (img.resize(size) if size else img).save(folder / "images" / f"{new['id']}.jpg")
        out.append(new)
    with (folder / "styles.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return folder / "styles.csv"


def test_training_over_two_folders_reads_both(shared_data, tmp_path, monkeypatch) -> None:
    """The main folder's training rows, and every photo of the extra one (60x80 px, resized to the
    main photos' size; main photos degraded to 60x80 and back), except a product the main
    catalog keeps in its eval split."""
    from toolkit.training.split import read_catalog

    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path / "data"))
    source = shared_data / "images"
    train = train_rows(shared_data / "styles.csv", source)
    held = eval_rows(shared_data / "styles.csv", source)
    main_csv = _tiny_catalog(tmp_path / "main", train[:20] + held[:2], source, None)
    # Other ids for the extra photos (as in fashion-products-small), plus one eval product of the main catalog.
    small_csv = _tiny_catalog(tmp_path / "small", train[20:32] + held[:1], source, (60, 80),
                              [f"9{i:05d}" for i in range(12)] + [held[0]["id"]])
    out = tmp_path / "both.safetensors"
    report = train_heads(tmp_path / "main" / "images", main_csv, out, extra=[(tmp_path / "small" / "images",
                         small_csv)], degrade=0.5, epochs=1, seed=1, batch_size=16, runtime="torch", threads=2)
    assert report.n_train == 20 + 12
    assert report.excluded_eval == 2 + 1
    meta = json.loads(sidecar_path(out).read_text())
    sources = meta["training"]["sources"]
    assert [(s["images"], s["n_train"]) for s in sources] == [("main/images", 20), ("small/images", 12)]
    assert meta["training"]["degrade"] == 0.5
    assert meta["tag_heads_training"]["n_train"] == 32 and meta["tag_heads_training"]["sources"] == ["main/images", "small/images"]
    features = tmp_path / "data" / "cache" / "features"
    assert list(features.glob("shaped-224x224-from-60x80-*.npz")), "main photos degraded to the extra photos' size"
    extra_cache = [p for p in features.glob("shaped-224x224-*.npz") if "-from-" not in p.name]
    with np.load(extra_cache[0]) as z:
        assert len(z["keys"]) == 12, "the extra photos, resized to the main photos' size"
    assert len(read_catalog(small_csv)) == 13


def test_cli_pairs_each_images_folder_with_its_catalog(tmp_path, shared_data) -> None:
    from toolkit.faces.commands.model import app

    runner = CliRunner()
    assert "--degrade" in runner.invoke(app, ["train", "--help"]).output
    result = runner.invoke(app, ["train", "--images", str(shared_data / "images"), "--catalog",
                                 str(shared_data / "styles.csv"), "--images", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert "one --catalog per --images" in str(result.exception)
