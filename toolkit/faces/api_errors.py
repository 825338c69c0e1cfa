"""How the HTTP API answers errors: one status per toolkit exception, JSON `{"detail"}` always,
body limits enforced before a body is read, and a 503 with Retry-After when the store cannot answer."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit.ground.errors import (ConfigError, MediaError, ModelError, ModelMismatchError, NotFoundError, QueryError,
                                   StoreError, ToolkitError)

#: Seconds a client is asked to wait (Retry-After) when the store or the model cannot answer.
RETRY_AFTER = 5

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


def add_error_handlers(app: FastAPI) -> None:
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
