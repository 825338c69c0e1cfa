"""Connections to Chroma: one client per store location per process, and sharing an embedded store.

An embedded folder is opened by one process at a time (store/owner.py); a long-lived process
hosts it for the others through `chroma run` (`hosting`). Everything outside store/ reaches
these through store.backend.ChromaBackend.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from toolkit.ground.errors import StoreError

if TYPE_CHECKING:
    from toolkit.ground.settings import Settings

_clients: dict[tuple, Any] = {}
_open_lock = threading.RLock()


def client_for(settings: "Settings"):
    """One client per location per process. An embedded folder is opened by one process at a
    time (store/owner.py): this one if it is free, else through the server the process that has
    it hosts (`toolkit serve`), else after waiting for that process to end."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if settings.uses_chroma_server:
        key = ("http", settings.chroma_host, settings.chroma_port)
        if key not in _clients:
            _clients[key] = _http_client(settings.chroma_host, settings.chroma_port,
                                         "start it or unset TOOLKIT_CHROMA_HOST")
        return _clients[key]
    path = settings.resolved_chroma_path.expanduser().resolve()
    key = ("path", str(path))
    with _open_lock:
        if key not in _clients:
            _clients[key] = _open_embedded(path, settings.store_wait)
    return _clients[key]


def _chroma_settings():
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def _http_client(host: str, port: int, fix: str):
    import chromadb

    try:
        client = chromadb.HttpClient(host=host, port=port, settings=_chroma_settings())
        client.heartbeat()
    except Exception as exc:
        raise StoreError(f"cannot reach the Chroma server at {host}:{port} ({type(exc).__name__}); {fix}") from exc
    return client


def _open_embedded(path: Path, wait: float):
    """The embedded folder behind a lease: opened on this process's turn (store/owner.py)."""
    import chromadb

    from store.owner import Lease, LeasedClient

    def embedded(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(folder), settings=_chroma_settings())

    def http(host: str, port: int):
        return _http_client(host, port, fix="the process hosting the store has just stopped; run the command again")

    return LeasedClient(Lease(path, wait, embedded, http))


def release(settings: "Settings") -> None:
    """Give the embedded store back to other processes now, instead of after a moment idle.
    Stores opened on it go on working: they take it again on their next call."""
    path = embedded_path(settings)
    if path is None:
        return
    with _open_lock:
        client = _clients.get(("path", str(path)))
        if client is not None and hasattr(client, "close"):
            client.close()
            if not hasattr(client, "_lease"):
                _clients.pop(("path", str(path)), None)


@contextmanager
def hosting(settings: "Settings") -> Iterator[None]:
    """For a long-lived process (`toolkit serve`): hold the embedded store and serve it to other
    processes through `chroma run` on 127.0.0.1, using it through that server too, so that
    everybody's writes are in one index and seen at once. A no-op on a Chroma server; when
    another process hosts the store already, this one uses its server."""
    from store.owner import Host, wait_for_store

    path = embedded_path(settings)
    if path is None:
        yield
        return
    release(settings)
    key = ("path", str(path))
    _clients.pop(key, None)
    got = wait_for_store(path, settings.store_wait)
    if isinstance(got, tuple):
        _clients[key] = _http_client(*got, fix="the process hosting the store has just stopped; start again")
        yield
        return
    host = Host(got)
    try:
        _clients[key] = _http_client(host.host, host.port, fix="see the .server.log beside the store")
        yield
    finally:
        _clients.pop(key, None)
        host.stop()
        got.release()


def embedded_path(settings: "Settings") -> Path | None:
    """The embedded store's folder, absolute; None when the store is a Chroma server."""
    return None if settings.uses_chroma_server else settings.resolved_chroma_path.expanduser().resolve()


def filter_index_dir(chroma_path: Path | None, collection_id: object) -> Path | None:
    """Where an embedded store's collection keeps its saved filter index (None on a server)."""
    if chroma_path is None:
        return None
    return chroma_path.parent / f"{chroma_path.name}-filter-index" / str(collection_id)


def describe_location(settings: "Settings") -> str:
    if settings.uses_chroma_server:
        return f"chroma server {settings.chroma_host}:{settings.chroma_port}"
    return f"embedded chroma at {embedded_path(settings)}"
