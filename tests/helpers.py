"""Small real parts for tests: a fast deterministic embedder, media writers, catalog writers."""
from __future__ import annotations

import csv
import hashlib
import io
import re
import socket
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ColourEmbedder:
    """A real Embedder of our own protocol, fast enough for pipeline mechanics tests.

    Images: an 8x8 RGB thumbnail; texts: hashed words into the same 192-d space. It
    says nothing about quality; the shipped model has its own tests and benchmark.
    """

    model_id = "test-colour-embedder-v1"
    dim = 192

    def __init__(self) -> None:
        self.images_embedded = 0

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.images_embedded += len(images)
        rows = [np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255.0 - 0.5
                for im in images]
        return _normalise(np.stack(rows))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                rows[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return _normalise(rows + 1e-6)


def _normalise(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def write_mp4(path: Path | None = None, colours=((200, 30, 30), (30, 200, 30), (30, 30, 200)),
              seconds_each: float = 2.0, fps: int = 10, size: int = 64) -> bytes:
    """An H.264 MP4 with one solid-colour scene per colour."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for col in colours:
            for _ in range(int(seconds_each * fps)):
                frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), col, np.uint8), format="rgb24")
                for p in s.encode(frame):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = buf.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def read_styles(shared: Path) -> list[dict]:
    with (shared / "styles.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def copy_photos(shared: Path, rows: list[dict], folder: Path) -> Path:
    """The rows' product photos from the shared data into `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        (folder / f"{r['id']}.jpg").write_bytes((shared / "images" / f"{r['id']}.jpg").read_bytes())
    return folder


def write_products_csv(path: Path, rows: list[dict], media_for=lambda r: f"{r['id']}.jpg") -> Path:
    """A products CSV in the documented format from styles.csv rows; prices are made up, links reserved."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["product_id", "title", "price", "currency", "url", "media", "gender", "articleType", "baseColour"])
        for r in rows:
            price = 10 + int(r["id"]) % 90
            w.writerow([f"P{r['id']}", r["productDisplayName"], f"{price}.00", "EUR",
                        f"https://shop.example.com/p/{r['id']}", media_for(r), r["gender"], r["articleType"],
                        r["baseColour"]])
    return path
