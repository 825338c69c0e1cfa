"""`toolkit config`: the settings in force, secrets masked."""
from __future__ import annotations

import typer

from toolkit.commands.output import out, print_json
from toolkit.settings import load_settings


def config(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print every setting in force (environment, .env, defaults); secrets show only as set or unset."""
    masked = load_settings().masked()
    if as_json:
        print_json(masked)
        return
    for name, value in masked.items():
        out.print(f"TOOLKIT_{name.upper():<28} {value}", highlight=False, soft_wrap=True)
