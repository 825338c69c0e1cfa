"""Cached features of the training photos and captions, computed once and kept on disk.

Image side: the frozen backbone's descriptor (with its mid-level taps) and colour features of
each photo and of its mirror image, keyed by the photo file's SHA-256 (backbone and colour
apart, so changing one does not recompute the other); optionally random views of each photo
(toolkit/training/augment.py). Text side: MiniLM features of each caption, keyed by its SHA-256.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from taggers.offline import (COLOUR_VERSION, LITE0, ImageFeaturizer, TextFeaturizer, backbone_spec, cache_dir,
                             colour_batch, mirrored, to_square)
from toolkit.ground.files import atomic_path
from toolkit.training.config import Progress


def training_cache(cache: Path | None = None) -> Path:
    """The cache folder training reads and writes: `cache`, else DATA_DIR/cache of the settings
    in force (TOOLKIT_DATA_DIR, .env or the default), as every command's model uses."""
    if cache is not None:
        return Path(cache)
    from toolkit.ground.settings import load_settings

    return cache_dir(load_settings().data_dir)


def cached_rows(cache: Path, keys: list[str], compute: Callable[[list[str]], dict[str, np.ndarray]],
                names: tuple[str, ...], chunk: int | None = None) -> dict[str, np.ndarray]:
    """Rows of arrays `names` for each key, computing only keys the npz cache lacks, then saving;
    with `chunk`, saving after each `chunk` keys, so a stopped run keeps what it computed."""
    known: dict[str, int] = {}
    old: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            known = {str(k): i for i, k in enumerate(z["keys"])}
            old = {n: z[n] for n in names}
    todo = sorted({k for k in keys if k not in known})
    step = chunk or max(1, len(todo))
    for start in range(0, len(todo), step):
        part = todo[start:start + step]
        new = compute(part)
        all_keys = list(known) + part
        old = {n: np.concatenate(([old[n]] if old else []) + [new[n]]) for n in names}
        with atomic_path(cache) as tmp:
            np.savez(tmp, keys=np.array(all_keys), **old)
        known = {k: i for i, k in enumerate(all_keys)}
    idx = np.array([known[k] for k in keys], dtype=np.int64)
    return {n: old[n][idx] for n in names}


def file_hashes(paths: list[Path]) -> tuple[list[str], dict[str, Path]]:
    """Each file's SHA-256 (the feature caches' key), and a file for each hash."""
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    return hashes, dict(zip(hashes, paths))


