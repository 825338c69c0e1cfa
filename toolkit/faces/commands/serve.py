"""`toolkit serve`: the search API and page over HTTP."""
from __future__ import annotations

from typing import Optional

import typer

from toolkit.core import Toolkit


def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default: TOOLKIT_SERVE_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default: TOOLKIT_SERVE_PORT, 8000)."),
) -> None:
    """Serve the search API (/api, /docs) and the search page (/) over HTTP. On an embedded
    store it also shares the store with the other toolkit commands run meanwhile (see README,
    "Several processes, one store")."""
    from toolkit import registry
    from toolkit.faces.api import create_app
    from toolkit.faces.api_server import run_server
    from toolkit.faces.memory import bound_malloc

    bound_malloc()  # before any thread starts: see toolkit/faces/memory.py
    tk = Toolkit()
    host = host or tk.settings.serve_host
    port = port if port is not None else tk.settings.serve_port
    with registry.store_backend(tk.settings).hosting():
        typer.echo(f"loading collection '{tk.collection}' and its model…", err=True)
        records = tk.warm()
        typer.echo(f"serving {records} records on http://{host}:{port} (API docs at /docs)", err=True)
        run_server(create_app(tk), host=host, port=port)
