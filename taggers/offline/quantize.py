"""int8 image backbone: static quantisation (QDQ, per-channel int8 weights, uint8 activations)
of the exported fp32 ONNX model, calibrated on the product photos shipped in
taggers/data/calibration (48 train-split photos and their mirror images).

Whether it runs is taggers/offline/precision.py's call, made on each machine: these u8s8 kernels match
fp32 where the CPU has VNNI, AMX or ARM64's dot product, and saturate on x86-64 without them.
Other recipes were measured (backbone features on 48 eval photos, cosine to fp32, mean / lowest;
speed over fp32 on an AVX-512 VNNI + AMX Xeon; "AVX2" is the same ONNX Runtime under QEMU's
Haswell CPU model):
  u8s8 (kept)      VNNI 0.9959 / 0.9917, 1.9x     AVX2 0.909 / 0.684
  u8s8 reduce_range VNNI 0.9869 / 0.9669, 1.9x    AVX2 0.9869 / 0.9669 (same everywhere, less exact)
  s8s8             VNNI 0.9959 / 0.9919, 1.0x     (no faster, so pointless)
  u8u8             VNNI 0.9971 / 0.9937, 0.1x     (ten times slower than fp32)
Dynamic quantisation was rejected earlier: 4x slower than fp32 and cosine 0.86 to it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from taggers.offline.preprocess import mirrored, normalise, to_square
from toolkit.ground.files import atomic_path

CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "calibration"
#: Part of the file name: a new calibration set or recipe makes a new file.
VERSION = "qdq1"


def int8_path(fp32: Path) -> Path:
    return fp32.with_name(f"{fp32.stem}-int8-{VERSION}.onnx")


def calibration_batches(batch: int = 16, size: int = 224) -> Iterator[np.ndarray]:
    """Normalised NCHW batches of the calibration photos, each followed by its mirror images."""
    arrs = calibration_photos(size)
    for i in range(0, len(arrs), batch):
        yield normalise(arrs[i:i + batch])
        yield normalise(mirrored(arrs[i:i + batch]))


def calibration_photos(size: int = 224) -> np.ndarray:
    """The calibration photos as squared uint8 pictures (N, size, size, 3), without mirrors: what
    taggers/offline/precision.py checks int8 against fp32 on."""
    from PIL import Image

    photos = sorted(CALIBRATION.glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no calibration photos in {CALIBRATION}")
    return np.stack([to_square(Image.open(p), size) for p in photos])


def quantize_backbone(fp32: Path, size: int = 224) -> Path:
    """Write the int8 model next to the fp32 one (once; under a temporary name, then renamed)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = int8_path(fp32)
    if out.is_file():
        return out
    input_name = _input_name(fp32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(size=size)

        def get_next(self) -> dict | None:
            x = next(self.batches, None)
            return None if x is None else {input_name: x}

    tmp_pre = out.with_name(f"{out.stem}.{os.getpid()}.pre.onnx")
    try:
        with atomic_path(out) as tmp:
            quant_pre_process(str(fp32), str(tmp_pre))
            quantize_static(str(tmp_pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        tmp_pre.unlink(missing_ok=True)
    return out


def _input_name(model: Path) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
