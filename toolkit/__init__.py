"""toolkit: turn a retailer's product media into a searchable, tagged catalog.

    from toolkit import Toolkit
    tk = Toolkit()
    tk.tag("./examples/catalog")
    hits = tk.search(text="black leather sandals for men")

The names below load on first use, so importing a backend (which imports `toolkit.ground`)
does not pull in the pipeline, the registry or pydantic-settings.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.core import Stats, Toolkit
    from toolkit.ground.errors import ToolkitError
    from toolkit.ground.models import Hit, RunReport, Tag
    from toolkit.ground.settings import Settings, load_settings

_HOMES = {
    "Toolkit": "toolkit.core", "Stats": "toolkit.core",
    "ToolkitError": "toolkit.ground.errors",
    "Hit": "toolkit.ground.models", "RunReport": "toolkit.ground.models", "Tag": "toolkit.ground.models",
    "Settings": "toolkit.ground.settings", "load_settings": "toolkit.ground.settings",
}
__all__ = ["Toolkit", "Stats", "ToolkitError", "Hit", "RunReport", "Tag", "Settings", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
