"""The Google Video Intelligence tagger, with the real client on a fake gRPC server on 127.0.0.1."""
from __future__ import annotations

import pytest

from taggers.gcp_video_intelligence import VideoIntelligenceTagger
from taggers.resilience import RetryPolicy
from tests.fakes.fixtures import video_media
from tests.fakes.gcp_vi_server import analyse
from tests.helpers import write_mp4
from toolkit.ground.errors import ConfigError, FatalTaggerError
from toolkit.ground.settings import Settings

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
RED, BLACK, BLUE = (200, 30, 30), (20, 20, 20), (40, 80, 200)


@pytest.fixture(scope="module")
def videos() -> list[bytes]:
    """Small distinct MP4s: three one-second solid-colour scenes each (red, black, then a blue
    that differs enough per video to change the encoded bytes)."""
    out = [write_mp4(colours=(RED, BLACK, (40, 60 + 12 * i, 200)), seconds_each=1.0, fps=5, size=32)
           for i in range(10)]
    assert len(set(out)) == len(out)
    return out


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


def test_unmapped_labels_and_categories_are_kept(gcp_vi, videos):
    media = next(m for m in medias(videos) if analyse(m.data).label == "zorblax")
    [res] = make_tagger(gcp_vi).tag([media])
    pairs = {(t.group, t.label) for t in all_tags(res)}
    assert {("label", "zorblax"), ("category", "gizmo")} <= pairs


def test_content_is_sent_inline_and_gs_uris_by_uri(gcp_vi, videos):
    inline = medias(videos, 1)[0]
    by_uri = video_media(b"", "remote.mp4", uri="gs://catalog-videos/remote.mp4", duration=10.0)
    results = {r.ref.key: r for r in make_tagger(gcp_vi).tag([inline, by_uri])}
    assert all(r.error is None for r in results.values())
    assert len(gcp_vi.calls_for(inline.data)) == 1
    [call] = gcp_vi.calls_for("gs://catalog-videos/remote.mp4")
    assert call.size < 200  # the request carried the URI, not the video
    assert results["remote.mp4"].tags  # labelled from the URI by the fake


def test_thirty_percent_throttled_or_failing_once_still_tags_every_item(gcp_vi, videos):
    items = medias(videos)
    gcp_vi.fault_share(0.3, ("throttle", "unavailable", "internal", "malformed", "poll_unavailable"))
    faulted = [m for m in items if gcp_vi.faulted_first_time(m.data)]
    assert faulted
    tagger = make_tagger(gcp_vi)
    results = list(tagger.tag(items))
    assert len(results) == len(items) and all(r.error is None and r.tags for r in results)
    stats = tagger.stats.as_dict()
    assert stats["retries"] == len(faulted)
    assert stats["calls"] == len(gcp_vi.calls)  # every request and status check was counted


def test_an_item_that_keeps_failing_is_reported_with_the_service_message(gcp_vi, videos):
    items = medias(videos, 5)
    bad = items[2]
    gcp_vi.fail_always(bad.data, "op_error")
    results = {r.ref.key: r for r in make_tagger(gcp_vi).tag(items)}
    assert results[bad.ref.key].error == (
        "INTERNAL: Video processing failed: the video could not be decoded (fake). (gave up after 4 tries)")
    assert len(gcp_vi.calls_for(bad.data)) == 4
    assert all(r.error is None and r.tags for k, r in results.items() if k != bad.ref.key)


def test_an_invalid_video_is_reported_without_retrying(gcp_vi, videos):
    media = medias(videos, 1)[0]
    gcp_vi.fail_always(media.data, "bad_video")
    [res] = make_tagger(gcp_vi).tag([media])
    assert res.error == "INVALID_ARGUMENT: Invalid video content: unsupported codec (fake)."
    assert len(gcp_vi.calls_for(media.data)) == 1


def test_rejected_credentials_stop_the_run_naming_the_setting(gcp_vi, videos):
    gcp_vi.reject_key = True
    with pytest.raises(FatalTaggerError) as info:
        list(make_tagger(gcp_vi).tag(medias(videos)))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(info.value) and "\n" not in str(info.value)
    assert len(gcp_vi.calls) <= 8


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


def test_a_stalled_request_times_out_and_is_retried(gcp_vi, videos):
    gcp_vi.stall_seconds = 2.0
    media = medias(videos, 1)[0]
    gcp_vi.fail_once(media.data, "stall")
    [res] = make_tagger(gcp_vi, rpc_timeout=0.4).tag([media])
    assert res.error is None
    assert len(gcp_vi.calls_for(media.data)) == 2


def test_requests_and_status_checks_stay_within_the_rate(gcp_vi, videos):
    rate = 20.0
    gcp_vi.polls_to_finish = 2
    tagger = make_tagger(gcp_vi, rate=rate, concurrency=6)
    results = list(tagger.tag(medias(videos)))
    assert all(r.error is None for r in results)
    times = gcp_vi.call_times()
    assert len(times) == tagger.calls == 30  # 10 annotations + 20 status checks
    # Counted at the server: +1 for the bucket's first token, +2 for when the first and last
    # calls happened to arrive (the first one also opens the connection).
    assert len(times) <= rate * (times[-1] - times[0]) + 3
    assert tagger.limiter.max_in_window(1.0) <= rate + 1  # and as the tagger sent them


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
