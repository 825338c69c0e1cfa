"""The HTTP API's request and response models: what the OpenAPI schema shows clients."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from toolkit.ground.errors import shown
from toolkit.ground.models import Hit
from toolkit.search.query import MAX_K

FilterValue = str | int | float
QueryText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class SearchOptions(BaseModel):
    """What every search takes besides its query."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=MAX_K, description="Most products to return.")
    filters: dict[str, FilterValue] = Field(
        default_factory=dict, examples=[{"colour": "black", "attr.brand": "Puma"}],
        description="Exact matches, all required: a tag group (`colour`, `article_type`, ...), a catalog "
                    "attribute as `attr.<column>`, or `kind`, `product_id`, `currency`. "
                    "GET /api/facets lists the fields this store has.")
    price_min: float | None = Field(None, ge=0, allow_inf_nan=False, description="Lowest price, inclusive.")
    price_max: float | None = Field(None, ge=0, allow_inf_nan=False, description="Highest price, inclusive.")
    min_score: float | None = Field(None, allow_inf_nan=False,
                                    description="Leave out products scoring under this, so fewer than k may come back.")

    @field_validator("filters", mode="before")
    @classmethod
    def _text_values(cls, filters: object) -> object:
        """Tags, kinds and ids are text: `{"colour": true}` would match nothing, silently. A
        number is taken for a catalog attribute (`attr.size`), as its text."""
        if not isinstance(filters, dict):
            return filters
        out = {}
        for name, value in filters.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and str(name).startswith("attr."):
                value = str(int(value)) if float(value).is_integer() else str(value)
            elif not isinstance(value, str):
                raise ValueError(f"filter {shown(name)} takes a text value, e.g. \"black\"; "
                                 f"got {json.dumps(value)[:40]}")
            if not value.strip():
                raise ValueError(f"filter {shown(name)} has an empty value")
            out[name] = value
        return out


class TextSearch(SearchOptions):
    text: QueryText = Field(description="What to look for, e.g. \"Puma black running shoes\".")


class HitOut(BaseModel):
    product_id: str | None
    title: str | None
    price: float | None
    currency: str | None
    url: str | None = Field(description="Where to buy the product (the catalog's link).")
    score: float = Field(description="Vector similarity, plus the keyword bonus for text queries.")
    tags: dict[str, str] = Field(description="The taggers' best label per group (article_type, colour, ...).")
    catalog_tags: dict[str, str] = Field(description="Where the catalog states a group's value: the catalog's, shown "
                                                     "beside the taggers'; a filter on the group matches either.")
    attributes: dict[str, str]
    media_id: str
    media_key: str = Field(description="The matched media's key relative to its source (images/10001.jpg, or the "
                                       "S3 key under the tagged prefix); never a path on the server.")
    kind: Literal["image", "video"]
    timestamp: float | None = Field(description="For a video hit: the second of the frame that matched.")
    image_url: str = Field(description="The matched picture (the video frame for a video), served by this service.")

    @classmethod
    def of(cls, hit: Hit) -> "HitOut":
        # media_uri stays server-side: clients get pictures through image_url, never a path.
        image_url = f"/media/{hit.media_id}" + (f"?t={hit.timestamp:g}" if hit.timestamp is not None else "")
        return cls(product_id=hit.product_id, title=hit.title, price=hit.price, currency=hit.currency, url=hit.url,
                   score=hit.score, tags=hit.tags, catalog_tags=hit.catalog_tags, attributes={k: str(v) for k, v in hit.attributes.items()},
                   media_id=hit.media_id, media_key=hit.media_key, kind=hit.kind, timestamp=hit.timestamp, image_url=image_url)


class SearchResponse(BaseModel):
    hits: list[HitOut]
    count: int
    k: int
    took_ms: float


class StoreInfo(BaseModel):
    backend: str
    collection: str
    records: int


class ModelInfo(BaseModel):
    id: str
    dim: int


class Health(BaseModel):
    status: Literal["ok"]
    store: StoreInfo
    model: ModelInfo
    hybrid_weight: float
    max_upload_mb: float


class FacetsOut(BaseModel):
    fields: list[str] = Field(description="Every name a filter may use.")
    tags: dict[str, dict[str, int]] = Field(description="Tag group -> label -> media count.")
    attributes: dict[str, dict[str, int]] = Field(description="Catalog attributes with few values -> value -> count.")
    kinds: dict[str, int]
    price_min: float | None
    price_max: float | None


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    detail: str = Field(description="What is wrong and what to do about it.")
    errors: list[FieldError] | None = Field(None, description="For 422 on request fields: each field's problem.")


def errors(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorOut} for code in codes}


# -- filters ---------------------------------------------------------------------------------
