"""Which physical collection is behind a collection name, and what built each one.

`TOOLKIT_COLLECTION` (default "catalog") is a name that may point at another physical
collection: `toolkit reindex` builds `catalog--<model>` beside the old one and, once it is
complete, points `catalog` at it; `toolkit collections use` points it back. With no pointer
the name is the collection itself, so stores made before pointers existed work unchanged.

Pointers and each collection's record (the model settings that built it, whether a reindex
into it finished) live in Chroma itself, in a small collection named `toolkit-collections`:
the embedded client and a `chroma run` server over the same folder see the same state.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from store.base import recorded_model_id
from toolkit.ground.errors import StoreError

if TYPE_CHECKING:
    from toolkit.ground.settings import Settings

#: The toolkit's own bookkeeping collection (never listed, never searched).
META = "toolkit-collections"
PRODUCTS_SUFFIX = "-products"
#: Chroma 1.5 accepts names of 3 to 512 characters; stay far below for readability.
MAX_NAME = 120


@dataclass
class CollectionInfo:
    """One media collection as `toolkit collections list` shows it."""

    name: str
    model_id: str | None
    dim: int | None
    records: int
    products: str | None            # its products collection, when there is one
    product_count: int
    active: bool                    # the one TOOLKIT_COLLECTION resolves to
    active_for: list[str] = field(default_factory=list)   # names pointing at it
    model: dict[str, str] | None = None  # the model settings that built it, when recorded
    complete: bool = True           # False while a reindex into it has not finished
    source: str | None = None       # the collection it was re-indexed from


def products_name(name: str) -> str:
    return f"{name}{PRODUCTS_SUFFIX}"


def _client(settings: "Settings"):
    from store.chroma_client import client_for

    return client_for(settings)


def _get(client, name: str):
    """The collection, or None when there is none by that name."""
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name=name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


def _meta(settings: "Settings", create: bool = False):
    client = _client(settings)
    if create:
        return client.get_or_create_collection(name=META, embedding_function=None,
                                               metadata={"toolkit": "collection pointers and records"})
    return _get(client, META)


def _read(settings: "Settings", ids: list[str]) -> dict[str, dict]:
    meta = _meta(settings)
    if meta is None:
        return {}
    res = meta.get(ids=ids, include=["metadatas"])
    return {i: dict(m or {}) for i, m in zip(res["ids"], res["metadatas"])}


def _write(settings: "Settings", id: str, metadata: dict[str, Any]) -> None:
    clean = {k: v for k, v in metadata.items() if v is not None}
    clean["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # Chroma needs a vector per record: one constant dimension, never queried.
    _meta(settings, create=True).upsert(ids=[id], embeddings=[[1.0]], metadatas=[clean])


def exists(settings: "Settings", name: str) -> bool:
    return _get(_client(settings), name) is not None


def built_by(settings: "Settings", name: str) -> tuple[str | None, int | None]:
    """(model id, dim) recorded on a collection by the store when it was created."""
    col = _get(_client(settings), name)
    if col is None:
        raise StoreError(f"no collection named '{name}' in the store; `toolkit collections list` shows them")
    meta = col.metadata or {}
    dim = meta.get("dim")
    return recorded_model_id(meta), int(dim) if dim is not None else None


# ---- pointers ------------------------------------------------------------------------------------

def pointer(settings: "Settings", name: str) -> str | None:
    return _read(settings, [f"alias:{name}"]).get(f"alias:{name}", {}).get("target")


def active(settings: "Settings", name: str | None = None) -> str:
    """The physical collection `name` (default TOOLKIT_COLLECTION) resolves to."""
    name = name or settings.collection
    target = pointer(settings, name)
    if target is None or target == name:
        return name
    if not exists(settings, target):
        raise StoreError(f"'{name}' points at collection '{target}', which is gone; "
                         f"switch to another with `toolkit collections use NAME` (see `toolkit collections list`)")
    return target


def point(settings: "Settings", name: str, target: str) -> None:
    _write(settings, f"alias:{name}", {"kind": "alias", "name": name, "target": target})


def pointers(settings: "Settings") -> dict[str, str]:
    meta = _meta(settings)
    if meta is None:
        return {}
    res = meta.get(where={"kind": "alias"}, include=["metadatas"])
    return {m["name"]: m["target"] for m in res["metadatas"] if m and "name" in m and "target" in m}


# ---- records: what built each collection -------------------------------------------------------

def record(settings: "Settings", name: str) -> dict[str, Any]:
    """What is known of a collection: model settings (`model`, a dict), `complete`, `source`.
    Empty for collections made by `toolkit tag` before any reindex."""
    raw = _read(settings, [f"collection:{name}"]).get(f"collection:{name}")
    if raw is None:
        return {}
    out = dict(raw)
    out["model"] = json.loads(raw["model"]) if raw.get("model") else None
    return out


def save_record(settings: "Settings", name: str, **fields: Any) -> None:
    current = record(settings, name)
    current.update(fields)
    current["kind"], current["name"] = "collection", name
    if isinstance(current.get("model"), dict):
        current["model"] = json.dumps(current["model"], sort_keys=True)
    _write(settings, f"collection:{name}", current)


def target_name(settings: "Settings", name: str, model_id: str) -> str:
    """The physical collection a reindex of `name` with `model_id` builds: `name--<model id>`,
    with a hash added when that would be too long or is taken by another model."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", model_id.lower())
    slug = re.sub(r"\.{2,}", ".", slug).strip("-._") or "model"
    digest = hashlib.sha1(model_id.encode("utf-8")).hexdigest()[:8]
    plain = f"{name}--{slug}"
    hashed = f"{name}--{slug[:max(8, MAX_NAME - len(name) - 11)]}-{digest}"
    candidates = [plain, hashed] if len(plain) <= MAX_NAME else [hashed]
    client = _client(settings)
    for candidate in candidates:
        col = _get(client, candidate)
        if col is None or recorded_model_id(col.metadata) == model_id:
            return candidate
    raise StoreError(f"collection names {', '.join(candidates)} are taken by another model; "
                     f"drop them with `toolkit collections drop NAME` or set TOOLKIT_COLLECTION to another name")


