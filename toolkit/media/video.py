"""Sample the frames of a video worth indexing: one at each scene change, else one every interval."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from toolkit.ground.errors import MediaError
from toolkit.ground.models import Frame


def sample_frames(data: bytes, *, name: str, interval: float = 2.0, scene_threshold: float = 0.35,
                  max_frames: int = 64, min_gap: float = 0.5) -> tuple[list[Frame], float | None]:
    """Decode the video and keep frames at scene changes or every `interval` seconds.

    A frame is a scene change when the mean absolute difference of its tiny grey thumbnail
    from the last kept frame's exceeds `scene_threshold` (0-1). Frames closer than
    `min_gap` seconds to the last kept one are never kept, so a flickering shot cannot
    flood the index.
    """
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"{name}: unreadable or truncated video ({_first_line(exc)}); "
                         "re-encode it as H.264 MP4") from exc
    with container:
        if not container.streams.video:
            raise MediaError(f"{name}: the file has no video stream; remove it from the source")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = _duration(container, stream)
        frames: list[Frame] = []
        last_t, last_sig = None, None
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                if last_t is not None and t - last_t < min_gap:
                    continue
                image = frame.to_image().convert("RGB")
                sig = thumbnail_signature(image)
                changed = last_sig is None or float(np.abs(sig - last_sig).mean()) > scene_threshold * 0.5
                if last_t is None or changed or t - last_t >= interval:
                    frames.append(Frame(image=image, timestamp=round(t, 3)))
                    last_t, last_sig = t, sig
                    if len(frames) >= max_frames:
                        break
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            if not frames:
                raise MediaError(f"{name}: unreadable or truncated video ({_first_line(exc)}); "
                                 "re-encode it as H.264 MP4") from exc
            # A damaged tail still leaves the frames before it usable.
        if not frames:
            raise MediaError(f"{name}: no decodable frames; re-encode it as H.264 MP4")
        return frames, duration


def thumbnail_signature(img: Image.Image) -> np.ndarray:
    """A tiny grey thumbnail: cheap to compare between video frames."""
    return np.asarray(img.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0


def video_duration(data: bytes) -> float | None:
    """A video's length in seconds from its header, without decoding frames (None if unknown)."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            return _duration(container, stream) if stream is not None else None
    except Exception:  # an unreadable video: the run names it when it decodes it
        return None


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().replace(": '<none>'", "")
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
