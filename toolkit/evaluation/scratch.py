"""Indexing the evaluated photos through the real pipeline, into a scratch collection removed afterwards.

The photos are linked into a temporary folder and tagged with the local tagger into
`eval-<random>`; the stored vectors and tags are read back in the items' order, and the
collection (with its products collection and saved filter index) is dropped through the
store's own `drop`, whatever happens.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from toolkit.evaluation.catalog import LabelledItem
from toolkit.ground.errors import StoreError

if TYPE_CHECKING:
    from toolkit.core import Toolkit
    from toolkit.ground.models import Media
    from toolkit.ingest.pipeline import ItemCallback


@dataclass
class Indexed:
    """What the pipeline stored for each photo, in the items' order (None rows for photos it skipped)."""
    embeddings: np.ndarray
    stored: list[dict | None]
    #: The image features the tagger read, per photo; None when the embedder gives none.
    features: list[np.ndarray | None]
    problems: list[str]


def index_scratch(tk: "Toolkit", items: list[LabelledItem], on_item: "ItemCallback | None" = None,
                  on_listed: Callable[[int], None] | None = None) -> Indexed:
    """Tag the photos into a fresh collection through the real pipeline, and read back each
    photo's vector and stored metadata; the features the tagger read are kept on the way (the
    store keeps vectors, not features), so scoring the tags needs no second backbone pass."""
    from toolkit.core import Toolkit

    name = f"eval-{uuid.uuid4().hex[:12]}"
    scratch = Toolkit(tk.settings.model_copy(update={"collection": name}), embedder=tk.embedder)
    folder = Path(tempfile.mkdtemp(prefix="toolkit-eval-"))
    features: dict[str, np.ndarray] = {}

    def keep_features(media: "Media") -> None:
        if media.features is not None and len(media.features):
            features[media.ref.key] = media.features[0]  # a video's first frame stands for it, as below

    try:
        keys = _link_photos(items, folder)
        report = scratch.tag(folder, tagger="local", on_item=on_item, on_listed=on_listed, on_media=keep_features)
        emb, stored = _read_back(scratch, keys)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        drop_scratch(tk, name)
    problems = [f.reason for f in [*report.skipped, *report.failed]]
    return Indexed(emb, stored, [features.get(k) for k in keys], problems)


def _link_photos(items: list[LabelledItem], folder: Path) -> list[str]:
    """One link per row named by its position, so a stored record's key leads back to its row
    even when two rows share a photo name."""
    keys = []
    for i, it in enumerate(items):
        key = f"{i:06d}{it.image.suffix.lower()}"
        try:
            os.symlink(it.image.resolve(), folder / key)
        except OSError:  # no symlinks (some Windows setups): copy instead
            shutil.copyfile(it.image, folder / key)
        keys.append(key)
    return keys


def _read_back(scratch: "Toolkit", keys: list[str], chunk: int = 500) -> tuple[np.ndarray, list[dict | None]]:
    by_key: dict[str, tuple[np.ndarray, dict]] = {}
    for start in range(0, len(keys), chunk):
        for r in scratch.store.get(where={"key": {"$in": keys[start:start + chunk]}}, include_embeddings=True):
            # A video has one record per frame; its first frame stands for it.
            if r.metadata.get("key") not in by_key or r.metadata.get("frame", 0) == 0:
                by_key[r.metadata["key"]] = (r.embedding, r.metadata)
    dim = scratch.embedder.dim
    emb = np.stack([by_key[k][0] if k in by_key else np.zeros(dim, np.float32) for k in keys]) if keys else \
        np.zeros((0, dim), np.float32)
    return emb.astype(np.float32), [by_key[k][1] if k in by_key else None for k in keys]



def drop_scratch(tk: "Toolkit", name: str) -> None:
    """Drop the scratch collection `name` and its products collection with store.collections'
    `drop` (which also removes their saved filter indexes), judged by the user's settings, under
    which no name points at it. One never created (the run stopped first) is nothing to drop."""
    from store.collections import drop

    try:
        drop(tk.settings, name)
    except StoreError:
        pass
