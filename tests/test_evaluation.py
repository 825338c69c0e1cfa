"""`toolkit eval`: the metric maths on hand-computed cases, the mechanics on real photos with the
fast test embedder, and the CLI gate with the shipped model."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ColourEmbedder, copy_photos, read_styles, write_products_csv
from toolkit.ground.errors import ConfigError
from toolkit.evaluation import evaluate, failed_gates, narrow_gates, parse_gate
from toolkit.evaluation.gates import metric_names
from toolkit.evaluation.metrics import (attribute_query_labels, confusion, image_ceilings, margin, pca_2d, precision_at,
                                        query_ceilings, query_precision, tag_hits, tag_scores, text_metrics, text_ranks,
                                        title_scores, top_for_queries, top_neighbours)

TOOLKIT = str(Path(sys.executable).parent / "toolkit")


def unit(rows) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# ---- the maths, on cases small enough to work out by hand ----------------------------------------

def test_neighbours_and_precision_match_a_hand_worked_case():
    # a and b point right, c and d up; d is labelled like a and b, so it is c's wrong neighbour.
    emb = unit([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    top = top_neighbours(emb, 3)
    assert top.tolist() == [[1, 3, 2], [0, 3, 2], [3, 1, 0], [2, 1, 0]]
    kind = np.array(["x", "x", "y", "x"], dtype=object)
    side = np.array(["r", "r", "u", "u"], dtype=object)
    p = precision_at(top, {"kind": kind, "side": side}, ks=(1, 2))
    assert p["kind"] == {"p@1": 0.5, "p@2": 0.625}      # (1+1+0+0)/4, (1+1+0+0.5)/4
    assert p["side"] == {"p@1": 1.0, "p@2": 0.5}        # every nearest is same side; second never
    assert p["all"] == {"p@1": 0.5, "p@2": 0.25}        # both labels: a->b, b->a only
    per_query = query_precision(top, {"kind": kind, "side": side}, ks=(1, 2))
    assert per_query["kind"]["p@2"].tolist() == [1.0, 1.0, 0.0, 0.5]
    # kind, per query: p@1 1, 1, 0, 0 (sd 0.577) and p@2 1, 1, 0, 0.5 (sd 0.479); 1.96 sd / sqrt(4)
    assert [margin(per_query["kind"][k]) for k in ("p@1", "p@2")] == [0.5658, 0.4691]
    assert margin(per_query["side"]["p@1"]) == 0.0       # every query right: nothing to vary


def test_a_95_percent_margin_holds_the_true_rate_95_times_in_100():
    assert margin([0, 1, 0, 1]) == 0.5658 and margin([1]) == 0.0 and margin([]) == 0.0
    rng = np.random.default_rng(0)
    held = 0
    for _ in range(2000):
        right = rng.random(400) < 0.7  # 400 photos, each tagged right with probability 0.7
        held += abs(right.mean() - 0.7) <= margin(right)
    assert 0.93 <= held / 2000 <= 0.97


def test_a_query_without_a_label_is_left_out_and_a_result_without_one_is_wrong():
    top = np.array([[1], [0], [0]])
    labels = {"kind": np.array(["x", "", "x"], dtype=object)}
    # query 0 -> 1 (unlabelled result: wrong), query 1 skipped, query 2 -> 0 (right)
    assert precision_at(top, labels, ks=(1,))["kind"] == {"p@1": 0.5}


def labels_of(*rows: str) -> dict[str, np.ndarray]:
    """{"g": ..., "c": ...} from rows written "g c" ("-" for no label)."""
    cols = list(zip(*(r.split() for r in rows)))
    return {name: np.array(["" if v == "-" else v for v in col], dtype=object) for name, col in zip("gc", cols)}


def test_image_ceilings_count_the_photos_that_share_each_label():
    labels = labels_of("m black", "m black", "m red", "w red", "w -")
    c = image_ceilings(labels, ks=(1, 2))
    # g: m has 2 others, w 1 other -> p@1 all 1; p@2: (2+2+2+1+1)/2/5
    assert c["g"] == {"p@1": 1.0, "p@2": 0.8}
    # c (the unlabelled photo is no query): black 1 other each, red 1 each -> p@1 1.0, p@2 0.5
    assert c["c"] == {"p@1": 1.0, "p@2": 0.5}
    # both: (m, black) twice -> 1 other; (m, red) and (w, red) alone -> 0; (w, -) is no query
    assert c["all"] == {"p@1": 0.5, "p@2": 0.25}


def test_no_ranking_beats_the_image_ceiling_and_a_perfect_one_meets_it():
    rng = np.random.default_rng(0)
    kind = np.array(rng.choice(list("abcdefg"), 60, p=[.3, .2, .2, .1, .1, .05, .05]), dtype=object)
    side = np.array(rng.choice(list("lr"), 60), dtype=object)
    labels = {"kind": kind, "side": side}
    ceil = image_ceilings(labels)
    for _ in range(5):
        got = precision_at(top_neighbours(unit(rng.normal(size=(60, 8))), 10), labels)
        assert all(got[a][k] <= ceil[a][k] for a in ceil for k in ceil[a])
    # photos of one kind and side on one spot: every photo's nearest are its own kind first
    key = [f"{k}{s}" for k, s in zip(kind, side)]
    spots = {k: rng.normal(size=8) for k in sorted(set(key))}
    perfect = precision_at(top_neighbours(unit([spots[k] + 1e-3 * rng.normal(size=8) for k in key]), 10), labels)
    assert perfect["all"] == ceil["all"]


def test_query_ceilings_match_a_hand_worked_case():
    # gallery of 6; one query ("m", "black")
    labels = labels_of("m black", "m black", "m red", "m red", "w black", "w red")
    query = {"g": np.array(["m"], dtype=object), "c": np.array(["black"], dtype=object)}
    c = query_ceilings(labels, query, k=3)
    # alone: 4 men, 3 black -> 1.0 each; both: 2 photos -> 2/3;
    # one top 3 for both: the two (m, black) photos (2 labels each) and one with one label -> 5 / (3 x 2)
    assert c == {"g": 1.0, "c": 1.0, "all": 0.6667, "mean": 0.8333}


def test_no_ranking_beats_the_query_ceiling_and_best_match_ordering_meets_it():
    rng = np.random.default_rng(1)
    g = np.array(rng.choice(["m", "w", "u"], 80, p=[.5, .4, .1]), dtype=object)
    c = np.array(rng.choice(["black", "red", "navy", "teal"], 80, p=[.4, .3, .2, .1]), dtype=object)
    labels = {"g": g, "c": c}
    combos = sorted({(a, b) for a, b in zip(g, c)})
    query = {"g": np.array([a for a, _ in combos], dtype=object), "c": np.array([b for _, b in combos], dtype=object)}
    ceil = query_ceilings(labels, query, k=10)
    for _ in range(5):
        top = top_for_queries(unit(rng.normal(size=(len(combos), 6))), unit(rng.normal(size=(80, 6))), 10)
        got = precision_at(top, labels, ks=(10,), query_labels=query)
        assert all(got[a]["p@10"] <= ceil[a] for a in ("g", "c", "all"))
        assert np.mean([got[a]["p@10"] for a in ("g", "c")]) <= ceil["mean"]
    # ranking each query's photos by how many of its labels they carry reaches the joint ceiling
    named = (g[None, :] == query["g"][:, None]).astype(int) + (c[None, :] == query["c"][:, None])
    top = np.argsort(-named, axis=1, kind="stable")[:, :10]
    got = precision_at(top, labels, ks=(10,), query_labels=query)
    assert np.mean([got[a]["p@10"] for a in ("g", "c")]) == pytest.approx(ceil["mean"], abs=1e-4)
    assert got["all"]["p@10"] == pytest.approx(ceil["all"], abs=1e-4)


def test_text_ranks_recall_and_mrr_match_a_hand_worked_case():
    img = np.eye(3, dtype=np.float32)
    txt = unit([[1, 0, 0], [0, 0.6, 0.8], [0.7, 0.5, 0.4]])
    ranks = text_ranks(img, txt, [0, 1, 2])
    assert ranks.tolist() == [1, 2, 3]
    assert text_metrics(ranks) == {"recall@1": 0.3333, "recall@10": 1.0, "mrr": 0.6111}
    # recall@1 per title 1, 0, 0 (sd 0.577); 1/rank 1, 1/2, 1/3 (sd 0.347); recall@10 always 1
    assert {k: margin(v) for k, v in title_scores(ranks).items()} == {"recall@1": 0.6533, "recall@10": 0.0,
                                                                     "mrr": 0.3926}


def test_text_ranks_keep_untitled_photos_in_the_gallery():
    img = np.eye(3, dtype=np.float32)
    txt = unit([[0, 0.2, 1]])  # the title of photo 1 is nearer photo 2, which has no title
    assert text_ranks(img, txt, [1]).tolist() == [2]


def test_tag_scores_separate_best_label_accuracy_from_stored_tags():
    truth = ["Shirts", "Shirts", "Jeans", "Jeans", ""]
    pred = ["Shirts", "Tshirts", "Jeans", "Shirts", "Jeans"]
    stored = ["Shirts", None, None, "Shirts", "Jeans"]  # under the threshold: no stored tag
    s = tag_scores(pred, stored, truth)
    assert s["n"] == 4                       # the unlabelled photo is not scored
    assert s["accuracy"] == 0.5
    assert s["coverage"] == 0.5              # 2 of the 4 labelled photos have a stored tag
    assert s["accuracy@threshold"] == 0.5    # of those, one is right
    assert s["most_confused"] == [{"truth": "Shirts", "predicted": "Tshirts", "n": 1},
                                  {"truth": "Jeans", "predicted": "Shirts", "n": 1}]
    per_photo = tag_hits(pred, stored, truth)  # the unlabelled photo is NaN throughout
    assert np.isnan(per_photo["accuracy"][4]) and np.isnan(per_photo["coverage"][4])
    assert per_photo["accuracy"][:4].tolist() == [1.0, 0.0, 1.0, 0.0]
    # right 1, 0, 1, 0 and stored 1, 0, 0, 1 over 4 photos; right among the 2 stored: 1, 0
    assert {k: margin(v) for k, v in per_photo.items()} == {"accuracy": 0.5658, "coverage": 0.5658,
                                                            "accuracy@threshold": 0.98}


def test_confusion_rows_sum_to_each_labels_photos():
    truth = ["A", "A", "A", "B", "B", "C"]
    pred = ["A", "B", "Z", "B", "A", "C"]
    c = confusion(pred, truth, top=2)
    assert c["labels"] == ["A", "B"] and c["columns"] == ["A", "B", "(other)"]
    assert c["matrix"] == [[1, 1, 1], [1, 1, 0]]


def test_attribute_queries_need_two_photos_and_every_label():
    from toolkit.evaluation.catalog import LabelledItem

    def item(g, c, a):
        return LabelledItem("1", "", Path("x.jpg"), {"gender": g, "baseColour": c, "articleType": a})

    items = [item("Men", "Black", "Shoes"), item("Men", "Black", "Shoes"), item("Men", "Red", "Shoes"),
             item("Men", "", "Belts"), item("Men", "", "Belts")]
    assert attribute_query_labels(items, ["gender", "baseColour", "articleType"]) == [("Men", "Black", "Shoes")]


def test_pca_puts_points_on_a_line_along_the_first_axis():
    t = np.array([-2.0, -1.0, 0.0, 3.0])
    pts = np.outer(t, [0.6, 0.8, 0.0]) + [1.0, 1.0, 1.0]
    xy = pca_2d(pts)
    assert np.allclose(np.abs(xy[:, 0]), np.abs(t - t.mean()))
    assert np.allclose(xy[:, 1], 0.0, atol=1e-9)


def test_gates_parse_and_report_what_fell():
    assert parse_gate("image.articleType.p@5=0.85") == ("image.articleType.p@5", 0.85)
    with pytest.raises(ConfigError, match="metric=value"):
        parse_gate("image.articleType.p@5>0.85")
    metrics = {"image.articleType.p@5": 0.71, "text.mrr": 0.5}
    assert failed_gates(metrics, [("image.articleType.p@5", 0.85), ("text.mrr", 0.4)]) == \
        ["image.articleType.p@5 = 0.71 < 0.85"]
    margins = {"image.articleType.p@5": 0.021, "text.mrr": 0.03}
    assert failed_gates(metrics, [("image.articleType.p@5", 0.85)], margins) == \
        ["image.articleType.p@5 = 0.71 < 0.85 (±0.021 at 95%)"]
    # text.mrr passes 0.48 by 0.02, less than its margin: a rerun on other photos could fail it.
    assert narrow_gates(metrics, [("text.mrr", 0.48), ("text.mrr", 0.4), ("image.articleType.p@5", 0.85)],
                        margins) == ["text.mrr = 0.5 >= 0.48 (±0.03 at 95%)"]
    with pytest.raises(ConfigError, match="names no metric: text.mmr"):
        failed_gates(metrics, [("text.mmr", 0.4)])


# ---- the mechanics, on real photos with the fast embedder ----------------------------------------

def write_styles_subset(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def photos(shared_data) -> list[dict]:
    from toolkit.training.split import is_eval

    rows = [r for r in read_styles(shared_data) if (shared_data / "images" / f"{r['id']}.jpg").is_file()]
    return [r for r in rows if is_eval(r["id"])][:40]


@pytest.fixture
def user_toolkit(settings, shared_data, photos, tmp_path):
    """A Toolkit whose own collection already holds a few photos, as a user's would."""
    from toolkit.core import Toolkit

    tk = Toolkit(settings, embedder=ColourEmbedder())
    tk.tag(copy_photos(shared_data, photos[:3], tmp_path / "mine"), tagger="local")
    return tk


