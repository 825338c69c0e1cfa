"""`toolkit catalog import`: products, prices and links, joined to the media that show them."""
from __future__ import annotations

from pathlib import Path

import typer

from toolkit.faces.commands.output import err, print_json
from toolkit.core import Toolkit

app = typer.Typer(help="Manage the product catalog (titles, prices, purchase links).", no_args_is_help=True)


@app.command("import")
def import_(
    csv_path: Path = typer.Argument(..., help="CSV with product_id, title, price, currency, url, media columns."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import products from CSV_PATH. Importing again updates products, never duplicates them.

    Columns: product_id and title are required; price, currency, url and media
    (media keys separated by ';') are optional; every other column is kept as an attribute.
    """
    report = Toolkit().import_catalog(csv_path)
    if as_json:
        print_json(report)
        return
    err.print(f"imported {report.products} products from {csv_path}: {report.new} new, {report.updated} updated; "
              f"{linked(report.media_linked)}", highlight=False, soft_wrap=True)


def linked(count: int) -> str:
    """Media are linked as they are tagged too, so none linked yet is not a failure: say so."""
    if count:
        return f"{count} media already in the store linked to them"
    return "no media tagged yet: each product's photos are linked as `toolkit tag` stores them"
