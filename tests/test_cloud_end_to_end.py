"""`toolkit tag --tagger auto` over a bucket on the local S3 server, with the real Azure and
Google SDKs talking to the fake services on 127.0.0.1 while they throttle and fail: tags from
both clouds and the local model land on the right items and filter with `--where`."""
from __future__ import annotations

import json

import pytest

from taggers.label_mapping import LabelMapping
from tests.fakes.azure_cv_server import expected_tags
from tests.fakes.gcp_vi_server import analyse
from tests.helpers import ColourEmbedder, write_mp4
from tests.test_cli import run
from toolkit import Toolkit, registry
from toolkit.records import media_id
from toolkit.ground.settings import load_settings

BUCKET = "cloud-e2e"
PHOTOS = 30
VIDEO_COLOURS = [((200, 30, 30), (20, 20, 20)), ((20, 20, 20), (40, 80, 200)),
                 ((240, 130, 30), (245, 245, 245)), ((40, 150, 60), (200, 30, 30))]


@pytest.fixture
def bucket(s3, photo_paths):
    """30 real photos and 4 two-scene videos in a bucket on the local S3 server."""
    s3.create_bucket(Bucket=BUCKET)
    photos = {}
    for path in photo_paths[200:200 + PHOTOS]:
        data = path.read_bytes()
        s3.put_object(Bucket=BUCKET, Key=f"images/{path.name}", Body=data)
        photos[f"s3://{BUCKET}/images/{path.name}"] = data
    videos = {}
    for i, colours in enumerate(VIDEO_COLOURS):
        data = write_mp4(colours=colours, seconds_each=2.0, fps=5, size=48)
        s3.put_object(Bucket=BUCKET, Key=f"videos/look{i}.mp4", Body=data)
        videos[f"s3://{BUCKET}/videos/look{i}.mp4"] = data
    return photos, videos


def records_of(tk: Toolkit, uri: str) -> list[dict]:
    return [r.metadata for r in tk.store.get(where={"media_id": media_id(uri)})]


def expected_image_tokens(data: bytes) -> set[str]:
    mapping = LabelMapping.load()
    return {f"{g.lower()}:{v.lower()}" for t in expected_tags(data) if t["probability"] >= 0.5
            for g, v in mapping.map("azure", t["tagName"])}


def test_auto_run_tags_every_item_through_faults_and_filters_by_tag(bucket, azure_env, gcp_env):
    photos, videos = bucket
    azure_env.fault_share(0.3, ("throttle", "error", "unavailable", "drop", "malformed"))
    gcp_env.fault_share(0.3, ("throttle", "unavailable", "internal", "poll_unavailable"))
    broken_uri, broken = next(iter(photos.items()))
    azure_env.fail_always(broken, "error")
    settings = load_settings(max_retries=2, concurrency=4, azure_rate=100, gcp_rate=100)
    tk = Toolkit(settings, embedder=ColourEmbedder())

    report = tk.tag(f"s3://{BUCKET}/", tagger="auto")

    # Each cloud handled its own media type; one image kept failing and is reported, with the
    # service's own message; nothing else was lost.
    assert report.taggers == {"azure": PHOTOS, "gcp": len(videos)}
    assert [(f.uri, f.reason) for f in report.failed] == [
        (broken_uri, f"{broken_uri}: azure: 500 InternalServerError: An unexpected error occurred (fake). "
                     "(gave up after 3 tries)")]
    assert report.new == PHOTOS - 1 + len(videos) and report.skipped == []
    # The summary counts every call the services received, and no second went over the rate.
    assert report.services["azure"]["calls"] == len(azure_env.calls)
    assert report.services["azure"]["retries"] > 0 and report.services["azure"]["items_failed"] == 1
    assert report.services["azure"]["busiest_second"] <= settings.azure_rate + 1
    assert report.services["gcp"]["items_ok"] == len(videos)

    # Tags land on the right items, mapped onto the catalog vocabulary
    for uri, data in photos.items():
        if uri == broken_uri:
            assert records_of(tk, uri) == []
            continue
        [meta] = records_of(tk, uri)
        assert meta["providers"] == ["azure"]
        assert set(meta["tags"]) == expected_image_tokens(data)
    for uri, data in videos.items():
        frames = records_of(tk, uri)
        assert frames and all(m["providers"] == ["gcp"] for m in frames)
        a = analyse(data)
        for meta in frames:  # each frame carries its own shot's colour, not the other shot's
            scene = next(s for s in a.scenes if s.start <= meta["timestamp"] < s.end)
            colour = LabelMapping.load().map("gcp", scene.colour)[0][1].lower()
            assert f"colour:{colour}" in meta["tags"]

    # `--where colour=Black` finds the black photos and the black shots, whichever cloud said it
    hits = tk.search(text="product photo", k=200, where=["colour=Black"])
    assert hits
    black_photos = {u for u, d in photos.items() if "colour:black" in expected_image_tokens(d) and u != broken_uri}
    black_shots = {u for u, d in videos.items() if any(s.colour == "black" for s in analyse(d).scenes)}
    assert {h.media_uri for h in hits} == black_photos | black_shots
    for hit in hits:
        if hit.kind == "video":
            scene = next(s for s in analyse(videos[hit.media_uri]).scenes if s.start <= hit.timestamp < s.end)
            assert scene.colour == "black"


