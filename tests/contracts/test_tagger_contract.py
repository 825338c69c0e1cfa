"""What every tagger promises (taggers/base.py), checked on each backend: the local model on
real photos, Azure Custom Vision and Google Video Intelligence through their real SDKs against
the local wire-format servers in tests/fakes/.

A backend here is a small adapter (`Backend`): how to build its tagger, make items, and steer
its service's faults. Scenarios that need a service (throttling, a bad key, a stall) run on
the cloud backends only; what is particular to one backend stays in its own test file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from taggers.base import Tagger
from taggers.label_mapping import UNMAPPED_GROUP
from taggers.resilience import RetryPolicy
from tests.fakes.fixtures import embedded_media, image_media, video_media
from tests.helpers import REPO
from tests.model_fixtures import offline, photo, shared_data  # noqa: F401 - fixtures of the local backend
from toolkit.ground.errors import FatalTaggerError
from toolkit.ground.models import Media

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
VOCABULARY = frozenset(json.loads((REPO / "taggers" / "data" / "vocabulary.json").read_text())["groups"])
#: Groups a tag may have beyond the vocabulary's: a provider label no mapping knows, and
#: Google's categories and shots.
EXTRA_GROUPS = frozenset({UNMAPPED_GROUP, "category", "shot"})


@dataclass
class Backend:
    name: str
    make: Callable[..., Tagger]                 #: make(**overrides) -> a working tagger
    items: Callable[[int, int], list[Media]]    #: items(n, start) -> n distinct items
    media_types: frozenset[str]
    fail_always: Callable[[Media], str]         #: make the item fail; the error its result carries
    fake: Any = None                            #: the service's local server, for cloud backends
    tries: int | None = None                    #: calls for an item that keeps failing
    refuse: Callable[[Media], str] | None = None       #: the service refuses it: what the error says
    unmapped: tuple[Callable[[], Media], set] | None = None  #: (an item labelled unmappably, pairs kept)
    bad_key: Callable[[], Tagger] | None = None
    bad_key_setting: str = ""
    secret: str = ""
    throttle_faults: tuple[str, ...] = ()
    throttle_checks: Callable[[Tagger, list[Media], list[Media]], None] | None = None  #: the backend's own
    stalled: Callable[[], Tagger] | None = None
    rate_case: Any = field(default_factory=dict)  #: items, rate, concurrency, calls (as the server counts)


def local_backend(request) -> Backend:
    from taggers.clip_local import LocalTagger
    from tests.model_fixtures import CLEAR

    offline, photo = request.getfixturevalue("offline"), request.getfixturevalue("photo")
    tagger = LocalTagger(offline, vocabulary=None, threshold=0.2)
    names = list(CLEAR)

    def items(n: int, start: int = 0) -> list[Media]:
        out = [embedded_media(offline, [photo(names[(start + i) % len(names)])], key=f"item{start + i}")
               for i in range(n)]
        return out

    def fail_always(media: Media) -> str:
        media.frames, media.embeddings, media.features = [], None, None  # nothing to tag it by
        return f"{media.ref.key}: no frames to tag"

    return Backend("local", lambda **kw: tagger, items, frozenset({"image", "video"}), fail_always)


def azure_backend(request) -> Backend:
    from taggers.azure_custom_vision import AzureCustomVisionTagger
    from tests.fakes.azure_cv_server import product_label

    fake, paths = request.getfixturevalue("azure_cv"), request.getfixturevalue("photo_paths")

    def make(**kw) -> AzureCustomVisionTagger:
        args = dict(rate=200.0, concurrency=4, retry=FAST, timeout=5.0) | kw
        return AzureCustomVisionTagger(fake.endpoint, fake.key, fake.project_id, fake.iteration, **args)

    def fail_always(media: Media) -> str:
        fake.fail_always(media.data, "error")
        return "500 InternalServerError: An unexpected error occurred (fake). (gave up after 4 tries)"

    def refuse(media: Media) -> str:
        fake.fail_always(media.data, "bad_image")
        return "BadRequestImageFormat"

    def throttle_checks(tagger, items: list[Media], faulted: list[Media]) -> None:
        assert 10 <= len(faulted) <= 30  # the share is picked by hash: about 18 of 60
        for media in items:
            assert len(fake.calls_for(media.data)) == (2 if media in faulted else 1)
        stats = tagger.stats.as_dict()
        assert stats["calls"] == len(items) + len(faulted)
        assert stats["throttled"] == sum(1 for c in fake.calls if c.fault == "throttle")

    return Backend(
        "azure", make, lambda n, start=0: [image_media(p) for p in paths[start:start + n]], frozenset({"image"}),
        fail_always, fake=fake, tries=4, refuse=refuse,
        unmapped=(lambda: next(image_media(p) for p in paths if product_label(p.read_bytes()) == "zorblax"),
                  {(UNMAPPED_GROUP, "zorblax")}),
        bad_key=lambda: AzureCustomVisionTagger(fake.endpoint, "wrong-secret-key-123", fake.project_id,
                                                fake.iteration, rate=200.0, concurrency=4, retry=FAST),
        bad_key_setting="TOOLKIT_AZURE_CV_PREDICTION_KEY", secret="wrong-secret-key-123",
        throttle_faults=("throttle", "error", "unavailable", "drop", "malformed"), throttle_checks=throttle_checks,
        stalled=lambda: make(timeout=0.4),
        rate_case=dict(items=40, start=100, rate=25.0, concurrency=8, calls=40))


def gcp_backend(request) -> Backend:
    from taggers.gcp_video_intelligence import VideoIntelligenceTagger
    from tests.fakes.gcp_vi_server import analyse

    fake, videos = request.getfixturevalue("gcp_vi"), request.getfixturevalue("videos")

    def make(**kw) -> VideoIntelligenceTagger:
        args = dict(endpoint=fake.endpoint, rate=200.0, concurrency=4, poll_interval=0.02, rpc_timeout=5.0,
                    retry=FAST) | kw
        return VideoIntelligenceTagger(**args)

    def items(n: int, start: int = 0) -> list[Media]:
        return [video_media(v, f"v{i}.mp4", duration=3.0, frame_times=(0.5, 1.5, 2.5))
                for i, v in enumerate(videos[:n])]

    def fail_always(media: Media) -> str:
        fake.fail_always(media.data, "op_error")
        return "INTERNAL: Video processing failed: the video could not be decoded (fake). (gave up after 4 tries)"

    def refuse(media: Media) -> str:
        fake.fail_always(media.data, "bad_video")
        return "INVALID_ARGUMENT: Invalid video content: unsupported codec (fake)."

    def unmapped() -> Media:
        """A video the fake labels "zorblax": among the fixture's, else among more variants."""
        from tests.helpers import write_mp4

        more = (write_mp4(colours=((200, 30, 30), (20, 20, 20), (40, 200, 60 + 7 * i)), seconds_each=1.0, fps=5,
                          size=32) for i in range(40))
        data = next(v for v in (*videos, *more) if analyse(v).label == "zorblax")
        return video_media(data, "unmapped.mp4", duration=3.0, frame_times=(0.5, 1.5, 2.5))

    def bad_key() -> VideoIntelligenceTagger:
        fake.reject_key = True
        return make()

    def rate_case() -> dict:
        fake.polls_to_finish = 2
        return dict(items=10, start=0, rate=20.0, concurrency=6, calls=30)  # 10 annotations + 20 status checks

    return Backend(
        "gcp", make, items, frozenset({"video"}), fail_always, fake=fake, tries=4, refuse=refuse,
        unmapped=(unmapped, {(UNMAPPED_GROUP, "zorblax"), ("category", "gizmo")}),
        bad_key=bad_key, bad_key_setting="GOOGLE_APPLICATION_CREDENTIALS",
        throttle_faults=("throttle", "unavailable", "internal", "malformed", "poll_unavailable"),
        stalled=lambda: make(rpc_timeout=0.4), rate_case=rate_case)


