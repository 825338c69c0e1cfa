"""`toolkit eval`: retrieval and tagging quality on a labelled catalog, with CI gates."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from toolkit.faces.commands.output import err, out, to_jsonable
from toolkit.core import Toolkit
from toolkit.ground.errors import ConfigError
from toolkit.evaluation import (EvalReport, check_gate_names, evaluate, failed_gates, narrow_gates, parse_gate,
                                planned_metrics)
from toolkit.evaluation.compare import ITEMS_FILE, Comparison, load_items, save_items


def eval_(
    catalog: Path = typer.Option(..., "--catalog", help="Labelled catalog: styles.csv or a products CSV."),
    images: Path = typer.Option(..., "--images", help="Folder holding the catalog's photos."),
    out_dir: Path = typer.Option(Path("eval-report"), "--out", help="Folder for eval.json and eval.html."),
    limit: int | None = typer.Option(None, "--limit", min=2, help="Score only the first N photos (quick runs)."),
    split: str = typer.Option(None, "--split", help="eval (the fixed eval split; the default), holdout (the "
                              "training fifth `model train --hold-out` leaves out) or all (the default with "
                              "--mapping)."),
    mapping: str = typer.Option(None, "--mapping", metavar="FILE", help="A JSON file mapping the catalog's columns "
                                "and values to the tag vocabulary's (or a shipped one's name: hm, for the H&M "
                                "articles.csv); see toolkit/evaluation/mappings/hm.json."),
    fail_under: list[str] = typer.Option([], "--fail-under", metavar="METRIC=VALUE",
                                         help="Exit 1 when METRIC is under VALUE; repeatable."),
    compare_with: Path = typer.Option(None, "--compare", help="The --out folder of an earlier run on the same "
                                      "catalog: print each metric's change, photo by photo, and whether it is shown."),
    fail_if_worse: list[str] = typer.Option([], "--fail-if-worse", metavar="METRIC",
                                            help="With --compare: exit 1 when METRIC is worse than before by more "
                                                 "than its 95% margin; repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Score search and tags on a labelled catalog, indexed through the real
    pipeline (local tagger) into a scratch collection that is deleted afterwards.

    The catalog is a styles.csv (photo IMAGES/<id>.jpg) or a products CSV
    (product_id, title, media, label columns). Only the fixed eval split is
    scored unless --split holdout or all. Writes OUT/eval.json and OUT/eval.html.

    \b
    Metrics (ATTR: articleType, baseColour, gender, or all of them at once):
      image.ATTR.p@1, p@5, p@10  photo query: top-k share with its label
      text.recall@1, recall@10   title query: own photo in the top k
      text.mrr                   title query: mean 1/rank of own photo
      query.ATTR.p@10            "Men Black Casual Shoes": top-10 share
                                 with the named label
      query.mean.p@10            the mean of the three query.ATTR.p@10
      tags.COL.accuracy          tagger's best label is the catalog's
      tags.COL.coverage          share tagged over the threshold
      tags.COL.accuracy@threshold  share of those tags that are right
    (COL: articleType, baseColour, gender, masterCategory, usage, season)
    The "best" rows: the most any ranking could score with these labels; the
    "±95%" ones: as many other photos of the catalog would give figures within
    that much, so a gate closer than that to the figure fails by chance.

    \b
    With --mapping FILE, a catalog with other columns (the H&M articles)
    is read through a mapping to the vocabulary's columns and values.

    \b
    Example: --fail-under image.articleType.p@5=0.85
             --fail-under text.recall@10=0.5
             --compare last-release/ --fail-if-worse tags.baseColour.accuracy
    """
    gates = [parse_gate(g) for g in fail_under]
    tk = Toolkit()
    # A mistyped gate or a missing baseline fails now, not after the photos are indexed.
    known = planned_metrics(catalog, tk.settings.vocabulary, mapping)
    check_gate_names(gates, known)
    unknown = [m for m in fail_if_worse if m not in known]
    if unknown:
        raise ConfigError(f"--fail-if-worse names no metric: {', '.join(unknown)}; "
                          f"metrics for this catalog: {', '.join(sorted(known))}")
    if fail_if_worse and compare_with is None:
        raise ConfigError("--fail-if-worse needs --compare: the --out folder of the run to compare with")
    baseline = load_items(compare_with) if compare_with is not None else None
    report = _run_with_progress(tk, catalog, images, limit, split, mapping)
    comparison = Comparison.of(compare_with, *baseline, report.per_item) if baseline else None
    _write(report, out_dir, comparison)
    if as_json:
        print(json.dumps(_jsonable(report, comparison), indent=2, ensure_ascii=False))
    else:
        print_table(report)
        if comparison is not None:
            print_changes(comparison)
    err.print(f"wrote {out_dir / 'eval.json'}, {out_dir / ITEMS_FILE} and {out_dir / 'eval.html'}",
              highlight=False, soft_wrap=True)
    regressions = comparison.worse(fail_if_worse) if comparison is not None else []
    for line in regressions:
        err.print(f"worse than before: {line}", highlight=False, soft_wrap=True)
    failures = failed_gates(report.metrics, gates, report.margins)
    for line in narrow_gates(report.metrics, gates, report.margins):
        err.print(f"passed gate within its 95% interval (it may fail on a rerun with other photos): {line}",
                  highlight=False, soft_wrap=True)
    for line in failures:
        err.print(f"failed gate: {line}", highlight=False, soft_wrap=True)
    if failures or regressions:
        raise typer.Exit(1)


