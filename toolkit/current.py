"""The Toolkit for the collection in use now, for processes that outlive a switch.

`toolkit reindex` and `toolkit collections use`, run from another shell, move the pointer
behind TOOLKIT_COLLECTION (store/collections.py). A one-shot command reads it once; the
search service runs for days, so it asks `CurrentToolkit.get()` per request instead: the
pointer is read again at most every `every` seconds, and when it has moved, a fresh Toolkit
opens the new collection with the model recorded for it.

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

    def get(self) -> Toolkit:
        """The Toolkit for the collection TOOLKIT_COLLECTION resolves to now."""
        now = time.monotonic()
        with self._lock:
            tk = self._tk
            if now - self._checked < self._every:
                return tk
            self._checked = now
        target = self._pointed_at(tk)
        if target is None or target == tk.collection:
            return tk
        with self._lock:
            if self._tk is tk:  # no other request swapped it meanwhile
                self._tk = tk.reopened()
            return self._tk

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
