"""The text tower (MiniLM, mean pooling, normalisation, the text head) as one ONNX graph.

A first `toolkit search` spent 3.8 s importing sentence-transformers and 1 s importing
torch before it could embed a few words. Exported once (with torch, into the cache) the
tower runs on ONNX Runtime with the `tokenizers` library alone: no torch, no
transformers at query time, and the same vectors (tests/test_text_onnx.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from taggers.offline.heads import Heads

_FORMAT = "v1"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def tower_key(heads_sha256: str, minilm_hashes: dict[str, str]) -> str:
    """Names an export by the exact weights it was made from (heads file and MiniLM files)."""
    spec = json.dumps([heads_sha256, sorted(minilm_hashes.items()), _FORMAT])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def max_seq_length(folder: Path) -> int:
    """sentence-transformers' own truncation length for the model (256 for all-MiniLM-L6-v2)."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return 256


class OnnxTextTower:
    """Texts -> L2-normalised vectors in the shared space, on ONNX Runtime."""

    def __init__(self, onnx_path: Path, tokenizer_file: Path, max_length: int, threads: int = 0) -> None:
        from tokenizers import Tokenizer

        from taggers.offline.runtime_files import onnxruntime

        ort = onnxruntime()

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = [self._batch(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(list(texts))
        feed = {"input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]


def export_text_tower(heads: "Heads", minilm_folder: Path, out: Path) -> Path:
    """Write MiniLM + mean pooling + normalise + the text head as ONNX (under a temporary name,
    renamed when complete, so a crash or a parallel run never leaves half a file)."""
    import torch
    from transformers import AutoModel

    from taggers.offline.runners import quietly
    from taggers.offline.runtime_files import sweep_stale_tmp
    from toolkit.ground.files import atomic_path

    bert = quietly(lambda: AutoModel.from_pretrained(str(minilm_folder), attn_implementation="eager")).eval()
    tower = _Tower(bert, heads).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(out.parent)
    dummy = tuple(torch.ones(2, 8, dtype=torch.int64) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.int64)
                  for n in INPUTS)
    axes = {n: {0: "batch", 1: "tokens"} for n in INPUTS} | {"vector": {0: "batch"}}
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(tower, dummy, str(tmp), input_names=list(INPUTS), output_names=["vector"],
                          dynamic_axes=axes, dynamo=False, opset_version=17)
    return out


def _Tower(bert: Any, heads: "Heads") -> Any:
    import torch

    class Tower(torch.nn.Module):
        """What TextFeaturizer + Heads.encode_text compute, as one module."""

        def __init__(self) -> None:
            super().__init__()
            self.bert, self.heads = bert, heads

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001 - traced
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return self.heads.encode_text(pooled)

    return Tower()
