"""The Google Video Intelligence tagger, with the real client on a fake gRPC server on 127.0.0.1: what
is particular to it (what every tagger does is in tests/contracts/test_tagger_contract.py; the
`videos` fixture is in tests/fakes/fixtures.py)."""
from __future__ import annotations

import pytest

from taggers.gcp_video_intelligence import VideoIntelligenceTagger
from taggers.resilience import RetryPolicy
from tests.fakes.fixtures import video_media
from tests.fakes.gcp_vi_server import analyse
from toolkit.ground.errors import ConfigError, FatalTaggerError
from toolkit.ground.settings import Settings

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)


def make_tagger(fake, **kw) -> VideoIntelligenceTagger:
    args = dict(endpoint=fake.endpoint, rate=200.0, concurrency=4, poll_interval=0.02, rpc_timeout=5.0,
                retry=FAST)
    args.update(kw)
    return VideoIntelligenceTagger(**args)


def medias(videos, n=None):
    return [video_media(v, f"v{i}.mp4", duration=3.0, frame_times=(0.5, 1.5, 2.5))
            for i, v in enumerate(videos[:n])]


def all_tags(res):
    return [*res.tags, *(t for tags in res.frame_tags.values() for t in tags)]


def test_labels_shots_and_categories_with_time_ranges(gcp_vi, videos):
    apparel = {"dress": "Dresses", "t-shirt": "Tshirts"}
    media = next(m for m in medias(videos) if analyse(m.data).label in apparel)
    media.frames = []  # no sampled frames: every tag stays at item level
    [res] = make_tagger(gcp_vi).tag([media])
    assert res.error is None and res.provider == "gcp"
    tags = {(t.group, t.label, t.start, t.end) for t in res.tags}
    # The shot changes, with their time ranges
    assert [(t.start, t.end) for t in res.tags if t.group == "shot"] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    # Shot labels ("red", "black", "blue" from Google) mapped onto the catalog's colours
    assert {("colour", "Red", 0.0, 1.0), ("colour", "Black", 1.0, 2.0), ("colour", "Blue", 2.0, 3.0)} <= tags
    # The segment label and its category ("clothing") cover the whole video
    article = apparel[analyse(media.data).label]
    assert {("article_type", article, 0.0, 3.0), ("master_category", "Apparel", 0.0, 3.0)} <= tags
    assert all(0 < t.confidence <= 1 and t.provider == "gcp" for t in res.tags)


def test_shot_tags_go_to_the_frames_of_their_shot(gcp_vi, videos):
    media = medias(videos, 1)[0]  # frames sampled at 0.5 s, 1.5 s and 2.5 s
    [res] = make_tagger(gcp_vi).tag([media])
    # Item level: only what covers the whole video
    assert all((t.start, t.end) == (0.0, 3.0) for t in res.tags) and res.tags
    # Each frame: the labels of its own shot, and the shot with its time range
    assert {(t.group, t.label, t.start, t.end) for t in res.frame_tags[1]} == {
        ("colour", "Black", 1.0, 2.0), ("shot", "shot 2", 1.0, 2.0)}
    assert ("colour", "Red") in {(t.group, t.label) for t in res.frame_tags[0]}


def test_content_is_sent_inline_and_gs_uris_by_uri(gcp_vi, videos):
    inline = medias(videos, 1)[0]
    by_uri = video_media(b"", "remote.mp4", uri="gs://catalog-videos/remote.mp4", duration=10.0)
    results = {r.ref.key: r for r in make_tagger(gcp_vi).tag([inline, by_uri])}
    assert all(r.error is None for r in results.values())
    assert len(gcp_vi.calls_for(inline.data)) == 1
    [call] = gcp_vi.calls_for("gs://catalog-videos/remote.mp4")
    assert call.size < 200  # the request carried the URI, not the video
    assert results["remote.mp4"].tags  # labelled from the URI by the fake


def test_a_disabled_api_stops_the_run(gcp_vi, videos):
    gcp_vi.deny_permission = True
    with pytest.raises(FatalTaggerError, match="has not been used in project"):
        list(make_tagger(gcp_vi).tag(medias(videos, 3)))


def test_missing_credentials_stop_the_run_naming_the_setting(monkeypatch, tmp_path, videos):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nope.json"))
    tagger = VideoIntelligenceTagger(retry=FAST)  # Google's own endpoint: needs credentials first
    with pytest.raises(FatalTaggerError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        list(tagger.tag(medias(videos, 1)))

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login either
    with pytest.raises(FatalTaggerError, match="no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS"):
        list(VideoIntelligenceTagger(retry=FAST).tag(medias(videos, 1)))


def test_a_video_over_the_inline_limit_names_the_staging_setting(gcp_vi, videos):
    media = medias(videos, 1)[0]
    [res] = make_tagger(gcp_vi, inline_limit=1000).tag([media])
    assert res.error.startswith("video is 2.0 kB, over the 1.0 kB Video Intelligence takes inline; set TOOLKIT_GCP_STAGING_BUCKET=")
    assert gcp_vi.calls == []  # nothing was sent


def test_a_video_over_the_inline_limit_is_staged_when_a_bucket_is_set(gcp_vi, videos):
    media = medias(videos, 1)[0]
    tagger = make_tagger(gcp_vi, inline_limit=1000, staging_bucket=f"gs://{gcp_vi.storage.bucket}")
    [res] = tagger.tag([media])
    assert res.error is None
    [uploaded] = gcp_vi.storage.uploads
    assert uploaded == f"gs://{gcp_vi.storage.bucket}/toolkit-staging/{media.sha256}.mp4"
    assert len(gcp_vi.calls_for(uploaded)) == 1  # annotated by URI
    assert gcp_vi.storage.deletes == [uploaded] and not gcp_vi.storage.objects  # and cleaned up
    assert ("colour", "Black") in {(t.group, t.label) for t in all_tags(res)}  # the fake read the staged copy


def test_an_operation_that_never_finishes_times_out(gcp_vi, videos):
    media = medias(videos, 1)[0]
    gcp_vi.fail_always(media.data, "never_done")
    [res] = make_tagger(gcp_vi, timeout=0.3).tag([media])
    assert "did not finish within 0.3 s" in res.error
    assert "TOOLKIT_GCP_TIMEOUT" in res.error
    assert len(gcp_vi.calls_for(media.data)) == 1  # not started again: it may still be running
    assert len(gcp_vi.calls_for(media.data, "GetOperation")) >= 2  # polled until the deadline


def test_billable_minutes_are_rounded_up_per_video():
    tagger = VideoIntelligenceTagger()
    assert tagger.billing_unit == "minute"
    assert tagger.billable_units(video_media(b"x", "a.mp4", duration=60.0)) == 1
    assert tagger.billable_units(video_media(b"x", "a.mp4", duration=61.0)) == 2
    assert tagger.billable_units(video_media(b"x", "a.mp4", duration=None)) == 1


def test_settings(gcp_env):
    from toolkit.ground.settings import load_settings

    assert VideoIntelligenceTagger.is_configured(load_settings())
    with pytest.raises(ConfigError, match="TOOLKIT_GCP_STAGING_BUCKET"):
        VideoIntelligenceTagger.from_settings(Settings(gcp_staging_bucket="my-bucket"))
