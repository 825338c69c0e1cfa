"""Pictures as the offline model's image side takes them: squared on white, resized, normalised.

Shared by the featurizers, the int8 calibration (quantize.py) and training (toolkit/training),
so every path to the backbone prepares a photo the same way.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from taggers.offline.colour import COLOUR_DIM, colour_features

#: Side of the square pictures EfficientNet-Lite0 takes.
IMAGE_SIZE = 224


def pad_square(img: Image.Image) -> Image.Image:
    """The RGB picture centred on a white square: products sit on white, and stretching would
    distort their shape."""
    img = img.convert("RGB")
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def to_square(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB uint8 (size, size, 3): padded with white to a square (`pad_square`), then resized."""
    img = pad_square(img)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def normalise(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW with EfficientNet-Lite's own normalisation, (x*255-127)/128."""
    return ((batch.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2).copy()


def mirrored(batch: np.ndarray) -> np.ndarray:
    """The mirror images of squared uint8 pictures (N, side, side, 3)."""
    return np.ascontiguousarray(batch[:, :, ::-1])


def colour_batch(batch: np.ndarray) -> np.ndarray:
    """Colour features (N, COLOUR_DIM) of squared uint8 pictures."""
    return np.stack([colour_features(a) for a in batch]) if len(batch) else np.zeros((0, COLOUR_DIM), np.float32)
