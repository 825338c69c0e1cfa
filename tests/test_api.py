"""The HTTP API through a real uvicorn on 127.0.0.1, over a store tagged from real photos and a products CSV."""
from __future__ import annotations

import http.client
import io
import json
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service_helpers import VIDEO_PRODUCT, VIDEO_URL, build_catalog, running_server
from toolkit.faces.api import create_app
from toolkit.core import Toolkit

UPLOAD_MB = 0.05  # small, so the 413 test sends little


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, request):
    shared = request.getfixturevalue("shared_data")
    return build_catalog(tmp_path_factory.mktemp("api"), shared, max_upload_mb=UPLOAD_MB, hybrid_weight=0.3)


@pytest.fixture(scope="module")
def tk(catalog) -> Toolkit:
    return catalog.toolkit


@pytest.fixture(scope="module")
def base_url(tk):
    with running_server(create_app(tk)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def photo_bytes(catalog, index: int = 0) -> bytes:
    return (catalog.photos / f"{catalog.rows[index]['id']}.jpg").read_bytes()


def ranked(hits) -> list[tuple]:
    """What a result is, compared across CLI/Python and HTTP: products, order and scores."""
    return [(h["product_id"], h["media_id"], h["score"]) if isinstance(h, dict) else (h.product_id, h.media_id, h.score)
            for h in hits]


# -- the service -----------------------------------------------------------------------------

def test_health_reports_the_store_and_model(client, tk):
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["model"] == {"id": "test-colour-embedder-v1", "dim": 192}
    assert body["store"]["backend"] == "chroma-embedded" and body["store"]["records"] == tk.store.count()
    assert str(tk.settings.data_dir) not in json.dumps(body)  # no server paths


def test_openapi_schema_has_typed_request_and_response_models(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/search/image", "/api/similar/{item_id}", "/api/health", "/media/{media_id}"} <= set(schema["paths"])
    models = schema["components"]["schemas"]
    assert {"TextSearch", "SearchResponse", "HitOut", "Health"} <= set(models)
    assert models["TextSearch"]["properties"]["k"]["maximum"] == 200
    assert "multipart/form-data" in schema["paths"]["/api/search/image"]["post"]["requestBody"]["content"]


def test_the_page_and_its_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# -- one search function ---------------------------------------------------------------------------

def test_text_search_equals_toolkit_search(client, tk):
    body = {"text": "black shoes", "k": 7, "filters": {"attr.gender": "Men"}, "price_min": 15, "price_max": 80}
    api = client.post("/api/search", json=body).json()
    direct = tk.search(text="black shoes", k=7, where={"attr.gender": "Men", "price>=": 15, "price<=": 80})
    assert api["count"] == len(api["hits"]) == len(direct) > 0
    assert ranked(api["hits"]) == ranked(direct)


def test_image_search_equals_toolkit_search_and_finds_the_photo_itself(client, tk, catalog):
    data = photo_bytes(catalog, 3)
    api = client.post("/api/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "5"}).json()
    assert ranked(api["hits"]) == ranked(tk.search(image=data, k=5))
    top = api["hits"][0]
    assert top["product_id"] == f"P{catalog.rows[3]['id']}" and top["score"] == pytest.approx(1.0, abs=1e-3)
    assert top["url"] == f"https://shop.example.com/p/{catalog.rows[3]['id']}"


def test_hits_carry_product_fields_and_a_served_picture_never_a_path(client, catalog):
    hit = client.post("/api/search", json={"text": "shirt", "k": 3}).json()["hits"][0]
    assert set(hit) >= {"product_id", "title", "price", "currency", "url", "score", "tags", "image_url"}
    assert hit["image_url"] == f"/media/{hit['media_id']}"
    assert str(catalog.photos) not in json.dumps(hit) and "file://" not in json.dumps(hit)


# -- ranking and filters ---------------------------------------------------------------------------

def test_a_brand_word_brings_that_brand_first(client, catalog):
    pumas = sum(1 for r in catalog.rows if r["productDisplayName"].startswith("Puma "))
    hits = client.post("/api/search", json={"text": "Puma", "k": pumas + 4}).json()["hits"]
    titles = [h["title"] for h in hits]
    assert all(t.startswith("Puma ") for t in titles[:pumas]), titles
    assert not any(t.startswith("Puma ") for t in titles[pumas:]), titles
    # "Puma black": the black Pumas have both words, so they lead.
    both = client.post("/api/search", json={"text": "Puma black", "k": 2}).json()["hits"]
    assert all(h["title"].startswith("Puma ") and h["attributes"]["baseColour"] == "Black" for h in both)


def test_without_the_keyword_weight_the_brand_is_not_first(catalog, tk):
    """The hybrid test above is meaningful: by vectors alone the Pumas are not on top."""
    pumas = sum(1 for r in catalog.rows if r["productDisplayName"].startswith("Puma "))
    vectors_only = Toolkit(tk.settings.model_copy(update={"hybrid_weight": 0.0}), embedder=tk.embedder)
    titles = [h.title for h in vectors_only.search(text="Puma", k=pumas)]
    assert not all(t.startswith("Puma ") for t in titles)


def test_filters_on_tags_attributes_and_price(client, tk):
    facets = client.get("/api/facets").json()
    group, labels = next((g, ls) for g, ls in facets["tags"].items() if ls)
    label = next(iter(labels))
    hits = client.post("/api/search", json={"text": "shirt", "k": 50, "filters": {group: label}}).json()["hits"]
    assert hits and all(h["tags"].get(group, "").lower() == label.lower() or _has_token(tk, h, group, label)
                        for h in hits)
    body = {"text": "shirt", "k": 50, "filters": {"attr.baseColour": "Black"}, "price_min": 20, "price_max": 60}
    hits = client.post("/api/search", json=body).json()["hits"]
    assert hits and all(h["attributes"]["baseColour"] == "Black" and 20 <= h["price"] <= 60 for h in hits)


def _has_token(tk, hit, group, label) -> bool:
    records = tk.store.get(where={"media_id": hit["media_id"]})
    return any(f"{group}:{label}".lower() in r.metadata.get("tags", []) for r in records)


def test_min_score_returns_fewer_than_k(client):
    everything = client.post("/api/search", json={"text": "shirt", "k": 20}).json()["hits"]
    cut = everything[5]["score"]
    some = client.post("/api/search", json={"text": "shirt", "k": 20, "min_score": cut}).json()
    assert 0 < some["count"] < 20 and all(h["score"] >= cut for h in some["hits"])


def test_more_like_this_by_product_id_and_media_id(client, tk, catalog):
    pid = f"P{catalog.rows[0]['id']}"
    by_product = client.get(f"/api/similar/{pid}", params={"k": 5}).json()
    assert by_product["count"] == 5 and pid not in {h["product_id"] for h in by_product["hits"]}
    assert ranked(by_product["hits"]) == ranked(tk.more_like_this(pid, k=5))
    media_id = by_product["hits"][0]["media_id"]
    by_media = client.get(f"/api/similar/{media_id}", params={"k": 3, "where": "attr.gender=Men"}).json()
    assert by_media["hits"] and media_id not in {h["media_id"] for h in by_media["hits"]}
    assert all(h["attributes"]["gender"] == "Men" for h in by_media["hits"])


# -- pictures ------------------------------------------------------------------------------------

def test_media_serves_the_stored_picture(client, catalog):
    hit = client.post("/api/search/image", files={"file": ("q.jpg", photo_bytes(catalog, 1), "image/jpeg")},
                      data={"k": "1"}).json()["hits"][0]
    picture = client.get(hit["image_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert picture.content == photo_bytes(catalog, 1)


def test_a_video_hit_shows_the_moment_it_matched(client):
    green = Image.new("RGB", (64, 64), (30, 200, 30))  # the lookbook's second scene, from 2 s
    buf = io.BytesIO()
    green.save(buf, format="PNG")
    hits = client.post("/api/search/image", files={"file": ("g.png", buf.getvalue(), "image/png")},
                       data={"k": "3", "filters": json.dumps({"kind": "video"})}).json()["hits"]
    video = hits[0]
    assert video["product_id"] == VIDEO_PRODUCT and video["url"] == VIDEO_URL and video["kind"] == "video"
    assert 1.5 <= video["timestamp"] <= 4.0 and video["image_url"].endswith(f"?t={video['timestamp']:g}")
    frame = client.get(video["image_url"])
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    pixel = np.asarray(Image.open(io.BytesIO(frame.content)).convert("RGB"))[32, 32]
    assert pixel[1] > 150 and pixel[0] < 90  # the green scene, not the red first frame


def test_s3_media_redirect_to_a_presigned_url(s3, tmp_path, shared_data):
    s3.create_bucket(Bucket="shop")
    image_id = "10000"
    data = (shared_data / "images" / f"{image_id}.jpg").read_bytes()
    s3.put_object(Bucket="shop", Key=f"photos/{image_id}.jpg", Body=data)
    endpoint = s3.meta.endpoint_url
    tk = Toolkit(_settings(tmp_path, s3_endpoint_url=endpoint), embedder=_embedder())
    tk.tag("s3://shop/photos", tagger="local")
    with running_server(create_app(tk)) as url, httpx.Client(base_url=url) as c:
        hit = c.post("/api/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "1"}).json()["hits"][0]
        redirect = c.get(hit["image_url"])
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert location.startswith(f"{endpoint}/shop/photos/{image_id}.jpg?") and "Signature" in location
    assert httpx.get(location).content == data


def _settings(tmp_path, **kw):
    from toolkit.ground.settings import Settings

    return Settings(_env_file=None, data_dir=tmp_path / "s3data", chroma_host=None, chroma_port=None, **kw)


def _embedder():
    from tests.helpers import ColourEmbedder

    return ColourEmbedder()


# -- bad requests: 4xx with a message --------------------------------------------------------------

@pytest.mark.parametrize("body,status,message", [
    ({"text": "shoes", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"text": "shoes", "k": 201}, 422, "k: Input should be less than or equal to 200"),
    ({"text": "shoes", "filters": {"brand": "Puma"}}, 422, "unknown filter field 'brand'"),
    ({"text": "shoes", "filters": {"attr.colour": "x"}}, 422, "unknown filter field 'attr.colour'"),
    ({"text": "shoes", "filters": {"colour": ""}}, 422, "has an empty value"),
    ({"text": "shoes", "price_min": "cheap"}, 422, "price_min"),
    ({"text": "shoes", "price_min": 50, "price_max": 10}, 422, "price_min (50) is above price_max (10)"),
    ({"text": "   "}, 422, "text"),
    ({"k": 5}, 422, "text: Field required"),
    ({"text": "shoes", "colour": "black"}, 422, "colour: Extra inputs are not permitted"),
])
def test_bad_text_searches_get_422_with_a_message(client, body, status, message):
    response = client.post("/api/search", json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_an_upload_over_the_size_limit_gets_413(client):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert len(buf.getvalue()) > UPLOAD_MB * 1024 * 1024
    response = client.post("/api/search/image", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert response.status_code == 413 and "TOOLKIT_MAX_UPLOAD_MB" in response.json()["detail"]


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(client):
    big = b"\xff\xd8\xff" + b"0" * (2 * 1024 * 1024)
    response = client.post("/api/search/image", files={"file": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and "TOOLKIT_MAX_UPLOAD_MB" in response.json()["detail"]


@pytest.mark.parametrize("name,data", [
    ("notes.jpg", b"these are my notes, not a photo\n"),
    ("empty.jpg", b""),
    ("clip.mp4", None),  # a video is not an image either
    ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 200),  # JPEG signature, no picture
])
def test_a_file_that_is_not_an_image_gets_415(client, name, data):
    if data is None:
        from tests.helpers import write_mp4

        data = write_mp4()
    response = client.post("/api/search/image", files={"file": (name, data, "image/jpeg")})
    assert response.status_code == 415, response.text
    assert "image" in response.json()["detail"]


def test_bad_image_search_fields_get_422(client, catalog):
    files = {"file": ("q.jpg", photo_bytes(catalog), "image/jpeg")}
    for data, message in [({"k": "500"}, "k: Input should be less than or equal to 200"),
                          ({"k": "many"}, "k"),
                          ({"filters": "colour=black"}, "filters must be a JSON object"),
                          ({"filters": json.dumps({"material": "silk"})}, "unknown filter field 'material'")]:
        response = client.post("/api/search/image", files=files, data=data)
        assert response.status_code == 422 and message in response.json()["detail"], (data, response.text)


def test_unknown_ids_get_404(client):
    for path in ("/api/similar/NO-SUCH-PRODUCT", "/media/0123456789abcdef0123", "/media/not-a-media-id"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["detail"], path
    assert client.get("/api/similar/x", params={"k": 0}).status_code == 422


# -- nothing outside the catalog ------------------------------------------------------------

TRAVERSALS = [
    "/media/../../etc/passwd",
    "/media/..%2F..%2F..%2Fetc%2Fpasswd",
    "/media/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/media/%252e%252e%252fetc%252fpasswd",
    "/media/%2Fetc%2Fpasswd",
    "/media/file:%2F%2F%2Fetc%2Fpasswd",
    "/media/....//....//etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/%2e%2e/api.py",
    "/static/..%5c..%5capi.py",
    "/api/similar/..%2F..%2Fetc%2Fpasswd",
    "/media/..;/..;/etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_from_the_client_never_read_files(base_url, path):
    """Sent byte for byte (no client-side normalisation) to the real server."""
    parsed = urlparse(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status in (404, 422), (path, response.status, body[:200])
    assert b"root:" not in body and b"import" not in body


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(client, catalog):
    """No Content-Length (chunked): the server counts bytes as they arrive and stops at the limit."""
    request = client.build_request("POST", "/api/search/image",
                                   files={"file": ("big.jpg", b"\xff\xd8\xff" + b"0" * (1024 * 1024), "image/jpeg")})
    body = request.read()

    def chunks():
        for start in range(0, len(body), 16 * 1024):
            yield body[start:start + 16 * 1024]

    response = client.post("/api/search/image", content=chunks(),
                           headers={"content-type": request.headers["content-type"]})
    assert response.status_code == 413 and "TOOLKIT_MAX_UPLOAD_MB" in response.json()["detail"]
    small = client.post("/api/search", content=iter([json.dumps({"text": "x" * 200_000}).encode()]),
                        headers={"content-type": "application/json"})
    assert small.status_code == 413


# -- toolkit serve -----------------------------------------------------------------------------

def test_serve_listens_on_settings_defaults_unless_flags_say_otherwise(monkeypatch, settings):
    import uvicorn
    from typer.testing import CliRunner

    import toolkit.faces.commands.serve as serve_cmd
    from toolkit.faces.cli import app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((host, port)))
    monkeypatch.setattr(serve_cmd, "Toolkit", lambda: Toolkit(settings.model_copy(update={"serve_port": 8123}),
                                                               embedder=_embedder()))
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9001"]).exit_code == 0
    assert calls == [("127.0.0.1", 8123), ("0.0.0.0", 9001)]
