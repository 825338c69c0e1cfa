"""The text tower on ONNX Runtime gives PyTorch's vectors, and a search process that finds the
export cached never imports torch or sentence-transformers (the cold-start fix)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from taggers.offline.model import OfflineEmbedder

TEXTS = ["red summer dress", "black leather sandals for men", "Gold WATCH!", "", "kids shoes " * 200]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("text-onnx")


@pytest.fixture
def embedder(data_dir):
    """One export per module: the cache lives in a data dir the tests share."""
    emb = OfflineEmbedder(runtime="auto", cache=data_dir / "cache")
    emb.embed_texts(["warm up: exports the tower the first time"])
    return emb


def test_onnx_text_vectors_equal_pytorch_ones(embedder):
    assert embedder.text_tower() is not None
    onnx = embedder.embed_texts(TEXTS)
    torch_path = embedder.project_texts(embedder.texts(TEXTS))
    assert onnx.shape == (len(TEXTS), embedder.dim)
    np.testing.assert_allclose(onnx, torch_path, atol=1e-5)


def test_runtime_torch_keeps_the_pytorch_path():
    assert OfflineEmbedder(runtime="torch").text_tower() is None


def test_a_cached_export_embeds_without_torch(embedder):
    code = ("import sys; from taggers.offline.model import OfflineEmbedder; "
            f"v = OfflineEmbedder(cache={str(embedder.cache)!r}).embed_texts(['red dress']); "
            "print(v.shape, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(1,", "256)", "False", "False"]


def test_the_first_export_prints_no_progress_bar(tmp_path):
    # stderr belongs to the toolkit's own progress: transformers' "Loading weights" bar used to
    # appear in the middle of the first `toolkit search` or `toolkit eval` in a new data dir.
    cache = str(tmp_path / "fresh" / "cache")
    code = f"from taggers.offline.model import OfflineEmbedder; print(OfflineEmbedder(cache={cache!r}).embed_texts(['red dress']).shape)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert run.stdout.split() == ["(1,", "256)"]
    assert list((tmp_path / "fresh" / "cache" / "onnx").glob("text-tower-*.onnx")), "the tower was exported"
    assert "Loading weights" not in run.stderr and "it/s" not in run.stderr, run.stderr
