"""`toolkit config`: the settings in force, secrets masked."""
from __future__ import annotations

import typer

from toolkit.faces.commands.output import out, print_json
from toolkit.ground.settings import Settings, load_settings


def config(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print every setting in force (environment, .env, defaults); secrets show only as set or unset."""
    settings = load_settings()
    masked = settings.masked()
    in_force = precision_in_force(settings)
    if as_json:
        print_json({**masked, "precision_in_force": in_force})
        return
    for name, value in masked.items():
        out.print(f"{Settings.variable(name):<36} {value}", highlight=False, soft_wrap=True)
    out.print(f"{'precision in force':<37} {in_force}", highlight=False, soft_wrap=True)


def precision_in_force(settings: Settings) -> str:
    """The offline image backbone's precision on this machine and why, as last measured here."""
    if settings.model != "offline":
        return f"not used by TOOLKIT_MODEL={settings.model}"
    if settings.precision == "fp32":
        return "fp32 (asked for)"
    if settings.runtime == "torch":
        return "fp32 (TOOLKIT_RUNTIME=torch: PyTorch runs fp32)"
    from taggers.offline.precision import latest_choice

    choice = latest_choice(settings.data_dir / "cache", settings.precision)
    if choice is None:
        return "not measured on this machine yet: int8 is checked against fp32 on first use " \
               "(`toolkit model info` checks it now)"
    return f"{choice.precision}: {choice.reason}"
