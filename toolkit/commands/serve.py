"""`toolkit serve`: the search API and page over HTTP."""
from __future__ import annotations

from typing import Optional

import typer

from toolkit.core import Toolkit


def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default: TOOLKIT_SERVE_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default: TOOLKIT_SERVE_PORT, 8000)."),
) -> None:
    """Serve the search API (/api, /docs) and the search page (/) over HTTP."""
    import uvicorn

    from toolkit.api import create_app

    tk = Toolkit()
    host = host or tk.settings.serve_host
    port = port if port is not None else tk.settings.serve_port
    typer.echo(f"loading collection '{tk.collection}' and its model…", err=True)
    records = tk.warm()
    typer.echo(f"serving {records} records on http://{host}:{port} (API docs at /docs)", err=True)
    uvicorn.run(create_app(tk), host=host, port=port, log_level="warning")
