"""`toolkit collections ...`: the collections behind TOOLKIT_COLLECTION: list, switch, drop."""
from __future__ import annotations

import typer

from toolkit.faces.commands.output import err, out, print_json
from toolkit.core import Toolkit

app = typer.Typer(help="List, switch and drop the collections behind TOOLKIT_COLLECTION.", no_args_is_help=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Every media collection: model, records, products collection, and which one is in use (*)."""
    found = Toolkit().collections()
    if as_json:
        print_json(found)
        return
    if not found:
        out.print("no collections yet; `toolkit tag SOURCE` makes one", highlight=False)
        return
    rows = [("", "name", "model", "records", "products", "note")]
    for c in found:
        note = []
        if not c.complete:
            note.append("incomplete reindex")
        if c.source:
            note.append(f"re-indexed from {c.source}")
        if c.active_for:
            note.append(f"in use for {', '.join(c.active_for)}")
        products = f"{c.products} ({c.product_count})" if c.products else "-"
        rows.append(("*" if c.active else "", c.name, c.model_id or "?", str(c.records), products, "; ".join(note)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:  # plain columns: whole names at any terminal width, and in logs
        out.print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), highlight=False, soft_wrap=True)
    out.print("* in use for TOOLKIT_COLLECTION", highlight=False)


@app.command("use")
def use(name: str = typer.Argument(..., help="The collection to use, as `toolkit collections list` names it.")) -> None:
    """Switch searches (and tag runs) to collection NAME, e.g. back to the one before a reindex."""
    tk = Toolkit()
    if tk.collection == name:
        err.print(f"'{name}' is already in use for '{tk.settings.collection}'; nothing to do", highlight=False,
                  soft_wrap=True)
        return
    info = tk.use_collection(name)
    err.print(f"searches for '{tk.settings.collection}' now use collection '{info.name}' ({info.model_id}, "
              f"{info.records} records)",
              highlight=False, soft_wrap=True)
    for w in tk.conflict_warnings():
        err.print(f"warning: {w}", highlight=False, soft_wrap=True)


@app.command("drop")
def drop(
    name: str = typer.Argument(..., help="The collection to delete (never the one in use)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete collection NAME and its products collection, after asking (unless --yes)."""
    def confirm(info) -> bool:
        products = f" and '{info.products}' ({info.product_count} products)" if info.products else ""
        return yes or typer.confirm(f"drop '{info.name}' ({info.records} records, {info.model_id}){products}?")

    dropped = Toolkit().drop_collection(name, confirm=confirm)
    if dropped is None:
        err.print("nothing dropped", highlight=False)
        raise typer.Exit(1)
    err.print(f"dropped '{dropped.name}'" + (f" and '{dropped.products}'" if dropped.products else ""),
              highlight=False, soft_wrap=True)
