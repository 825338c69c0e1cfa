"""Serving the HTTP API: uvicorn with a deadline for each request's headers."""
from __future__ import annotations

from fastapi import FastAPI

#: A client has this many seconds to send a request's line and headers: one that sends a byte
#: a second would otherwise hold a connection (and its slot) for ever.
HEADER_TIMEOUT = 10.0
#: uvicorn closes a kept-alive connection idle this long.
KEEP_ALIVE = 5


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
