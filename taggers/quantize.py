"""int8 image backbone: static quantisation (QDQ, per-channel int8 weights, uint8 activations)
of the exported fp32 ONNX model, calibrated on the product photos shipped in
taggers/data/calibration (48 train-split photos and their mirror images).

Measured in bench/inference.py: 2.1x the fp32 backbone's speed, 1.55x the whole image
embedder's, and the spine's quality figures within 0.6 points: so it is the default.
Dynamic quantisation was tried and rejected: 4x slower than fp32 and cosine 0.86 to it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

CALIBRATION = Path(__file__).resolve().parent / "data" / "calibration"
#: Part of the file name: a new calibration set or recipe makes a new file.
VERSION = "qdq1"


def int8_path(fp32: Path) -> Path:
    return fp32.with_name(f"{fp32.stem}-int8-{VERSION}.onnx")


def calibration_batches(batch: int = 16, size: int = 224) -> Iterator[np.ndarray]:
    """Normalised NCHW batches of the calibration photos, each followed by its mirror images."""
    from PIL import Image

    from taggers.offline_model import normalise, to_square

    photos = sorted(CALIBRATION.glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no calibration photos in {CALIBRATION}")
    arrs = np.stack([to_square(Image.open(p), size) for p in photos])
    for i in range(0, len(arrs), batch):
        yield normalise(arrs[i:i + batch])
        yield normalise(np.ascontiguousarray(arrs[i:i + batch, :, ::-1]))


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
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.onnx")
    try:
        quant_pre_process(str(fp32), str(tmp_pre))
        quantize_static(str(tmp_pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(tmp, out)
    finally:
        tmp_pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def _input_name(model: Path) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].name
