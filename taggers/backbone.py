"""EfficientNet-Lite0, the offline model's image backbone, in PyTorch and exported to ONNX.

Imports torch at module level: only import this lazily (see taggers/offline_model.py).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

from taggers import weights
from toolkit.errors import ModelError

IMAGE_SIZE = 224


def load_backbone(overrides: dict[str, torch.Tensor] | None = None) -> EfficientNet:
    """EfficientNet-Lite0 with verified ImageNet weights, then any fine-tuned tensors on top, in eval mode."""
    path = weights.efficientnet_lite0_weights()
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if overrides:
        unknown = set(overrides) - set(model.state_dict())
        if unknown:
            raise ModelError(f"heads file replaces unknown backbone tensors {sorted(unknown)[:3]}; retrain it")
        model.load_state_dict(overrides, strict=False)
    return model.eval()


class Pooled(torch.nn.Module):
    """`extract_features` + global average pooling: the 1280-d image descriptor."""

    def __init__(self, inner: EfficientNet) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.extract_features(x).mean(dim=(2, 3))


class TorchBackbone:
    def __init__(self, model: EfficientNet) -> None:
        self.pooled = Pooled(model).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.pooled(torch.from_numpy(x)).numpy()


def export_onnx(model: EfficientNet, out: Path) -> Path:
    """Export the pooled backbone once (see `_export`)."""
    return _export(Pooled(model).eval(), "features", out)


def _export(module: torch.nn.Module, output: str, out: Path) -> Path:
    """Write an ONNX file under a temporary name and rename it, so a crash or a parallel run
    never leaves a half-written model behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no onnxscript; its notices are noise here.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=[output],
                              dynamic_axes={"pixels": {0: "batch"}, output: {0: "batch"}},
                              dynamo=False, opset_version=17)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out

class Front(torch.nn.Module):
    """Stem and the first blocks: the frozen part when the last blocks are fine-tuned."""

    def __init__(self, inner: EfficientNet, n_blocks: int) -> None:
        super().__init__()
        self.inner = inner
        self.n_blocks = n_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        x = m._swish(m._bn0(m._conv_stem(x)))
        for block in m._blocks[: self.n_blocks]:
            x = block(x)  # the blocks kept frozen have no drop-connect at inference
        return x


class Tail(torch.nn.Module):
    """The last blocks, head convolution and pooling: the part that is fine-tuned.
    Batch-norm statistics stay frozen (ImageNet's), only weights and affine terms train."""

    def __init__(self, inner: EfficientNet, n_blocks: int) -> None:
        super().__init__()
        self.inner = inner
        self.start = len(inner._blocks) - n_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        for block in m._blocks[self.start:]:
            x = block(x)
        return m._swish(m._bn1(m._conv_head(x))).mean(dim=(2, 3))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The backbone tensors this tail changes, named as in the full model's state dict."""
        names = tuple(f"_blocks.{i}." for i in range(self.start, len(self.inner._blocks))) + ("_conv_head.", "_bn1.")
        return {k: v for k, v in self.inner.state_dict().items() if k.startswith(names)}

    def train(self, mode: bool = True) -> "Tail":
        super().train(mode)
        for mod in self.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.eval()
        return self


def export_front_onnx(model: EfficientNet, n_blocks: int, out: Path) -> Path:
    """Export the frozen front, so caching its activations runs at ONNX Runtime speed."""
    return _export(Front(model, n_blocks).eval(), "activations", out)
