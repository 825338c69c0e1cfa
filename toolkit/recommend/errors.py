"""The recommendation wing's exceptions, placed under the toolkit's own so the CLI and the API map them as usual."""
from __future__ import annotations

from toolkit.ground.errors import ModelMismatchError, NotFoundError, QueryError, StoreError


class EventsError(QueryError):
    """An events, users or items file (or a posted event) cannot be imported as a whole."""


class EventsLocked(StoreError):
    """Another process holds the events database."""


class UnknownProduct(NotFoundError):
    """A recommendation names a product the events and items have never seen."""


class StaleModels(ModelMismatchError):
    """The trained models were built from another collection or embedding model than the one in use."""
