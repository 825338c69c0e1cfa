"""The HTTP API and search page: `create_app(toolkit)` gives a FastAPI app over one Toolkit.

Every search goes through `Toolkit.search` / `Toolkit.more_like_this`, the same path as the
CLI, so a query gives the same products and scores either way. Errors are the toolkit's
own exceptions, turned into status codes in one place (`STATUS`).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit.core import Toolkit
from toolkit.faces.current import CurrentToolkit
from toolkit.ground.errors import (ConfigError, MediaError, ModelError, ModelMismatchError, NotFoundError, QueryError,
                            StoreError, ToolkitError, shown)
from toolkit.search.facets import FacetCache, Facets
from toolkit.media.decode import set_decode_budget, sniff
from toolkit.faces.media_server import MediaServer, Redirect
from toolkit.ground.models import Hit
from toolkit.search.query import MAX_K

STATIC = Path(__file__).resolve().parent / "static"
#: JSON requests are small; only the image upload gets a larger body limit.
JSON_BODY_LIMIT = 64 * 1024
#: Room for the multipart framing and the form fields sent with an upload.
MULTIPART_SLACK = 64 * 1024
MiB = 1024 * 1024
#: Seconds a client is asked to wait (Retry-After) when the store or the model cannot answer.
RETRY_AFTER = 5
#: A client has this many seconds to send a request's line and headers: one that sends a byte
#: a second would otherwise hold a connection (and its slot) for ever.
HEADER_TIMEOUT = 10.0
#: uvicorn closes a kept-alive connection idle this long.
KEEP_ALIVE = 5

log = logging.getLogger("toolkit.faces.api")


class UploadTooLarge(QueryError):
    """The uploaded image is over TOOLKIT_MAX_UPLOAD_MB."""


class UnsupportedUpload(QueryError):
    """The uploaded file is not an image the service can read."""


#: The one place a toolkit exception becomes a status code; the most specific class wins.
STATUS: dict[type[Exception], int] = {
    UploadTooLarge: 413, UnsupportedUpload: 415, NotFoundError: 404, QueryError: 422,
    MediaError: 404,  # a stored file that is gone or unreadable
    ModelMismatchError: 503, ModelError: 503, StoreError: 503, ConfigError: 503, ToolkitError: 500,
}


def status_for(exc: Exception) -> int:
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)


# -- request and response models ---------------------------------------------------------------

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
    tags: dict[str, str]
    attributes: dict[str, str]
    media_id: str
    kind: Literal["image", "video"]
    timestamp: float | None = Field(description="For a video hit: the second of the frame that matched.")
    image_url: str = Field(description="The matched picture (the video frame for a video), served by this service.")

    @classmethod
    def of(cls, hit: Hit) -> "HitOut":
        # media_uri stays server-side: clients get pictures through image_url, never a path.
        image_url = f"/media/{hit.media_id}" + (f"?t={hit.timestamp:g}" if hit.timestamp is not None else "")
        return cls(product_id=hit.product_id, title=hit.title, price=hit.price, currency=hit.currency, url=hit.url,
                   score=hit.score, tags=hit.tags, attributes={k: str(v) for k, v in hit.attributes.items()},
                   media_id=hit.media_id, kind=hit.kind, timestamp=hit.timestamp, image_url=image_url)


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
    app = FastAPI(title="toolkit search", version="1",
                  description="Search a tagged product catalog by text, photo, or a product already in it.")
    app.state.current = current
    app.add_middleware(BodyLimit, limits={"/api/search/image": upload_limit + MULTIPART_SLACK},
                       default=JSON_BODY_LIMIT, message=_too_large(tk.settings.max_upload_mb))
    app.add_middleware(JsonErrors)  # added last, so outside the others: it catches what they let through
    _add_error_handlers(app)

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


def _recommend_routes(tk: Toolkit):
    """/api/recommend/... and /api/events (toolkit/faces/recommend_api.py), over one events database per service."""
    from toolkit.faces.recommend_api import router

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


class BodyLimit:
    """Refuse request bodies over a per-path limit with a 413 and a message, without reading them.

    A declared Content-Length over the limit is refused at once; a body without one is
    counted as it streams in, and reading stops at the limit.
    """

    def __init__(self, app: ASGIApp, limits: dict[str, int], default: int, message: str) -> None:
        self.app, self.limits, self.default, self.message = app, limits, default, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # An HTTPException passes through FastAPI's body parsing to the error handlers.
                raise StarletteHTTPException(413, detail=self.message)
            return message

        await self.app(scope, counted, send)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ToolkitError)
    async def toolkit_error(request: Request, exc: ToolkitError) -> JSONResponse:
        return error_response(status_for(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        bad_json = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if bad_json is not None:  # its loc holds a character offset, not a field
            where = bad_json.get("loc", ())[-1]
            why = (bad_json.get("ctx") or {}).get("error") or bad_json.get("msg", "invalid")
            message = f"not valid JSON ({why} at character {where}); send a JSON object, e.g. {{\"text\": \"black sandals\"}}"
            return JSONResponse({"detail": f"request body: {message}",
                                 "errors": [{"field": "body", "message": message}]}, status_code=422)
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")),
                   "message": e.get("msg", "invalid").removeprefix("Value error, ")} for e in exc.errors()]
        detail = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def error_response(status: int, detail: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def unexpected(exc: Exception) -> tuple[int, str]:
    """Status and message for an exception no handler knows. The store's own errors (Chroma's,
    or the HTTP client's to a Chroma server) mean it cannot answer now: 503, try again."""
    module = type(exc).__module__ or ""
    if module.startswith(("chromadb", "httpx", "httpcore", "sqlite3")):
        return 503, (f"the store cannot answer now ({type(exc).__name__}); retry in a few seconds, "
                     "and check the server log if it persists")
    return 500, (f"internal error ({type(exc).__name__}); the server log has the details; "
                 "retry, and report it if it persists")


class JsonErrors:
    """The last word on errors: whatever no handler took becomes the same JSON `{"detail"}` as a
    4xx, and the connection stays usable. Starlette's own fallback answers text/plain and raises
    again, and uvicorn then drops the kept-alive connection without `Connection: close`, so the
    client's next request fails too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:  # too late for a status: the client sees a cut response
                raise
            status, detail = unexpected(exc)
            log.error("%s %s answered %d: %s", scope.get("method"), scope.get("path"), status, detail,
                      exc_info=exc)
            await error_response(status, detail)(scope, receive, send)


def run_server(app: FastAPI, host: str, port: int) -> None:
    """uvicorn, with a deadline for each request's headers (uvicorn's keep-alive timer restarts
    on every byte, so a client sending one a second was never timed out)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", http=header_timeout_protocol(),
                timeout_keep_alive=KEEP_ALIVE)


def header_timeout_protocol(timeout: float = HEADER_TIMEOUT) -> type:
    """uvicorn's HTTP protocol (httptools, else h11) that closes a connection whose next
    request's headers have not all arrived `timeout` seconds after it opened or after the last
    response. Both protocols start a new request cycle once the headers are complete."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class HeaderTimeout(Base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            cycle = self.cycle
            self.loop.call_later(timeout, self._headers_overdue, cycle)

        def _headers_overdue(self, cycle_then) -> None:
            # Still the cycle of the previous request (or none): this one's headers never came.
            if self.cycle is cycle_then and not self.transport.is_closing():
                if cycle_then is None or cycle_then.response_complete:
                    self.transport.close()

    return HeaderTimeout
