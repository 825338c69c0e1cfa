"""`toolkit reindex --model NAME`: rebuild the collection in use with another model, then switch to it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from toolkit.faces.commands.output import err, item_progress, print_json
from toolkit.core import Toolkit

if TYPE_CHECKING:
    from toolkit.ingest.reindex import ReindexReport


def reindex(
    model: str = typer.Option(..., "--model", "-m", help="The new model: offline or clip."),
    heads: Optional[Path] = typer.Option(None, "--heads", help="Offline model: projection heads to use, e.g. "
                                         "from `toolkit model train` (default: TOOLKIT_HEADS_PATH or the shipped ones)."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="CLIP: hub name or local folder "
                                             "(default: TOOLKIT_CLIP_MODEL)."),
    skip_missing: bool = typer.Option(False, "--skip-missing",
                                      help="Switch even if some items cannot be read again; they are left out."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Re-embed every item of the collection in use with another model, into a new collection beside it, and switch searches to it once it is complete.

    Each item is read again from its source: cloud tags are carried over (not billed again), local tags are recomputed by the new model.

    Interrupted? Run the same command again: it continues where it stopped.

    Items that cannot be read again are named, and the switch waits for them (exit 1) unless --skip-missing.

    The old collection stays: `toolkit collections use NAME` goes back to it.
    """
    report = _run_with_progress(Toolkit(), model, heads, clip_model, skip_missing)
    if as_json:
        print_json(_jsonable(report))
    else:
        _print_summary(report)
    if report.status == "incomplete":
        raise typer.Exit(1)


def _run_with_progress(tk: Toolkit, model, heads, clip_model, skip_missing) -> "ReindexReport":
    with item_progress("re-indexing", ["embedded", "done", "missing"], announce={"missing"}) as (on_item, on_listed):
        return tk.reindex(model, heads_path=heads, clip_model=clip_model,
                          skip_missing=skip_missing, on_item=on_item, on_listed=on_listed)


def _jsonable(r: "ReindexReport") -> dict:
    from toolkit.faces.commands.output import to_jsonable

    return {**to_jsonable(r), "switched": r.switched}


def _print_summary(r: "ReindexReport") -> None:
    def say(line: str) -> None:
        err.print(line, highlight=False, soft_wrap=True)

    if r.status == "same-model":
        say(f"'{r.source}' is already built by {r.model_id}; nothing to do")
        return
    carried = ", ".join(f"{name} {n}" for name, n in sorted(r.carried.items())) or "none"
    say(f"re-indexed {r.media} items from '{r.source}' ({r.previous_model_id}) into '{r.target}' ({r.model_id}) "
        f"in {r.seconds:.1f}s: {r.embedded} embedded, {r.done} already done, {len(r.missing)} missing; "
        f"{r.products} products ({r.products_embedded} embedded); cloud tags carried over: {carried}")
    for uri in r.changed:
        say(f"  changed since it was tagged (cloud tags not carried; `toolkit tag` re-tags it): {uri}")
    for f in r.missing:
        say(f"  missing {f.reason}")
    if r.status == "incomplete":
        say(f"not switched: {len(r.missing)} items could not be read again; run the same command when they are "
            f"back, or add --skip-missing to switch without them (they stay in '{r.source}')")
        return
    left_out = f" ({len(r.missing)} missing items left out)" if r.missing else ""
    say(f"switched: searches now use '{r.target}'{left_out}; '{r.source}' is kept "
        f"(`toolkit collections use {r.source}` goes back, `toolkit collections drop {r.source}` deletes it)")
    for w in r.warnings:
        say(f"warning: {w}")