def collection_names(tk) -> set[str]:
    from store.chroma import client_for

    return {c.name for c in client_for(tk.settings).list_collections()}


def test_evaluate_scores_real_photos_and_leaves_the_users_store_as_it_was(user_toolkit, shared_data, photos,
                                                                           tmp_path):
    from toolkit.faces.commands.output import to_jsonable

    before, count = collection_names(user_toolkit), user_toolkit.store.count()
    catalog = write_styles_subset(tmp_path / "styles.csv", photos)
    report = evaluate(catalog, shared_data / "images", user_toolkit)

    assert collection_names(user_toolkit) == before          # the scratch collections are gone
    assert user_toolkit.store.count() == count
    assert report.items == 40 and report.skipped == []
    assert report.attributes == ["gender", "baseColour", "articleType"]
    columns = {"article_type": "articleType", "colour": "baseColour", "gender": "gender", "usage": "usage",
               "season": "season", "master_category": "masterCategory"}
    assert set(report.metrics) == metric_names(columns)
    assert all(0.0 <= v <= 1.0 for v in report.metrics.values())
    ranked = {k for k in report.metrics if k.startswith(("image.", "query."))}
    assert set(report.ceilings) == ranked
    assert all(report.metrics[k] <= report.ceilings[k] <= 1.0 for k in ranked)
    assert set(report.margins) == set(report.metrics)
    assert all(0.0 <= m <= 0.5 for m in report.margins.values())
    assert all(report.margins[k] > 0 for k in ranked if 0 < report.metrics[k] < 1)
    assert report.attribute_queries > 0
    json.dumps(to_jsonable(report))  # JSON-able as it stands


