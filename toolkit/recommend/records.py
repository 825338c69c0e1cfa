"""Records that cross module lines in the recommendation wing."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

EVENT_TYPES = ("view", "cart", "purchase")


@dataclass(frozen=True)
class Event:
    """One thing a shopper did with one product."""

    user_id: str
    item_id: str
    ts: datetime
    event_type: str = "purchase"
    basket_id: str | None = None
    quantity: float = 1.0
    price: float | None = None


@dataclass
class RowProblem:
    """A row left out of an import, by its line in the file (the header is line 1)."""

    line: int
    reason: str


@dataclass
class ImportReport:
    """What one import did. Every row of the file ends in exactly one of: added, merged, already_stored, bad."""

    source: str
    rows: int = 0
    added: int = 0
    #: Rows identical to an earlier row of the same file: kept as quantity on that event.
    merged: list[RowProblem] = field(default_factory=list)
    #: Events the store held already (the same file imported again, or overlapping files).
    already_stored: int = 0
    bad: list[RowProblem] = field(default_factory=list)
    #: Events kept whose product is not in the item table (`toolkit events items`), with a few examples.
    unknown_items: int = 0
    unknown_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    """An association rule, as mlxtend's association_rules table gives it."""

    antecedents: tuple[str, ...]
    consequents: tuple[str, ...]
    support: float
    confidence: float
    lift: float


@dataclass
class Item:
    """What the recommendation wing knows of a product: the catalog fields a result shows."""

    product_id: str
    title: str | None = None
    price: float | None = None
    currency: str | None = None
    url: str | None = None
    image: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    #: The product's photo in the vector store, for a service that serves it (`/media/{media_id}`).
    media_id: str | None = None
    #: The product photo's tags in the vector store, as search hits show them.
    tags: dict[str, str] = field(default_factory=dict)

    def filled_from(self, other: "Item | None") -> "Item":
        """This item, with what it lacks taken from `other` (the store's card of the same product)."""
        if other is None:
            return self
        return Item(self.product_id, self.title or other.title, self.price if self.price is not None else other.price,
                    self.currency or other.currency, self.url or other.url, self.image or other.image,
                    self.attributes or other.attributes, self.media_id or other.media_id, self.tags or other.tags)


@dataclass
class Pick:
    """One recommendation: looks like a search hit (the product's `Item`), plus why it was picked. The item's
    fields read through (`pick.title`, `pick.price`, ...); `as_dict()` is the flat record clients see."""

    item: Item
    score: float
    reason: str
    source: str

    @property
    def product_id(self) -> str:
        return self.item.product_id

    def __getattr__(self, name: str):
        if name in _ITEM_FIELDS:
            return getattr(self.__dict__["item"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def as_dict(self) -> dict:
        """product_id, score, reason, source, then the item's other fields, as before Pick held an Item."""
        item = asdict(self.item)
        return {"product_id": item.pop("product_id"), "score": self.score, "reason": self.reason,
                "source": self.source, **item}


_ITEM_FIELDS = frozenset(f.name for f in fields(Item))


@dataclass
class Picks:
    """The answer to one recommendation call. `note` says why it is empty or how it was made."""

    picks: list[Pick]
    note: str | None = None
