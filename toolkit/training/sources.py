"""The folders a training run reads: one main catalog and any extra ones, and their features.

`toolkit model train --images A --catalog A.csv --images B --catalog B.csv`: the first pair is
the main catalog (the photos the model will mostly see; its eval split and holdout fifth are
left out as `split.py` says), each further pair an extra one. Every photo of an extra catalog
is trained on, except those of products the main catalog holds in a split training must not
see (its ids decide, as for the main catalog's own rows).

Extra photos of another size (the 60x80 px photos of `fashion-products-small` beside the
224x224 px ones of `fashion-products`) are resized to the main photos' size first, so both show
products in the same proportions; with `degrade`, the main photos are also shown shrunk to
the extra photos' size and back up, so that both kinds of photo look alike to the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from taggers.offline import ImageFeaturizer
from toolkit.ground.errors import CatalogError
from toolkit.training.config import Progress
from toolkit.training.features import image_features, shaped_features
from toolkit.training.split import in_share, read_catalog, trains_on, training_rows


def recorded_name(path: Path) -> str:
    """A folder or file as a sidecar records it: with its parent's name, since two sets' photos are
    often both called images/ and their catalogs styles.csv."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


@dataclass
class TrainingSet:
    """One folder of photos and the catalog rows training reads from it."""
    images: Path
    catalog: Path
    rows: list[dict[str, str]]

    @property
    def paths(self) -> list[Path]:
        return [self.images / f"{r['id']}.jpg" for r in self.rows]

    def photo_size(self) -> tuple[int, int]:
        """The (width, height) of the folder's first photo: the size its photos are taken to share."""
        from PIL import Image

        with Image.open(self.paths[0]) as img:
            return img.size


@dataclass
class TrainingData:
    main: TrainingSet
    extra: list[TrainingSet]
    #: Rows with a photo left out (the main catalog's eval split and holdout, and extra rows of those products).
    excluded: int

    @property
    def rows(self) -> list[dict[str, str]]:
        return [r for s in (self.main, *self.extra) for r in s.rows]


def training_data(images_dir: Path, catalog_csv: Path, extra: Sequence[tuple[Path, Path]] = (), *,
                  exclude_eval: bool, limit: int | None, hold_out: bool,
                  required: set[str] | frozenset[str] = frozenset({"id"}), extra_share: float = 1.0) -> TrainingData:
    """The main catalog's training rows (`training_rows`) and every extra catalog's rows with a
    photo, less those of products the main catalog keeps from training; with `extra_share`
    under 1, only that fixed share of them (by id: `split.in_share`)."""
    rows, excluded = training_rows(Path(images_dir), Path(catalog_csv), exclude_eval, limit, hold_out,
                                   required=required)
    main = TrainingSet(Path(images_dir), Path(catalog_csv), rows)
    main_ids = {r["id"] for r in read_catalog(Path(catalog_csv))}
    sets = []
    for images, catalog in extra:
        x_rows, x_excluded = training_rows(Path(images), Path(catalog), exclude_eval=False, limit=None,
                                           required=required)
        kept = [r for r in x_rows if (r["id"] not in main_ids or trains_on(r["id"], exclude_eval, hold_out))
                and in_share(r["id"], extra_share)]
        if not kept:
            raise CatalogError(f"--catalog {catalog}: every photo in {images} belongs to the main catalog's "
                               "eval split or holdout")
        excluded += x_excluded + len(x_rows) - len(kept)
        sets.append(TrainingSet(Path(images), Path(catalog), kept))
    return TrainingData(main, sets, excluded)


def training_features(data: TrainingData, featurizer: ImageFeaturizer, folder: Path, flip: bool, degrade: bool,
                      progress: Progress) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Features of every training photo, main rows first: (photos, mirror images or None,
    degraded copies or None). Extra photos are resized to the main photos' size and have no
    mirror image or degraded copy of their own (their features stand in for both); the main
    photos' degraded copies are shrunk to the first extra folder's photo size and back up."""
    feats, mirror = image_features(data.main.paths, featurizer, folder, flip, progress)
    shape = data.main.photo_size()
    extra = [shaped_features(s.paths, featurizer, folder, shape, None, progress) for s in data.extra]
    degraded = None
    if degrade:
        if not data.extra:
            raise CatalogError("--degrade needs an extra --images/--catalog pair: main photos are degraded to "
                               "the size of its photos")
        small = data.extra[0].photo_size()
        degraded = np.concatenate([shaped_features(data.main.paths, featurizer, folder, shape, small, progress),
                                   *extra])
    all_feats = np.concatenate([feats, *extra])
    all_mirror = np.concatenate([mirror, *extra]) if mirror is not None else None
    return all_feats, all_mirror, degraded