def image_features(paths: list[Path], featurizer: ImageFeaturizer, folder: Path, flip: bool,
                   progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
    """Backbone + colour features of each photo and of its mirror image, cached by file SHA-256
    (backbone and colour apart, so changing one does not recompute the other)."""
    from PIL import Image

    hashes, by_hash = file_hashes(paths)
    size = featurizer.image_size

    def pictures(keys: list[str]) -> Iterable[tuple[int, np.ndarray]]:
        t0 = time.time()
        for i in range(0, len(keys), 256):
            yield i, np.stack([to_square(Image.open(by_hash[h]), size) for h in keys[i: i + 256]])
            done = min(i + 256, len(keys))
            progress(f"features: {done}/{len(keys)} photos ({done / (time.time() - t0):.0f} photos/s)")

    def backbone(keys: list[str]) -> dict[str, np.ndarray]:
        f, m = [], []
        for _, arrs in pictures(keys):
            f.append(featurizer.backbone(arrs))
            m.append(featurizer.backbone(mirrored(arrs)))
        return {"feats": np.concatenate(f), "mirror": np.concatenate(m)}

    def colour(keys: list[str]) -> dict[str, np.ndarray]:
        # The colour descriptor ignores left and right, so a mirror image needs none of its own.
        return {"feats": np.concatenate([colour_batch(arrs) for _, arrs in pictures(keys)])}

    bb = cached_rows(folder / f"backbone-{featurizer.features_key}.npz", hashes, backbone, ("feats", "mirror"))
    # Colour is read from the pictures the backbone sees, so its cache is per picture size.
    col_name = f"colour-{COLOUR_VERSION}" + ("" if size == backbone_spec(LITE0).image_size else f"-{size}px")
    col = cached_rows(folder / f"{col_name}.npz", hashes, colour, ("feats",))["feats"]
    feats = np.concatenate([bb["feats"], col], axis=1)
    return feats, (np.concatenate([bb["mirror"], col], axis=1) if flip else None)


def augmented_features(paths: list[Path], featurizer: ImageFeaturizer, folder: Path, n_views: int,
                       progress: Progress) -> list[np.ndarray]:
    """Backbone + colour features of `n_views` random views of each photo (one array per view),
    cached by file SHA-256 and view number."""
    from PIL import Image

    from toolkit.training.augment import AUGMENT_VERSION, random_view, view_rng

    hashes, by_hash = file_hashes(paths)

    def compute(keys: list[str]) -> dict[str, np.ndarray]:
        out, t0 = [], time.time()
        for i in range(0, len(keys), 128):
            arrs = []
            for key in keys[i: i + 128]:
                h, view = key.rsplit(":", 1)
                arrs.append(random_view(Image.open(by_hash[h]), view_rng(h, int(view)), featurizer.image_size))
            batch = np.stack(arrs)
            out.append(np.concatenate([featurizer.backbone(batch), colour_batch(batch)], axis=1))
            done = min(i + 128, len(keys))
            progress(f"view features: {done}/{len(keys)} ({done / (time.time() - t0):.0f} views/s)")
        return {"feats": np.concatenate(out)}

    keys = [f"{h}:{v}" for v in range(n_views) for h in hashes]
    cache = folder / f"views-{AUGMENT_VERSION}-{featurizer.features_key}-{COLOUR_VERSION}.npz"
    feats = cached_rows(cache, keys, compute, ("feats",))["feats"]
    return [feats[v * len(paths):(v + 1) * len(paths)] for v in range(n_views)]


def text_features(texts: list[str], featurizer: TextFeaturizer, cache: Path, progress: Progress) -> np.ndarray:
    """MiniLM features of each caption, cached by the caption's SHA-256."""
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    by_key = dict(zip(keys, texts))

    def compute(todo: list[str]) -> dict[str, np.ndarray]:
        progress(f"text features: {len(todo)} new captions")
        return {"feats": featurizer([by_key[k] for k in todo])}

    return cached_rows(cache, keys, compute, ("feats",))["feats"]


def shaped_features(paths: list[Path], featurizer: ImageFeaturizer, folder: Path, shape: tuple[int, int],
                    degrade_to: tuple[int, int] | None, progress: Progress) -> np.ndarray:
    """Backbone + colour features of each photo first resized to `shape` (w, h), the main
    folder's photo size, so that an extra folder's photos have the main one's proportions;
    with `degrade_to`, shrunk to that size and back up to `shape` (a 224 px photo made to look
    like a small one). No mirror images: these rows are shown as they are. Cached by file
    SHA-256 in a file named by both sizes."""
    from PIL import Image

    hashes, by_hash = file_hashes(paths)
    size = featurizer.image_size

    def picture(h: str) -> np.ndarray:
        img = Image.open(by_hash[h]).convert("RGB")
        if degrade_to is not None:
            img = img.resize(degrade_to, Image.BICUBIC, reducing_gap=2.0)
        if img.size != shape:
            img = img.resize(shape, Image.BICUBIC)
        return to_square(img, size)

    def compute(keys: list[str]) -> dict[str, np.ndarray]:
        out, t0 = [], time.time()
        for i in range(0, len(keys), 256):
            batch = np.stack([picture(h) for h in keys[i: i + 256]])
            out.append(np.concatenate([featurizer.backbone(batch), colour_batch(batch)], axis=1))
            done = min(i + 256, len(keys))
            progress(f"features: {done}/{len(keys)} resized photos ({done / (time.time() - t0):.0f} photos/s)")
        return {"feats": np.concatenate(out)}

    name = f"{shape[0]}x{shape[1]}" + (f"-from-{degrade_to[0]}x{degrade_to[1]}" if degrade_to else "")
    cache = folder / f"shaped-{name}-{featurizer.features_key}-{COLOUR_VERSION}.npz"
    return cached_rows(cache, hashes, compute, ("feats",), chunk=4096)["feats"]
