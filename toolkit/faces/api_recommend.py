"""The recommendation routes of the HTTP API: `create_app` includes `router(...)`.

Errors are the toolkit's exceptions and go through the app's handlers: an unknown product is a
404 with the reason; an unknown user gets trending picks and a note, never an error.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Callable, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from toolkit.recommend.errors import EventsError
from toolkit.recommend.records import Event, Pick, Picks
from toolkit.recommend.service import Recommender

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_K = 100
Where = Annotated[list[str], Query(description="Filters as `field=value` or `price<50`, repeatable.")]


class PickOut(BaseModel):
    product_id: str
    title: str | None
    price: float | None
    currency: str | None
    url: str | None = Field(description="Where to buy the product (the items table's link, else the catalog's).")
    image_url: str | None = Field(description="The product's picture: the items table's http(s) link, else "
                                              "the store's photo of it, served by this service (/media/...).")
    score: float = Field(description="Bought together: the rule's confidence. For a shopper: 0 to 1, what they "
                                     "bought in the last 14 days 0.75 and up; with no events, the product's share "
                                     "of their segment's list (trending's where none is known). Trending: "
                                     "decayed purchases.")
    reason: str = Field(description="Why it was picked: the rule with its confidence and lift, "
                                    "\"because you bought ...\", \"trending in ...\".")
    source: str = Field(description="The signal that picked it: together, repurchase, item, als, variant, "
                                    "trending, content, two_tower.")
    attributes: dict[str, str]
    tags: dict[str, str] = Field(default_factory=dict, description="The product photo's tags, as on search hits.")

    @classmethod
    def of(cls, p: Pick) -> "PickOut":
        """An items table's image may be a path no browser can fetch: then the store's photo, which this
        service serves."""
        item = p.item
        image = item.image if _web_link(item.image) else (f"/media/{item.media_id}" if item.media_id else None)
        return cls(product_id=item.product_id, title=item.title, price=item.price, currency=item.currency,
                   url=item.url, image_url=image, score=p.score, reason=p.reason, source=p.source,
                   attributes=item.attributes, tags=item.tags)


def _web_link(url: str | None) -> bool:
    return bool(url) and url.lower().startswith(("http://", "https://"))


class PicksOut(BaseModel):
    picks: list[PickOut]
    count: int
    note: str | None = Field(description="Why the list is empty or how it was made (e.g. a new user's trending).")
    took_ms: float


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id
    event_type: Literal["view", "cart", "purchase"] = "purchase"
    ts: datetime | None = Field(None, description="When it happened (ISO 8601); now when absent.")
    basket_id: str | None = None
    quantity: float = Field(1.0, ge=0)
    price: float | None = Field(None, ge=0)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=1000)


class ProblemOut(BaseModel):
    index: int = Field(description="The event's position in the request, from 1.")
    reason: str


class EventsOut(BaseModel):
    received: int
    added: int
    already_stored: int
    merged: list[ProblemOut]
    bad: list[ProblemOut]


def router(recommender: Callable[[], Recommender], errors: Callable[..., dict]) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["recommend"])

    def answer(started: float, result: Picks) -> PicksOut:
        return PicksOut(picks=[PickOut.of(p) for p in result.picks], count=len(result.picks), note=result.note,
                        took_ms=round((time.perf_counter() - started) * 1000, 1))

    @api.get("/recommend/together/{product_id}", response_model=PicksOut, responses=errors(404, 422, 503))
    def together(product_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, where: Where = [],
                 min_score: float | None = None) -> PicksOut:
        """Frequently bought together: complements of a product, with the rule's confidence and lift."""
        started = time.perf_counter()
        return answer(started, recommender().together(product_id, k=k, where=where, min_score=min_score))

    @api.get("/recommend/user/{user_id}", response_model=PicksOut, responses=errors(422, 503))
    def for_user(user_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 12, where: Where = [],
                 min_score: float | None = None, buy_again: bool = True) -> PicksOut:
        """Picked for a shopper. A shopper with no events gets trending picks and a note saying so."""
        started = time.perf_counter()
        return answer(started, recommender().for_user(user_id, k=k, where=where, min_score=min_score,
                                                      buy_again=buy_again))

    @api.get("/recommend/trending", response_model=PicksOut, responses=errors(422, 503))
    def trending(k: Annotated[int, Query(ge=1, le=MAX_K)] = 12,
                 facet: Annotated[list[str], Query(description="attribute=value, e.g. index_group_name=Ladieswear")] = [],
                 segment: str | None = None, where: Where = []) -> PicksOut:
        """Top sellers of the recent window with time decay, overall, per facet or per users' segment."""
        started = time.perf_counter()
        facets = dict(f.partition("=")[::2] for f in facet)
        if any(not name or not value for name, value in facets.items()):
            raise EventsError("facet must be attribute=value, e.g. index_group_name=Ladieswear")
        return answer(started, recommender().trending(k=k, facet=facets or None, segment_name=segment, where=where))

    @api.post("/events", response_model=EventsOut, responses=errors(422, 503))
    def record(body: EventsIn) -> EventsOut:
        """Record events as they happen; the shopper's picks follow them at once. A repeated event is
        stored once."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        events = [Event(e.user_id, e.item_id, _utc(e.ts) if e.ts else now, e.event_type, e.basket_id, e.quantity,
                        e.price) for e in body.events]
        report = recommender().record(events)
        if report.bad and not report.added and not report.already_stored:
            raise EventsError("no event could be recorded: " + "; ".join(f"event {p.line}: {p.reason}" for p in report.bad))
        return EventsOut(received=len(events), added=report.added, already_stored=report.already_stored,
                         merged=[ProblemOut(index=p.line, reason=p.reason) for p in report.merged],
                         bad=[ProblemOut(index=p.line, reason=p.reason) for p in report.bad])

    return api


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts
