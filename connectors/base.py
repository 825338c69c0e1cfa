"""The Connector protocol: list media at a source and read one item's bytes."""
from __future__ import annotations

from typing import ClassVar, Iterator, Protocol, runtime_checkable

from toolkit.ground.models import MediaRef


@runtime_checkable
class Connector(Protocol):
    #: URI schemes this connector serves ("file", "s3").
    schemes: ClassVar[frozenset[str]]

    def check(self, uri: str) -> None:
        """Raise SourceError now if `uri` cannot be listed, before any model is loaded."""
        ...

    def list(self, uri: str) -> Iterator[MediaRef]:
        """Yield every object under `uri`, lazily (never the whole listing in memory)."""
        ...

    def read(self, ref: MediaRef) -> bytes:
        """Return one object's bytes. Raises MediaError if it cannot be read."""
        ...