def test_a_products_csv_scores_the_same_as_styles_csv(settings, shared_data, photos, tmp_path):
    from toolkit.core import Toolkit

    tk = Toolkit(settings, embedder=ColourEmbedder())
    images = shared_data / "images"
    rows = photos[:20]
    styles = evaluate(write_styles_subset(tmp_path / "styles.csv", rows), images, tk, split="all")
    products = evaluate(write_products_csv(tmp_path / "products.csv", rows), images, tk, split="all")
    image_metrics = {k: v for k, v in styles.metrics.items() if k.startswith(("image.", "text.", "query."))}
    assert image_metrics == {k: v for k, v in products.metrics.items() if k in image_metrics}
    # The products CSV above labels only three columns; only those are scored as tags.
    assert set(products.tags) == {"gender", "articleType", "baseColour"}


def test_limit_and_missing_photos(settings, shared_data, photos, tmp_path):
    from toolkit.core import Toolkit

    rows = photos[:12] + [{**photos[0], "id": "999999999"}]
    catalog = write_styles_subset(tmp_path / "styles.csv", rows)
    report = evaluate(catalog, shared_data / "images", Toolkit(settings, embedder=ColourEmbedder()),
                                                                   split="all", limit=5)
    assert report.items == 5
    assert report.skipped == [f"999999999: no photo 999999999.jpg under {shared_data / 'images'}"]


