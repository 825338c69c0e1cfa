"""The Toolkit for the collection in use now, for processes that outlive a switch.

`toolkit reindex` and `toolkit collections use`, run from another shell, move the pointer
behind TOOLKIT_COLLECTION (store/collections.py). A one-shot command reads it once; the
search service runs for days, so it asks `CurrentToolkit.get()` per request instead. A
background thread reads the pointer again at most every `every` seconds and, when it has
moved, opens the new collection and loads the model recorded for it. Requests go on with the
old one until then: none waits for the pointer read (5-10 ms of Chroma) or a model load.

Each request keeps the Toolkit it got for its whole life, so a search that started before a
switch embeds its query and reads its results with the old model and collection, and one
after it with the new ones: never one model's query against another's vectors.
"""
from __future__ import annotations

import threading
import time

from toolkit.core import Toolkit

#: Seconds between two reads of the pointer: a small Chroma read, not one per request.
CHECK_EVERY = 2.0


class CurrentToolkit:
    def __init__(self, toolkit: Toolkit, every: float | None = None) -> None:
        self._tk = toolkit
        self._every = CHECK_EVERY if every is None else every
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._following = False  # a thread is reading the pointer or opening its collection

    def get(self) -> Toolkit:
        """The Toolkit for the collection in use. When the pointer is due a read, a thread
        reads it (a few ms of Chroma) so that no request waits for it."""
        now = time.monotonic()
        with self._lock:
            tk = self._tk
            if now - self._checked < self._every or self._following:
                return tk
            self._checked, self._following = now, True
        threading.Thread(target=self._follow, args=(tk,), name="toolkit-follow", daemon=True).start()
        return tk

    def _follow(self, tk: Toolkit) -> None:
        """Where the pointer leads now; when it has moved, the new collection and its model are
        opened and warmed here, and only then used."""
        from store.collections import active
        from toolkit.ground.errors import ToolkitError

        new = None
        try:
            if active(tk.settings) != tk.collection:
                new = tk.reopened()
                new.warm()
        except (ToolkitError, OSError):
            # The store cannot say where the pointer leads: keep the collection in use (its own
            # requests report the store's error). A new one that fails to warm (e.g. a model
            # mismatch) is used anyway: its requests report why.
            pass
        finally:
            with self._lock:
                if new is not None:
                    self._tk = new
                self._following = False
