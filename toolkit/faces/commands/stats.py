"""`toolkit stats`: what the store holds."""
from __future__ import annotations

import typer

from toolkit.faces.commands.output import out, print_json
from toolkit.core import Toolkit


def stats(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Counts of media, frames, products and the most common tags."""
    s = Toolkit().stats()
    if as_json:
        print_json(s)
        return
    out.print(f"store       {s.store} (collection {s.collection})", highlight=False, soft_wrap=True)
    out.print(f"model       {s.model_id} ({s.dim}-d)", highlight=False)
    for line in s.made_with:
        out.print(f"vectors     {line}", highlight=False, soft_wrap=True)
    out.print(f"media       {s.media} ({s.images} images, {s.videos} videos with {s.frames} frames)", highlight=False)
    out.print(f"records     {s.records}", highlight=False)
    out.print(f"products    {s.products} ({s.linked_media} media linked to a product)", highlight=False)
    for group, counts in s.tag_counts.items():
        top = ", ".join(f"{label} {n}" for label, n in counts.items())
        out.print(f"tag {group:<16} {top}", highlight=False, soft_wrap=True)
