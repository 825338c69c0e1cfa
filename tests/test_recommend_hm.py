"""End to end on a slice of the real H&M purchases (../shared/data/hm): the same answers through
Python, the CLI and the HTTP API."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO
from tests.service_helpers import running_server

HM = Path(os.environ.get("TOOLKIT_HM_DATA", REPO.parent / "shared" / "data" / "hm"))
SINCE = "2020-07-01"  # the last 12 weeks: about 4,000 purchases


@pytest.fixture(scope="module")
def hm(tmp_path_factory):
    if not (HM / "transactions.csv").is_file():
        pytest.fail(f"H&M data not found at {HM}; set TOOLKIT_HM_DATA")
    folder = tmp_path_factory.mktemp("hm")
    with (HM / "transactions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["t_dat"] >= SINCE]
    _write(folder / "transactions.csv", rows)
    bought = {r["article_id"] for r in rows}
    with (HM / "articles.csv").open() as f:
        _write(folder / "articles.csv", [r for r in csv.DictReader(f) if r["article_id"] in bought])
    (folder / "customers.csv").write_bytes((HM / "customers.csv").read_bytes())
    return folder


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def tk(hm, tmp_path_factory):
    from toolkit.core import Toolkit

    data = tmp_path_factory.mktemp("hm-data")
    tk = Toolkit(data_dir=data)  # the model the CLI and the server use too: models are built beside its collection
    rec = tk.recommend
    assert rec.import_items(hm / "articles.csv").bad == []
    assert rec.import_users(hm / "customers.csv").added == 1364
    report = rec.import_events(hm / "transactions.csv")
    assert report.bad == [] and report.unknown_items == 0
    assert report.added + len(report.merged) == report.rows
    rec.train()
    return tk


def toolkit_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOOLKIT_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "toolkit.faces.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def best_pair(tk):
    """A product with complements, and its best one, from the trained models."""
    models = tk.recommend.models()
    product = max(models.complements, key=lambda p: (models.complements[p][0].confidence, p))
    return product


def busy_customer(tk):
    events = tk.recommend.events.frame()
    return events.groupby("user_id").size().sort_values(ascending=False, kind="stable").index[0]


def test_python_api_answers_with_titles_and_reasons(tk):
    product = best_pair(tk)
    together = tk.recommend.together(product, k=5)
    assert together.picks and together.picks[0].title and "confidence" in together.picks[0].reason
    code = tk.recommend.events.items([product])[product].attributes["product_code"]
    assert all(p.attributes.get("product_code") != code for p in together.picks)  # no other colours
    user = busy_customer(tk)
    picks = tk.recommend.for_user(user, k=12)
    assert len(picks.picks) == 12 and picks.note is None
    assert picks.picks[0].reason.startswith("buy it again: you bought it on 2020-")
    ladies = tk.recommend.trending(k=5, facet={"index_group_name": "Ladieswear"})
    assert len(ladies.picks) == 5 and all(p.attributes["index_group_name"] == "Ladieswear" for p in ladies.picks)


def test_cli_imports_idempotently_and_prints_rules_picks_and_the_evaluation(tk, hm):
    data = tk.settings.data_dir
    user = busy_customer(tk)
    expected = [p.product_id for p in tk.recommend.for_user(user, k=3).picks]
    tk.recommend.events.close()  # the CLI runs in another process: DuckDB lets one process open the file
    tk.recommend._store = None
    again = toolkit_cli(data, "events", "import", str(hm / "transactions.csv"), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["added"] == 0 and report["already_stored"] + len(report["merged"]) == report["rows"]
    rules = toolkit_cli(data, "recommend", "rules", "--min-support", "0.002", "--min-confidence", "0.3", "--csv")
    assert rules.returncode == 0, rules.stderr
    lines = rules.stdout.splitlines()
    assert lines[0] == "antecedents,consequents,support,confidence,lift" and len(lines) > 1
    assert all(float(line.split(",")[3]) >= 0.3 for line in lines[1:])
    picks = toolkit_cli(data, "recommend", "user", user, "-k", "3", "--json")
    assert picks.returncode == 0, picks.stderr
    assert [p["product_id"] for p in json.loads(picks.stdout)["picks"]] == expected
    unknown = toolkit_cli(data, "recommend", "together", "0000000000")
    assert unknown.returncode == 1 and "error: product '0000000000' is in neither" in unknown.stderr
    evaluation = toolkit_cli(data, "recommend", "eval", "--weeks", "2", "--json", "--out", str(data / "rec-eval"))
    assert evaluation.returncode == 0, evaluation.stderr
    result = json.loads(evaluation.stdout)
    assert json.loads((data / "rec-eval" / "eval.json").read_text()) == result
    assert "repurchase, then popularity (baseline)" in (data / "rec-eval" / "eval.html").read_text()
    assert len(result["weeks"]) == 2
    methods = {(s["group"], s["method"]) for s in result["scores"]}
    assert {("known users", "repurchase, then popularity"), ("known users", "popularity, last 7 days"),
            ("known users", "blend (all signals)"), ("baskets", "bought together, then popularity")} <= methods
    blend = next(s for s in result["scores"] if s["method"] == "blend (all signals)")
    assert 0 <= blend["map"]["low"] <= blend["map"]["mean"] <= blend["map"]["high"] <= 1
    assert blend["margin"] is not None


def test_http_api_answers_the_same_and_404s_unknown_products(tk):
    from toolkit.faces.api import create_app

    tk.recommend._store = None  # reopened after the CLI test closed it
    product, user = best_pair(tk), busy_customer(tk)
    with running_server(create_app(tk)) as url, httpx.Client(base_url=url, timeout=60) as c:
        together = c.get(f"/api/recommend/together/{product}", params={"k": 3})
        assert together.status_code == 200
        assert [p["product_id"] for p in together.json()["picks"]] == \
            [p.product_id for p in tk.recommend.together(product, k=3).picks]
        picks = c.get(f"/api/recommend/user/{user}").json()
        assert picks["count"] == 12 and picks["picks"][0]["reason"].startswith("buy it again")
        new = c.get("/api/recommend/user/someone-new").json()
        assert new["count"] == 12 and new["note"].startswith("no events for user 'someone-new'")
        missing = c.get("/api/recommend/together/0000000000")
        assert missing.status_code == 404 and "neither the events nor the items" in missing.json()["detail"]
        trending = c.get("/api/recommend/trending", params={"facet": "index_group_name=Menswear", "k": 4}).json()
        assert trending["count"] == 4 and trending["picks"][0]["reason"] == "trending in Menswear"
        assert c.get("/api/recommend/trending", params={"facet": "oops"}).status_code == 422
        posted = c.post("/api/events", json={"events": [{"user_id": "someone-new", "item_id": product,
                                                          "ts": "2020-09-23T10:00:00Z"}]})
        assert posted.status_code == 200 and posted.json()["added"] == 1
        now = c.get("/api/recommend/user/someone-new", params={"k": 3}).json()
        assert now["note"] is None and now["picks"][0]["product_id"] == product  # at once, no retraining
        bad = c.post("/api/events", json={"events": [{"user_id": "x", "item_id": "y", "quantity": -1}]})
        assert bad.status_code == 422
        schema = c.get("/openapi.json").json()["paths"]
        assert {"/api/recommend/together/{product_id}", "/api/recommend/user/{user_id}", "/api/recommend/trending",
                "/api/events"} <= set(schema)
