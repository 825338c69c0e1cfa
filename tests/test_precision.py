"""The image backbone's precision: int8 only where it is measured to match fp32 on this CPU, the
verdict said and kept, and stores that move between machines searched alike. Nothing here
assumes int8 is accurate: on a CPU where it strays, the precision in force is fp32."""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from taggers.offline.model import OfflineEmbedder
from taggers.offline.precision import MIN_SPEEDUP, TOLERANCE, cached_decide, choice_path, decide
from taggers.offline.quantize import CALIBRATION
from tests.helpers import copy_photos, read_styles
from toolkit import Toolkit, registry
from toolkit.ground.machine import machine_facts


@pytest.fixture(scope="module")
def photos(shared_data):
    """48 photos the int8 model was not calibrated on."""
    from PIL import Image

    calibrated = {p.stem for p in CALIBRATION.glob("*.jpg")}
    rows = [r for r in read_styles(shared_data) if r["id"] not in calibrated][:48]
    return [Image.open(shared_data / "images" / f"{r['id']}.jpg").convert("RGB") for r in rows]


def test_settings_default_to_auto_and_take_each_precision(settings):
    assert settings.precision == "auto" and registry.embedder(settings).precision == "auto"
    for p in ("int8", "fp32"):
        assert registry.embedder(settings.model_copy(update={"precision": p})).precision == p


def test_the_precision_in_force_matches_fp32_and_keeps_neighbours(photos, tmp_path):
    assert len(list(CALIBRATION.glob("*.jpg"))) >= 32, "calibration photos ship with the package"
    here, fp32 = OfflineEmbedder(cache=tmp_path / "c"), OfflineEmbedder(precision="fp32", cache=tmp_path / "c")
    a, b = here.embed_images(photos), fp32.embed_images(photos)
    choice = here.precision_choice()
    assert choice.precision in ("int8", "fp32") and here.images.precision_used == choice.precision
    # Final embeddings (both L2-normalised), on photos the check never saw: the heads widen the
    # backbone's gap a little (int8 with VNNI: backbone 0.996 mean, embeddings 0.992 mean, 0.96 lowest).
    cos = (a * b).sum(axis=1)
    assert cos.mean() >= 0.985 and cos.min() >= 0.95, (choice, cos.mean(), cos.min())
    # Each photo's nearest other photo under fp32 stays among its 3 nearest.
    ranked = np.argsort(-(a @ a.T), axis=1)[:, 1:4]
    nearest_fp32 = np.argsort(-(b @ b.T), axis=1)[:, 1]
    assert np.mean([n in r for n, r in zip(nearest_fp32, ranked)]) >= 0.95
    # The verdict is kept beside the int8 model, with the machine it was measured on.
    from taggers.offline.quantize import int8_path

    saved = json.loads(choice_path(int8_path(fp32.images.onnx_path())).read_text())
    assert saved["machine"] == machine_facts() and saved["choices"]["auto"]["precision"] == choice.precision
    assert saved["machine"]["onnxruntime"] == "1.32.0"  # pinned in pyproject.toml
    # Cached training features stay apart by precision: int8 ones never stand in for fp32's.
    assert fp32.images.features_key == fp32.images.backbone_key == here.images.backbone_key
    assert here.images.features_key.startswith(here.images.backbone_key) and \
        (here.images.features_key != here.images.backbone_key) == (choice.precision == "int8")


def _features(x: np.ndarray) -> np.ndarray:
    """A fixed projection standing in for a backbone: deterministic features of the input."""
    w = np.random.default_rng(7).normal(size=(x[0].size, 64)).astype(np.float32)
    return x.reshape(len(x), -1) @ w


def _calibration_like(n: int = 24) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 3, 8, 8)).astype(np.float32)


def test_an_int8_that_strays_falls_back_to_fp32_and_says_so_once(tmp_path, caplog):
    def saturating(x: np.ndarray) -> np.ndarray:  # what u8s8 does without VNNI: clipped sums
        f = _features(x)
        return np.clip(f, -0.2 * np.abs(f).max(), 0.2 * np.abs(f).max())

    model = tmp_path / "backbone-int8.onnx"
    with caplog.at_level(logging.WARNING, logger="taggers.offline.precision"):
        first = cached_decide("auto", model, _features, saturating, _calibration_like)
    assert first.precision == "fp32" and first.fell_back and "strays from fp32" in first.reason
    assert first.parity is not None and not first.parity.within()
    assert [r.message for r in caplog.records if "runs fp32 on this machine" in r.getMessage()]
    # Measured once: the next process reads the verdict and says nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="taggers.offline.precision"):
        again = cached_decide("auto", model, _features, lambda x: pytest.fail("measured twice"), _calibration_like)
    assert (again.precision, again.reason) == (first.precision, first.reason) and not caplog.records
    # Asking for int8 outright does not override the tolerance either.
    assert decide("int8", _features, saturating, _calibration_like()).precision == "fp32"


