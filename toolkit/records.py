"""How a media item, its tags and its product become store records, and back into Hits.

One record per picture: an image is one record, a video one record per kept frame (all
under the video's media id, each with its timestamp). Ids are stable: media id from the
URI, plus the content hash, plus the frame index, so a re-run never duplicates.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Iterable

import numpy as np

from store.base import Metadata, Record
from toolkit.ground.models import Box, Hit, Media, MediaRef, Product, Tag

PRODUCT_FIELDS = ("product_id", "title", "price", "currency", "url")
ATTR_PREFIX = "attr_"
TAG_PREFIX = "tag_"
#: The catalog's own value for a tag group (`cat_colour`), where one of its columns says it.
CATALOG_TAG_PREFIX = "cat_"
#: Catalog columns (any case) that state a tag group's value: the styles.csv names and plain ones.
#: Where the catalog says it, a hit shows its value beside the model's, and `--where colour=white`
#: matches either (the catalog's token joins the record's filter tokens).
CATALOG_TAG_COLUMNS = {"articletype": "article_type", "article_type": "article_type", "basecolour": "colour",
                       "colour": "colour", "color": "colour", "gender": "gender"}

# Which record fields filters read: the one list search, facets, the API and the store's filter
# index share. A filter names one of DIRECT_FIELDS, a tag group, or `attr.<catalog attribute>`.
#: Fields stored as-is on every record.
DIRECT_FIELDS = ("product_id", "title", "currency", "kind", "price", "media_id", "uri", "key", "timestamp")
#: Those compared as numbers (price<50).
NUMERIC_FIELDS = ("price", "timestamp")
#: Those offered as filter menus (GET /api/facets, the page).
MENU_FIELDS = ("kind", "product_id", "currency")
#: Those the store's filter index keeps a column for: the categorical and numeric ones, not the
#: per-record unique ones (ids, uris, titles), whose dictionaries cost more than a scan.
INDEXED_CATEGORICAL = ("kind", "currency")
INDEXED_NUMERIC = NUMERIC_FIELDS
#: ...plus the filter tokens (`tags`) and every catalog attribute.
INDEXED_KEYS = (*INDEXED_CATEGORICAL, *INDEXED_NUMERIC, "tags")
INDEXED_PREFIXES = (ATTR_PREFIX,)


def media_id(uri: str) -> str:
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:20]


def record_id(uri: str, sha256: str, frame: int | None) -> str:
    base = f"{media_id(uri)}-{sha256[:12]}"
    return base if frame is None else f"{base}-f{frame:03d}"


def tag_to_dict(tag: Tag) -> dict[str, Any]:
    """The tag's fields in their declared order, without the unset ones (written out by hand:
    `dataclasses.asdict` deep-copies, and was half the cost of building a record)."""
    d: dict[str, Any] = {"group": tag.group, "label": tag.label, "confidence": round(float(tag.confidence), 4),
                         "provider": tag.provider}
    if tag.start is not None:
        d["start"] = tag.start
    if tag.end is not None:
        d["end"] = tag.end
    if tag.box is not None:
        d["box"] = asdict(tag.box)
    return d


def tag_from_dict(d: dict[str, Any]) -> Tag:
    box = d.get("box")
    return Tag(group=d["group"], label=d["label"], confidence=float(d.get("confidence", 0.0)),
               provider=d.get("provider", "?"), start=d.get("start"), end=d.get("end"),
               box=Box(**box) if isinstance(box, dict) else None)


def best_by_group(tags: Iterable[Tag]) -> dict[str, Tag]:
    best: dict[str, Tag] = {}
    for t in tags:
        if t.group not in best or t.confidence > best[t.group].confidence:
            best[t.group] = t
    return best


def filter_token(group: str, label: str) -> str:
    """The form `--where group=label` matches: case-insensitive, whichever provider said it."""
    return f"{group.strip().lower()}:{label.strip().lower()}"


def tag_fields(media_tags: list[Tag], frame_tags: list[Tag], providers: set[str],
               versions: dict[str, str] | None = None) -> Metadata:
    """`providers` are the taggers that have looked at the item, whether or not they gave a
    label: a re-run must not send it to them again. `versions`: the version of each that
    declares one (toolkit/ingest/freshness.py), for `tag --retag`."""
    fields: Metadata = {}
    for group, tag in best_by_group(media_tags).items():
        fields[TAG_PREFIX + group] = tag.label
        fields[f"tagconf_{group}"] = round(float(tag.confidence), 4)
    tokens = sorted({filter_token(t.group, t.label) for t in [*media_tags, *frame_tags]})
    fields["tags"] = tokens
    fields["providers"] = sorted(providers | {t.provider for t in [*media_tags, *frame_tags]})
    fields["tags_json"] = json.dumps([tag_to_dict(t) for t in media_tags])
    if versions:
        fields["tagger_versions"] = json.dumps(versions, sort_keys=True)
    if frame_tags:
        fields["frame_tags_json"] = json.dumps([tag_to_dict(t) for t in frame_tags])
    return fields


def product_fields(product: Product | None) -> Metadata:
    if product is None:
        return {}
    fields: Metadata = {"product_id": product.product_id, "title": product.title,
                        "price": product.price, "currency": product.currency, "url": product.url}
    for name, value in product.attributes.items():
        fields[ATTR_PREFIX + name] = value
        group = CATALOG_TAG_COLUMNS.get(name.strip().lower())
        if group and str(value).strip():
            fields[CATALOG_TAG_PREFIX + group] = str(value).strip()
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def strip_product_fields(meta: Metadata) -> Metadata:
    return {k: v for k, v in meta.items()
            if k not in PRODUCT_FIELDS and not k.startswith((ATTR_PREFIX, CATALOG_TAG_PREFIX))}


def with_product(meta: Metadata, product: Product | None) -> Metadata:
    """A stored record's metadata linked to `product` (or to none), its filter tokens the model's
    tags' plus the catalog's."""
    return linked_to(meta, product_fields(product))


def linked_to(meta: Metadata, fields: Metadata) -> Metadata:
    """`meta` with its product fields replaced by `fields` (product_fields' output), and its
    filter tokens recomputed: the taggers' (from the stored tags) plus the new catalog's."""
    linked = {**strip_product_fields(meta), **fields}
    model = [*stored_media_tags(linked), *stored_frame_tags(linked)]
    return with_catalog_tokens(linked, {filter_token(t.group, t.label) for t in model})


def with_catalog_tokens(meta: Metadata, model_tokens: set[str]) -> Metadata:
    catalog = {filter_token(k[len(CATALOG_TAG_PREFIX):], v) for k, v in meta.items()
               if k.startswith(CATALOG_TAG_PREFIX)}
    tokens = sorted(model_tokens | catalog)
    if tokens or "tags" in meta:
        meta["tags"] = tokens
    return meta


def media_fields(ref: MediaRef, media: Media) -> Metadata:
    return {"media_id": media_id(ref.uri), "uri": ref.uri, "key": ref.key, "name": ref.name,
            "kind": media.kind, "sha256": media.sha256, "fingerprint": ref.fingerprint,
            "mime": media.mime, "duration": media.duration}


def build_records(media: Media, media_tags: list[Tag], frame_tags: dict[int, list[Tag]],
                  product: Metadata | None, providers: set[str] = frozenset(),
                  versions: dict[str, str] | None = None) -> list[Record]:
    """`product`: the linked product's fields as `product_fields` gives them (None: no product);
    its catalog tag values join each record's filter tokens."""
    assert media.embeddings is not None and len(media.embeddings) == len(media.frames)
    base = {**media_fields(media.ref, media), **(product or {})}
    records = []
    for i, frame in enumerate(media.frames):
        frame_no = i if media.kind == "video" else None
        meta = {**base, **tag_fields(media_tags, frame_tags.get(i, []), set(providers), versions)}
        meta = with_catalog_tokens(meta, set(meta.get("tags", [])))
        if frame_no is not None:
            meta.update(frame=frame_no, timestamp=frame.timestamp)
        records.append(Record(id=record_id(media.ref.uri, media.sha256, frame_no),
                              embedding=np.asarray(media.embeddings[i], dtype=np.float32), metadata=meta))
    return records


def stored_media_tags(meta: Metadata) -> list[Tag]:
    return [tag_from_dict(d) for d in json.loads(meta.get("tags_json") or "[]")]


def stored_frame_tags(meta: Metadata) -> list[Tag]:
    return [tag_from_dict(d) for d in json.loads(meta.get("frame_tags_json") or "[]")]


def hit_from_metadata(meta: Metadata, score: float) -> Hit:
    tags = {k[len(TAG_PREFIX):]: v for k, v in meta.items() if k.startswith(TAG_PREFIX)}
    attrs = {k[len(ATTR_PREFIX):]: v for k, v in meta.items() if k.startswith(ATTR_PREFIX)}
    catalog_tags = {k[len(CATALOG_TAG_PREFIX):]: v for k, v in meta.items() if k.startswith(CATALOG_TAG_PREFIX)}
    price = meta.get("price")
    return Hit(product_id=meta.get("product_id"), title=meta.get("title"),
               price=float(price) if price is not None else None, currency=meta.get("currency"),
               url=meta.get("url"), score=round(float(score), 4), tags=tags, media_uri=meta.get("uri", ""),
               timestamp=meta.get("timestamp"), media_id=meta.get("media_id", ""),
               kind=meta.get("kind", "image"), attributes=attrs, media_key=meta.get("key", ""),
               catalog_tags=catalog_tags)
