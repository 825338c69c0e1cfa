"""Fixtures: real local servers (moto S3, Chroma), the shared photos, isolated settings."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, ColourEmbedder, free_port

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOOLKIT_DEBUG", "")

try:  # the cloud engineer's fake Azure/Google servers, when present
    from tests.fakes.fixtures import *  # noqa: F401,F403
except ImportError:
    pass


def wait_for(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("TOOLKIT_SHARED_DATA", REPO.parent / "shared" / "data" / "fashion-products"))
    if not (path / "styles.csv").is_file():
        pytest.fail(f"shared photos not found at {path}; set TOOLKIT_SHARED_DATA")
    return path


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test sees the developer's .env or TOOLKIT_* variables, and each gets its own store."""
    for key in list(os.environ):
        if key.startswith("TOOLKIT_") and key not in ("TOOLKIT_SHARED_DATA", "TOOLKIT_DEBUG"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def settings(tmp_path):
    from toolkit.ground.settings import load_settings

    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def colour_embedder():
    return ColourEmbedder()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1, for the real boto3 client."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A boto3 client on the local server, and S3 settings pointing at it."""
    import boto3

    monkeypatch.setenv("TOOLKIT_S3_ENDPOINT_URL", s3_server)
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on 127.0.0.1 over its own folder."""
    path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    proc = subprocess.Popen([exe, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    import httpx

    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200,
                 "chroma server")
        yield {"host": "127.0.0.1", "port": port, "path": path}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it has ignored a first SIGTERM before
            proc.kill()
            proc.wait()
