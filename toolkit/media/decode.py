"""Decide what a blob of bytes is, and decode it into frames (videos through toolkit/media/video.py).

The kind comes from the bytes' signature, never the file name: a text file named
`.jpg` is not an image, and an `.mp4` renamed `.bin` is still a video. Whatever cannot be
used raises MediaError naming the file, why in plain words, and what to do about it.
"""
from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageFile, UnidentifiedImageError

from toolkit.ground.errors import MediaError
from toolkit.ground.models import Frame, Media, MediaRef
from toolkit.media.video import sample_frames

# Truncated JPEGs must fail, not come back half-grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# HEIF-family brands are stills inside an ISO-BMFF box, not videos.
_STILL_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis"}


@dataclass(frozen=True)
class Sniffed:
    kind: str | None  # "image", "video" or None
    mime: str


def sniff(data: bytes) -> Sniffed:
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "image/png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "image/gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "image/webp")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "video/x-msvideo")
    if head[:2] == b"BM":
        return Sniffed("image", "image/bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image", "image/tiff")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _STILL_BRANDS:
            return Sniffed("image", f"image/{brand.decode('ascii', 'replace').strip()}")
        return Sniffed("video", "video/quicktime" if brand == b"qt  " else "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "video/webm")
    if head[:1] == b"\x47" and len(data) > 188 and data[188:189] == b"\x47":
        return Sniffed("video", "video/mp2t")
    return Sniffed(None, _describe_unknown(head))


def _describe_unknown(head: bytes) -> str:
    try:
        head.decode("utf-8")
        return "text/plain"
    except UnicodeDecodeError:
        return "application/octet-stream"


def _flatten(img: Image.Image) -> Image.Image:
    """RGB on white: products are shot on white, so transparency becomes white, not black."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


class PixelBudget:
    """How many image pixels are being decoded at once in this process. A small file can hold a
    huge picture (a 7,000 x 7,000 PNG of one colour is 143 KB): its decode takes about 7 bytes a
    pixel until it is flattened and shrunk, so eight at once took a server from 1.5 to 4.1 GB.
    A decode waits until its pixels fit; one larger than the whole budget runs alone."""

    def __init__(self, pixels: int) -> None:
        self.capacity = pixels
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = min(pixels, self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self.used + need <= self.capacity)
            self.used += need
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


#: The process-wide budget (TOOLKIT_DECODE_PIXELS; `set_decode_budget`).
DECODES = PixelBudget(64_000_000)


def set_decode_budget(pixels: int) -> None:
    DECODES.capacity = pixels


#: The still formats Pillow reads here, as users know them.
READABLE = "JPEG, PNG, WebP, GIF, BMP or TIFF"


def decode_image(data: bytes, max_pixels: int = 50_000_000, name: str = "image",
                 max_side: int | None = None) -> Image.Image:
    """Decode bytes into an RGB image, or raise MediaError saying why not. With `max_side`,
    a larger image comes back shrunk to fit it (decoded at a reduced scale where the format
    allows), so what is kept after the decode is small."""
    if not data:
        raise MediaError(f"{name}: empty file (0 bytes); re-upload it or remove it from the source")
    try:
        with warnings.catch_warnings():
            # `max_pixels` (TOOLKIT_MAX_IMAGE_PIXELS) is the limit, checked below with the real
            # size: Pillow's own warning at 89 megapixels would overrule a raised setting.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(img, max_pixels, name)
            with DECODES.hold(img.width * img.height):
                return _load(img, max_side)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(_bomb_message(name, exc)) from exc
    except UnidentifiedImageError as exc:
        raise MediaError(f"{name}: not an image the toolkit can read ({READABLE}); "
                         "convert it to JPEG or PNG, or remove it") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{name}: corrupt or unsupported image ({_short(exc)}); "
                         "re-export it as JPEG or PNG") from exc


def _load(img: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is not None and max(img.size) > 2 * max_side:
        img.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2 to 1/8 scale
    img.load()
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img = _flatten(img)
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return img


def _check_size(img: Image.Image, max_pixels: int, name: str) -> None:
    pixels = img.width * img.height
    if pixels > max_pixels:
        raise MediaError(f"{name}: {_pixels(pixels)} ({img.width}x{img.height}) is over the limit of "
                         f"{_pixels(max_pixels)}; raise TOOLKIT_MAX_IMAGE_PIXELS (now {max_pixels}) or downscale it")


def _bomb_message(name: str, exc: BaseException) -> str:
    """Pillow refuses outright what is over twice its MAX_IMAGE_PIXELS, whatever our setting says."""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = _pixels(int(found.group(1))) if found else "more pixels than that"
    return (f"{name}: {size} is over the image library's limit of {_pixels(limit)} (its guard against "
            f"decompression bombs, which TOOLKIT_MAX_IMAGE_PIXELS cannot raise); downscale it")


def _pixels(n: int) -> str:
    """A pixel count as people say it: "200 megapixels", "1.5 megapixels", "640 pixels"."""
    if n >= 10_000_000:
        return f"{n / 1e6:.0f} megapixels"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} megapixels"
    return f"{n:,} pixels"


def _short(exc: BaseException) -> str:
    # Pillow names the in-memory buffer (`<_io.BytesIO object at 0x7f...>`): no use to anyone.
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def decode(ref: MediaRef, data: bytes, *, max_pixels: int = 50_000_000,
           video_interval: float = 2.0, scene_threshold: float = 0.35,
           max_frames: int = 64) -> Media:
    """Bytes -> Media with frames. Raises MediaError for anything that is not usable."""
    if not data:
        raise MediaError(f"{ref.uri}: empty file (0 bytes); re-upload it or remove it from the source")
    sniffed = sniff(data)
    if sniffed.kind is None:
        raise MediaError(f"{ref.uri}: not an image or a video (content looks like {sniffed.mime}); "
                         "remove it from the source or fix its content")
    sha = hashlib.sha256(data).hexdigest()
    if sniffed.kind == "image":
        image = decode_image(data, max_pixels, name=ref.uri)
        return Media(ref=ref, data=data, kind="image", sha256=sha, mime=sniffed.mime,
                     frames=[Frame(image=image)])
    frames, duration = sample_frames(data, name=ref.uri, interval=video_interval,
                                     scene_threshold=scene_threshold, max_frames=max_frames)
    return Media(ref=ref, data=data, kind="video", sha256=sha, mime=sniffed.mime,
                 frames=frames, duration=duration)

