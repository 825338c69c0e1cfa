"""Pytest fixtures for the fake Azure Custom Vision and Google Video Intelligence servers,
and helpers that build `Media` from real photos and small MP4s.

tests/conftest.py imports everything here. Each server runs once per session on
127.0.0.1; each test gets it reset (no faults, no recorded calls).
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

# No test may reach Google: google-auth must never probe the GCE metadata server (it reads
# these when first imported, so they are set before anything imports it); no gRPC chatter.
os.environ["NO_GCE_CHECK"] = "true"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import pytest
from PIL import Image

from tests.fakes.azure_cv_server import FakeCustomVision
from tests.fakes.gcp_vi_server import FakeVideoIntelligence
from toolkit.ground.models import Frame, Media, MediaRef



@pytest.fixture(autouse=True)
def _no_real_google(monkeypatch, tmp_path):
    """No test finds the developer's Google credentials (`--tagger auto` would then pick the
    real service), and google-auth never probes the metadata server, even if it was imported
    before this module set the variables above."""
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)


@pytest.fixture(scope="session")
def azure_cv_server():
    fake = FakeCustomVision().start()
    yield fake
    fake.stop()


@pytest.fixture
def azure_cv(azure_cv_server) -> FakeCustomVision:
    """The fake Custom Vision prediction server, reset for this test."""
    azure_cv_server.reset()
    azure_cv_server.retry_after = 0.05
    azure_cv_server.stall_seconds = 3.0
    return azure_cv_server


@pytest.fixture(scope="session")
def gcp_vi_server():
    fake = FakeVideoIntelligence().start()
    yield fake
    fake.stop()


@pytest.fixture
def gcp_vi(gcp_vi_server, monkeypatch) -> FakeVideoIntelligence:
    """The fake Video Intelligence server (and its fake Cloud Storage), reset for this test."""
    gcp_vi_server.reset()
    gcp_vi_server.polls_to_finish = 1
    gcp_vi_server.retry_after = 0.05
    gcp_vi_server.stall_seconds = 3.0
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_vi_server.storage.host)
    return gcp_vi_server


@pytest.fixture
def azure_env(azure_cv, monkeypatch) -> FakeCustomVision:
    """TOOLKIT_AZURE_CV_* pointing at the fake, for tests that go through settings or the CLI."""
    monkeypatch.setenv("TOOLKIT_AZURE_CV_ENDPOINT", azure_cv.endpoint)
    monkeypatch.setenv("TOOLKIT_AZURE_CV_PREDICTION_KEY", azure_cv.key)
    monkeypatch.setenv("TOOLKIT_AZURE_CV_PROJECT_ID", azure_cv.project_id)
    monkeypatch.setenv("TOOLKIT_AZURE_CV_ITERATION", azure_cv.iteration)
    return azure_cv


@pytest.fixture
def gcp_env(gcp_vi, monkeypatch) -> FakeVideoIntelligence:
    """TOOLKIT_GCP_VI_ENDPOINT pointing at the fake, with fast status checks."""
    monkeypatch.setenv("TOOLKIT_GCP_VI_ENDPOINT", gcp_vi.endpoint)
    monkeypatch.setenv("TOOLKIT_GCP_POLL_INTERVAL", "0.05")
    return gcp_vi


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    root = Path(os.environ.get("TOOLKIT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"
                               / "fashion-products")) / "images"
    paths = sorted(root.glob("*.jpg"))
    if not paths:
        pytest.fail(f"no photos under {root}; set TOOLKIT_SHARED_DATA")
    return paths


def image_media(path: Path, uri: str | None = None) -> Media:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        frame = Frame(img.convert("RGB"))
    return Media(MediaRef(uri or path.resolve().as_uri(), path.name, len(data)), data, "image",
                 hashlib.sha256(data).hexdigest(), "image/jpeg", frames=[frame])


def embedded_media(offline, images: list, kind: str = "image", stamps: list | None = None,
                   key: str | None = None) -> Media:
    """Media of PIL images with the embeddings and features the pipeline would have filled in
    (`offline`: the shipped model, tests/model_fixtures.py)."""
    buf = io.BytesIO()
    images[0].save(buf, format="JPEG")
    data = buf.getvalue()
    frames = [Frame(im, t) for im, t in zip(images, stamps or [None] * len(images))]
    embeddings, features = offline.embed_images_with_features(images)
    key = key or kind
    return Media(ref=MediaRef(uri=f"file:///x/{key}", key=key), data=data, kind=kind,
                 sha256=hashlib.sha256(data).hexdigest(), mime="image/jpeg", frames=frames,
                 embeddings=embeddings, features=features)


@pytest.fixture(scope="session")
def videos() -> list[bytes]:
    """Small distinct MP4s: three one-second solid-colour scenes each (red, black, then a blue
    that differs enough per video to change the encoded bytes)."""
    from tests.helpers import write_mp4

    out = [write_mp4(colours=((200, 30, 30), (20, 20, 20), (40, 60 + 12 * i, 200)), seconds_each=1.0, fps=5,
                     size=32) for i in range(10)]
    assert len(set(out)) == len(out)
    return out


def video_media(data: bytes, key: str, uri: str | None = None, duration: float | None = None,
                frame_times: tuple[float, ...] = ()) -> Media:
    frames = [Frame(Image.new("RGB", (8, 8)), t) for t in frame_times]
    return Media(MediaRef(uri or f"s3://videos/{key}", key, len(data)), data, "video",
                 hashlib.sha256(data).hexdigest(), "video/mp4", frames=frames, duration=duration)
