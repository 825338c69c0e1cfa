"""The pictures behind search results, served by media id only.

A client names a media id from a search result, never a path: the URI is looked up in
the store, so nothing outside the catalog can be read. Local files are read through their
connector; S3 objects are handed out as short-lived presigned URLs; a video gives the
frame at one of its stored timestamps (the moment a hit matched).
"""
from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from toolkit import registry
from toolkit.ground.errors import MediaError, NotFoundError, shown
from toolkit.media.decode import sniff
from toolkit.ground.models import MediaRef

if TYPE_CHECKING:
    from store.base import VectorStore
    from toolkit.ground.settings import Settings

#: Media ids are toolkit.records.media_id(): 20 hex digits. Anything else is not looked up at all.
MEDIA_ID = re.compile(r"[0-9a-f]{20}")
PRESIGNED_SECONDS = 3600
FRAME_CACHE_SIZE = 256


@dataclass(frozen=True)
class Picture:
    data: bytes
    mime: str


@dataclass(frozen=True)
class Redirect:
    url: str


class MediaServer:
    def __init__(self, store: Callable[[], "VectorStore"], settings: "Settings") -> None:
        self._store = store
        self._settings = settings
        self._connectors: dict[str, object] = {}
        self._frames: OrderedDict[tuple, Picture] = OrderedDict()
        self._lock = threading.Lock()

    def picture(self, media_id: str, t: float | None = None) -> Picture | Redirect:
        """The picture of one media item; for a video, the stored frame nearest `t` (default: the first)."""
        records = self._records(media_id)
        meta = records[0]
        if meta.get("kind") == "video":
            return self._frame(meta, _nearest([m.get("timestamp") for m in records], t))
        uri = str(meta.get("uri", ""))
        if uri.startswith("s3://"):
            return Redirect(self._connector(uri).presigned_url(uri, expires=PRESIGNED_SECONDS))
        data = self._read(meta)
        return Picture(data, str(meta.get("mime") or sniff(data).mime))

    def _records(self, media_id: str) -> list[dict]:
        if not MEDIA_ID.fullmatch(media_id):
            raise NotFoundError(f"no media with id {shown(media_id)}; use a media_id from a search result")
        records = [r.metadata for r in self._store().get(where={"media_id": media_id})]
        if not records:
            raise NotFoundError(f"no media with id {shown(media_id)} in the store")
        return records

    def _connector(self, uri: str):
        scheme = registry.scheme_of(uri)
        if scheme not in self._connectors:
            self._connectors[scheme] = registry.connector_for(uri, self._settings)
        return self._connectors[scheme]

    def _read(self, meta: dict) -> bytes:
        uri = str(meta["uri"])
        return self._connector(uri).read(MediaRef(uri=uri, key=str(meta.get("key", ""))))

    def _frame(self, meta: dict, timestamp: float) -> Picture:
        key = (meta.get("media_id"), meta.get("sha256"), timestamp)
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
        picture = Picture(frame_jpeg(self._read(meta), timestamp, name=str(meta.get("uri"))), "image/jpeg")
        with self._lock:
            self._frames[key] = picture
            while len(self._frames) > FRAME_CACHE_SIZE:
                self._frames.popitem(last=False)
        return picture


def _nearest(timestamps: list[float | None], t: float | None) -> float:
    """Only stored frame times are served, so a client cannot make the server decode arbitrary
    moments, and the frame cache stays bounded."""
    known = sorted({float(x) for x in timestamps if x is not None}) or [0.0]
    if t is None:
        return known[0]
    return min(known, key=lambda x: abs(x - t))


def frame_jpeg(data: bytes, timestamp: float, name: str = "video") -> bytes:
    """The first frame at or after `timestamp` seconds, as JPEG."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            if timestamp > 0 and stream.time_base is not None:
                container.seek(int(timestamp / stream.time_base), stream=stream, backward=True)
            image = None
            for frame in container.decode(stream):
                image = frame.to_image()
                if frame.time is None or frame.time >= timestamp - 1e-3:
                    break
    except (av.error.FFmpegError, IndexError, ValueError, OSError) as exc:
        raise MediaError(f"{name}: cannot decode the frame at {timestamp:.1f}s ({type(exc).__name__})") from exc
    if image is None:
        raise MediaError(f"{name}: no frame at {timestamp:.1f}s")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()
