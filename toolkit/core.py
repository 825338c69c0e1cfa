"""`Toolkit`: the public Python API. The CLI and the HTTP API are thin wrappers around it."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from taggers.base import provenance_of
from toolkit import registry
from toolkit.ground.errors import ConfigError, EmptyStoreError, ModelMismatchError, ToolkitError
from toolkit.search.filters import Where
from toolkit.ground.models import Hit, RunReport
from toolkit.ground.settings import Settings, load_settings

if TYPE_CHECKING:
    from store.base import VectorStore
    from store.collections import CollectionInfo
    from taggers.base import Embedder
    from toolkit.ingest.catalog import ImportReport
    from toolkit.ingest.pipeline import ItemCallback, MediaCallback
    from toolkit.ingest.planning import DryRunReport
    from toolkit.recommend.records import Item
    from toolkit.recommend.service import Recommender
    from toolkit.ingest.reindex import ReindexCallback, ReindexReport


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
    #: How the machines that wrote the collection computed its image vectors (precision, CPU).
    made_with: list[str] = field(default_factory=list)


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
        self._embedder_given = embedder is not None
        self._collection: str | None = None
        self._store: "VectorStore | None" = None
        self._products: "VectorStore | None" = None
        #: Share model calls between concurrent searches (toolkit/search/batching.py): the search
        #: service turns it on; one search at a time gains nothing from it.
        self.batch_queries = False
        self._batcher: Any = None
        self._batcher_lock = threading.Lock()
        self._has_items = False
        #: Whether a filtered query that finds no current filter index starts building one in the
        #: background: right for a long-lived process, not for a one-shot command, which would
        #: exit mid-build (it uses a saved index, or the store's own filtering).
        self.build_filter_index = True

    # Heavy parts load on first use, so constructing a Toolkit (and `toolkit --help`) is instant.
    @property
    def collection(self) -> str:
        """The collection in use: the one TOOLKIT_COLLECTION points at (`toolkit reindex`,
        `toolkit collections use`), else the collection of that name itself."""
        if self._collection is None:
            from store.collections import active

            self._collection = active(self.settings)
        return self._collection

    @property
    def model_settings(self) -> Settings:
        """The settings that pick the embedding model: the model recorded for the collection in
        use (by `toolkit reindex`), except where TOOLKIT_MODEL and its settings are set explicitly."""
        from store.collections import record

        return registry.with_model_spec(self.settings, record(self.settings, self.collection).get("model"))

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            self._embedder = registry.embedder(self.model_settings)
        return self._embedder

    @property
    def query_embedder(self) -> "Embedder":
        """The embedder searches use: `embedder`, through query lanes when `batch_queries`."""
        if not self.batch_queries:
            return self.embedder
        embedder = self.embedder
        with self._batcher_lock:
            if self._batcher is None or self._batcher.inner is not embedder:
                from toolkit.search.batching import BatchingEmbedder

                self._batcher = BatchingEmbedder(embedder, max_batch=self.settings.batch_size)
            return self._batcher

    @property
    def store(self) -> "VectorStore":
        if self._store is None:
            self._store = self._open(self.collection)
        return self._store

    @property
    def products_store(self) -> "VectorStore":
        if self._products is None:
            from store.collections import products_name

            self._products = self._open(products_name(self.collection))
        return self._products

    def _open(self, name: str) -> "VectorStore":
        try:
            return registry.store(self.settings, self.embedder, collection=name,
                                  build_index=self.build_filter_index)
        except ModelMismatchError as exc:
            overrides = [] if self._embedder_given else self.setting_conflicts()
            if not overrides:
                raise
            raise ModelMismatchError(
                f"{exc.args[0].split(';')[0]}; {', '.join(overrides)} (environment or .env) overrides the model "
                f"recorded for it: unset {'them' if len(overrides) > 1 else 'it'}, or switch collections with "
                f"`toolkit collections use NAME`") from None

    def setting_conflicts(self) -> list[str]:
        """Model settings set explicitly (environment, .env, arguments) that differ from the
        model recorded for the collection in use, as TOOLKIT_X=value: they win, so searches fail
        with a model mismatch until they are unset."""
        from store.collections import record

        return registry.explicit_overrides(self.settings, record(self.settings, self.collection).get("model"))

    def warm(self) -> int:
        """Open the store, load (or start building) its filter index and load the text model now,
        for a long-lived process: a wrong setting fails here, not on the first query, and the
        first query is as fast as the rest. Returns the collection's record count."""
        count = self.store.count()
        self.store.warm_filter_index()
        self.prepare_queries()
        return count

    def reopened(self) -> "Toolkit":
        """A new Toolkit on the same settings that resolves the collection (and its model)
        afresh; this one stays as it was for whoever still uses it. An embedder given to this
        one is given to the new one too (and a collection of another model is then refused)."""
        new = Toolkit(self.settings, embedder=self._embedder if self._embedder_given else None)
        new.batch_queries = self.batch_queries
        return new

    def _switched(self) -> None:
        """The collection in use changed: open it (and its model) afresh on next use."""
        self._collection = self._store = self._products = None
        self._has_items = False
        if not self._embedder_given:
            self._embedder = None

    def tag(self, source: str | Path, tagger: str = "auto", on_item: "ItemCallback | None" = None,
            on_listed: "Callable[[int], None] | None" = None, retag: bool = False,
            on_media: "MediaCallback | None" = None) -> RunReport:
        """Tag and index every image and video under `source` (a folder or s3://bucket/prefix).
        Items already stored unchanged are skipped, unless `retag`: then the items an earlier
        version of a tagger tagged run through it again, keeping the tags of taggers not run
        now. `on_media` sees each stored item with its embeddings (and image features)."""
        from toolkit.ingest.catalog import load_products
        from toolkit.ingest.pipeline import Pipeline
        from toolkit.ingest.tagging import plan_taggers

        uri = str(source)
        connector = registry.connector_for(uri, self.settings)
        connector.check(uri)
        plan = plan_taggers(tagger, self.settings, self.embedder)
        pipeline = Pipeline(connector=connector, embedder=self.embedder, store=self.store, plan=plan,
                            products=load_products(self.products_store), settings=self.settings,
                            on_item=on_item, on_listed=on_listed, retag=retag, on_media=on_media)
        report = pipeline.run(uri)
        self._note_made_with()
        self.prepare_queries()
        return report

    def prepare_queries(self) -> None:
        """Ready the text side for searches now (the offline model exports its text tower once per
        data directory, about 10 s): a tag run pays it, so the first search is as fast as the rest."""
        self.embedder.embed_texts(["warm up"])

    def _note_made_with(self) -> None:
        """Record on the collection how this machine computed the vectors it wrote (precision, CPU):
        a store moved to another machine keeps saying where its vectors came from."""
        line = provenance_of(self.embedder)
        if line:
            self.store.note_made_with(line)

    def plan(self, source: str | Path, tagger: str = "auto", retag: bool = False) -> "DryRunReport":
        """What `tag` would send to each tagger, and the billable units, without calling any."""
        from toolkit.ingest.planning import dry_run
        from toolkit.ingest.tagging import plan_taggers

        uri = str(source)
        connector = registry.connector_for(uri, self.settings)
        connector.check(uri)
        plan = plan_taggers(tagger, self.settings, self.embedder)
        return dry_run(connector, uri, plan, self.store, self.settings, retag)

    def search(self, text: str | None = None, image: str | Path | bytes | None = None, k: int = 10,
               where: Where = None, min_score: float | None = None) -> list[Hit]:
        """Products most similar to a text, an image (path or bytes), or both."""
        from toolkit.search.query import load_query_image, search, validate_k
        from toolkit.search.filters import to_chroma_where

        # Check the request before the model loads: a typo should fail in milliseconds.
        validate_k(k)
        to_chroma_where(where)
        picture = load_query_image(image) if image is not None else None
        self._require_items()
        return search(self.query_embedder, self.store, text=text, image=picture, k=k, where=where, min_score=min_score,
                      hybrid_weight=self.settings.hybrid_weight)

    def more_like_this(self, id: str, k: int = 10, where: Where = None,
                       min_score: float | None = None) -> list[Hit]:
        """Products like a product or media item already in the store, by its product_id or media_id."""
        from toolkit.search.query import more_like_this

        self._require_items()
        return more_like_this(self.store, id, k=k, where=where, min_score=min_score)

    def _require_items(self) -> None:
        """An empty store answers every query with nothing: say so, naming the store and the fix,
        instead of "no results". A search from a folder without a store does not create one."""
        if self._has_items:
            return
        fresh = not self.settings.uses_chroma_server and not self.settings.resolved_chroma_path.exists()
        if fresh or self.store.count() == 0:
            where = registry.store_backend(self.settings).describe_location()
            name = self.settings.collection if fresh else self.collection
            raise EmptyStoreError(
                f"nothing tagged in collection {name!r} of the {where} yet: run "
                "`toolkit tag SOURCE` (a folder or s3://bucket/prefix), or set TOOLKIT_DATA_DIR to the "
                "folder that holds your store")
        self._has_items = True  # a store that held items once is not checked on every query

    def import_catalog(self, path: str | Path) -> "ImportReport":
        """Load products from a CSV and link them to the media they name. Re-importing updates."""
        from toolkit.ingest.catalog import import_products, read_products

        products = list(read_products(Path(path)))  # a bad file fails before the model loads
        return import_products(products, self.embedder, self.products_store, self.store)

    def stats(self, top: int = 5) -> Stats:
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
        return Stats(store=registry.store_backend(self.settings).describe_location(), collection=self.collection,
                     model_id=self.embedder.model_id, dim=self.embedder.dim, records=records,
                     media=len(media_ids), images=kinds["image"], videos=kinds["video"],
                     frames=records - kinds["image"], products=self.products_store.count(),
                     linked_media=len(linked),
                     tag_counts={g: dict(c.most_common(top)) for g, c in sorted(groups.items())},
                     made_with=self.store.made_with)

    # ---- changing models: collections behind TOOLKIT_COLLECTION -------------------------------

    def reindex(self, model: str, *, heads_path: str | Path | None = None,
                clip_model: str | None = None, skip_missing: bool = False,
                on_item: "ReindexCallback | None" = None,
                on_listed: "Callable[[int], None] | None" = None) -> "ReindexReport":
        """Rebuild the collection in use with another model (a name of `registry.EMBEDDERS`,
        with the model settings in force, which `heads_path` and `clip_model` override)
        into a new collection beside it, and switch to it once every item is there.

        Items that cannot be read again are listed in the report's `missing`; the switch waits
        for them (rerun when they are back) unless `skip_missing`, which leaves them out.
        A rerun continues an interrupted run without embedding again what is done."""
        from toolkit.ingest.reindex import reindex

        new_settings = self._new_model_settings(model, heads_path=heads_path, clip_model=clip_model)
        source_model = None
        if not self._embedder_given:
            try:  # record what built the old collection, so `collections use` can go back to it
                from store.collections import built_by

                if self.embedder.model_id == built_by(self.settings, self.collection)[0]:
                    source_model = registry.model_spec(self.model_settings)
            except ToolkitError:
                pass
        report = reindex(self.settings, self.settings.collection, self.collection, new_settings,
                         source_model=source_model, skip_missing=skip_missing, on_item=on_item,
                         on_listed=on_listed)
        if report.switched:
            self._switched()
            report.warnings = self.conflict_warnings()
        return report

    def _new_model_settings(self, model: str, **overrides: Any) -> Settings:
        if model not in registry.EMBEDDERS:
            raise ConfigError(f"--model {model!r} is not a model; use one of {', '.join(registry.EMBEDDERS)}")
        fields = registry.MODEL_SETTINGS.get(model, ())
        given = {k: v for k, v in overrides.items() if v is not None}
        for name in given:
            if name not in fields:
                flag = "--heads" if name == "heads_path" else f"--{name.replace('_', '-')}"
                owners = ", ".join(m for m, names in registry.MODEL_SETTINGS.items() if name in names)
                raise ConfigError(f"{flag} does not apply to --model {model}; it applies to --model {owners}")
        if "heads_path" in given:
            given["heads_path"] = Path(given["heads_path"])
        base = self.model_settings if not self._embedder_given else self.settings
        return base.model_copy(update={"model": model, **given})

    def conflict_warnings(self) -> list[str]:
        """`setting_conflicts` as a sentence, for after a switch."""
        overrides = self.setting_conflicts()
        if not overrides:
            return []
        return [f"{', '.join(overrides)} is set in the environment or .env and overrides the model of "
                f"'{self.collection}': searches will fail with a model mismatch until you unset it"]

    def collections(self) -> "list[CollectionInfo]":
        """Every media collection in the store: model, records, products, which one is in use."""
        from store.collections import list_collections

        return list_collections(self.settings)

    def use_collection(self, name: str) -> "CollectionInfo":
        """Point TOOLKIT_COLLECTION at collection `name` (e.g. back to the one before a reindex)."""
        from store.collections import check_usable, point

        check_usable(self.settings, name)
        point(self.settings, self.settings.collection, name)
        self._switched()
        return next(c for c in self.collections() if c.name == name)

    def drop_collection(self, name: str,
                        confirm: "Callable[[CollectionInfo], bool] | None" = None) -> "CollectionInfo | None":
        """Delete collection `name` and its products collection; refuses the one in use.
        `confirm(info)` is asked after the checks; when it says no, nothing is dropped (None)."""
        from store.collections import check_droppable, drop

        check_droppable(self.settings, name)
        info = next(c for c in self.collections() if c.name == name)
        if confirm is not None and not confirm(info):
            return None
        drop(self.settings, name)
        return info

    @property
    def recommend(self) -> "Recommender":
        """Recommendations from shoppers' events (toolkit/recommend/): `.together(product_id)`,
        `.for_user(user_id)`, `.trending()`, and the events they come from."""
        if getattr(self, "_recommender", None) is None:
            from toolkit.recommend.service import Recommender

            def lookalikes(product_id: str, n: int) -> list[str]:
                return [h.product_id for h in self.more_like_this(product_id, k=n) if h.product_id]

            def vectors():
                from toolkit.recommend.content import from_store

                if not self.store.count():
                    return None
                try:
                    titles = self.products_store
                except ToolkitError:  # a catalog collection from another model: the photos alone still serve
                    titles = None
                return from_store(self.store, titles)

            def catalog():
                from toolkit.recommend.models import Catalog

                return Catalog(self.store.name, self.store.collection_id, self.store.model_id)

            def products(ids: list[str]) -> "dict[str, Item]":
                from toolkit.records import hit_from_metadata
                from toolkit.recommend.records import Item

                found: dict[str, Item] = {}
                for record in self.store.get(where={"product_id": {"$in": ids}}):
                    hit = hit_from_metadata(record.metadata, 0.0)
                    # A photo shows the product whole; a video's frame may not.
                    if hit.product_id and (hit.product_id not in found or hit.kind == "image"):
                        found[hit.product_id] = Item(hit.product_id, hit.title, hit.price, hit.currency, hit.url,
                                                     None, {k: str(v) for k, v in hit.attributes.items()},
                                                     hit.media_id or None, hit.tags)
                return found

            self._recommender = Recommender.for_settings(self.settings, neighbours=lookalikes, vectors=vectors,
                                                         catalog=catalog, products=products)
        return self._recommender