def test_auto_keeps_int8_only_where_it_is_faster(tmp_path):
    def exact_but_slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.02)
        return _features(x)

    slow = decide("auto", _features, exact_but_slow, _calibration_like())
    assert slow.precision == "fp32" and slow.speedup is not None and slow.speedup < MIN_SPEEDUP
    assert "as fast" in slow.reason and slow.parity is not None and slow.parity.within()
    # TOOLKIT_PRECISION=int8 takes a matching int8 even where it is no faster.
    assert decide("int8", _features, exact_but_slow, _calibration_like()).precision == "int8"
    assert TOLERANCE["mean_cosine"] >= 0.99


def test_model_id_names_no_precision_and_legacy_int8_collections_open(settings):
    from store.chroma import ChromaStore, client_for

    ids = {registry.embedder(settings.model_copy(update={"precision": p})).model_id for p in ("auto", "int8", "fp32")}
    assert len(ids) == 1 and not next(iter(ids)).endswith("-int8")
    model_id = ids.pop()
    # A collection made before precision was checked per machine recorded "-int8".
    client_for(settings).create_collection("old", metadata={"model_id": model_id + "-int8", "dim": 256, "schema": 1},
                                           embedding_function=None)
    assert ChromaStore.open(settings, "old", model_id=model_id, dim=256, create=False).model_id == model_id


def test_a_store_moved_to_a_machine_that_picks_another_precision_searches_alike(shared_data, tmp_path):
    """Tagged where int8 runs (as `auto` may pick), searched where fp32 runs, and the other way:
    the same products come back, and the store says how its vectors were made."""
    rows = read_styles(shared_data)[300:340]
    folder = copy_photos(shared_data, rows, tmp_path / "photos")
    queries = [folder / f"{r['id']}.jpg" for r in rows[:10]]
    results = {}
    for tagged_with, searched_with in (("int8", "fp32"), ("fp32", "auto")):
        data_dir = tmp_path / f"data-{tagged_with}"
        Toolkit(data_dir=data_dir, precision=tagged_with).tag(folder, tagger="local")
        for precision in (tagged_with, searched_with):
            tk = Toolkit(data_dir=data_dir, precision=precision)
            results[tagged_with, precision] = [[h.media_id for h in tk.search(image=q, k=5)] for q in queries]
        stats = Toolkit(data_dir=data_dir).stats()
        assert len(stats.made_with) == 1 and stats.made_with[0].split()[0] in ("int8", "fp32")
        assert machine_facts()["cpu"] in stats.made_with[0]
        # Everything derived lives in the data directory given, not in a user cache.
        assert any((data_dir / "cache" / "onnx").glob("effnet-lite0-*.onnx"))
        same, moved = results[tagged_with, tagged_with], results[tagged_with, searched_with]
        assert [a[0] for a in same] == [b[0] for b in moved]  # each photo finds itself first
        overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(same, moved)])
        assert overlap >= 0.9, (tagged_with, searched_with, overlap)


def test_model_info_and_config_say_which_precision_is_in_force_and_why(tmp_path):
    from tests.test_cli import run

    env = {"TOOLKIT_DATA_DIR": str(tmp_path / "fresh")}
    before = run("config", "--json", env=env)
    assert before.returncode == 0 and "not measured on this machine yet" in json.loads(before.stdout)["precision_in_force"]
    info = run("model", "info", env=env)
    assert info.returncode == 0, info.stderr
    line = next(l for l in info.stdout.splitlines() if l.startswith("precision: "))
    in_force = line.split()[1]
    assert in_force in ("int8", "fp32") and "(TOOLKIT_PRECISION=auto): " in line
    assert ("matches fp32" in line) if in_force == "int8" else ("strays" in line or "as fast" in line)
    assert any(l.startswith("machine: ") and machine_facts()["cpu"] in l for l in info.stdout.splitlines())
    after = json.loads(run("config", "--json", env=env).stdout)["precision_in_force"]
    assert after.startswith(f"{in_force}: ") and after.split(": ", 1)[1] in line
    assert json.loads(run("config", "--json", env={**env, "TOOLKIT_PRECISION": "fp32"}).stdout)[
        "precision_in_force"] == "fp32 (asked for)"
