"""`Toolkit`: the public Python API. The CLI and the HTTP API are thin wrappers around it."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from toolkit import registry
from toolkit.filters import Where
from toolkit.models import Hit, RunReport
from toolkit.settings import Settings, load_settings

if TYPE_CHECKING:
    from store.chroma import ChromaStore
    from taggers.base import Embedder
    from toolkit.catalog import ImportReport
    from toolkit.evaluation import EvalReport
    from toolkit.pipeline import ItemCallback
    from toolkit.planning import DryRunReport


@dataclass
class Stats:
    store: str
    collection: str
    model_id: str
    dim: int
    records: int
    media: int
    images: int
    videos: int
    frames: int
    products: int
    linked_media: int
    tag_counts: dict[str, dict[str, int]] = field(default_factory=dict)


class Toolkit:
    """Tag media into a catalog and search it.

    >>> tk = Toolkit()                       # settings from the environment and .env
    >>> tk.tag("./examples/catalog")          # or "s3://bucket/prefix"
    >>> tk.search(text="black leather sandals for men", k=5)
    """

    def __init__(self, settings: Settings | None = None, *, embedder: "Embedder | None" = None,
                 **overrides: Any) -> None:
        self.settings = settings or load_settings(**overrides)
        self._embedder = embedder
        self._store: "ChromaStore | None" = None
        self._products: "ChromaStore | None" = None

    # Heavy parts load on first use, so constructing a Toolkit (and `toolkit --help`) is instant.
    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            self._embedder = registry.embedder(self.settings)
        return self._embedder

    @property
    def store(self) -> "ChromaStore":
        if self._store is None:
            self._store = registry.store(self.settings, self.embedder)
        return self._store

    @property
    def products_store(self) -> "ChromaStore":
        if self._products is None:
            self._products = registry.store(self.settings, self.embedder,
                                            collection=f"{self.settings.collection}-products")
        return self._products

    def tag(self, source: str | Path, tagger: str = "auto", on_item: "ItemCallback | None" = None,
            on_listed: "Callable[[int], None] | None" = None) -> RunReport:
        """Tag and index every image and video under `source` (a folder or s3://bucket/prefix)."""
        from toolkit.catalog import load_products
        from toolkit.pipeline import Pipeline
        from toolkit.tagging import plan_taggers

        uri = str(source)
        connector = registry.connector_for(uri, self.settings)
        connector.check(uri)
        plan = plan_taggers(tagger, self.settings, self.embedder)
        pipeline = Pipeline(connector=connector, embedder=self.embedder, store=self.store, plan=plan,
                            products=load_products(self.products_store), settings=self.settings,
                            on_item=on_item, on_listed=on_listed)
        return pipeline.run(uri)

    def plan(self, source: str | Path, tagger: str = "auto") -> "DryRunReport":
        """What `tag` would send to each tagger, and the billable units, without calling any."""
        from toolkit.planning import dry_run
        from toolkit.tagging import plan_taggers

        uri = str(source)
        connector = registry.connector_for(uri, self.settings)
        connector.check(uri)
        plan = plan_taggers(tagger, self.settings, self.embedder)
        return dry_run(connector, uri, plan, self.store, self.settings)

    def search(self, text: str | None = None, image: str | Path | bytes | None = None, k: int = 10,
               where: Where = None, min_score: float | None = None) -> list[Hit]:
        """Products most similar to a text, an image (path or bytes), or both."""
        from toolkit.search import load_query_image, search, validate_k
        from toolkit.filters import to_chroma_where

        # Check the request before the model loads: a typo should fail in milliseconds.
        validate_k(k)
        to_chroma_where(where)
        picture = load_query_image(image) if image is not None else None
        return search(self.embedder, self.store, text=text, image=picture, k=k, where=where, min_score=min_score,
                      hybrid_weight=self.settings.hybrid_weight)

    def more_like_this(self, id: str, k: int = 10, where: Where = None,
                       min_score: float | None = None) -> list[Hit]:
        """Products like a product or media item already in the store, by its product_id or media_id."""
        from toolkit.search import more_like_this

        return more_like_this(self.store, id, k=k, where=where, min_score=min_score)

    def import_catalog(self, path: str | Path) -> "ImportReport":
        """Load products from a CSV and link them to the media they name. Re-importing updates."""
        from toolkit.catalog import import_products, read_products

        products = list(read_products(Path(path)))  # a bad file fails before the model loads
        return import_products(products, self.embedder, self.products_store, self.store)

    def evaluate(self, catalog: str | Path, images: str | Path, limit: int | None = None, split: str = "eval",
                 on_item: "ItemCallback | None" = None,
                 on_listed: "Callable[[int], None] | None" = None) -> "EvalReport":
        """Retrieval and tag quality on a labelled catalog, indexed into a scratch collection."""
        from toolkit.evaluation import evaluate

        return evaluate(Path(catalog), Path(images), self, limit=limit, split=split,  # type: ignore[arg-type]
                        on_item=on_item, on_listed=on_listed)

    def stats(self, top: int = 5) -> Stats:
        from store.chroma import describe_location

        media_ids, kinds, linked = set(), Counter(), set()
        groups: dict[str, Counter] = {}
        records = 0
        for _, meta in self.store.iter_metadata():
            records += 1
            mid = meta.get("media_id")
            if mid not in media_ids:
                media_ids.add(mid)
                kinds[meta.get("kind", "image")] += 1
                if meta.get("product_id"):
                    linked.add(mid)
                for key, value in meta.items():
                    if key.startswith("tag_"):
                        groups.setdefault(key[4:], Counter())[value] += 1
        return Stats(store=describe_location(self.settings), collection=self.settings.collection,
                     model_id=self.embedder.model_id, dim=self.embedder.dim, records=records,
                     media=len(media_ids), images=kinds["image"], videos=kinds["video"],
                     frames=records - kinds["image"], products=self.products_store.count(),
                     linked_media=len(linked),
                     tag_counts={g: dict(c.most_common(top)) for g, c in sorted(groups.items())})
