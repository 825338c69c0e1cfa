"""The toolkit's own exceptions. Each message says what happened and what to do; the CLI prints it as one line."""
from __future__ import annotations


class ToolkitError(Exception):
    """Base class: a problem the user can fix. `str(err)` is the one-line message."""

    exit_code = 1


class ConfigError(ToolkitError):
    """A setting is missing or wrong. The message names the setting."""

    exit_code = 2


class SourceError(ToolkitError):
    """A source (folder, bucket) cannot be listed or read as a whole."""


class MediaError(ToolkitError):
    """One media item cannot be used (corrupt, empty, unsupported). The run skips it and goes on."""


class ModelMismatchError(ToolkitError):
    """A collection was built by another embedding model than the one in use."""

    exit_code = 3


class ModelError(ToolkitError):
    """An embedding model cannot be loaded (missing file, bad checksum)."""


class TaggerError(ToolkitError):
    """A tagger failed on one item after its retries. The run reports it and goes on."""


class FatalTaggerError(ToolkitError):
    """A tagger cannot work at all (bad key, missing project): the run stops at once."""

    exit_code = 4


class StoreError(ToolkitError):
    """The vector store cannot be reached or refuses an operation."""


class CatalogError(ToolkitError):
    """A catalog file cannot be imported."""


class QueryError(ToolkitError):
    """A search request is malformed (bad filter, no query)."""


class NotFoundError(QueryError):
    """A search names a product or media id that is not in the store."""


class EmptyStoreError(NotFoundError):
    """A search or recommendation asks a store that holds nothing yet; the message names the store."""


def shown(value: object, limit: int = 60) -> str:
    """A user-given value quoted in a message, cut short: a 5,000-character id echoed whole
    would bury the message (and a log line) under the client's input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 1]}…' ({len(str(value))} characters)"
