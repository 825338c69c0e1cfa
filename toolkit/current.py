"""The Toolkit for the collection in use now, for processes that outlive a switch.

`toolkit reindex` and `toolkit collections use`, run from another shell, move the pointer
behind TOOLKIT_COLLECTION (store/collections.py). A one-shot command reads it once; the
search service runs for days, so it asks `CurrentToolkit.get()` per request instead: the
pointer is read again at most every `every` seconds, and when it has moved, a fresh Toolkit
opens the new collection and loads the model recorded for it in the background. Requests
go on with the old one until then, so none waits for a model to load.

Each request keeps the Toolkit it got for its whole life, so a search that started before a
switch embeds its query and reads its results with the old model and collection, and one
after it with the new ones: never one model's query against another's vectors.
"""
from __future__ import annotations

import threading
import time

from toolkit.core import Toolkit

#: Seconds between two reads of the pointer: one small Chroma read, not one per request.
CHECK_EVERY = 2.0


class CurrentToolkit:
    def __init__(self, toolkit: Toolkit, every: float | None = None) -> None:
        self._tk = toolkit
        self._every = CHECK_EVERY if every is None else every
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._opening = False

    def get(self) -> Toolkit:
        """The Toolkit for the collection TOOLKIT_COLLECTION resolves to now."""
        now = time.monotonic()
        with self._lock:
            tk = self._tk
            if now - self._checked < self._every:
                return tk
            self._checked = now
        target = self._pointed_at(tk)
        if target is not None and target != tk.collection:
            self._open_in_background(tk)
        return tk

    def _open_in_background(self, old: Toolkit) -> None:
        with self._lock:
            if self._opening or self._tk is not old:
                return
            self._opening = True
        threading.Thread(target=self._open, args=(old,), name="toolkit-switch", daemon=True).start()

    def _open(self, old: Toolkit) -> None:
        from toolkit.errors import ToolkitError

        new = old.reopened()
        try:
            new.warm()
        except ToolkitError:
            pass  # e.g. a model mismatch: the requests that use it report it
        finally:
            with self._lock:
                self._tk, self._opening = new, False

    @staticmethod
    def _pointed_at(tk: Toolkit) -> str | None:
        """Where the pointer leads now, or None when the store cannot say (then the
        collection in use stays; its own requests report the store's error)."""
        from store.collections import active
        from toolkit.errors import ToolkitError

        try:
            return active(tk.settings)
        except (ToolkitError, OSError):
            return None