BACKENDS = {"local": local_backend, "azure": azure_backend, "gcp": gcp_backend}


@pytest.fixture(params=list(BACKENDS))
def backend(request) -> Backend:
    return BACKENDS[request.param](request)


@pytest.fixture(params=["azure", "gcp"])
def cloud(request) -> Backend:
    """The backends with a service to fault (the local model has none: these scenarios do not
    exist for it, so they are not generated for it rather than skipped)."""
    return BACKENDS[request.param](request)


def pairs(result) -> set[tuple[str, str]]:
    """(group, label) of every tag of a result, the item's and its frames'."""
    tags = [*result.tags, *(t for frame in result.frame_tags.values() for t in frame)]
    return {(t.group, t.label) for t in tags}


def test_is_a_tagger_of_its_media_types(backend):
    tagger = backend.make()
    assert isinstance(tagger, Tagger)
    assert tagger.name == backend.name and tagger.media_types == backend.media_types
    assert {m.kind for m in backend.items(3, 0)} <= tagger.media_types


def test_one_result_per_item_with_tags_in_the_catalog_groups(backend):
    items = backend.items(5, 0)
    results = list(backend.make().tag(items))
    assert sorted(r.ref.key for r in results) == sorted(m.ref.key for m in items)
    for res in results:
        assert res.error is None and res.provider == backend.name and res.tags
        tags = [*res.tags, *(t for frame in res.frame_tags.values() for t in frame)]
        assert all(t.provider == backend.name and 0 < t.confidence <= 1 for t in tags)
        assert {t.group for t in tags} <= VOCABULARY | EXTRA_GROUPS
    assert any(t.group in VOCABULARY for r in results for t in r.tags)