def _run_with_progress(tk: Toolkit, catalog: Path, images: Path, limit: int | None, split: str | None,
                       mapping: str | None = None) -> EvalReport:
    with Progress(TextColumn("[bold]indexing[/]"), BarColumn(bar_width=None),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("", total=None)
        return evaluate(catalog, images, tk, limit=limit, split=split, mapping=mapping,  # type: ignore[arg-type]
                           on_item=lambda ref, status, reason: bar.update(task, advance=1),
                           on_listed=lambda n: bar.update(task, total=n))


def _write(report: EvalReport, out_dir: Path, comparison: Comparison | None) -> None:
    from toolkit.evaluation.report import write_html

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(_jsonable(report, comparison), indent=2, ensure_ascii=False)
                                       + "\n", encoding="utf-8")
    save_items(report.per_item, report.model_id, out_dir / ITEMS_FILE)
    write_html(report, out_dir / "eval.html", comparison)


def _jsonable(report: EvalReport, comparison: Comparison | None) -> dict:
    """The report without its per-photo scores (those go to eval.items.json), and any comparison."""
    data = to_jsonable(report)
    del data["per_item"]
    if comparison is not None:
        data["compared_with"] = {"path": str(comparison.path), "model_id": comparison.model_id,
                                 "changes": [{**to_jsonable(c), "verdict": c.verdict} for c in comparison.changes]}
    return data


def print_changes(comparison: Comparison) -> None:
    """The metrics that changed, worst first, then how many did not."""
    changes = comparison.changes
    out.print(f"against {comparison.path} ({comparison.model_id}), photo by photo:", highlight=False, soft_wrap=True)
    moved = sorted((c for c in changes if c.delta != 0), key=lambda c: (c.verdict != "worse", c.delta))
    t = Table(Column("metric", no_wrap=True), "before", "after", "change", "±95%", Column("", no_wrap=True),
              box=None, pad_edge=False)
    for c in moved:
        t.add_row(c.metric, f"{c.before:.3f}", f"{c.after:.3f}", f"{c.delta:+.4f}", f"{c.margin:.4f}", c.verdict)
    if moved:
        _print_wide(t)
    if not comparison.same_photos:
        out.print("search metrics not compared: the runs scored different photos, and each photo's neighbours "
                  "depend on the others", highlight=False, soft_wrap=True)
    shown = Counter(c.verdict for c in changes)
    out.print(f"{shown['better']} better, {shown['worse']} worse, {shown['no change shown']} without a change shown "
              f"({len(changes) - len(moved)} identical)", highlight=False, soft_wrap=True)


def print_table(r: EvalReport) -> None:
    out.print(f"model {r.model_id}: {r.items} photos ({r.split} split), {r.attribute_queries} attribute queries, "
              f"{len(r.skipped)} skipped, {r.seconds:.0f} s", highlight=False, soft_wrap=True)
    if r.measured_on:
        out.print(f"measured with the {r.measured_on.get('line')}", highlight=False, soft_wrap=True)
    if r.mapping:
        from toolkit.evaluation.mapping import MappingSummary

        for line in MappingSummary(**r.mapping).lines():
            out.print(line, highlight=False, soft_wrap=True)
    m = r.metrics
    attrs = r.attributes + (["all"] if len(r.attributes) > 1 else [])
    t = Table("retrieval", *attrs, title=None, box=None, pad_edge=False)
    best = r.ceilings
    pm = r.margins
    for k in ("p@1", "p@5", "p@10"):
        t.add_row(f"image {k}", *[_cell(m, f"image.{a}.{k}") for a in attrs])
    t.add_row("  ±95% p@5", *[_cell(pm, f"image.{a}.p@5") for a in attrs])
    t.add_row("  best p@5", *[_cell(best, f"image.{a}.p@5") for a in attrs])
    t.add_row("query p@10", *[_cell(m, f"query.{a}.p@10") for a in attrs])
    t.add_row("  ±95% p@10", *[_cell(pm, f"query.{a}.p@10") for a in attrs])
    t.add_row("  best p@10", *[_cell(best, f"query.{a}.p@10") for a in attrs])
    out.print(t)
    if "query.mean.p@10" in m:
        out.print(f"query mean p@10 {_cell(m, 'query.mean.p@10')} ±{_cell(pm, 'query.mean.p@10')} (best possible "
                  f"{_cell(best, 'query.mean.p@10')}: one top 10 has to match every named label)",
                  highlight=False, soft_wrap=True)
    out.print(f"text (title -> photo): recall@1 {_cell(m, 'text.recall@1')}  recall@10 {_cell(m, 'text.recall@10')}"
              f" ±{_cell(pm, 'text.recall@10')}  mrr {_cell(m, 'text.mrr')}", highlight=False, soft_wrap=True)
    tags = Table("tags", "accuracy", "±95%", "coverage", "acc@thr", "most confused", box=None, pad_edge=False)
    for col, s in r.tags.items():
        confused = "; ".join(f"{c['truth']} -> {c['predicted']} ({c['n']})" for c in s["most_confused"][:3])
        tags.add_row(col, f"{s['accuracy']:.3f}", _cell(pm, f"tags.{col}.accuracy"), f"{s['coverage']:.3f}",
                     f"{s['accuracy@threshold']:.3f}", confused)
    _print_wide(tags)


def _print_wide(table: Table) -> None:
    """Piped into a CI log (no terminal), a table keeps each row on one line: a console's own
    width (80 there) would wrap or cut its cells, and `print(width=...)` can only narrow it."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(soft_wrap=False, width=200).print(table)


def _cell(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.3f}" if name in metrics else "-"
