"""The shipped embedder as `toolkit` builds it, for the benchmarks."""
from __future__ import annotations

from common import CACHE  # noqa: E402


def embedder(**settings):
    from toolkit.core import Toolkit
    from toolkit.ground.settings import load_settings

    return Toolkit(load_settings(data_dir=CACHE / "warm", **settings)).embedder
