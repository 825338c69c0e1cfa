"""Which tagger handles which kind of media, from `--tagger auto|local|azure|gcp`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit import registry
from toolkit.ground.errors import ConfigError
from toolkit.ground.settings import Settings

if TYPE_CHECKING:
    from taggers.base import Embedder, Tagger

KINDS = ("image", "video")
#: For `auto`: the cloud that handles each kind, when it is configured.
CLOUD_FOR_KIND = {"image": "azure", "video": "gcp"}

TaggerPlan = dict[str, list["Tagger"]]


def plan_taggers(choice: str, settings: Settings, embedder: "Embedder") -> TaggerPlan:
    """kind -> taggers to run on it. The local model fills in wherever no cloud applies."""
    if choice == "auto":
        names = {kind: _auto_name(kind, settings) for kind in KINDS}
    elif choice in registry.TAGGERS:
        names = {kind: choice for kind in KINDS}
    else:
        raise ConfigError(f"--tagger {choice!r} is not a tagger; use auto, {', '.join(registry.TAGGERS)}")
    built: dict[str, "Tagger"] = {}
    plan: TaggerPlan = {}
    for kind, name in names.items():
        if name not in built:
            built[name] = registry.tagger(name, settings, embedder)
        tagger = built[name]
        # A cloud chosen by name handles only its own kind; the local model covers the rest.
        if kind not in tagger.media_types:
            name = "local"
            built.setdefault(name, registry.tagger(name, settings, embedder))
            tagger = built[name]
        plan[kind] = [tagger]
    return plan


def _auto_name(kind: str, settings: Settings) -> str:
    cloud = CLOUD_FOR_KIND[kind]
    cls = registry.tagger_class(cloud)
    return cloud if cls is not None and cls.is_configured(settings) else "local"
