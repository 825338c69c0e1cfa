"""The Azure Custom Vision tagger, with the real SDK talking to a fake server on 127.0.0.1: what is
particular to it (what every tagger does is in tests/contracts/test_tagger_contract.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from taggers.azure_custom_vision import MAX_UPLOAD_BYTES, AzureCustomVisionTagger, fit_for_upload
from taggers.label_mapping import LabelMapping
from taggers.resilience import RetryPolicy
from tests.fakes.azure_cv_server import expected_tags
from tests.fakes.fixtures import image_media
from toolkit.ground.errors import ConfigError, FatalTaggerError
from toolkit.ground.models import Box
from toolkit.ground.settings import Settings

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)


def make_tagger(fake, **kw) -> AzureCustomVisionTagger:
    args = dict(rate=200.0, concurrency=4, retry=FAST, timeout=5.0)
    args.update(kw)
    return AzureCustomVisionTagger(fake.endpoint, fake.key, fake.project_id, fake.iteration, **args)


def by_key(results):
    return {r.ref.key: r for r in results}


def mapped(data: bytes, threshold: float = 0.5) -> set[tuple[str, str]]:
    mapping = LabelMapping.load()
    return {pair for t in expected_tags(data) if t["probability"] >= threshold
            for pair in mapping.map("azure", t["tagName"])}


def test_each_item_gets_the_mapped_labels_the_service_gave_it(azure_cv, photo_paths):
    """One result per item, the provider and the groups: tests/contracts/test_tagger_contract.py."""
    items = [image_media(p) for p in photo_paths[:12]]
    results = by_key(make_tagger(azure_cv).tag(items))
    for media in items:
        res = results[media.ref.key]
        assert {(t.group, t.label) for t in res.tags} == mapped(media.data)
        assert all(t.box is None for t in res.tags)
    assert azure_cv.calls[0].path.endswith("/image/nostore")  # predictions not kept by default


@pytest.mark.parametrize("field, setting", [("project_id", "TOOLKIT_AZURE_CV_PROJECT_ID"),
                                            ("iteration", "TOOLKIT_AZURE_CV_ITERATION")])
def test_a_missing_project_or_iteration_stops_the_run_naming_the_setting(azure_cv, photo_paths, field, setting):
    tagger = make_tagger(azure_cv)
    setattr(tagger, field, "does-not-exist")
    with pytest.raises(FatalTaggerError, match=setting):
        list(tagger.tag([image_media(p) for p in photo_paths[:5]]))


def test_detection_keeps_each_box_with_its_tag(azure_cv, photo_paths):
    media = image_media(photo_paths[5])
    [res] = make_tagger(azure_cv, mode="detect").tag([media])
    expected = {t["tagName"]: t["boundingBox"] for t in expected_tags(media.data)}
    assert res.tags and all(t.box is not None for t in res.tags)
    mapping = LabelMapping.load()
    for name, bb in expected.items():
        if name == "background-noise":
            continue
        for group, label in mapping.map("azure", name):
            assert Box(bb["left"], bb["top"], bb["width"], bb["height"]) in {
                t.box for t in res.tags if (t.group, t.label) == (group, label)}
    assert "/detect/" in azure_cv.calls[0].path


def _big_photo() -> bytes:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2400, 2400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=98)
    return buf.getvalue()


def test_an_oversize_image_is_downscaled_before_upload(azure_cv, tmp_path):
    data = _big_photo()
    assert len(data) > MAX_UPLOAD_BYTES
    path = tmp_path / "huge.jpg"
    path.write_bytes(data)
    tagger = make_tagger(azure_cv)
    [res] = tagger.tag([image_media(path)])

    assert res.error is None
    [call] = azure_cv.calls
    assert call.status == 200 and call.size <= MAX_UPLOAD_BYTES
    uploaded = azure_cv.uploads[call.sha]
    with Image.open(io.BytesIO(uploaded)) as img:
        assert img.format == "JPEG" and img.width < 2400
    assert tagger.stats.as_dict()["downscaled"] == 1


def test_fit_for_upload_leaves_acceptable_images_alone(photo_paths):
    data = photo_paths[0].read_bytes()
    assert fit_for_upload(data) == (data, False)
    webp = io.BytesIO()
    Image.open(io.BytesIO(data)).save(webp, "WEBP")
    converted, changed = fit_for_upload(webp.getvalue())  # a format Custom Vision refuses
    assert changed and Image.open(io.BytesIO(converted)).format == "JPEG"


def test_retry_after_is_honoured(azure_cv, photo_paths):
    azure_cv.retry_after = 1.0
    media = image_media(photo_paths[0])
    azure_cv.fail_once(media.data, "throttle")
    [res] = make_tagger(azure_cv).tag([media])
    first, second = azure_cv.calls_for(media.data)
    assert res.error is None
    assert second.time - first.time >= 0.95  # the service asked for 1 s


def test_settings_name_every_missing_variable():
    settings = Settings(azure_cv_endpoint="https://x.cognitiveservices.azure.com/")
    assert AzureCustomVisionTagger.is_configured(settings)
    with pytest.raises(ConfigError) as info:
        AzureCustomVisionTagger.from_settings(settings)
    for name in ("TOOLKIT_AZURE_CV_PREDICTION_KEY", "TOOLKIT_AZURE_CV_PROJECT_ID", "TOOLKIT_AZURE_CV_ITERATION"):
        assert name in str(info.value)
    assert not AzureCustomVisionTagger.is_configured(Settings())


def test_from_settings_builds_a_working_tagger(azure_env, photo_paths):
    from toolkit.ground.settings import load_settings

    tagger = AzureCustomVisionTagger.from_settings(load_settings(azure_rate=50, max_retries=1))
    [res] = tagger.tag([image_media(photo_paths[2])])
    assert res.error is None and res.tags
    assert tagger.billable_units(image_media(photo_paths[2])) == 1.0
    assert tagger.billing_unit == "image"
