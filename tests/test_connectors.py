"""What is particular to each connector; what every connector does is in
tests/contracts/test_connector_contract.py."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.local import LocalConnector
from connectors.s3 import RETRIES, S3Connector
from tests.helpers import free_port
from toolkit.ground.errors import ConfigError, MediaError, SourceError
from toolkit.ground.models import MediaRef


def test_local_skips_hidden_files_and_folders(tmp_path):
    root = tmp_path / "media"
    (root / ".hidden").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"A")
    (root / "shoes").mkdir()
    (root / "shoes" / "b.jpg").write_bytes(b"BB")
    (root / ".hidden" / "d.jpg").write_bytes(b"D")
    (root / ".DS_Store").write_bytes(b"x")
    refs = list(LocalConnector().list(str(root)))
    assert [r.key for r in refs] == ["a.jpg", "shoes/b.jpg"]
    assert refs[1].fingerprint.startswith("2:")  # size:mtime


def test_s3_listing_follows_pages(s3, s3_server):
    s3.create_bucket(Bucket="many")
    for i in range(1105):
        s3.put_object(Bucket="many", Key=f"p/{i:05d}.jpg", Body=b"x")
    s3.put_object(Bucket="many", Key="other/skip.jpg", Body=b"x")
    keys = [r.key for r in S3Connector(endpoint_url=s3_server).list("s3://many/p/")]
    assert len(keys) == 1105 and keys[0] == "00000.jpg" and keys[-1] == "01104.jpg"


def test_s3_uri_without_a_bucket_says_how_to_write_it(s3_server):
    with pytest.raises(SourceError, match="write it as s3://bucket/prefix"):
        list(S3Connector(endpoint_url=s3_server).list("s3:///nobucket"))


def test_s3_keys_that_need_escaping_read_back_and_a_missing_key_names_it(s3, s3_server):
    s3.create_bucket(Bucket="escaped")
    keys = ["plain.jpg", "with space/and+plus.jpg", "ünïcode/%25 ~tilde.jpg", "a=b&c.jpg"]
    for i, key in enumerate(keys):
        s3.put_object(Bucket="escaped", Key=key, Body=bytes([i]) * (1000 + i))
    conn = S3Connector(endpoint_url=s3_server)
    refs = list(conn.list("s3://escaped/"))
    assert sorted(r.key for r in refs) == sorted(keys)
    assert {r.key: conn.read(r) for r in refs} == {k: bytes([i]) * (1000 + i) for i, k in enumerate(keys)}
    with pytest.raises(MediaError, match="s3://escaped/missing.jpg: cannot download .*NoSuchKey"):
        conn.read(MediaRef(uri="s3://escaped/missing.jpg", key="missing.jpg"))


def sent_to(conn: S3Connector) -> str:
    """The URL the connector's GetObject goes to, caught before it is sent."""
    seen = []

    def catch(request, **kwargs):
        seen.append(request.url)
        raise RuntimeError("not sent")

    conn.client.meta.events.register("before-send.s3.GetObject", catch)
    with pytest.raises(MediaError):
        conn.read(MediaRef(uri="s3://shop-media/k.jpg", key="k.jpg"))
    return seen[0]


def test_s3_uses_boto3s_adaptive_retries_and_the_addressing_asked_for(s3_server):
    conn = S3Connector(endpoint_url=s3_server)
    assert conn.client.meta.config.retries == RETRIES == {"total_max_attempts": 6, "mode": "adaptive"}
    # An endpoint override (moto, MinIO) is addressed path style; AWS virtual-host style unless told.
    assert sent_to(conn) == f"{s3_server}/shop-media/k.jpg"
    assert sent_to(S3Connector(region="eu-west-1")) == "https://shop-media.s3.eu-west-1.amazonaws.com/k.jpg"
    assert sent_to(S3Connector(region="eu-west-1", addressing_style="path")) == (
        "https://s3.eu-west-1.amazonaws.com/shop-media/k.jpg")
    assert sent_to(S3Connector(endpoint_url="http://minio.local:9000", addressing_style="virtual")) == (
        "http://shop-media.minio.local:9000/k.jpg")


def test_the_addressing_setting_reaches_the_s3_connector():
    from toolkit import registry
    from toolkit.ground.settings import Settings

    conn = registry.connector_for("s3://shop-media/", Settings(s3_region="eu-west-1", s3_addressing_style="path"))
    assert sent_to(conn) == "https://s3.eu-west-1.amazonaws.com/shop-media/k.jpg"


class _SlowDown(BaseHTTPRequestHandler):
    """An S3 that always asks the client to slow down."""

    calls = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).calls += 1
        body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                b"<Message>Please reduce your request rate.</Message></Error>")
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_s3_throttling_is_retried_by_boto3_then_named_in_one_line():
    _SlowDown.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _SlowDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = S3Connector(endpoint_url=f"http://127.0.0.1:{server.server_port}", region="us-east-1",
                           retries={"total_max_attempts": 3, "mode": "standard"})
        with pytest.raises(MediaError) as info:
            conn.read(MediaRef(uri="s3://busy/a.jpg", key="a.jpg"))
    finally:
        server.shutdown()
        server.server_close()
    assert str(info.value) == ("s3://busy/a.jpg: cannot download (SlowDown: S3 kept throttling after 3 tries; "
                               "run again later, or tag fewer items at once)")
    assert _SlowDown.calls == 3  # boto3's own retries, no loop of ours


def test_s3_without_credentials_says_how_to_set_them(s3_server, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    conn = S3Connector(endpoint_url=s3_server, region="us-east-1")
    with pytest.raises(ConfigError, match="no AWS credentials found; set AWS_ACCESS_KEY_ID") as info:
        conn.check("s3://any/")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no AWS credentials found"):
        conn.read(MediaRef(uri="s3://any/a.jpg", key="a.jpg"))


def test_unreachable_endpoint_names_the_setting(monkeypatch):
    from toolkit import registry
    from toolkit.ground.settings import Settings

    # Credentials set (as for any S3-compatible server), so the endpoint is what fails.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    conn = registry.connector_for("s3://b/p", Settings(s3_endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(SourceError, match="TOOLKIT_S3_ENDPOINT_URL"):
        list(conn.list("s3://b/p"))


def test_unknown_scheme_is_refused(settings):
    from toolkit import registry

    with pytest.raises(SourceError, match="no connector for 'ftp://'"):
        registry.connector_for("ftp://host/x", settings)
