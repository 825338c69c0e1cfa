"""Real CLIP (transformers' CLIPModel) as an Embedder: a hub name or a local folder.

Weights are loaded on first use. No weights can be fetched on machines without the
hub, so every loading failure says how to point at a local copy or use the offline model.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from toolkit.ground.errors import ModelError

_FIX = "set TOOLKIT_CLIP_MODEL to a local folder holding the CLIP model, or use TOOLKIT_MODEL=offline"


class ClipEmbedder:
    """CLIP image and text towers; rows L2-normalised float32 in CLIP's projection space."""

    def __init__(self, name_or_path: str, batch_size: int = 32, threads: int = 0) -> None:
        self.name_or_path = str(name_or_path)
        self.batch_size = batch_size
        self.threads = threads
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, Any] | None = None
        self._config: Any = None

    @property
    def is_local(self) -> bool:
        return Path(self.name_or_path).expanduser().is_dir()

    @property
    def model_id(self) -> str:
        """The hub name, or for a folder its weight file's hash (two folders may share a name)."""
        if not self.is_local:
            return f"clip:{self.name_or_path}"
        from taggers.weights import file_sha256

        folder = Path(self.name_or_path).expanduser()
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not files:
            raise ModelError(f"CLIP folder {folder} has no weight file (*.safetensors or *.bin); {_FIX}")
        digest = hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()
        return f"clip:{folder.name}:{digest[:12]}"

    @property
    def dim(self) -> int:
        return int(self._get_config().projection_dim)

    def _get_config(self) -> Any:
        if self._loaded is not None:
            return self._loaded[0].config
        if self._config is None:
            from transformers import CLIPConfig

            self._config = self._guard(lambda: CLIPConfig.from_pretrained(self.name_or_path))
        return self._config

    def _guard(self, load: Any) -> Any:
        if not self.is_local and Path(self.name_or_path).expanduser().exists():
            raise ModelError(f"CLIP model {self.name_or_path!r} is a file, not a model folder; {_FIX}")
        try:
            return load()
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ModelError(f"cannot load CLIP model {self.name_or_path!r} ({reason}); {_FIX}") from None

    def _components(self) -> tuple[Any, Any, Any]:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._guard(self._load)
            return self._loaded

    def _load(self) -> tuple[Any, Any, Any]:
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        if self.threads:
            torch.set_num_threads(self.threads)
        model = CLIPModel.from_pretrained(self.name_or_path).eval()
        tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        processor = AutoImageProcessor.from_pretrained(self.name_or_path)
        return model, tokenizer, processor

    @property
    def logit_scale(self) -> float:
        return float(self._components()[0].logit_scale.detach().exp().clamp(max=100.0))

    # ---- the Embedder protocol ----
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        model, _, processor = self._components()
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i: i + self.batch_size]]
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
            out.append(self._run(model.get_image_features, pixel_values=pixels))
        return _normalise(np.concatenate(out))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        model, tokenizer, _ = self._components()
        max_len = model.config.text_config.max_position_embeddings
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = tokenizer(list(texts[i: i + self.batch_size]), padding=True, truncation=True,
                            max_length=max_len, return_tensors="pt")
            out.append(self._run(model.get_text_features, input_ids=enc["input_ids"],
                                 attention_mask=enc["attention_mask"]))
        return _normalise(np.concatenate(out))

    @staticmethod
    def _run(fn: Any, **inputs: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            result = fn(**inputs)
        # transformers 5 returns an output object whose pooled, projected vector is
        # `.pooler_output`; older versions returned the tensor itself.
        tensor = result if isinstance(result, torch.Tensor) else result.pooler_output
        return tensor.float().numpy()


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)).astype(np.float32)
