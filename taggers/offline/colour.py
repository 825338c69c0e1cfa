"""Colour features of the product itself, for the image tower.

ImageNet features barely separate colours, so the image head also sees a colour
histogram of the product. Products are shot on white: the background is the near-white
area connected to the picture's border (so a white shirt, enclosed by its own outline,
still counts as foreground). Pixels near the centre weigh more, since that is where the
product is and where a model's skin or other garments are least likely.
Computed on a 112 px copy: colour needs no detail, and this keeps it cheap next to the backbone.
"""
from __future__ import annotations

import numpy as np
# Imported here, on the thread that imports this module, not first from the colour worker
# thread (scipy pulls it in): numpy.ma's import iterates numpy's scalar-type table, which
# onnx's import (ml_dtypes) adds to at the same moment on the main thread during a tag run,
# and the import then fails with "dictionary changed size during iteration" (seen once in
# six concurrent tag runs here). 11 ms.
import numpy.ma  # noqa: F401,E402

HUE_BINS = 16
SAT_BINS = 2
VAL_BINS = 4
GREY_BINS = 8
_CHROMA = HUE_BINS * SAT_BINS * VAL_BINS
#: sqrt histogram, foreground share, grey share, Lab mean and std of the product.
COLOUR_DIM = _CHROMA + GREY_BINS + 2 + 6
COLOUR_VERSION = "hsv-lab-fg-v2"

_SIDE = 112
_WHITE_LEVEL = 232  # every channel above this: background candidate
_MIN_FOREGROUND = 0.02
_GREY_SATURATION = 0.18
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], np.float32)
_WHITE_XYZ = np.array([0.9505, 1.0, 1.089], np.float32)


def _centre_weights(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    c, s = (side - 1) / 2, 0.3 * side
    return np.exp(-(((yy - c) / s) ** 2 + ((xx - c) / s) ** 2) / 2)


_WEIGHTS = _centre_weights(_SIDE)


def _shrink(arr: np.ndarray) -> np.ndarray:
    """Average-pool a square picture down to about 112 px (2x2 blocks for the usual 224 px)."""
    f = max(1, arr.shape[0] // _SIDE)
    h = (arr.shape[0] // f) * f
    if f == 2:
        # The usual case, as four strided adds: the same float32 values as the reshape-mean
        # below (sums of four whole numbers, then a division by 4, are exact) in 1/20 of the
        # time; the mean had been 40% of the whole colour descriptor's time.
        a = arr[:h, :h]
        return ((a[0::2, 0::2] + a[1::2, 0::2]) + (a[0::2, 1::2] + a[1::2, 1::2])) / np.float32(4)
    small = arr[:h, :h].reshape(h // f, f, h // f, f, 3).mean(axis=(1, 3))
    return small


def foreground(arr: np.ndarray) -> np.ndarray:
    """Mask of the product: everything but the near-white area touching the border."""
    from scipy import ndimage  # here, not at import: a text search never needs scipy (0.4 s)

    white = (arr >= _WHITE_LEVEL).all(axis=-1)
    labels, _ = ndimage.label(white)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fg = ~np.isin(labels, edge[edge > 0])
    # A product that is itself white and touches the border would vanish: use everything then.
    return fg if fg.mean() >= _MIN_FOREGROUND else np.ones_like(fg)


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (N, 3) in 0-1 to hue (0-1), saturation, value."""
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    delta = mx - mn
    safe = np.where(delta > 1e-6, delta, 1.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    return np.where(delta > 1e-6, hue, 0.0), np.where(mx > 1e-6, delta / np.maximum(mx, 1e-6), 0.0), mx


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (N, 3) in 0-1 to CIE Lab (D65): distances there follow perceived colour."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = lin @ _SRGB_TO_XYZ.T / _WHITE_XYZ
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _histogram(hue: np.ndarray, sat: np.ndarray, val: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted HSV histogram; hue is split between its two nearest bins so that a colour
    on a bin edge does not flip between bins from one photo to the next."""
    hist = np.zeros(_CHROMA + GREY_BINS, np.float32)
    grey = sat < _GREY_SATURATION
    pos = hue * HUE_BINS - 0.5
    h0 = np.floor(pos).astype(int)
    frac = pos - h0
    h0 %= HUE_BINS
    h1 = (h0 + 1) % HUE_BINS
    s_i = np.minimum(((sat - _GREY_SATURATION) / (1 - _GREY_SATURATION) * SAT_BINS).astype(int), SAT_BINS - 1)
    v_i = np.minimum((val * VAL_BINS).astype(int), VAL_BINS - 1)
    c = ~grey
    np.add.at(hist, ((h0 * SAT_BINS + s_i) * VAL_BINS + v_i)[c], (w * (1 - frac))[c])
    np.add.at(hist, ((h1 * SAT_BINS + s_i) * VAL_BINS + v_i)[c], (w * frac)[c])
    np.add.at(hist, (_CHROMA + np.minimum((val * GREY_BINS).astype(int), GREY_BINS - 1))[grey], w[grey])
    return hist


def colour_features(arr: np.ndarray) -> np.ndarray:
    """Colour descriptor of one square RGB uint8 picture (H, W, 3): float32, length COLOUR_DIM."""
    small = _shrink(arr.astype(np.float32))
    if small.shape[:2] != (_SIDE, _SIDE):
        from scipy import ndimage

        small = np.asarray(ndimage.zoom(small, (_SIDE / small.shape[0], _SIDE / small.shape[1], 1), order=1))
    fg = foreground(small)
    px = small[fg] / 255.0
    w = _WEIGHTS[fg]
    w = w / max(float(w.sum()), 1e-9)
    hue, sat, val = rgb_to_hsv(px)
    hist = _histogram(hue, sat, val, w)
    lab = rgb_to_lab(px)
    mean = (lab * w[:, None]).sum(axis=0)
    std = np.sqrt((((lab - mean) ** 2) * w[:, None]).sum(axis=0))
    # Square root (Hellinger) so that small but telling colour areas still count.
    extra = [float(fg.mean()), float(w[sat < _GREY_SATURATION].sum())]
    return np.concatenate([np.sqrt(hist), extra, mean / 100, std / 100]).astype(np.float32)
