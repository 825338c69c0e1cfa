"""Media from a local folder, walked recursively in a stable order."""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Iterator
from urllib.parse import unquote, urlparse

from toolkit.ground.errors import MediaError, SourceError
from toolkit.ground.models import MediaRef


def to_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


class LocalConnector:
    schemes: ClassVar[frozenset[str]] = frozenset({"file"})

    def check(self, uri: str) -> None:
        root = to_path(uri).expanduser()
        if not root.exists():
            raise SourceError(f"{uri}: no such folder; check the path")

    def list(self, uri: str) -> Iterator[MediaRef]:
        self.check(uri)
        root = to_path(uri).expanduser().resolve()
        if root.is_file():
            yield self._ref(root, root.parent)
            return
        for dirpath, dirnames, filenames in os.walk(root):
            # Sorted, hidden folders skipped: a stable order makes progress and resumes predictable.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                path = Path(dirpath) / fn
                if path.is_file():
                    yield self._ref(path, root)

    @staticmethod
    def _ref(path: Path, root: Path) -> MediaRef:
        st = path.stat()
        return MediaRef(uri=path.as_uri(), key=path.relative_to(root).as_posix(), size=st.st_size,
                        fingerprint=f"{st.st_size}:{st.st_mtime_ns}")

    def read(self, ref: MediaRef) -> bytes:
        try:
            return to_path(ref.uri).read_bytes()
        except FileNotFoundError:
            raise MediaError(f"{ref.uri}: no such file (moved or deleted); put it back, or it cannot be "
                             f"indexed") from None
        except OSError as exc:
            raise MediaError(f"{ref.uri}: cannot read ({exc.strerror}); check the file's permissions") from exc
