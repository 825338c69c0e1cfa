"""Random views of product photos for training the heads: crops, shifts and small turns.

The heads see a photo only through the frozen backbone, so a view costs one backbone pass;
each view is drawn from a seed made of the photo's SHA-256 and the view's number, so its
features can be cached and a rerun draws the same views. Colours are never changed:
colour is one of the labels the heads learn to read.
"""
from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from taggers.offline import pad_square

#: Changing how views are drawn must change this, since cached view features are keyed by it.
AUGMENT_VERSION = "crop-shift-turn-v1"
#: Views are cut from a slightly larger square than the model's input, so crops keep detail.
_WORK_SIDE = 256
_WHITE = (255, 255, 255)


def view_rng(file_sha256: str, view: int) -> np.random.Generator:
    """The random generator of one view of one photo: the same on every machine and run."""
    digest = hashlib.sha256(f"{AUGMENT_VERSION}:{file_sha256}:{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _zoom_in(sq: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop of 65-100% of the area, aspect 3:4 to 4:3, anywhere in the picture."""
    side = sq.size[0]
    area = rng.uniform(0.65, 1.0) * side * side
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = int(min(side, round(np.sqrt(area * aspect))))
    h = int(min(side, round(np.sqrt(area / aspect))))
    x0, y0 = int(rng.integers(0, side - w + 1)), int(rng.integers(0, side - h + 1))
    return pad_square(sq.crop((x0, y0, x0 + w, y0 + h)))


def _zoom_out(sq: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The product at 75-100% of its size, placed anywhere on white."""
    side = sq.size[0]
    n = int(side * rng.uniform(0.75, 1.0))
    canvas = Image.new("RGB", (side, side), _WHITE)
    x0, y0 = int(rng.integers(0, side - n + 1)), int(rng.integers(0, side - n + 1))
    canvas.paste(sq.resize((n, n), Image.BICUBIC), (x0, y0))
    return canvas


def random_view(img: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """One view as RGB uint8 (size, size, 3): zoomed in or out, then perhaps turned up to
    10 degrees and mirrored, on the white the products are shot on."""
    sq = pad_square(img).resize((_WORK_SIDE, _WORK_SIDE), Image.BICUBIC)
    out = _zoom_in(sq, rng) if rng.random() < 0.5 else _zoom_out(sq, rng)
    if rng.random() < 0.5:
        out = out.rotate(float(rng.uniform(-10, 10)), resample=Image.BICUBIC, fillcolor=_WHITE)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out.resize((size, size), Image.BICUBIC), dtype=np.uint8)
