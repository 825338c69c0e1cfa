"""What a new user meets in the first hour (issue 22): messages that name the store and the fix,
results that say which query they answer, and hits that name the file that matched."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import REPO
from tests.test_cli import run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's steps in a fresh data directory: catalog import first, then tag."""
    root = tmp_path_factory.mktemp("first-hour")
    shutil.copytree(REPO / "examples" / "catalog", root / "catalog")
    env = {"TOOLKIT_DATA_DIR": str(root / "data")}
    imported = run("catalog", "import", str(REPO / "examples" / "products.csv"), env=env)
    tagged = run("tag", str(root / "catalog"), "--json", env=env)
    assert tagged.returncode == 0, tagged.stderr
    return root, env, imported


def test_a_search_where_nothing_is_tagged_names_the_store_and_creates_none(tmp_path, monkeypatch):
    monkeypatch.delenv("TOOLKIT_DATA_DIR", raising=False)  # the default: .toolkit under the current folder
    result = run("search", "red summer dress", cwd=tmp_path)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.count("\n") == 0 and "Traceback" not in line
    assert f"nothing tagged in collection 'catalog' of the embedded chroma at {tmp_path.resolve()}/.toolkit/chroma" \
        in line and "toolkit tag SOURCE" in line and "TOOLKIT_DATA_DIR" in line
    assert not (tmp_path / ".toolkit").exists()


def test_catalog_import_before_tagging_says_media_link_as_they_are_tagged(demo):
    _, _, imported = demo
    assert imported.returncode == 0, imported.stderr
    assert "0 media linked" not in imported.stderr
    assert "no media tagged yet: each product's photos are linked as `toolkit tag` stores them" in imported.stderr


def test_each_result_list_says_which_query_it_answers(demo):
    root, env, _ = demo
    photo = root / "catalog" / "images" / "10005.jpg"
    by_photo = run("search", "--image", str(photo), "-k", "3", env=env)
    by_text = run("search", "black leather sandals for men", "-k", "3", "--where", "gender=Men", env=env)
    assert by_photo.returncode == 0 and by_text.returncode == 0, by_photo.stderr + by_text.stderr
    assert by_photo.stdout.splitlines()[0] == f"products like photo {photo}: 3 found"
    assert by_text.stdout.splitlines()[0] == 'products like "black leather sandals for men", where gender=Men: 3 found'


def test_hits_carry_the_media_key_relative_to_the_source_never_a_server_path(demo):
    root, env, _ = demo
    hits = json.loads(run("search", "--image", str(root / "catalog" / "images" / "10005.jpg"), "-k", "3",
                          "--json", env=env).stdout)
    assert hits[0]["media_key"] == "images/10005.jpg"
    assert all(h["media_key"].startswith("images/") and not h["media_key"].startswith("/") for h in hits)


def test_the_catalogs_colour_shows_beside_the_models_and_a_filter_matches_either(demo):
    _, env, _ = demo
    everything = json.loads(run("search", "a product photo", "-k", "50", "--json", env=env).stdout)
    assert len(everything) == 50
    top = next(h for h in everything if h["product_id"] == "SKU-10005")  # "... Blue T-Shirts"
    assert top["catalog_tags"] == {"article_type": "Tshirts", "colour": "Blue", "gender": "Men"}
    for colour in ("White", "Black", "Blue"):
        says = {h["product_id"] for h in everything
                if colour.lower() in (h["tags"].get("colour", "").lower(), h["catalog_tags"]["colour"].lower())}
        found = json.loads(run("search", "a product photo", "-k", "50", "--where", f"colour={colour}", "--json",
                               env=env).stdout)
        assert {h["product_id"] for h in found} == says
    differ = [h for h in everything if h["tags"].get("colour") and h["tags"]["colour"] != h["catalog_tags"]["colour"]]
    text = run("search", "a product photo", "-k", "50", env=env).stdout
    for h in differ:
        assert f"colour={h['tags']['colour']} (catalog: {h['catalog_tags']['colour']})" in text
