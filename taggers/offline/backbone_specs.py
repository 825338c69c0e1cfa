"""The image backbones the offline model can use, and its mid-level feature specs.

No torch here: the embedder reads these to size its inputs before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass

from toolkit.ground.errors import ModelError

LITE0 = "efficientnet-lite0"
LITE2 = "efficientnet-lite2"


@dataclass(frozen=True)
class BackboneSpec:
    """What differs between the EfficientNet-Lite variants the offline model can use."""
    #: Input side in pixels. Lite2's own is 260; 256 keeps every feature map a whole fraction
    #: of the input, which the product-masked pooling's constant kernel needs (ONNX export).
    image_size: int
    #: Output channels of each block, for the length of the mid-level features.
    widths: tuple[int, ...]
    #: Mid-level features the heads see by default: the last block of each of four middle stages.
    mid: str


BACKBONES = {
    LITE0: BackboneSpec(224, (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320),
                        "4,7,10,14/mask"),
    LITE2: BackboneSpec(256, (16, 24, 24, 24, 48, 48, 48, 88, 88, 88, 88, 120, 120, 120, 120,
                              208, 208, 208, 208, 208, 352), "6,10,14,19/mask"),
}


def spec(name: str) -> BackboneSpec:
    """The spec of backbone `name`, or a one-line error listing the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(f"unknown image backbone {name!r}: use one of {', '.join(BACKBONES)}") from None


#: Pooled mid-level features ("4,7,10,14/mask": after those blocks, pooled those ways). Early
#: blocks still see colour and texture, which the last layer has mostly traded for object identity.
#: On a held-out slice of the training split, the product-masked means of blocks 4, 7, 10 and 14
#: (424 more numbers) took the heads' baseColour p@5 from 0.478 to 0.513, colour tags from 0.646
#: to 0.688 and title recall@10 from 0.800 to 0.827; adding plain means and maxima as well
#: (1,272) cost 2 points of articleType p@5 instead.
POOLS = ("mean", "mask", "max")
#: Product pixels: some channel under 232 (the photos are shot on white), in normalised units.
_PRODUCT_BELOW = (232 - 127) / 128


def parse_mid(mid: str, backbone: str = LITE0) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """"4,7,10,14/mean,mask" -> ((4, 7, 10, 14), ("mean", "mask")); "" -> no mid-level features."""
    if not mid:
        return (), ()
    try:
        taps, pools = mid.split("/")
        blocks = tuple(int(t) for t in taps.split(","))
        kinds = tuple(pools.split(","))
    except ValueError:
        raise ModelError(f"mid-level feature spec {mid!r} is not like '4,7,10,14/mean,mask'") from None
    n = len(spec(backbone).widths)
    if not all(0 <= b < n for b in blocks) or not set(kinds) <= set(POOLS):
        raise ModelError(f"mid-level feature spec {mid!r}: blocks 0-{n - 1}, pools among {', '.join(POOLS)}")
    return blocks, kinds


def mid_dim(mid: str, backbone: str = LITE0) -> int:
    """Length of the mid-level part of the descriptor for `mid` on `backbone`."""
    blocks, kinds = parse_mid(mid, backbone)
    return sum(spec(backbone).widths[b] for b in blocks) * len(kinds)
