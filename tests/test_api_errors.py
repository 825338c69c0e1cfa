"""Every error the API gives is JSON `{"detail": ...}` and leaves the connection usable; a store
that cannot answer is a 503 with Retry-After. Through a real uvicorn on 127.0.0.1."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image

from tests.conftest import wait_for
from tests.helpers import ColourEmbedder, free_port
from tests.service_helpers import build_catalog, running_server
from toolkit.faces.api import create_app
from toolkit.faces.api_server import header_timeout_protocol
from toolkit.core import Toolkit
from toolkit.media.decode import DECODES, PixelBudget, decode_image
from toolkit.ground.settings import Settings


class BrokenTextEmbedder(ColourEmbedder):
    """Fails on text the way a bug would: not a toolkit error."""

    def embed_texts(self, texts):
        raise RuntimeError("a bug in the text tower")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, request):
    return build_catalog(tmp_path_factory.mktemp("api-errors"), request.getfixturevalue("shared_data"))


@pytest.fixture(scope="module")
def base_url(catalog):
    with running_server(create_app(catalog.toolkit), http=header_timeout_protocol(timeout=1.0)) as url:
        yield url


def exchange(sock: socket.socket, method: str, path: str, body: bytes = b"",
             content_type: str = "application/json") -> tuple[int, dict, dict]:
    """One request on a kept-alive socket; the status, headers and JSON body of its response."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buf += chunk
    head_raw, rest = buf.split(b"\r\n\r\n", 1)
    lines = head_raw.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    size = int(headers["content-length"])
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:size])


def connect(base_url: str) -> socket.socket:
    url = urlparse(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    return sock


def test_an_unexpected_error_is_json_and_the_connection_goes_on(catalog):
    broken = Toolkit(catalog.toolkit.settings, embedder=BrokenTextEmbedder())
    with running_server(create_app(broken)) as url, connect(url) as sock:
        status, headers, body = exchange(sock, "POST", "/api/search", json.dumps({"text": "red dress"}).encode())
        assert status == 500 and headers["content-type"] == "application/json"
        assert "RuntimeError" in body["detail"] and "retry" in body["detail"]
        assert headers.get("connection", "").lower() != "close"
        status, _, body = exchange(sock, "GET", "/api/health")      # same socket
        assert status == 200 and body["status"] == "ok"


def test_malformed_json_names_the_body_not_a_character_offset(base_url):
    with connect(base_url) as sock:
        status, _, body = exchange(sock, "POST", "/api/search", b'{"text": "red", "k": }')
        assert status == 422
        assert body["detail"].startswith("request body: not valid JSON") and "character" in body["detail"]
        assert body["errors"] == [{"field": "body", "message": body["detail"].removeprefix("request body: ")}]
        status, _, _ = exchange(sock, "GET", "/api/health")
        assert status == 200


@pytest.mark.parametrize("value", [True, False, None, 3, ["black"], {"x": 1}])
def test_a_filter_value_that_is_not_text_is_refused(base_url, value):
    r = httpx.post(f"{base_url}/api/search", json={"text": "shoes", "filters": {"colour": value}}, timeout=30)
    assert r.status_code == 422, r.text
    assert "filter 'colour' takes a text value" in r.json()["detail"]


def test_a_number_for_a_catalog_attribute_is_taken_as_its_text(base_url):
    r = httpx.post(f"{base_url}/api/search", json={"text": "shoes", "filters": {"attr.gender": 7}}, timeout=30)
    assert r.status_code == 200 and r.json()["count"] == 0


def test_an_upload_of_several_files_is_refused(base_url, catalog):
    photo = (catalog.photos / f"{catalog.rows[0]['id']}.jpg").read_bytes()
    files = [("file", (f"p{i}.jpg", photo, "image/jpeg")) for i in range(5)]
    r = httpx.post(f"{base_url}/api/search/image", files=files, timeout=30)
    assert r.status_code == 422 and r.json()["detail"] == "send one photo per request in the form field 'file' (got 5)"
    one = httpx.post(f"{base_url}/api/search/image", files=files[:1], timeout=30)
    assert one.status_code == 200 and one.json()["count"] > 0


def test_a_long_id_is_not_echoed_whole(base_url):
    r = httpx.get(f"{base_url}/api/similar/{'x' * 5000}", timeout=30)
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert len(detail) < 250 and "(5000 characters)" in detail and "search result" in detail
    m = httpx.get(f"{base_url}/media/{'y' * 5000}", timeout=30)
    assert m.status_code == 404 and len(m.json()["detail"]) < 250


def test_a_client_that_never_finishes_its_headers_is_cut_off(base_url):
    url = urlparse(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: te")      # and nothing more
        received = b""
        for _ in range(20):                                        # bounded: each recv waits up to 30 s
            chunk = sock.recv(1024)
            if not chunk:
                break
            received += chunk
        assert received == b""                                     # closed, nothing answered
    with connect(base_url) as sock:                                 # a prompt client is served, twice
        assert exchange(sock, "GET", "/api/health")[0] == 200
        assert exchange(sock, "GET", "/api/health")[0] == 200


# -- a store that cannot answer -------------------------------------------------------------------

@pytest.fixture
def own_chroma_server(tmp_path):
    """A `chroma run` this test may kill."""
    port = free_port()
    exe = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen([str(exe), "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200,
                 "chroma server")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_store_that_cannot_answer_is_a_503_with_retry_after(tmp_path, own_chroma_server, catalog):
    proc, port = own_chroma_server
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", chroma_host="127.0.0.1", chroma_port=port)
    tk = Toolkit(settings, embedder=ColourEmbedder())
    tk.tag(catalog.photos, tagger="local")
    with running_server(create_app(tk)) as url, connect(url) as sock:
        status, _, body = exchange(sock, "POST", "/api/search", json.dumps({"text": "red dress"}).encode())
        assert status == 200 and body["count"] > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in ("/api/search", "/api/health"):
            method, data = ("POST", json.dumps({"text": "red dress"}).encode()) if path == "/api/search" else ("GET", b"")
            status, headers, body = exchange(sock, method, path, data)
            assert status == 503, body
            assert headers["retry-after"].isdigit() and ("try again" in body["detail"] or "retry" in body["detail"])
        status, _, body = exchange(sock, "POST", "/api/search", b'{"text": ""}')   # the socket still works
        assert status == 422


# -- decoding --------------------------------------------------------------------------------------

def test_decodes_wait_for_room_in_the_pixel_budget():
    budget = PixelBudget(100)
    first_in, second_in, let_go = threading.Event(), threading.Event(), threading.Event()

    def hold(pixels, entered):
        with budget.hold(pixels):
            entered.set()
            let_go.wait(30)

    a = threading.Thread(target=hold, args=(60, first_in))
    a.start()
    assert first_in.wait(30)
    b = threading.Thread(target=hold, args=(60, second_in))
    b.start()
    assert not second_in.wait(0.3) and budget.used == 60   # 60 + 60 does not fit in 100
    let_go.set()
    a.join(30)
    assert second_in.wait(30)
    b.join(30)
    assert budget.used == 0
    with budget.hold(10_000):                                # larger than the budget: runs alone
        assert budget.used == 100


def test_a_huge_query_photo_is_kept_small_after_its_decode():
    buf = io.BytesIO()
    Image.new("RGB", (6000, 5000), (200, 30, 30)).save(buf, "PNG")
    img = decode_image(buf.getvalue(), name="upload", max_side=2048)
    assert max(img.size) == 2048 and img.mode == "RGB" and DECODES.used == 0
