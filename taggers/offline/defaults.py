"""The offline model's defaults: Settings' own field defaults, read here so none is restated.

The model never reads the environment or `.env` itself: the registry (or another caller)
passes the data directory, runtime and precision in force. Without them it falls back on
the defaults `toolkit.ground.settings.Settings` declares.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def setting_default(name: str) -> Any:
    """The default of one `Settings` field (e.g. "precision" -> "auto")."""
    from toolkit.ground.settings import Settings

    return Settings.model_fields[name].default


def cache_dir(data_dir: Path | None = None) -> Path:
    """Where derived files (ONNX exports, int8 models, feature caches) go: DATA_DIR/cache.

    Without `data_dir` this still reads the settings (TOOLKIT_DATA_DIR, .env, or the default),
    for callers that have not been given a data directory yet (taggers/clip_local.py, bench/);
    the model itself never takes this path: it is handed its cache or uses `default_cache()`."""
    if data_dir is None:
        from toolkit.ground.settings import load_settings

        data_dir = load_settings().data_dir
    return Path(data_dir).expanduser() / "cache"


def default_cache() -> Path:
    """DATA_DIR/cache for Settings' default data directory."""
    return cache_dir(setting_default("data_dir"))