def test_items_hold_tags_from_several_providers(bucket, azure_env):
    photos, _ = bucket
    settings = load_settings(max_retries=1, azure_rate=100)
    tk = Toolkit(settings, embedder=ColourEmbedder())
    tk.tag(f"s3://{BUCKET}/images/", tagger="local")
    calls_before = len(azure_env.calls)
    report = tk.tag(f"s3://{BUCKET}/images/", tagger="azure")
    assert report.updated == PHOTOS and len(azure_env.calls) - calls_before == PHOTOS
    uri, data = next(iter(photos.items()))
    [meta] = records_of(tk, uri)
    assert meta["providers"] == ["azure", "local"]
    assert expected_image_tokens(data) <= set(meta["tags"])
    assert any(t["provider"] == "local" for t in json.loads(meta["tags_json"]))


def test_retag_refreshes_only_the_changed_local_tagger_and_keeps_the_cloud_s_tags(bucket, azure_env):
    """A changed local tagger (here its threshold) leaves unchanged items alone on a plain run,
    counted as outdated; `--retag --tagger local` re-tags them without calling Azure, keeps
    Azure's tags, and a second `--retag` finds nothing left to do (a killed one resumes)."""
    photos, _ = bucket
    uri = f"s3://{BUCKET}/images/"
    tk = Toolkit(load_settings(max_retries=1, azure_rate=100), embedder=ColourEmbedder())
    tk.tag(uri, tagger="azure")
    assert tk.tag(uri, tagger="local").updated == PHOTOS  # the local model had not seen them yet
    calls = len(azure_env.calls)

    changed = Toolkit(load_settings(max_retries=1, azure_rate=100, tag_threshold=0.2), embedder=ColourEmbedder())
    plain = changed.tag(uri, tagger="local")
    assert (plain.unchanged, plain.outdated, plain.retagged) == (PHOTOS, PHOTOS, 0)
    assert (changed.plan(uri, tagger="local").outdated, tk.plan(uri, tagger="local").outdated) == (PHOTOS, 0)
    plan = changed.plan(uri, tagger="local", retag=True)
    assert plan.unchanged == 0 and len(plan.lines["local"].items) == PHOTOS and "azure" not in plan.lines
    report = changed.tag(uri, tagger="local", retag=True)
    assert (report.retagged, report.new, report.updated, report.unchanged) == (PHOTOS, 0, 0, 0)
    assert len(azure_env.calls) == calls
    photo_uri, data = next(iter(photos.items()))
    [meta] = records_of(changed, photo_uri)
    assert meta["providers"] == ["azure", "local"]
    assert expected_image_tokens(data) <= set(meta["tags"])
    local = registry.tagger("local", changed.settings, changed.embedder)
    assert json.loads(meta["tagger_versions"]) == {"local": local.version}
    again = changed.tag(uri, tagger="local", retag=True)
    assert (again.unchanged, again.outdated, again.retagged) == (PHOTOS, 0, 0)


def test_a_run_with_a_failed_item_exits_1_and_names_it(bucket, azure_env):
    photos, _ = bucket
    broken_uri, broken = next(iter(photos.items()))
    azure_env.fail_always(broken, "error")
    result = run("tag", f"s3://{BUCKET}/images/", "--tagger", "azure",
                 env={"TOOLKIT_MAX_RETRIES": "1", "TOOLKIT_AZURE_RATE": "100"})
    assert result.returncode == 1, result.stderr
    assert f"{PHOTOS - 1} new" in result.stderr and "1 failed" in result.stderr
    assert f"failed  {broken_uri}: azure: 500 InternalServerError" in result.stderr


def test_dry_run_counts_what_the_run_would_send_after_another_tagger(bucket, azure_env):
    """Items tagged locally are current for `--tagger local` but not for Azure: the dry run
    must count them as the real run would send them, not as unchanged."""
    settings = load_settings(max_retries=1, azure_rate=100)
    tk = Toolkit(settings, embedder=ColourEmbedder())
    tk.tag(f"s3://{BUCKET}/images/", tagger="local")
    assert tk.plan(f"s3://{BUCKET}/images/", tagger="local").unchanged == PHOTOS
    plan = tk.plan(f"s3://{BUCKET}/images/", tagger="azure")
    assert plan.unchanged == 0 and len(plan.lines["azure"].items) == PHOTOS
    assert azure_env.calls == []
    report = tk.tag(f"s3://{BUCKET}/images/", tagger="azure")
    assert report.updated == len(plan.lines["azure"].items) == len(azure_env.calls)


def test_dry_run_lists_what_each_service_would_get_and_calls_nothing(bucket, azure_env, gcp_env):
    photos, videos = bucket
    result = run("tag", f"s3://{BUCKET}/", "--tagger", "auto", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"azure: {PHOTOS} items, {PHOTOS} billable images" in result.stdout
    # Each 4-second video is billed as one whole minute
    assert f"gcp: {len(videos)} items, {len(videos)} billable minutes" in result.stdout
    assert azure_env.calls == [] and gcp_env.calls == []


def test_a_bad_key_stops_the_run_with_one_line_naming_the_setting(bucket, azure_env, monkeypatch):
    monkeypatch.setenv("TOOLKIT_AZURE_CV_PREDICTION_KEY", "not-the-key-4711")
    result = run("tag", f"s3://{BUCKET}/images/", "--tagger", "azure")
    assert result.returncode == 4, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == (f"error: Custom Vision at {azure_env.endpoint} rejected the prediction key (401: Access denied "
                    "due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
                    "active subscription and use a correct regional API endpoint for your resource.); set "
                    "TOOLKIT_AZURE_CV_PREDICTION_KEY to a key of this prediction resource")
    assert "Traceback" not in result.stderr
    assert "not-the-key-4711" not in result.stderr + result.stdout
    assert len(azure_env.calls) <= 2 * load_settings().concurrency

