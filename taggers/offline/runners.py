"""How the offline model's parts run: an ONNX Runtime session, torch's threads, quiet loads."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


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
    """One exported image graph on ONNX Runtime: normalised NCHW float32 in, its output out."""

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
