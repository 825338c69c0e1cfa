"""Name -> factory for connectors, embedders, taggers and stores.

Backends are imported only when asked for, so `toolkit --help` stays instant and a
missing optional SDK only matters to the user who picks that backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlparse

from toolkit.ground.errors import ConfigError, SourceError
from toolkit.ground.settings import Settings

if TYPE_CHECKING:
    from connectors.base import Connector
    from store.base import StoreBackend, VectorStore
    from store.filter_index import Filterable
    from taggers.base import Embedder, Tagger


def _local(settings: Settings) -> "Connector":
    from connectors.local import LocalConnector

    return LocalConnector()


def _s3(settings: Settings) -> "Connector":
    from connectors.s3 import S3Connector

    return S3Connector(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                       addressing_style=settings.s3_addressing_style)


CONNECTORS: dict[str, Callable[[Settings], "Connector"]] = {"file": _local, "s3": _s3}


def scheme_of(uri: str) -> str:
    scheme = urlparse(uri).scheme
    # A Windows drive letter or a bare path is a local folder.
    return scheme if len(scheme) > 1 else "file"


def connector_for(uri: str, settings: Settings) -> "Connector":
    scheme = scheme_of(uri)
    if scheme not in CONNECTORS:
        known = ", ".join(f"{s}://" for s in sorted(CONNECTORS))
        raise SourceError(f"{uri}: no connector for '{scheme}://' sources; use a folder or one of {known}")
    return CONNECTORS[scheme](settings)


def _offline(settings: Settings) -> "Embedder":
    from taggers.offline.model import OfflineEmbedder
    from taggers.offline.runtime_files import onnxruntime

    try:
        onnxruntime()  # telemetry off before the model makes its first session
    except ImportError:
        pass  # runtime "torch" without ONNX Runtime installed: nothing to turn off

    return OfflineEmbedder(heads_path=settings.heads_path, runtime=settings.runtime,
                           batch_size=settings.batch_size, threads=settings.threads, precision=settings.precision,
                           cache=settings.data_dir / "cache")


def _clip(settings: Settings) -> "Embedder":
    from taggers.clip_model import ClipEmbedder

    return ClipEmbedder(settings.clip_model, batch_size=settings.batch_size, threads=settings.threads)


EMBEDDERS: dict[str, Callable[[Settings], "Embedder"]] = {"offline": _offline, "clip": _clip}


def embedder(settings: Settings) -> "Embedder":
    if settings.model not in EMBEDDERS:
        raise ConfigError(f"TOOLKIT_MODEL={settings.model!r} is not a model; use one of {', '.join(EMBEDDERS)}")
    return EMBEDDERS[settings.model](settings)


#: Besides TOOLKIT_MODEL, the settings that decide which model (so which model id) an embedder is.
#: Not the precision: any precision in force gives vectors within tolerance of fp32's (taggers/offline/precision.py).
MODEL_SETTINGS: dict[str, tuple[str, ...]] = {"offline": ("heads_path", "runtime"),
                                              "clip": ("clip_model",)}


def model_spec(settings: Settings) -> dict[str, str]:
    """The model settings in force, as recorded on a collection `toolkit reindex` builds
    (paths made absolute, so the record holds from any working directory)."""
    spec = {"model": settings.model}
    for name in MODEL_SETTINGS.get(settings.model, ()):
        value = getattr(settings, name)
        if isinstance(value, Path) or (name == "clip_model" and Path(str(value)).expanduser().is_dir()):
            value = Path(value).expanduser().resolve()
        if value is not None:
            spec[name] = str(value)
    return spec


def with_model_spec(settings: Settings, spec: dict[str, str] | None) -> Settings:
    """Settings whose model is the recorded `spec`, except for what the user set explicitly
    (environment, .env, arguments): an explicit setting is never silently ignored."""
    if not spec:
        return settings
    update: dict[str, object] = {}
    for name in ("model", *MODEL_SETTINGS.get(spec.get("model", ""), ())):
        if name not in settings.model_fields_set:
            value = spec.get(name)
            update[name] = Path(value) if name == "heads_path" and value else value
    return settings.model_copy(update={k: v for k, v in update.items() if v is not None or k == "heads_path"})


def explicit_overrides(settings: Settings, spec: dict[str, str] | None) -> list[str]:
    """The explicit settings that differ from a recorded model spec, as TOOLKIT_X=value."""
    if not spec:
        return []
    wanted = model_spec(settings.model_copy(update={"model": spec.get("model")}))
    out = []
    for name in ("model", *MODEL_SETTINGS.get(spec.get("model", ""), ())):
        if name in settings.model_fields_set and (settings.model if name == "model" else wanted.get(name)) \
                != spec.get(name):
            out.append(f"TOOLKIT_{name.upper()}={getattr(settings, name)}")
    return out


def store_backend(settings: Settings) -> "StoreBackend":
    """Where collections live (an embedded folder or a Chroma server): opens, lists, drops them."""
    from store.backend import ChromaBackend

    return ChromaBackend(settings)


def store(settings: Settings, embedder: "Embedder", collection: str | None = None, *, create: bool = True,
          build_index: bool = True) -> "VectorStore":
    """A collection for `embedder`'s vectors, its filter index keeping the fields filters read."""
    return store_backend(settings).open(collection or settings.collection, model_id=embedder.model_id,
                                        dim=embedder.dim, create=create, build_index=build_index,
                                        filterable=_filterable())