def test_html_report_holds_the_plots_and_the_pictures(settings, shared_data, photos, tmp_path):
    from toolkit.core import Toolkit
    from toolkit.evaluation.report import write_html

    catalog = write_styles_subset(tmp_path / "styles.csv", photos)
    report = evaluate(catalog, shared_data / "images", Toolkit(settings, embedder=ColourEmbedder()))
    page = write_html(report, tmp_path / "out" / "eval.html").read_text(encoding="utf-8")
    for plot in ("<svg class=bars", "<svg class=confusion", "<svg class=map"):
        assert plot in page
    assert page.count("<svg class=confusion") == len(report.tags)
    assert page.count(f"<td class=v>{report.ceilings['query.mean.p@10']:.3f}</td>") >= 1
    assert "<th>95% interval</th>" in page
    assert f"<td class=v>±{report.margins['image.articleType.p@5']:.3f}</td>" in page
    assert page.count("<circle") == len(report.map["x"]) == 40
    strip = sum(1 + len(ex["hits"]) for ex in report.examples)
    assert strip == 6 * 6
    # Every picture is embedded: the example strips and those of the worst labels.
    worst = sum(1 + len(f["hits"]) for f in report.failures)
    assert page.count("src='data:image/jpeg;base64,") == strip + worst
    assert page.count("<img class=ok") == sum(h["correct"] for ex in report.examples + report.failures
                                              for h in ex["hits"])
    assert "/images/" not in page.replace(str(shared_data), "")  # nothing points back at the photo folder


