"""toolkit: turn a retailer's product media into a searchable, tagged catalog.

    from toolkit import Toolkit
    tk = Toolkit()
    tk.tag("./examples/catalog")
    hits = tk.search(text="black leather sandals for men")
"""
from toolkit.core import Stats, Toolkit
from toolkit.errors import ToolkitError
from toolkit.models import Hit, RunReport, Tag
from toolkit.settings import Settings, load_settings

__all__ = ["Toolkit", "Stats", "Hit", "RunReport", "Tag", "Settings", "load_settings", "ToolkitError"]
__version__ = "0.1.0"
