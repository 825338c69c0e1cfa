"""The offline two-tower model: image backbone (ONNX Runtime), text tower, heads and their precision.

What the rest of the house may use is named here; training (toolkit/training) and evaluation
(toolkit/evaluation) import these names only, never a module inside. Importing this package
loads neither torch nor a model: the names that need torch (heads, tag classifiers, the
PyTorch backbone) are imported when first asked for.

    the model          OfflineEmbedder, model_prefix, cache_dir, default_cache
    featurizers        ImageFeaturizer, TextFeaturizer, FrontRunner, BACKBONE_DIM, TEXT_DIM
    pictures           IMAGE_SIZE, pad_square, to_square, normalise, mirrored, colour_batch,
                       COLOUR_DIM, COLOUR_VERSION
    backbones          LITE0, LITE0_BLOCKS, backbone_spec
    files              sha256_file, file_sha256, sidecar_path, read_sidecar, tag_heads_path, tag_heads_file
    heads (torch)      Heads, HeadsConfig, save_heads, load_heads, read_heads_config
    tag heads (torch)  TagHeads, TagHeadsConfig, save_tag_heads, load_tag_heads
    fine-tuning (torch) load_backbone, Tail
"""
from __future__ import annotations

from typing import Any

from taggers.offline.backbone_specs import LITE0
from taggers.offline.backbone_specs import spec as backbone_spec
from taggers.offline.colour import COLOUR_DIM, COLOUR_VERSION
from taggers.offline.defaults import cache_dir, default_cache
from taggers.offline.featurizers import (BACKBONE_DIM, TEXT_DIM, FrontRunner, ImageFeaturizer, Precision, Runtime,
                                         TextFeaturizer)
from taggers.offline.model import OfflineEmbedder, model_prefix
from taggers.offline.preprocess import IMAGE_SIZE, colour_batch, mirrored, normalise, pad_square, to_square
from taggers.weights import file_sha256, read_sidecar, sha256_file, sidecar_path, tag_heads_file
from taggers.weights import path_beside as tag_heads_path

#: Blocks of EfficientNet-Lite0 (fine-tuning trains the last few).
LITE0_BLOCKS = 16

#: Names that need torch, and the module each comes from.
_WITH_TORCH = {
    "Heads": "heads", "HeadsConfig": "heads", "save_heads": "heads", "load_heads": "heads",
    "read_heads_config": "heads",
    "TagHeads": "tag_heads", "TagHeadsConfig": "tag_heads", "save_tag_heads": "tag_heads",
    "load_tag_heads": "tag_heads",
    "load_backbone": "backbone", "Tail": "backbone",
}

__all__ = [
    "BACKBONE_DIM", "COLOUR_DIM", "COLOUR_VERSION", "IMAGE_SIZE", "LITE0", "LITE0_BLOCKS", "TEXT_DIM",
    "FrontRunner", "ImageFeaturizer", "OfflineEmbedder", "Precision", "Runtime", "TextFeaturizer",
    "backbone_spec", "cache_dir", "colour_batch", "default_cache", "file_sha256", "mirrored", "model_prefix",
    "normalise", "pad_square", "read_sidecar", "sha256_file", "sidecar_path", "tag_heads_file", "tag_heads_path", "to_square",
    *_WITH_TORCH,
]


def __getattr__(name: str) -> Any:
    if name not in _WITH_TORCH:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _WITH_TORCH[name] == "heads":
        from taggers.offline import heads as module
    elif _WITH_TORCH[name] == "tag_heads":
        from taggers.offline import tag_heads as module
    else:
        from taggers.offline import backbone as module
    value = getattr(module, "read_config" if name == "read_heads_config" else name)
    globals()[name] = value
    return value
