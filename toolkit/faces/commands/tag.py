"""`toolkit tag SOURCE`: tag and index every image and video under a folder or an S3 prefix."""
from __future__ import annotations

import typer

from toolkit.faces.commands.output import err, item_progress, out, print_json
from toolkit.core import Toolkit
from toolkit.ground.models import RunReport


def tag(
    source: str = typer.Argument(..., help="A folder, or s3://bucket/prefix."),
    tagger: str = typer.Option("auto", "--tagger", "-t",
                               help="auto (clouds where configured, local model otherwise), local, azure or gcp."),
    retag: bool = typer.Option(False, "--retag", help=(
        "Also tag the unchanged items an earlier version of the local tagger tagged (other model, "
        "classifiers, vocabulary or threshold); a killed run resumes. Tags from taggers not run now "
        "are kept. A cloud in the plan gets every item again (and bills), so use --tagger local "
        "to refresh only the local model's tags.")),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be sent to each tagger, call nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
) -> None:
    """Tag and index every image and video under SOURCE. Re-runs process only what is new or changed."""
    tk = Toolkit()
    if dry_run:
        _print_plan(tk.plan(source, tagger=tagger, retag=retag), as_json)
        return
    report = _run_with_progress(tk, source, tagger, retag)
    if as_json:
        print_json(report)
    else:
        _print_summary(report)
    if report.failed:
        raise typer.Exit(1)


def _run_with_progress(tk: Toolkit, source: str, tagger: str, retag: bool) -> RunReport:
    with item_progress("tagging", ["new", "updated", "retagged", "unchanged", "skipped", "failed"],
                       announce={"skipped", "failed"}, listed="listed") as (on_item, on_listed):
        return tk.tag(source, tagger=tagger, on_item=on_item, on_listed=on_listed, retag=retag)


def _print_summary(r: RunReport) -> None:
    by = ", ".join(f"{name}: {n}" for name, n in sorted(r.taggers.items())) or "none"
    retagged = f"{r.retagged} retagged, " if r.retagged else ""
    err.print(f"tagged {r.source} in {r.seconds:.1f}s: {r.new} new, {r.updated} updated, {retagged}"
              f"{r.unchanged} unchanged, {len(r.skipped)} skipped, {len(r.failed)} failed "
              f"(taggers: {by}; {r.records_written} records written)", highlight=False, soft_wrap=True)
    for name, st in sorted(r.services.items()):
        err.print(f"  {name}: {st['calls']} calls ({st['retries']} retries, {st['throttled']} throttled) "
                  f"at most {st['busiest_second']} in one second, limit {st['rate_limit_per_s']:g}/s",
                  highlight=False, soft_wrap=True)
    if r.outdated:
        err.print(f"  {r.outdated} unchanged items were tagged by an earlier version of the local model, its "
                  "classifiers, vocabulary or threshold: add --retag to tag them again", highlight=False, soft_wrap=True)
    for f in r.skipped:
        err.print(f"  skipped {f.reason}", highlight=False, soft_wrap=True)
    for f in r.failed:
        err.print(f"  failed  {f.reason}", highlight=False, soft_wrap=True)


def _print_plan(plan, as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    out.print(f"dry run for {plan.source}: nothing was sent", highlight=False)
    for line in plan.lines.values():
        cost = f" (about ${line.cost_usd:.2f})" if line.unit_price_usd else " (no charge)"
        out.print(f"  {line.tagger}: {len(line.items)} items, {line.units:g} billable {line.unit}s{cost}",
                  highlight=False)
        for item in line.items:
            out.print(f"    {item}", highlight=False, soft_wrap=True)
    outdated = f" ({plan.outdated} tagged by an earlier version of the local tagger: --retag sends them)" \
        if plan.outdated else ""
    out.print(f"  unchanged (not sent): {plan.unchanged}{outdated}", highlight=False)
    for uri, why in plan.skipped:
        out.print(f"  skipped {uri}: {why}", highlight=False, soft_wrap=True)
