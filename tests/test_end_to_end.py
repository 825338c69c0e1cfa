"""The README's main job with the shipped offline model: the same search gives the same products
through the Python API, the CLI, the embedded store and a Chroma server."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import REPO
from tests.test_cli import run
from toolkit import Toolkit
from toolkit.ground.settings import load_settings

QUERY_TEXT = "black leather sandals for men"
QUERY_IMAGE = "images/10005.jpg"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample") / "catalog"
    shutil.copytree(REPO / "examples" / "catalog", root)
    shutil.copy(REPO / "examples" / "products.csv", root.parent / "products.csv")
    return root


def cli_flow(sample, env) -> tuple[list[dict], list[dict]]:
    assert run("catalog", "import", str(sample.parent / "products.csv"), env=env).returncode == 0
    tagged = run("tag", str(sample), "--json", env=env)
    assert tagged.returncode == 0, tagged.stderr
    report = json.loads(tagged.stdout)
    assert report["new"] + report["unchanged"] == 50 and report["skipped"] == [] and report["failed"] == []
    by_image = run("search", "--image", str(sample / QUERY_IMAGE), "-k", "5", "--json", env=env)
    by_text = run("search", QUERY_TEXT, "-k", "5", "--json", env=env)
    assert by_image.returncode == 0 and by_text.returncode == 0, by_image.stderr + by_text.stderr
    return json.loads(by_image.stdout), json.loads(by_text.stdout)


def ids_scores(hits) -> list[tuple[str, float]]:
    return [(h["product_id"] if isinstance(h, dict) else h.product_id,
             round(h["score"] if isinstance(h, dict) else h.score, 3)) for h in hits]


@pytest.fixture(scope="module")
def embedded_results(sample, tmp_path_factory):
    data = tmp_path_factory.mktemp("embedded-data")
    env = {"TOOLKIT_DATA_DIR": str(data)}
    return env, cli_flow(sample, env)


def test_cli_results_carry_products_links_tags_and_media(embedded_results, sample):
    _, (by_image, by_text) = embedded_results
    top = by_image[0]
    assert top["product_id"] == "SKU-10005" and top["score"] == pytest.approx(1.0, abs=1e-3)
    assert top["url"] == "https://shop.example.com/p/10005" and top["price"] == pytest.approx(114.9)
    assert top["title"] == "Nike Men As Ss Trainin Blue T-Shirts"
    assert top["media_uri"] == (sample / QUERY_IMAGE).as_uri() and top["timestamp"] is None
    assert {"article_type", "colour", "gender"} <= set(top["tags"])
    assert len(by_text) == 5 and all(h["url"].startswith("https://shop.example.com/p/") for h in by_text)
    scores = [h["score"] for h in by_text]
    assert scores == sorted(scores, reverse=True)


def test_python_api_gives_what_the_cli_gives(embedded_results, sample):
    env, (by_image, by_text) = embedded_results
    tk = Toolkit(load_settings(data_dir=env["TOOLKIT_DATA_DIR"]))
    assert ids_scores(tk.search(image=sample / QUERY_IMAGE, k=5)) == ids_scores(by_image)
    assert ids_scores(tk.search(image=(sample / QUERY_IMAGE).read_bytes(), k=5)) == ids_scores(by_image)
    assert ids_scores(tk.search(text=QUERY_TEXT, k=5)) == ids_scores(by_text)


def test_chroma_server_gives_what_the_embedded_store_gives(embedded_results, sample, chroma_server):
    _, (by_image, by_text) = embedded_results
    env = {"TOOLKIT_CHROMA_HOST": chroma_server["host"], "TOOLKIT_CHROMA_PORT": str(chroma_server["port"]),
           "TOOLKIT_COLLECTION": "e2e-server"}
    server_image, server_text = cli_flow(sample, env)
    assert ids_scores(server_image) == ids_scores(by_image)
    assert ids_scores(server_text) == ids_scores(by_text)


def test_where_filters_on_tags_and_price(embedded_results):
    env, _ = embedded_results
    tk = Toolkit(load_settings(data_dir=env["TOOLKIT_DATA_DIR"]))
    cheap = tk.search(text="shoes", k=10, where=["price<40"])
    assert cheap and all(h.price < 40 for h in cheap)
    men = tk.search(text="shoes", k=10, where={"gender": "men"})
    # The model's gender or the catalog's: a filter matches either (issue 22).
    assert men and all("men" in (h.tags.get("gender", "").lower(), h.catalog_tags.get("gender", "").lower())
                       for h in men)
    cli = run("search", "shoes", "-k", "10", "--where", "gender=men", "--json", env=env)
    assert ids_scores(json.loads(cli.stdout)) == ids_scores(men)
