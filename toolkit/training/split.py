"""The fixed train/eval split of the fashion catalog, decided by each product id alone.

The split is a pure function of the id (a SHA-1 bucket), so it never changes between
machines, runs or catalog orderings, and nothing has to be stored to reproduce it.
Training must never see an eval item; `trains_on` decides that in one place, and
`training_rows` (what a training run reads) checks it again.
Choosing between training settings must not look at the eval split either: for that,
`toolkit model train --hold-out` also leaves out a fixed fifth of the training split
(the "holdout" split), and `toolkit eval --split holdout` scores it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Literal

from toolkit.ground.errors import CatalogError, SourceError
from toolkit.ground.files import csv_rows

#: Share of ids that go to eval. 8,083 photos give about 1,600 eval items.
EVAL_FRACTION = 0.2
#: Changing the salt would reshuffle the split and invalidate every reported figure.
_SALT = "toolkit-split-v1:"
SPLIT_NAME = "sha1-v1-20pct"
#: Share of the training split held out by `--hold-out`, drawn with a salt of its own.
HOLDOUT_FRACTION = 0.2
_HOLDOUT_SALT = "toolkit-holdout-v1:"

Split = Literal["train", "eval", "holdout", "all"]


def _bucket(salt: str, product_id: str) -> float:
    digest = hashlib.sha1((salt + str(product_id).strip()).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_eval(product_id: str) -> bool:
    """True when this product id belongs to the evaluation split."""
    return _bucket(_SALT, product_id) < EVAL_FRACTION


def is_holdout(product_id: str) -> bool:
    """True for the training-split ids that `--hold-out` training leaves out (never an eval id)."""
    return not is_eval(product_id) and _bucket(_HOLDOUT_SALT, product_id) < HOLDOUT_FRACTION


_SHARE_SALT = "toolkit-extra-share-v1:"


def in_share(product_id: str, share: float) -> bool:
    """Whether an id belongs to a fixed `share` of ids (by its own SHA-1 bucket): the extra photos
    `--extra-share` keeps, the same on every machine and run."""
    return share >= 1.0 or _bucket(_SHARE_SALT, product_id) < share


def trains_on(product_id: str, exclude_eval: bool = True, hold_out: bool = False) -> bool:
    """Whether training may see this id: never an eval id (unless `exclude_eval` is off), nor
    with `hold_out` one of the holdout fifth."""
    return not (exclude_eval and is_eval(product_id)) and not (hold_out and is_holdout(product_id))


def in_split(product_id: str, split: Split) -> bool:
    """Whether an id belongs to `split`; "train" includes the holdout fifth."""
    if split == "all":
        return True
    if split == "eval":
        return is_eval(product_id)
    if split == "holdout":
        return is_holdout(product_id)
    return trains_on(product_id)


def read_catalog(catalog_csv: Path) -> list[dict[str, str]]:
    """All rows of a styles.csv-like file, with whitespace stripped from every value."""
    return [row for _, row in csv_rows(catalog_csv)]


def rows_for(catalog_csv: Path, split: Split, images_dir: Path | None = None) -> list[dict[str, str]]:
    """Rows of one split; with `images_dir`, only rows whose `<id>.jpg` exists there."""
    rows = [r for r in read_catalog(catalog_csv) if in_split(r["id"], split)]
    if images_dir is not None:
        rows = [r for r in rows if (images_dir / f"{r['id']}.jpg").is_file()]
    return rows


def train_rows(catalog_csv: Path, images_dir: Path | None = None) -> list[dict[str, str]]:
    return rows_for(catalog_csv, "train", images_dir)


def eval_rows(catalog_csv: Path, images_dir: Path | None = None) -> list[dict[str, str]]:
    return rows_for(catalog_csv, "eval", images_dir)


def training_rows(images_dir: Path, catalog_csv: Path, exclude_eval: bool, limit: int | None,
                  hold_out: bool = False, required: Iterable[str] = ("id",)) -> tuple[list[dict], int]:
    """The rows a training run sees: those with a photo that `trains_on` allows, the first
    `limit` of them; also how many rows with a photo were left out. `required`: the columns
    the catalog must have."""
    if not images_dir.is_dir():
        raise SourceError(f"--images {images_dir}: not a folder of <id>.jpg photos")
    if not catalog_csv.is_file():
        raise CatalogError(f"--catalog {catalog_csv}: no such file")
    rows = read_catalog(catalog_csv)
    missing = set(required) - set(rows[0] if rows else {})
    if missing:
        raise CatalogError(f"--catalog {catalog_csv}: missing columns {', '.join(sorted(missing))}")
    rows = [r for r in rows if (images_dir / f"{r['id']}.jpg").is_file()]
    kept = [r for r in rows if trains_on(r["id"], exclude_eval, hold_out)]
    if limit:
        kept = kept[:limit]
    if exclude_eval:
        # The one guarantee every reported figure rests on.
        assert not any(is_eval(r["id"]) for r in kept), "eval item in the training set"
    if len(kept) < 8:
        raise CatalogError(f"--catalog {catalog_csv}: only {len(kept)} training photos found in {images_dir}")
    return kept, len(rows) - len(kept)
