"""The fixed train/eval split of the fashion catalog, decided by each product id alone.

The split is a pure function of the id (a SHA-1 bucket), so it never changes between
machines, runs or catalog orderings, and nothing has to be stored to reproduce it.
Training must never see an eval item; `train_rows` enforces that in one place.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Literal

#: Share of ids that go to eval. 8,083 photos give about 1,600 eval items.
EVAL_FRACTION = 0.2
#: Changing the salt would reshuffle the split and invalidate every reported figure.
_SALT = "toolkit-split-v1:"
SPLIT_NAME = "sha1-v1-20pct"

Split = Literal["train", "eval", "all"]


def is_eval(product_id: str) -> bool:
    """True when this product id belongs to the evaluation split."""
    digest = hashlib.sha1((_SALT + str(product_id).strip()).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return bucket < EVAL_FRACTION


def read_catalog(catalog_csv: Path) -> list[dict[str, str]]:
    """All rows of a styles.csv-like file, with whitespace stripped from every value."""
    with open(catalog_csv, newline="", encoding="utf-8") as fh:
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(fh)]


def rows_for(catalog_csv: Path, split: Split, images_dir: Path | None = None) -> list[dict[str, str]]:
    """Rows of one split; with `images_dir`, only rows whose `<id>.jpg` exists there."""
    rows = read_catalog(catalog_csv)
    if split != "all":
        want_eval = split == "eval"
        rows = [r for r in rows if is_eval(r["id"]) == want_eval]
    if images_dir is not None:
        rows = [r for r in rows if (images_dir / f"{r['id']}.jpg").is_file()]
    return rows


def train_rows(catalog_csv: Path, images_dir: Path | None = None) -> list[dict[str, str]]:
    return rows_for(catalog_csv, "train", images_dir)


def eval_rows(catalog_csv: Path, images_dir: Path | None = None) -> list[dict[str, str]]:
    return rows_for(catalog_csv, "eval", images_dir)
