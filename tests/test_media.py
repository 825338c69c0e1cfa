"""What a blob of bytes is decided from its content, and bad media fail with a reason that says what to do."""
from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.helpers import write_mp4
from toolkit.ground.errors import MediaError
from toolkit.media.decode import decode, sniff
from toolkit.ground.models import MediaRef


def ref(name: str) -> MediaRef:
    return MediaRef(uri=f"file:///src/{name}", key=name)


def png_bytes(mode="RGBA", colour=(255, 0, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_kind_comes_from_bytes_not_name(shared_data):
    jpg = (shared_data / "images" / "10000.jpg").read_bytes()
    assert decode(ref("photo.mp4"), jpg).kind == "image"
    assert decode(ref("clip.jpg"), write_mp4()).kind == "video"
    assert sniff(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40).kind == "image"


@pytest.mark.parametrize("name,data,reason", [
    ("empty.jpg", b"", "empty file (0 bytes)"),
    ("notes.jpg", b"this is a text file, not a photo\n", "not an image or a video"),
    ("random.bin", bytes(range(256)) * 4, "not an image or a video"),
])
def test_unusable_bytes_are_named(name, data, reason):
    with pytest.raises(MediaError, match=re.escape(reason)) as exc:
        decode(ref(name), data)
    assert name in str(exc.value)


def test_corrupt_jpeg_is_rejected_not_half_decoded(shared_data):
    jpg = (shared_data / "images" / "10000.jpg").read_bytes()
    with pytest.raises(MediaError, match="corrupt or unsupported image.*re-export") as exc:
        decode(ref("broken.jpg"), jpg[: len(jpg) // 2])
    assert "broken.jpg" in str(exc.value)


def test_truncated_mp4_is_rejected():
    data = write_mp4()
    with pytest.raises(MediaError, match="unreadable or truncated video.*re-encode"):
        decode(ref("cut.mp4"), data[: len(data) // 3])


def test_too_large_image_names_the_setting(shared_data):
    jpg = (shared_data / "images" / "10000.jpg").read_bytes()
    with pytest.raises(MediaError, match="TOOLKIT_MAX_IMAGE_PIXELS"):
        decode(ref("big.jpg"), jpg, max_pixels=100)


def test_transparency_becomes_white():
    media = decode(ref("cut-out.png"), png_bytes())
    assert media.frames[0].image.mode == "RGB"
    assert media.frames[0].image.getpixel((0, 0)) == (255, 255, 255)


def test_video_frames_at_scene_changes_with_timestamps():
    media = decode(ref("three-scenes.mp4"), write_mp4(seconds_each=3.0), video_interval=100.0)
    stamps = [f.timestamp for f in media.frames]
    # One frame per scene, each at the moment the colour changes, none from the long interval.
    assert stamps == pytest.approx([0.0, 3.0, 6.0], abs=0.15)
    assert media.duration == pytest.approx(9.0, abs=0.2)
    colours = [f.image.getpixel((32, 32)) for f in media.frames]
    assert colours[0][0] > 150 and colours[1][1] > 150 and colours[2][2] > 150


def test_video_interval_fallback_in_one_long_scene():
    media = decode(ref("one-scene.mp4"), write_mp4(colours=((90, 90, 90),), seconds_each=7.0), video_interval=2.0)
    assert [f.timestamp for f in media.frames] == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=0.15)


def test_max_frames_caps_a_long_video():
    media = decode(ref("long.mp4"), write_mp4(colours=((90, 90, 90),), seconds_each=10.0),
                   video_interval=0.5, max_frames=5)
    assert len(media.frames) == 5


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares a width and height (and holds no real pixels): enough for Pillow to
    size it up without allocating the picture."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x00") + chunk(b"IEND", b"")


def test_a_text_file_given_as_an_image_says_so_plainly():
    from toolkit.media.decode import decode_image

    with pytest.raises(MediaError) as exc:
        decode_image(b"not a photo, just some notes\n", name="photo.txt")
    assert str(exc.value) == ("photo.txt: not an image the toolkit can read (JPEG, PNG, WebP, GIF, BMP or TIFF); "
                              "convert it to JPEG or PNG, or remove it")


def test_an_image_format_pillow_cannot_read_is_named_with_the_fix():
    """HEIC is sniffed as an image, but Pillow has no reader for it here."""
    with pytest.raises(MediaError) as exc:
        decode(ref("holiday.heic"), b"\x00\x00\x00\x18ftypheic" + b"\x00" * 200)
    message = str(exc.value)
    assert message.startswith("file:///src/holiday.heic: not an image the toolkit can read")
    assert "convert it to JPEG or PNG" in message and "BytesIO" not in message


def test_an_image_over_the_setting_names_its_size_the_limit_and_the_setting():
    """100 megapixels: over TOOLKIT_MAX_IMAGE_PIXELS (50 by default), and over Pillow's own
    89-megapixel warning, which used to answer first with "re-export it as JPEG or PNG"."""
    with pytest.raises(MediaError) as exc:
        decode(ref("big.png"), png_header(10_000, 10_000))
    assert str(exc.value) == ("file:///src/big.png: 100 megapixels (10000x10000) is over the limit of 50 megapixels; "
                              "raise TOOLKIT_MAX_IMAGE_PIXELS (now 50000000) or downscale it")


def test_a_decompression_bomb_names_its_size_and_the_library_limit():
    with pytest.raises(MediaError) as exc:
        decode(ref("bomb.png"), png_header(14_142, 14_142), max_pixels=400_000_000)
    assert str(exc.value) == ("file:///src/bomb.png: 200 megapixels is over the image library's limit of "
                              "179 megapixels (its guard against decompression bombs, which "
                              "TOOLKIT_MAX_IMAGE_PIXELS cannot raise); downscale it")


def test_a_corrupt_image_does_not_name_python_s_buffer(shared_data):
    jpg = (shared_data / "images" / "10000.jpg").read_bytes()
    with pytest.raises(MediaError) as exc:
        decode(ref("broken.jpg"), jpg[:200])
    assert "BytesIO" not in str(exc.value) and str(exc.value).startswith("file:///src/broken.jpg: ")
