"""The HTTP API and search page: `create_app(toolkit)` gives a FastAPI app over one Toolkit.

Every search goes through `Toolkit.search` / `Toolkit.more_like_this`, the same path as the
CLI, so a query gives the same products and scores either way. Errors are the toolkit's
own exceptions, turned into status codes in one place (`STATUS`).
"""
from __future__ import annotations

import json
import logging
import threading
from contextlib import asynccontextmanager
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError

from toolkit.core import Toolkit
from toolkit.faces.api_errors import BodyLimit, JsonErrors, UnsupportedUpload, UploadTooLarge, add_error_handlers
from toolkit.faces.api_schemas import (FacetsOut, Health, HitOut, ModelInfo, SearchOptions, SearchResponse, StoreInfo,
                                       TextSearch, errors)
from toolkit.faces.current import CurrentToolkit
from toolkit.ground.errors import (MediaError, QueryError,
                            shown)
from toolkit.search.facets import FacetCache, Facets
from toolkit.media.decode import set_decode_budget, sniff
from toolkit.faces.media_server import MediaServer, Redirect
from toolkit.ground.models import Hit

log = logging.getLogger("toolkit.faces.api")
STATIC = Path(__file__).resolve().parent / "static"
#: JSON requests are small; only the image upload gets a larger body limit.
JSON_BODY_LIMIT = 64 * 1024
#: Room for the multipart framing and the form fields sent with an upload.
MULTIPART_SLACK = 64 * 1024
MiB = 1024 * 1024


def build_where(options: SearchOptions, facets: Facets | None) -> dict[str, object]:
    """API filters -> the `--where` mapping Toolkit.search takes. Unknown fields are refused, since a
    misspelt field would otherwise match nothing and look like an empty catalog."""
    where: dict[str, object] = {}
    if options.filters:
        known = facets.filter_fields() if facets is not None else []
        for name, value in options.filters.items():
            if name not in known:
                raise QueryError(f"unknown filter field {shown(name)}; this store can filter on: {', '.join(known)}")
            where[name] = value
    if options.price_min is not None and options.price_max is not None and options.price_min > options.price_max:
        raise QueryError(f"price_min ({options.price_min:g}) is above price_max ({options.price_max:g})")
    if options.price_min is not None:
        where["price>="] = options.price_min
    if options.price_max is not None:
        where["price<="] = options.price_max
    return where


# -- the app ---------------------------------------------------------------------------------------

