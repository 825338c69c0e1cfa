"""The labelled catalog an evaluation reads: its label columns, its rows with their photos, one split of them.

A styles.csv row's photo is `<id>.jpg` under the images folder; a products CSV row's is its
first media entry. The split is toolkit/training/split.py's, so eval photos are the ones
training never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from toolkit.ground.errors import CatalogError, ConfigError
from toolkit.ground.files import csv_header

if TYPE_CHECKING:
    from taggers.clip_local import Group

Split = Literal["eval", "holdout", "all"]


@dataclass
class LabelledItem:
    product_id: str
    title: str
    image: Path
    labels: dict[str, str]  # catalog column (articleType, ...) -> label



def label_columns(groups: Sequence["Group"], header: Sequence[str]) -> dict[str, str]:
    """Tag group -> the catalog's column for it: the vocabulary's `column` (or the group's own
    name), matched case-insensitively, so styles.csv and a products CSV both work."""
    lowered = {h.strip().lower(): h.strip() for h in header}
    found = {}
    for g in groups:
        for name in (g.column, g.name):
            if name and name.lower() in lowered:
                found[g.name] = lowered[name.lower()]
                break
    return found


def read_labelled(catalog_csv: Path, images: Path, columns: dict[str, str]) -> tuple[list[LabelledItem], list[str]]:
    """Catalog rows with their photo. A styles.csv row's photo is `<id>.jpg`; a products CSV
    row's is its first media entry, under `images`. Rows without a photo are named, not fatal."""
    from toolkit.ingest.catalog import read_products

    items, missing = [], []
    for p in read_products(catalog_csv):
        name = p.media[0] if p.media else f"{p.product_id}.jpg"
        path = _image_path(images, name)
        if path is None:
            missing.append(f"{p.product_id}: no photo {name} under {images}")
            continue
        wanted = set(columns.values())
        labels = {k: v for k, v in p.attributes.items() if k in wanted and v}
        items.append(LabelledItem(p.product_id, p.title, path, labels))
    return items, missing


def _image_path(images: Path, name: str) -> Path | None:
    name = name.removeprefix("file://")
    candidates = [Path(name)] if Path(name).is_absolute() else [images / name, images / Path(name).name]
    return next((c for c in candidates if c.is_file()), None)


def select(items: list[LabelledItem], split: Split, limit: int | None) -> list[LabelledItem]:
    """The rows of one split (toolkit/training/split.py: eval, holdout or all); then the first `limit`, in file order."""
    from toolkit.training.split import in_split

    if split not in ("eval", "holdout", "all"):
        raise ConfigError(f"split {split!r} is not a split; use eval, holdout or all")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} must be 1 or more")
    chosen = [it for it in items if in_split(it.product_id, split)]
    return chosen[:limit] if limit else chosen



def catalog_header(catalog_csv: Path) -> list[str]:
    """The catalog's column names (stripped; a byte-order mark is no part of the first)."""
    if not catalog_csv.is_file():
        raise CatalogError(f"{catalog_csv}: no such file; give a styles.csv or products CSV")
    return csv_header(catalog_csv)


def item_key(item: LabelledItem) -> str:
    """Names a scored photo across runs: its product and picture (a product may have several)."""
    return f"{item.product_id}/{item.image.name}"
