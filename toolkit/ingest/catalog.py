"""Products from a CSV, linked to the media that show them.

Products live in their own collection (`<collection>-products`, vectors from the product
title), and their fields are also copied onto every media record that shows them, so
search filters (`price<50`, `brand=Puma`) run inside the vector query.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from store.base import Record
from toolkit.ground.errors import CatalogError
from toolkit.ground.models import MediaRef, Product
from toolkit.records import product_fields, with_product

if TYPE_CHECKING:
    from store.base import VectorStore
    from taggers.base import Embedder

ALIASES = {
    "product_id": ("product_id", "id", "sku", "productid"),
    "title": ("title", "name", "productdisplayname", "product_name"),
    "price": ("price",),
    "currency": ("currency",),
    "url": ("url", "purchase_url", "link", "product_url"),
    "media": ("media", "media_keys", "images", "image", "media_key"),
}
MEDIA_SEPARATORS = re.compile(r"[;|]")


@dataclass
class ImportReport:
    products: int = 0
    new: int = 0
    updated: int = 0
    media_linked: int = 0


def _columns(header: list[str]) -> dict[str, str]:
    lowered = {h.strip().lower(): h for h in header}
    found = {}
    for field, names in ALIASES.items():
        for n in names:
            if n in lowered:
                found[field] = lowered[n]
                break
    missing = [f for f in ("product_id", "title") if f not in found]
    if missing:
        raise CatalogError(f"the catalog has no {' or '.join(missing)} column; "
                           f"name them {' and '.join(missing)} (columns found: {', '.join(header)})")
    return found


def _price(raw: str, line: int) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw.replace(",", ""))
    except ValueError:
        raise CatalogError(f"line {line}: price {raw!r} is not a number; write it like 49.90") from None
    if math.isnan(value) or value < 0:
        raise CatalogError(f"line {line}: price {raw!r} must be zero or more")
    return value


def read_products(path: Path) -> Iterator[Product]:
    if not path.is_file():
        raise CatalogError(f"{path}: no such file; give the path of a products CSV")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise CatalogError(f"{path}: the file is empty; it needs a header row")
        cols = _columns(reader.fieldnames)
        known = set(cols.values())
        for line, row in enumerate(reader, start=2):
            pid = (row.get(cols["product_id"]) or "").strip()
            if not pid:
                raise CatalogError(f"{path}, line {line}: empty product id; every row needs one")
            media = [m.strip() for m in MEDIA_SEPARATORS.split(row.get(cols.get("media", ""), "") or "") if m.strip()]
            attrs = {k.strip(): (v or "").strip() for k, v in row.items()
                     if k and k not in known and (v or "").strip()}
            yield Product(product_id=pid, title=(row.get(cols["title"]) or "").strip(),
                          price=_price(row.get(cols.get("price", ""), ""), line),
                          currency=(row.get(cols.get("currency", ""), "") or "").strip() or None,
                          url=(row.get(cols.get("url", ""), "") or "").strip() or None,
                          media=media, attributes=attrs)


class ProductIndex:
    """Media key -> product, for linking media as they are tagged."""

    def __init__(self, products: Iterable[Product]) -> None:
        self.by_media: dict[str, Product] = {}
        for p in products:
            for m in p.media:
                self.by_media[m] = p

    def find(self, ref: MediaRef) -> Product | None:
        return self.by_media.get(ref.uri) or self.by_media.get(ref.key) or self.by_media.get(ref.name)


def product_to_meta(p: Product) -> dict:
    meta = product_fields(p)
    meta["media"] = list(p.media)
    return meta


def product_from_meta(meta: dict) -> Product:
    attrs = {k[5:]: v for k, v in meta.items() if k.startswith("attr_")}
    price = meta.get("price")
    return Product(product_id=meta["product_id"], title=meta.get("title", ""),
                   price=float(price) if price is not None else None, currency=meta.get("currency"),
                   url=meta.get("url"), media=list(meta.get("media", [])), attributes=attrs)


def load_products(products: "VectorStore") -> ProductIndex:
    return ProductIndex(product_from_meta(m) for _, m in products.iter_metadata())


def import_products(rows: list[Product], embedder: "Embedder", products: "VectorStore", media: "VectorStore",
                    batch: int = 512) -> ImportReport:
    report = ImportReport()
    seen: dict[str, Product] = {}
    for p in rows:
        seen[p.product_id] = p  # a later row for the same id wins, as in a spreadsheet
    items = list(seen.values())
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        existing = {r.id for r in products.get(ids=[p.product_id for p in chunk])}
        vecs = embedder.embed_texts([_product_text(p) for p in chunk])
        products.upsert([Record(id=p.product_id, embedding=v, metadata=product_to_meta(p), document=p.title)
                         for p, v in zip(chunk, vecs)])
        report.updated += len(existing)
        report.new += len(chunk) - len(existing)
    report.products = len(items)
    report.media_linked = link_media(items, media)
    return report


def _product_text(p: Product) -> str:
    return p.title or p.product_id


def link_media(items: list[Product], media: "VectorStore", chunk: int = 200) -> int:
    """Copy product fields onto the media records that show each product, and clear stale links."""
    index = ProductIndex(items)
    ids = [p.product_id for p in items]
    candidates: dict[str, dict] = {}
    for start in range(0, len(ids), chunk):
        for r in media.get(where={"product_id": {"$in": ids[start:start + chunk]}}):
            candidates[r.id] = r.metadata
    keys = list(index.by_media)
    for start in range(0, len(keys), chunk):
        part = keys[start:start + chunk]
        where = {"$or": [{f: {"$in": part}} for f in ("uri", "key", "name")]}
        for r in media.get(where=where):
            candidates[r.id] = r.metadata
    linked: set[str] = set()
    updates = []
    for rid, meta in candidates.items():
        ref = MediaRef(uri=meta.get("uri", ""), key=meta.get("key", ""))
        product = index.find(ref)
        # A record linked to a product in this file that no longer lists it loses the link.
        new_meta = with_product(meta, product)
        if product is None and meta.get("product_id") not in ids:
            continue
        if product is not None:
            linked.add(meta.get("media_id", rid))
        if new_meta != meta:
            updates.append(Record(id=rid, embedding=np.empty(0), metadata=new_meta))
    if updates:
        media.replace_metadata(updates)
    return len(linked)

