"""`toolkit search`: products most similar to a photo or a text."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from toolkit.faces.commands.output import out, print_json
from toolkit.core import Toolkit
from toolkit.ground.errors import QueryError
from toolkit.ground.models import Hit


def search(
    text: Optional[str] = typer.Argument(None, help="What to look for, e.g. \"red summer dress\"."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="A photo to find similar products to."),
    k: int = typer.Option(10, "-k", help="How many products to return (1-200)."),
    where: list[str] = typer.Option([], "--where", "-w",
                                    help="Filter, repeatable: colour=black, article_type=Sandals, price<50, attr.brand=Puma."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Drop results scoring under this."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Find products by TEXT or by --image PHOTO (or both)."""
    if text is None and image is None:
        raise QueryError("nothing to search for; give a TEXT query or --image PATH")
    tk = Toolkit()
    tk.build_filter_index = False  # one query, then exit: use a saved filter index, never start a build
    hits = tk.search(text=text, image=image, k=k, where=where, min_score=min_score)
    if as_json:
        print_json(hits)
    else:
        print_table(hits, heading(text, image, where))


def heading(text: str | None, image: Path | None, where: list[str]) -> str:
    """Which query the list answers: several searches in a row (the demo, a script) stay apart."""
    asked = " and ".join(part for part in (f"photo {image}" if image else "", f'"{text}"' if text else "") if part)
    return f"products like {asked}" + (f", where {', '.join(where)}" if where else "")


def _catalog_says(hit: Hit, group: str, label: str) -> str:
    said = hit.catalog_tags.get(group)
    return f" (catalog: {said})" if said and said.lower() != label.lower() else ""


def print_table(hits: list[Hit], title: str | None = None) -> None:
    """One block per product: readable at any terminal width, and in logs."""
    if title:
        out.print(f"[bold]{escape(title)}[/]: {len(hits)} found", highlight=False, soft_wrap=True)
    if not hits:
        out.print("no results; try fewer filters or a lower --min-score" if title else "no results")
        return
    for n, h in enumerate(hits, 1):
        price = f"{h.price:.2f} {h.currency or ''}".strip() if h.price is not None else ""
        head = f"[bold]{n:>2}.[/] {h.score:.3f}  {h.product_id or '-'}  {h.title or f'{h.media_key or h.media_uri} (no catalog entry)'}"
        out.print(f"{head}  {price}".rstrip(), highlight=False, soft_wrap=True)
        if h.url:
            out.print(f"     buy:   {h.url}", highlight=False, soft_wrap=True)
        if h.tags:
            tags = "  ".join(f"{g}={v}" + _catalog_says(h, g, v) for g, v in sorted(h.tags.items()))
            out.print(f"     tags:  {tags}", highlight=False, soft_wrap=True)
        moment = f"  at {h.timestamp:.1f}s" if h.timestamp is not None else ""
        out.print(f"     media: {h.media_uri}{moment}", highlight=False, soft_wrap=True)
