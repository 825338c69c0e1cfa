"""`Recommender`: what `Toolkit(...).recommend` gives, and what the CLI and the HTTP API call.

    >>> rec = Toolkit().recommend
    >>> rec.import_events("transactions.csv")      # or s3://bucket/key, CSV or Parquet
    >>> rec.train()                                # models beside the events database
    >>> rec.together("0706016001").picks           # bought together, without other colours
    >>> rec.for_user("customer-1", k=12).picks     # picked for a shopper
    >>> rec.trending(facet={"index_group_name": "Ladieswear"}).picks
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import pandas as pd

from toolkit.ground.errors import ToolkitError
from toolkit.recommend import picks as ranking
from toolkit.recommend import reasons
from toolkit.recommend.errors import StaleModels, UnknownProduct
from toolkit.recommend.events import EventStore
from toolkit.recommend.filters import Where, clauses, matches
from toolkit.recommend.models import Catalog, Models, Options, StepCallback, build, describe
from toolkit.recommend.picks import Candidate, Weights
from toolkit.recommend.records import Event, ImportReport, Item, Pick, Picks, Rule
from toolkit.recommend.segments import segment
from toolkit.recommend.sources import ReadS3, read_source

if TYPE_CHECKING:
    from toolkit.recommend.content import ItemVectors
    from toolkit.recommend.evaluate import EvalReport
    from toolkit.ground.settings import Settings

#: Finds products that look like a product (the vector store's nearest neighbours), for products no basket holds.
Neighbours = Callable[[str, int], list[str]]
#: The store's vector of each product (content picks), or None when the store has none.
VectorSource = Callable[[], "ItemVectors | None"]
#: The vector store's collection and model the models are built beside, or None without a store.
CatalogSource = Callable[[], "Catalog | None"]
#: The vector store's card (title, price, link, photo) of each of some products: what the items table lacks.
ProductSource = Callable[[list[str]], "dict[str, Item]"]
MODELS_FILE = "models.pkl"
TRAIN_HINT = "run `toolkit recommend train`"
ALL_TYPES = ("purchase", "cart", "view")
#: A session (no account, a few views): what was bought with what they look at leads; nothing was bought.
SESSION_WEIGHTS = Weights(repurchase=0, repurchase_days=0, item=1.0, als=0.3, trending=0.3, variant=0.5)


@dataclass
class TrainReport:
    events: int
    users: int
    items: int
    path: str
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    #: The collection and model the models were built beside (None without a vector store).
    catalog: dict | None = None


class Recommender:
    def __init__(self, data_dir: Path, *, store: EventStore | None = None, neighbours: Neighbours | None = None,
                 read_s3: ReadS3 | None = None, options: Options | None = None, weights: Weights | None = None,
                 vectors: VectorSource | None = None, catalog: CatalogSource | None = None,
                 products: ProductSource | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._products = products
        self._vectors = vectors
        self._catalog_source = catalog
        self._catalog: tuple[Catalog | None] | None = None
        self._store = store
        self._neighbours = neighbours
        self._read_s3 = read_s3
        self.options = options or Options()
        self.weights = weights or Weights()
        self._models: Models | None = None
        self._models_mtime: float | None = None
        self._lock = threading.Lock()
        self._item_cache: tuple[int, dict[str, Item]] | None = None

    @classmethod
    def for_settings(cls, settings: "Settings", neighbours: Neighbours | None = None,
                     vectors: VectorSource | None = None, catalog: CatalogSource | None = None,
                     products: ProductSource | None = None) -> "Recommender":
        def read_s3(uri: str) -> bytes:
            import boto3

            bucket, _, key = uri[5:].partition("/")
            client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region)
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()

        return cls(settings.data_dir, neighbours=neighbours, read_s3=read_s3, vectors=vectors, catalog=catalog,
                   products=products)

    @property
    def events(self) -> EventStore:
        if self._store is None:
            self._store = EventStore(self.data_dir / "events.duckdb")
        return self._store

    def close(self) -> None:
        """Close the events database (opened on first use); the object opens it again if used after."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def catalog(self) -> Catalog | None:
        """The collection in use, asked once: a Toolkit keeps one collection for its life."""
        if self._catalog is None:
            self._catalog = (self._catalog_source() if self._catalog_source else None,)
        return self._catalog[0]

    @property
    def models_path(self) -> Path:
        """One folder per collection, so that training for one collection never replaces another's models."""
        root = self.data_dir / "recommend"
        catalog = self.catalog
        return root / catalog.collection / MODELS_FILE if catalog else root / MODELS_FILE

    # -- importing ---------------------------------------------------------------------------------

    def import_events(self, uri: str | Path, mapping: Mapping[str, str] | None = None) -> ImportReport:
        """Events from a CSV or Parquet file; `mapping` names the file's columns (e.g. {"user_id": "customer_id"})."""
        return self.events.import_events(read_source(uri, self._read_s3), dict(mapping or {}))

    def import_users(self, uri: str | Path, id_column: str | None = None) -> ImportReport:
        return self.events.import_users(read_source(uri, self._read_s3), id_column)

    def import_items(self, uri: str | Path, id_column: str | None = None) -> ImportReport:
        self._item_cache = None
        return self.events.import_items(read_source(uri, self._read_s3), id_column)

    def record(self, events: Sequence[Event]) -> ImportReport:
        """Events as they happen; a shopper's picks follow them at once."""
        return self.events.add_events(events)

    # -- models ------------------------------------------------------------------------------------

    def rules(self, min_support: float, min_confidence: float, min_lift: float | None = None,
              max_len: int | None = None, algorithm: str = "fpgrowth") -> list[Rule]:
        from toolkit.recommend.baskets import baskets
        from toolkit.recommend.rules import mine_rules

        found = baskets(self.events.frame(), self.options.basket_window_days)
        return mine_rules(found, min_support, min_confidence, min_lift, max_len, algorithm)  # type: ignore[arg-type]

    def train(self, on_step: StepCallback | None = None) -> TrainReport:
        """Build every model from all events and keep it beside the events database."""
        started = time.perf_counter()
        models = self._build(on_step)
        models.save(self.models_path)
        with self._lock:
            self._models, self._models_mtime = models, self.models_path.stat().st_mtime
        return TrainReport(self.events.count(), len(models.data.users), len(models.data.items), str(self.models_path),
                           round(time.perf_counter() - started, 2), models.seconds, models.catalog)

    def models(self) -> Models:
        """The models `train` built (read again when it runs anew); without them, built now, in memory."""
        with self._lock:
            path = self.models_path
            mtime = path.stat().st_mtime if path.is_file() else None
            if mtime is not None and mtime != self._models_mtime:
                loaded = Models.load(path)
                if loaded is None:
                    raise StaleModels(f"the recommendation models in {path} were written by an older toolkit; "
                                      f"{TRAIN_HINT}")
                self._check(loaded, path)
                self._models, self._models_mtime = loaded, mtime
            if self._models is None:
                if mtime is None:
                    self._refuse_others()
                self._models = self._build(None)
            return self._models

    def _check(self, models: Models, path: Path) -> None:
        current = self.catalog.as_dict() if self.catalog else None
        if models.catalog != current:
            now = self.catalog.describe() if self.catalog else "no collection"
            raise StaleModels(f"the recommendation models in {path} were built from {describe(models.catalog)}, "
                              f"not {now} in use; {TRAIN_HINT}")

    def _refuse_others(self) -> None:
        """Models trained for another collection (before a reindex or `collections use`) must not pass for
        this one's; building afresh in memory would hide that a train is due."""
        root = self.data_dir / "recommend"
        others = sorted(p for p in root.glob(f"**/{MODELS_FILE}") if p != self.models_path)
        if others:
            now = self.catalog.describe() if self.catalog else "no collection"
            built = f"collection '{others[0].parent.name}'" if others[0].parent != root else "an older toolkit"
            raise StaleModels(f"no recommendation models for {now}; those in {others[0]} were built for {built}; "
                              f"{TRAIN_HINT}")

    def _build(self, on_step: StepCallback | None) -> Models:
        store = self.events
        latest = store.latest()
        now = (latest + timedelta(seconds=1)) if latest else datetime.now()
        items = {i: it.attributes for i, it in store.items().items()}
        models = build(store.frame(types=ALL_TYPES), now, store.stamp(), store.users(), items, self.options, on_step,
                       vectors=self.item_vectors())
        models.catalog = self.catalog.as_dict() if self.catalog else None
        return models

    def item_vectors(self) -> "ItemVectors | None":
        """The store's product vectors for content picks; None without a store or products in it."""
        if self._vectors is None:
            return None
        try:
            return self._vectors()
        except ToolkitError:
            return None

    # -- recommending ------------------------------------------------------------------------------

    def together(self, product_id: str, k: int = 10, where: Where = None, min_score: float | None = None) -> Picks:
        """Products bought with `product_id`, best first (confidence, then lift), without its other colours.
        A product no basket holds gets the complements of the products that look like it, marked so."""
        models = self.models()
        known = product_id in models.data.item_index or bool(self.events.items([product_id]))
        if not known and not self._in_store(product_id):
            raise UnknownProduct(f"product {product_id!r} is in neither the events nor the items (nor the vector "
                                 "store); import it with `toolkit events items` or `toolkit events import`")
        found = ranking.together(models, product_id, _pool(k, where))
        note = None
        if not found:
            found, note = self._together_by_looks(models, product_id, k)
        out = self._finish(found, k, where, min_score, lambda c, items: reasons.together(models, c, items))
        if not out.picks and note is None:
            note = (f"no basket holds {product_id} with another product {models.options.min_baskets} times or more"
                    if not found else "no complement meets the filters")
        out.note = note
        return out

    def _in_store(self, product_id: str) -> bool:
        """Whether the vector store holds the product: a tagged product nobody bought yet is known by its looks."""
        if self._neighbours is None:
            return False
        try:
            self._neighbours(product_id, 1)
        except ToolkitError:
            return False
        return True

    def _together_by_looks(self, models: Models, product_id: str, k: int) -> tuple[list[Candidate], str | None]:
        if self._neighbours is None:
            return [], f"no basket holds {product_id}, and no vector store is attached to find products like it"
        try:
            neighbours = [n for n in self._neighbours(product_id, 10) if n != product_id]
        except ToolkitError as exc:
            return [], f"no basket holds {product_id}, and products like it cannot be searched: {exc}"
        found: dict[str, Candidate] = {}  # each complement once, through the closest lookalike that has it
        for n in neighbours:
            for c in ranking.together(models, n, k):
                if c.item_id not in found and c.item_id != product_id:
                    found[c.item_id] = Candidate(c.item_id, c.score, "together-lookalike", n)
        ranked = sorted(found.values(), key=lambda c: -c.score)
        return ranked, None if ranked else f"no basket holds {product_id} or the products that look like it"

    def for_user(self, user_id: str, k: int = 12, where: Where = None, min_score: float | None = None,
                 buy_again: bool = True) -> Picks:
        """Picks for a shopper: their history blended with CF, other colours and trending; a shopper
        without events gets trending in their segment (age band, gender) or overall."""
        models = self.models()
        history = self.events.user_events(user_id)
        seg = models.segments.get(user_id) or segment(self.events.user(user_id))
        if history.empty:
            found = ranking.cold_start(models, _pool(k, where), seg, self.options.cold_start)
            in_segment = bool(seg) and any(c.because == seg for c in found)
            note = f"no events for user {user_id!r}: " + ("trending in their segment" if in_segment else
                                                          "trending overall")
        else:
            now = max(models.now, history["ts"].max().to_pydatetime() + timedelta(seconds=1))
            found = ranking.for_history(models, history, now, _pool(k, where), user_id=user_id, weights=self.weights,
                                        buy_again=buy_again, segment=seg)
            note = None
        facts = reasons.facts(history)
        out = self._finish(found, k, where, min_score, lambda c, items: reasons.for_user(c, items, facts))
        if not found:
            note = "no purchases at all yet: import some with `toolkit events import`"
        elif not out.picks:
            note = (note + "; " if note else "") + "no pick meets the filters"
        out.note = note
        return out

    def for_session(self, item_ids: Sequence[str], k: int = 12, where: Where = None) -> Picks:
        """Picks for a shopper without an account from the products of their session."""
        models = self.models()
        history = pd.DataFrame({"item_id": list(item_ids), "event_type": "view", "quantity": 1.0,
                                "ts": pd.Timestamp(models.now)})
        found = ranking.for_history(models, history, models.now, _pool(k, where) + len(item_ids),
                                    weights=SESSION_WEIGHTS, buy_again=False)
        found = [c for c in found if c.item_id not in set(item_ids)]
        facts = reasons.facts(history)
        return self._finish(found, k, where, None, lambda c, items: reasons.for_user(c, items, facts))

    def trending(self, k: int = 12, facet: Mapping[str, str] | None = None, segment_name: str | None = None,
                 where: Where = None) -> Picks:
        """Top sellers of the recent window (time-decayed), overall, in a segment, or among items whose
        attribute has a value (facet, e.g. {"index_group_name": "Ladieswear"})."""
        models = self.models()
        attributes = {i: it.attributes for i, it in self.events.items().items()} if facet else None
        found = ranking.trending(models, _pool(k, where), segment_name or "all", facet, attributes)
        label = ", ".join(facet.values()) if facet else segment_name
        out = self._finish(found, k, where, None, lambda c, items: f"trending in {label}" if label else "trending now")
        if not out.picks:
            out.note = (f"nothing bought in the last {models.options.trending_window_days:g} days"
                        + (f" in {label}" if label else "") + (" meets the filters" if where else ""))
        return out

    def evaluate(self, weeks: int = 8, k: int = 12, progress: Callable[[str], None] | None = None) -> "EvalReport":
        from toolkit.recommend.evaluate import evaluate

        items = {i: it.attributes for i, it in self.events.items().items()}
        return evaluate(self.events.frame(types=ALL_TYPES), self.events.users(), items, weeks, k, self.options,
                        progress=progress, vectors=self.item_vectors(), weights=self.weights)

    # -- results -----------------------------------------------------------------------------------

    def _items(self) -> dict[str, Item]:
        """The items table, read once per process and again after an items import through this object
        (another process cannot import while this one holds the database)."""
        if self._item_cache is None:
            self._item_cache = (self.events.item_count(), self.events.items())
        return self._item_cache[1]

    def _finish(self, found: list[Candidate], k: int, where: Where, min_score: float | None,
                reason: Callable[[Candidate, dict[str, Item]], str]) -> Picks:
        wanted = clauses(where)
        items = self._items()
        # Filters see a product as it is shown: the items table's entry filled from the store's card (price, tags).
        seen = self._cards(items, [c.item_id for c in found]) if wanted else items
        chosen = []
        for c in found:
            if min_score is not None and c.score < min_score:
                continue
            if wanted and not matches(seen.get(c.item_id), wanted):
                continue
            chosen.append(c)
            if len(chosen) >= k:
                break
        shown = self._cards(items, [c.item_id for c in chosen] + [c.because for c in chosen if c.because])
        out = []
        for c in chosen:
            item = shown.get(c.item_id) or Item(c.item_id)
            out.append(Pick(item, round(c.score, 6), reason(c, shown), c.source))
        return Picks(out)

    def _cards(self, items: dict[str, Item], ids: list[str]) -> dict[str, Item]:
        """The items table's entries of `ids`, filled from the store's cards where they lack a title or photo
        (a shop that tagged its photos with a catalog need not import its products again as items)."""
        shown = {i: items[i] for i in ids if i in items}
        missing = sorted({i for i in ids if not (i in shown and shown[i].title and shown[i].image)})
        if missing and self._products is not None:
            try:
                cards = self._products(missing)
            except ToolkitError:
                cards = {}
            for i, card in cards.items():
                shown[i] = shown[i].filled_from(card) if i in shown else card
        return shown


def _pool(k: int, where: Where) -> int:
    """Candidates ranked before filters and min_score cut them down to k: more when filters may drop many."""
    return max(500, 50 * k) if where else 5 * k