def _filterable() -> "Filterable":
    """The record fields the store's filter index keeps: those filters read (toolkit/records.py)."""
    from store.filter_index import Filterable
    from toolkit.records import INDEXED_KEYS, INDEXED_PREFIXES

    return Filterable(frozenset(INDEXED_KEYS), INDEXED_PREFIXES)


def stored(settings: Settings, name: str) -> "VectorStore | None":
    """Collection `name` as it is, opened with the model that built it (whatever the model in
    use), or None when the store has no such collection: what `toolkit reindex` reads from."""
    from store import collections

    if not collections.exists(settings, name):
        return None
    model_id, dim = collections.built_by(settings, name)
    return store_backend(settings).open(name, model_id=model_id, dim=dim, create=False,  # type: ignore[arg-type]
                                        filterable=_filterable())


def _local_tagger(settings: Settings, embedder: "Embedder") -> "Tagger":
    from taggers.clip_local import LocalTagger

    return LocalTagger(embedder, vocabulary=settings.vocabulary, threshold=settings.tag_threshold,
                       cache=settings.data_dir / "cache")


def _azure(settings: Settings, embedder: "Embedder") -> "Tagger":
    from taggers.azure_custom_vision import AzureCustomVisionTagger

    return AzureCustomVisionTagger.from_settings(settings)


def _gcp(settings: Settings, embedder: "Embedder") -> "Tagger":
    from taggers.gcp_video_intelligence import VideoIntelligenceTagger

    return VideoIntelligenceTagger.from_settings(settings)


TAGGERS: dict[str, Callable[[Settings, "Embedder"], "Tagger"]] = {
    "local": _local_tagger, "azure": _azure, "gcp": _gcp,
}


def tagger(name: str, settings: Settings, embedder: "Embedder") -> "Tagger":
    if name not in TAGGERS:
        raise ConfigError(f"--tagger {name!r} is not a tagger; use one of auto, {', '.join(TAGGERS)}")
    return TAGGERS[name](settings, embedder)


def tagger_class(name: str) -> type | None:
    """The class behind a cloud tagger, for `is_configured` checks; None if its SDK is missing."""
    try:
        if name == "azure":
            from taggers.azure_custom_vision import AzureCustomVisionTagger

            return AzureCustomVisionTagger
        if name == "gcp":
            from taggers.gcp_video_intelligence import VideoIntelligenceTagger

            return VideoIntelligenceTagger
    except ImportError:
        return None
    return None
