"""EfficientNet-Lite, the offline model's image backbone, in PyTorch and exported to ONNX.

Imports torch at module level: only import this lazily (see taggers/offline/featurizers.py).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

from taggers import weights
from taggers.offline.backbone_specs import _PRODUCT_BELOW, LITE0, parse_mid, spec
from taggers.offline.runtime_files import sweep_stale_tmp
from toolkit.ground.errors import ModelError
from toolkit.ground.files import atomic_path

IMAGE_SIZE = 224


def load_backbone(overrides: dict[str, torch.Tensor] | None = None, name: str = LITE0) -> EfficientNet:
    """An EfficientNet-Lite with verified ImageNet weights, then any fine-tuned tensors on top, in eval mode."""
    spec(name)
    path = weights.efficientnet_weights(name)
    model = EfficientNet.from_name(name)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if overrides:
        unknown = set(overrides) - set(model.state_dict())
        if unknown:
            raise ModelError(f"heads file replaces unknown backbone tensors {sorted(unknown)[:3]}; retrain it")
        model.load_state_dict(overrides, strict=False)
    return model.eval()


class Pooled(torch.nn.Module):
    """`extract_features` + global average pooling: the 1280-d image descriptor, followed by the
    pooled outputs of the blocks `mid` names (see `parse_mid`). "mask" pooling averages over the
    product's pixels only (not the white background), "max" keeps each channel's strongest response."""

    def __init__(self, inner: EfficientNet, mid: str = "", backbone: str = LITE0) -> None:
        super().__init__()
        self.inner = inner
        self.taps, self.pools = parse_mid(mid, backbone)
        self.size = spec(backbone).image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.taps:
            return self.inner.extract_features(x).mean(dim=(2, 3))
        m = self.inner
        product = (x.amin(dim=1, keepdim=True) < _PRODUCT_BELOW).float()
        h = m._swish(m._bn0(m._conv_stem(x)))
        mids = []
        for i, block in enumerate(m._blocks):
            h = block(h)  # eval mode: no drop-connect, as in extract_features
            if i in self.taps:
                mids.append(h)
        parts = [m._swish(m._bn1(m._conv_head(h))).mean(dim=(2, 3))]
        for f in mids:
            for kind in self.pools:
                if kind == "mean":
                    parts.append(f.mean(dim=(2, 3)))
                elif kind == "max":
                    parts.append(f.amax(dim=(2, 3)))
                else:
                    # A constant kernel (ONNX cannot export adaptive pooling to a traced size).
                    w = torch.nn.functional.avg_pool2d(product, self.size // int(f.shape[-1])) + 1e-3
                    parts.append((f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)))
        return torch.cat(parts, dim=1)


class TorchBackbone:
    def __init__(self, model: EfficientNet, mid: str = "", backbone: str = LITE0) -> None:
        self.pooled = Pooled(model, mid, backbone).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.pooled(torch.from_numpy(x)).numpy()


def export_onnx(model: EfficientNet, out: Path, mid: str = "", backbone: str = LITE0) -> Path:
    """Export the pooled backbone (and any mid-level features) once (see `_export`)."""
    return _export(Pooled(model, mid, backbone).eval(), "features", out, spec(backbone).image_size)


def _export(module: torch.nn.Module, output: str, out: Path, size: int = IMAGE_SIZE) -> Path:
    """Write an ONNX file under a temporary name and rename it, so a crash or a parallel run
    never leaves a half-written model behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(out.parent)
    dummy = torch.zeros(1, 3, size, size)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript; its notices are noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), str(tmp), input_names=["pixels"], output_names=[output],
                          dynamic_axes={"pixels": {0: "batch"}, output: {0: "batch"}},
                          dynamo=False, opset_version=17)
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