def test_an_item_that_keeps_failing_is_its_results_error_and_nothing_else_is_lost(backend):
    items = backend.items(5, 0)
    bad = items[2]
    expected = backend.fail_always(bad)
    results = {r.ref.key: r for r in backend.make().tag(items)}  # no exception
    assert results[bad.ref.key].error == expected and results[bad.ref.key].tags == []
    assert all(r.error is None and r.tags for k, r in results.items() if k != bad.ref.key)
    if backend.fake is not None:
        assert len(backend.fake.calls_for(bad.data)) == backend.tries  # 1 + max_retries


def test_an_item_the_service_refuses_is_reported_without_retrying(cloud):
    [media] = cloud.items(1, 0)
    expected = cloud.refuse(media)
    [res] = cloud.make().tag([media])
    assert expected in res.error
    assert len(cloud.fake.calls_for(media.data)) == 1


def test_labels_no_mapping_knows_are_kept_as_they_are(cloud):
    make_item, kept = cloud.unmapped
    [res] = cloud.make().tag([make_item()])
    assert kept <= pairs(res)


def test_a_bad_credential_stops_the_run_in_one_line_naming_the_setting(cloud):
    tagger = cloud.bad_key()
    with pytest.raises(FatalTaggerError) as info:
        list(tagger.tag(cloud.items(10 if cloud.name == "gcp" else 40, 0)))
    message = str(info.value)
    assert cloud.bad_key_setting in message and "\n" not in message
    assert not cloud.secret or cloud.secret not in message
    assert len(cloud.fake.calls) <= 8  # stopped at once: only the calls already under way


def test_throttled_or_failing_once_still_tags_every_item(cloud):
    items = cloud.items(60 if cloud.name == "azure" else 10, 0)
    cloud.fake.fault_share(0.3, cloud.throttle_faults)
    faulted = [m for m in items if cloud.fake.faulted_first_time(m.data)]
    assert faulted
    tagger = cloud.make()
    results = list(tagger.tag(items))
    assert len(results) == len(items) and all(r.error is None and r.tags for r in results)
    stats = tagger.stats.as_dict()
    assert stats["retries"] == len(faulted)
    assert stats["calls"] == len(cloud.fake.calls)  # every request (and status check) was counted
    if cloud.throttle_checks:
        cloud.throttle_checks(tagger, items, faulted)


def test_a_stalled_call_times_out_and_is_retried(cloud):
    cloud.fake.stall_seconds = 2.0
    [media] = cloud.items(1, 1)
    cloud.fake.fail_once(media.data, "stall")
    [res] = cloud.stalled().tag([media])
    assert res.error is None
    assert len(cloud.fake.calls_for(media.data)) == 2


def test_calls_stay_within_the_configured_rate(cloud):
    case = cloud.rate_case() if callable(cloud.rate_case) else cloud.rate_case
    tagger = cloud.make(rate=case["rate"], concurrency=case["concurrency"])
    results = list(tagger.tag(cloud.items(case["items"], case["start"])))
    assert all(r.error is None for r in results)
    times = cloud.fake.call_times()
    assert len(times) == tagger.calls == case["calls"]
    # Counted at the server: never more than rate x elapsed, +1 for the bucket's first token,
    # +2 for when the first and last calls happened to arrive (the first also opens the connection).
    assert len(times) <= case["rate"] * (times[-1] - times[0]) + 3
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= case["rate"] + 3
    assert tagger.limiter.max_in_window(1.0) <= case["rate"] + 1  # and as the tagger sent them