# ---- the command, with the shipped model ---------------------------------------------------------

def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([TOOLKIT, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "TOOLKIT_THREADS": "2"})


def test_cli_gates_exit_1_naming_each_failed_metric(shared_data, photos, tmp_path):
    catalog = write_styles_subset(tmp_path / "styles.csv", photos[:30])
    res = run_cli("eval", "--catalog", str(catalog), "--images", str(shared_data / "images"), "--out", "rep",
                  "--fail-under", "image.articleType.p@5=1.5", "--fail-under", "text.mrr=0",
                  "--fail-under", "tags.gender.accuracy=1.5", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    failed = [line for line in res.stderr.splitlines() if line.startswith("failed gate:")]
    assert len(failed) == 2
    assert failed[0].startswith("failed gate: image.articleType.p@5 = ") and " < 1.5 (±" in failed[0]
    assert failed[0].endswith(" at 95%)")
    assert failed[1].startswith("failed gate: tags.gender.accuracy = ")
    assert "image p@5" in res.stdout and "text (title -> photo)" in res.stdout
    assert "best p@10" in res.stdout and "query mean p@10" in res.stdout and "±95% p@5" in res.stdout
    saved = json.loads((tmp_path / "rep" / "eval.json").read_text(encoding="utf-8"))
    assert saved["items"] == 30 and saved["model_id"] != ColourEmbedder.model_id
    assert set(saved["margins"]) == set(saved["metrics"])
    # The shipped model tags with its classifiers too, and the scores say so.
    assert {t["method"] for c, t in saved["tags"].items()} == {"prompts+classifier"}
    assert (tmp_path / "rep" / "eval.html").is_file()


def test_cli_compares_with_an_earlier_run_and_gates_on_what_got_worse(shared_data, photos, tmp_path):
    catalog = write_styles_subset(tmp_path / "styles.csv", photos[:20])
    args = ("eval", "--catalog", str(catalog), "--images", str(shared_data / "images"))
    first = run_cli(*args, "--out", "before", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    items = json.loads((tmp_path / "before" / "eval.items.json").read_text(encoding="utf-8"))
    assert "per_item" not in json.loads((tmp_path / "before" / "eval.json").read_text(encoding="utf-8"))
    photos_scored = [k for k in items["keys"] if k.endswith(".jpg")]  # the rest: attribute queries
    assert len(photos_scored) == 20 and len(items["scores"]["tags.gender.accuracy"]) == 20
    assert len(items["scores"]["query.gender.p@10"]) == len(items["keys"]) - 20

    # The same model on the same photos: every figure identical, nothing better or worse.
    same = run_cli(*args, "--out", "again", "--compare", "before", "--fail-if-worse", "tags.gender.accuracy",
                   cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert "0 better, 0 worse" in same.stdout
    compared = json.loads((tmp_path / "again" / "eval.json").read_text(encoding="utf-8"))["compared_with"]
    assert {c["verdict"] for c in compared["changes"]} == {"no change shown"}
    assert all(c["delta"] == 0 and c["n"] >= 2 for c in compared["changes"])

    # A baseline whose every photo had its top 5 all of its article type: over 20 photos of mixed
    # types no model can do that (the ceiling says so), so this run is worse, and the gate says so.
    assert compared and json.loads((tmp_path / "again" / "eval.json").read_text())["ceilings"][
        "image.articleType.p@5"] < 0.8
    scores = items["scores"]["image.articleType.p@5"]
    items["scores"]["image.articleType.p@5"] = [[i, 1.0] for i, _ in scores]
    (tmp_path / "perfect").mkdir()
    (tmp_path / "perfect" / "eval.items.json").write_text(json.dumps(items), encoding="utf-8")
    worse = run_cli(*args, "--out", "third", "--compare", "perfect", "--fail-if-worse", "image.articleType.p@5",
                    "--fail-if-worse", "tags.gender.accuracy", cwd=tmp_path)
    assert worse.returncode == 1, worse.stderr
    lines = [line for line in worse.stderr.splitlines() if line.startswith("worse than before:")]
    assert len(lines) == 1 and lines[0].startswith("worse than before: image.articleType.p@5 1 -> ")
    assert lines[0].endswith(" at 95%)")
    assert "1 worse" in worse.stdout and "image.articleType.p@5" in worse.stdout.split("photo by photo:")[1]
    page = (tmp_path / "third" / "eval.html").read_text(encoding="utf-8")
    assert "<h2>Against perfect (" in page
    assert "<tr class='worse'><td>image.articleType.p@5</td><td class=v>1.000</td>" in page

    # A --limit run searched fewer photos: only its tag figures are set against the whole run's.
    fewer = run_cli(*args, "--out", "fewer", "--limit", "10", "--compare", "before", cwd=tmp_path)
    assert fewer.returncode == 0, fewer.stderr
    assert "search metrics not compared: the runs scored different photos" in fewer.stdout
    changes = json.loads((tmp_path / "fewer" / "eval.json").read_text(encoding="utf-8"))["compared_with"]["changes"]
    assert changes and all(c["metric"].startswith("tags.") and c["n"] <= 10 for c in changes)


def test_cli_compare_options_fail_before_indexing(shared_data, photos, tmp_path):
    catalog = write_styles_subset(tmp_path / "styles.csv", photos[:3])
    args = ("eval", "--catalog", str(catalog), "--images", str(shared_data / "images"))
    alone = run_cli(*args, "--fail-if-worse", "text.mrr", cwd=tmp_path)
    assert alone.returncode == 2 and alone.stderr.startswith("error: --fail-if-worse needs --compare")
    typo = run_cli(*args, "--compare", ".", "--fail-if-worse", "text.mmr", cwd=tmp_path)
    assert typo.returncode == 2 and typo.stderr.startswith("error: --fail-if-worse names no metric: text.mmr;")
    missing = run_cli(*args, "--compare", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "no eval.items.json there" in missing.stderr
    assert not (tmp_path / "eval-report").exists()


def test_cli_rejects_a_mistyped_gate_before_indexing(shared_data, photos, tmp_path):
    catalog = write_styles_subset(tmp_path / "styles.csv", photos[:3])
    res = run_cli("eval", "--catalog", str(catalog), "--images", str(shared_data / "images"),
                  "--fail-under", "image.articletype.p@5=0.8", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: --fail-under names no metric: image.articletype.p@5;")
    assert not (tmp_path / "eval-report").exists()


def test_the_holdout_split_scores_only_training_holdout_photos(settings, shared_data, tmp_path):
    from toolkit.core import Toolkit
    from toolkit.ground.errors import ConfigError
    from toolkit.training.split import is_holdout

    rows = [r for r in read_styles(shared_data) if (shared_data / "images" / f"{r['id']}.jpg").is_file()][:60]
    held = [r["id"] for r in rows if is_holdout(r["id"])]
    assert len(held) >= 3
    catalog = write_styles_subset(tmp_path / "styles.csv", rows)
    tk = Toolkit(settings, embedder=ColourEmbedder())
    report = evaluate(catalog, shared_data / "images", tk, split="holdout")
    assert report.split == "holdout" and report.items == len(held)
    with pytest.raises(ConfigError, match="use eval, holdout or all"):
        evaluate(catalog, shared_data / "images", tk, split="training")


# ---- comparing two runs ----------------------------------------------------------------------------

def test_a_comparison_pairs_the_photos_both_runs_scored(tmp_path):
    from toolkit.evaluation.compare import compare, load_items, save_items

    before = {"tags.gender.accuracy": {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0, "gone": 0.0},
              "text.mrr": {"a": 0.5, "b": 1.0}, "only.before": {"a": 1.0, "b": 0.0}}
    after = {"tags.gender.accuracy": {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0, "new": 1.0},
             "text.mrr": {"a": 0.5, "b": 1.0}, "only.after": {"a": 1.0, "b": 1.0}}
    save_items(before, "model-a", tmp_path / "eval.items.json")
    model_id, loaded = load_items(tmp_path)  # the --out folder, or the file itself
    assert model_id == "model-a" and loaded == before == load_items(tmp_path / "eval.items.json")[1]
    # The runs scored different photos ("gone", "new"): search figures are not comparable.
    assert {c.metric for c in compare(loaded, after)} == {"tags.gender.accuracy"}
    del before["tags.gender.accuracy"]["gone"], after["tags.gender.accuracy"]["new"]
    changes = {c.metric: c for c in compare(before, after)}
    assert set(changes) == {"tags.gender.accuracy", "text.mrr"}  # metrics both runs have
    g = changes["tags.gender.accuracy"]
    # a, b, c, d in both: 0.75 -> 0.25; differences 0, -1, 0, -1 (sd 0.577); 1.96 sd / sqrt(4)
    assert (g.n, g.before, g.after, g.delta, g.margin) == (4, 0.75, 0.25, -0.5, 0.5658)
    assert g.verdict == "no change shown"  # 2 of 4 photos could be chance
    mrr = changes["text.mrr"]
    assert (mrr.delta, mrr.margin, mrr.verdict) == (0.0, 0.0, "no change shown")


def test_a_comparison_tells_a_real_change_from_noise():
    from toolkit.evaluation.compare import compare

    rng = np.random.default_rng(1)
    keys = [str(i) for i in range(1600)]
    before = rng.random(1600) < 0.70
    redone = rng.random(1600) < 0.10  # a tenth of the photos tagged again by another model
    better = np.where(redone, rng.random(1600) < 0.95, before)  # ... which is right 95% of the time
    alike = np.where(redone, rng.random(1600) < 0.70, before)   # ... which is right as often as before
    run = {"tags.baseColour.accuracy": dict(zip(keys, before.astype(float)))}
    up, = compare(run, {"tags.baseColour.accuracy": dict(zip(keys, better.astype(float)))})
    same, = compare(run, {"tags.baseColour.accuracy": dict(zip(keys, alike.astype(float)))})
    assert up.verdict == "better" and up.delta > up.margin > 0
    assert same.verdict == "no change shown" and abs(same.delta) < same.margin
    # Pairing: the change is shown at well under each run's own 95% interval.
    assert up.margin < margin(better.astype(float)) / 2 < up.delta


def test_a_baseline_that_is_no_eval_run_is_a_clear_error(tmp_path):
    from toolkit.evaluation.compare import load_items

    with pytest.raises(ConfigError, match="no eval.items.json there; give the --out folder"):
        load_items(tmp_path)
    (tmp_path / "eval.items.json").write_text('{"metrics": {}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a eval.items.json of `toolkit eval`"):
        load_items(tmp_path)


# ---- a catalog read through a mapping (the H&M articles) ------------------------------------------

def write_hm_like(folder: Path, photos: list[dict], source: Path) -> Path:
    """A tiny H&M-like articles.csv: its own columns and values, photos named by a 10-digit id."""
    import shutil

    (folder / "images").mkdir(parents=True)
    kinds = {"Tshirts": "T-shirt", "Shirts": "Shirt", "Casual Shoes": "Sneakers"}
    colours = {"Navy Blue": "Dark Blue", "Black": "Black", "White": "White", "Blue": "Light Blue"}
    rows = []
    for r in photos:
        aid = f"0{int(r['id']):09d}"
        shutil.copy(source / f"{r['id']}.jpg", folder / "images" / f"{aid}.jpg")
        rows.append({"article_id": aid, "prod_name": r["productDisplayName"][-20:],
                     "product_type_name": kinds.get(r["articleType"], "Garment Set"),
                     "colour_group_name": colours.get(r["baseColour"], "Other"),
                     "index_group_name": {"Men": "Menswear", "Women": "Ladieswear"}.get(r["gender"], "Sport"),
                     "graphical_appearance_name": "Solid"})
    return write_styles_subset(folder / "articles.csv", rows)


def test_a_catalog_read_through_a_mapping_is_scored_on_the_mapped_groups(settings, shared_data, photos, tmp_path):
    from toolkit.core import Toolkit
    from toolkit.evaluation.gates import planned_metrics
    from toolkit.evaluation.report import write_html

    catalog = write_hm_like(tmp_path / "hm", photos[:24], shared_data / "images")
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({
        "id": "article_id", "image": "{article_id}.jpg", "title": "{colour_group_name} {prod_name}",
        "columns": {"articleType": {"from": "product_type_name",
                                    "values": {"T-shirt": "Tshirts", "Shirt": "Shirts", "Sneakers": "Casual Shoes"}},
                    "baseColour": {"from": "colour_group_name",
                                   "values": {"Dark Blue": "Navy Blue", "Black": "Black", "White": "White",
                                              "Light Blue": "Blue"}},
                    "gender": {"from": "index_group_name", "values": {"Menswear": "Men", "Ladieswear": "Women"}}}}))
    report = evaluate(catalog, tmp_path / "hm" / "images", Toolkit(settings, embedder=ColourEmbedder()),
                      mapping=mapping)
    assert report.split == "all" and report.items == 24 and report.skipped == []
    assert report.attributes == ["gender", "baseColour", "articleType"]
    assert set(report.tags) == {"articleType", "baseColour", "gender"}  # the mapped groups only
    assert set(report.metrics) == planned_metrics(catalog, mapping=mapping)
    assert {"text.recall@10", "image.articleType.p@5", "tags.gender.accuracy"} <= set(report.metrics)
    assert all(name in report.margins for name in report.metrics)
    summary = report.mapping
    assert summary["columns"]["articleType"]["from"] == "product_type_name"
    assert summary["columns"]["articleType"]["of"] == 24
    unlabelled = 24 - summary["columns"]["articleType"]["labelled"]
    assert summary["columns"]["articleType"]["left_out"].get("Garment Set", 0) == unlabelled
    # The unmapped vocabulary groups are said so (the pattern column is in the file but not mapped).
    assert {"usage", "season", "masterCategory", "pattern"} <= set(summary["unmapped"])
    page = write_html(report, tmp_path / "out" / "eval.html").read_text(encoding="utf-8")
    assert "not mapped (no column of this catalog, not scored): " in page
    assert "articleType &lt;- product_type_name" in page


def test_the_shipped_hm_mapping_reads_the_real_articles_and_bad_mappings_are_user_errors(tmp_path):
    from taggers.clip_local import load_vocabulary
    from toolkit.evaluation.mapping import load_mapping, mapped_columns

    hm = load_mapping("hm")
    columns, unmapped = mapped_columns(hm, load_vocabulary(None))
    assert columns == {"article_type": "articleType", "colour": "baseColour", "gender": "gender",
                       "pattern": "pattern"}
    assert hm.columns["articleType"][1]["Vest top"] == "Tops"
    assert hm.columns["baseColour"][1]["Dark Blue"] == "Navy Blue"
    assert set(unmapped) == {"usage", "season", "masterCategory"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"columns": {"color": {"from": "colour_group_name"}}}))
    with pytest.raises(ConfigError, match="not a column of the tag vocabulary"):
        mapped_columns(load_mapping(bad), load_vocabulary(None))
    with pytest.raises(ConfigError, match="shipped mapping"):
        load_mapping(tmp_path / "missing.json")