def create_app(toolkit: Toolkit | None = None) -> FastAPI:
    """The search service over `toolkit` (default: one built from the environment and .env).
    It follows the collection pointer (toolkit/faces/current.py): after a `toolkit reindex` or
    `toolkit collections use` elsewhere, searches move to the new collection within seconds."""
    tk = toolkit or Toolkit()
    tk.batch_queries = tk.settings.batch_queries
    current = CurrentToolkit(tk)
    set_decode_budget(tk.settings.decode_pixels)
    upload_limit = int(tk.settings.max_upload_mb * MiB)
    facets = FacetCache(lambda: current.get().store)
    media = MediaServer(lambda: current.get().store, tk.settings)
    app = FastAPI(title="toolkit search", version="1", lifespan=_warming(facets),
                  description="Search a tagged product catalog by text, photo, or a product already in it.")
    app.state.current = current
    app.add_middleware(BodyLimit, limits={"/api/search/image": upload_limit + MULTIPART_SLACK},
                       default=JSON_BODY_LIMIT, message=_too_large(tk.settings.max_upload_mb))
    app.add_middleware(JsonErrors)  # added last, so outside the others: it catches what they let through
    add_error_handlers(app)

    def run(options: SearchOptions, search) -> SearchResponse:
        started = time.perf_counter()
        where = build_where(options, facets.get() if options.filters else None)
        hits = search(where or None)
        return SearchResponse(hits=[HitOut.of(h) for h in hits], count=len(hits), k=options.k,
                              took_ms=round((time.perf_counter() - started) * 1000, 1))

    @app.get("/api/health", response_model=Health, responses=errors(503), tags=["service"])
    def health() -> Health:
        """The store and model in use; 503 with the reason when either cannot be opened."""
        now = current.get()
        s = now.settings
        backend = f"chroma-server {s.chroma_host}:{s.chroma_port}" if s.uses_chroma_server else "chroma-embedded"
        store = StoreInfo(backend=backend, collection=now.collection, records=now.store.count())
        return Health(status="ok", store=store,
                      model=ModelInfo(id=now.embedder.model_id, dim=now.embedder.dim),
                      hybrid_weight=s.hybrid_weight, max_upload_mb=s.max_upload_mb)

    @app.get("/api/facets", response_model=FacetsOut, responses=errors(503), tags=["search"])
    def get_facets() -> FacetsOut:
        """The fields and values this store can be filtered on."""
        f = facets.get()
        return FacetsOut(fields=f.filter_fields(), tags=f.tags, attributes=f.menus(), kinds=f.kinds,
                         price_min=f.price_min, price_max=f.price_max)

    @app.post("/api/search", response_model=SearchResponse, responses=errors(413, 422, 503), tags=["search"])
    def search_text(body: TextSearch) -> SearchResponse:
        """Products for a text query, ranked by vector similarity plus exact word matches."""
        now = current.get()
        return run(body, lambda where: now.search(text=body.text, k=body.k, where=where, min_score=body.min_score))

    @app.post("/api/search/image", response_model=SearchResponse, responses=errors(413, 415, 422, 503),
              tags=["search"])
    def search_image(
        file: Annotated[list[UploadFile], File(description="One photo: JPEG, PNG, WebP, GIF, BMP or TIFF.")],
        text: Annotated[str | None, Form(max_length=1000, description="Optional words to search with the photo.")] = None,
        k: Annotated[int, Form()] = 10,
        filters: Annotated[str, Form(description="Filters as a JSON object, as in POST /api/search.")] = "{}",
        price_min: Annotated[float | None, Form()] = None,
        price_max: Annotated[float | None, Form()] = None,
        min_score: Annotated[float | None, Form()] = None,
    ) -> SearchResponse:
        """Products that look like an uploaded photo (and match `text`, if given)."""
        if len(file) != 1:
            raise QueryError(f"send one photo per request in the form field 'file' (got {len(file)})")
        options = _form_options(k=k, filters=filters, price_min=price_min, price_max=price_max, min_score=min_score)
        data = _read_upload(file[0], upload_limit)
        words = text.strip() if text and text.strip() else None
        now = current.get()
        return run(options, lambda where: _image_search(now, data, words, options, where))

    @app.get("/api/similar/{item_id}", response_model=SearchResponse, responses=errors(404, 422, 503),
             tags=["search"])
    def similar(
        item_id: str,
        k: int = 10,
        where: Annotated[list[str], Query(description="Filters as `field=value`, repeatable.")] = [],
        price_min: float | None = None,
        price_max: float | None = None,
        min_score: float | None = None,
    ) -> SearchResponse:
        """More like this: products like a product_id or media_id already in the store."""
        options = _validated(SearchOptions, k=k, filters=_parse_where(where), price_min=price_min,
                             price_max=price_max, min_score=min_score)
        now = current.get()
        return run(options, lambda w: now.more_like_this(item_id, k=options.k, where=w, min_score=options.min_score))

    @app.get("/media/{media_id}", response_class=Response, tags=["media"],
             responses={200: {"content": {"image/*": {}}, "description": "The picture."},
                        307: {"description": "S3 media: a presigned URL to fetch it from."}, **errors(404, 422)})
    def get_media(media_id: str, t: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None) -> Response:
        """The picture of a media item from a search result (for a video: the frame at second `t`)."""
        picture = media.picture(media_id, t)
        if isinstance(picture, Redirect):
            return RedirectResponse(picture.url, status_code=307, headers={"Cache-Control": "private, max-age=300"})
        return Response(picture.data, media_type=picture.mime,
                        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})

    app.include_router(_recommend_routes(tk))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _warming(facets: FacetCache):
    """Read the facets as the service starts, so the page's filter menus are there when a user
    first opens it (a scan of every record takes seconds on a large store)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        def warm() -> None:
            try:
                facets.get()
            except Exception as exc:  # an empty or unreachable store: the first request says why
                log.info("facets not read at start: %s", exc)

        threading.Thread(target=warm, name="warm-facets", daemon=True).start()
        yield

    return lifespan


def _recommend_routes(tk: Toolkit):
    """/api/recommend/... and /api/events (toolkit/faces/api_recommend.py), over one events database per service."""
    from toolkit.faces.api_recommend import router

    return router(lambda: tk.recommend, errors)


def _image_search(tk: Toolkit, data: bytes, text: str | None, options: SearchOptions, where) -> list[Hit]:
    try:
        return tk.search(text=text, image=data, k=options.k, where=where, min_score=options.min_score)
    except MediaError as exc:  # the upload sniffed as an image but does not decode
        raise UnsupportedUpload(f"the upload cannot be read as an image ({exc}); send a JPEG or PNG") from exc


def _too_large(max_upload_mb: float) -> str:
    return f"the upload is over the {max_upload_mb:g} MiB limit; send a smaller photo or raise TOOLKIT_MAX_UPLOAD_MB"


def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(_too_large(limit / MiB))
    kind = sniff(data)
    if kind.kind != "image":
        what = "empty" if not data else f"looks like {kind.mime}"
        raise UnsupportedUpload(f"the upload is not an image ({what}); send a JPEG, PNG, WebP, GIF, BMP or TIFF photo")
    return data


def _form_options(*, filters: str, **fields) -> SearchOptions:
    try:
        parsed = json.loads(filters or "{}")
    except ValueError:
        raise QueryError('filters must be a JSON object, e.g. {"colour": "black"}') from None
    if not isinstance(parsed, dict):
        raise QueryError('filters must be a JSON object, e.g. {"colour": "black"}')
    return _validated(SearchOptions, filters=parsed, **fields)


def _parse_where(exprs: list[str]) -> dict[str, str]:
    out = {}
    for expr in exprs:
        name, sep, value = expr.partition("=")
        if not sep or not name.strip():
            raise QueryError(f"filter {shown(expr)} is not of the form field=value, e.g. colour=black")
        out[name.strip()] = value.strip()
    return out


def _validated(model: type[BaseModel], **fields) -> SearchOptions:
    """Form and query fields through the same model as JSON, so each gets the same checks and 422s."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