# ---- listing and dropping ------------------------------------------------------------------------

def list_collections(settings: "Settings") -> list[CollectionInfo]:
    client = _client(settings)
    cols = {c.name: c for c in client.list_collections() if c.name != META}
    current = pointer(settings, settings.collection) or settings.collection
    by_target: dict[str, list[str]] = {}
    for alias, target in pointers(settings).items():
        if alias != target:
            by_target.setdefault(target, []).append(alias)
    out = []
    for name in sorted(cols):
        if is_products(name, cols):
            continue
        col, meta = cols[name], cols[name].metadata or {}
        rec = record(settings, name)
        products = products_name(name) if products_name(name) in cols else None
        out.append(CollectionInfo(
            name=name, model_id=recorded_model_id(meta), dim=int(meta["dim"]) if meta.get("dim") is not None else None,
            records=col.count(), products=products, product_count=cols[products].count() if products else 0,
            active=name == current, active_for=sorted(by_target.get(name, [])), model=rec.get("model"),
            complete=bool(rec.get("complete", True)), source=rec.get("source")))
    return out


def is_products(name: str, names) -> bool:
    return name.endswith(PRODUCTS_SUFFIX) and name[:-len(PRODUCTS_SUFFIX)] in names


def check_usable(settings: "Settings", name: str) -> None:
    """Raise unless `name` is a complete media collection a name may point at."""
    _check_media(settings, name, "name the media collection instead")
    rec = record(settings, name)
    if rec.get("complete") is False:
        model = (rec.get("model") or {}).get("model", "NAME")
        raise StoreError(f"collection '{name}' is incomplete: its reindex stopped before the end; finish it with "
                         f"`toolkit reindex --model {model}` (with the same model settings) before using it")


def drop(settings: "Settings", name: str) -> None:
    """Delete a collection and its products collection, with their filter indexes and change
    logs. Refuses one that a name points at."""
    from store.backend import ChromaBackend

    check_droppable(settings, name)
    backend = ChromaBackend(settings)
    for victim in (name, products_name(name)):
        backend.drop(victim)
    meta = _meta(settings)
    if meta is not None:
        meta.delete(ids=[f"collection:{name}"])


def _check_media(settings: "Settings", name: str, products_hint: str) -> None:
    """Raise unless `name` is a media collection (not the bookkeeping one, nor products)."""
    client = _client(settings)
    if name == META or _get(client, name) is None:
        raise StoreError(f"no collection named '{name}' in the store; `toolkit collections list` shows them")
    base = name[:-len(PRODUCTS_SUFFIX)] if name.endswith(PRODUCTS_SUFFIX) else None
    if base and _get(client, base) is not None:
        raise StoreError(f"'{name}' holds the products of '{base}'; {products_hint.format(base=base)}")


def check_droppable(settings: "Settings", name: str) -> None:
    """Raise unless `name` is a media collection no name points at."""
    _check_media(settings, name, "`toolkit collections drop {base}` drops both")
    if name == active(settings):
        raise StoreError(f"'{name}' is the active collection for '{settings.collection}'; switch to another with "
                         f"`toolkit collections use NAME` first")
    users = sorted(a for a, t in pointers(settings).items() if t == name and a != settings.collection)
    if users:
        raise StoreError(f"'{name}' is the active collection for '{users[0]}'; switch it to another with "
                         f"TOOLKIT_COLLECTION={users[0]} toolkit collections use NAME first")
