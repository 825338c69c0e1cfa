"""Concurrent queries share model calls and each gets exactly its own row."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.helpers import ColourEmbedder
from toolkit.search.batching import BatchingEmbedder


class GatedEmbedder(ColourEmbedder):
    """The real test embedder, whose first text call waits until the test lets it go, so that
    the other requests queue up behind it meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered, self.sizes = threading.Event(), threading.Event(), []

    def embed_texts(self, texts):
        self.sizes.append(len(texts))
        self.entered.set()
        self.gate.wait(30)
        if "boom" in texts:
            raise RuntimeError("the model failed")
        return super().embed_texts(texts)


def test_queries_that_arrive_together_share_a_call_and_get_their_own_rows():
    inner = GatedEmbedder()
    batched = BatchingEmbedder(inner, max_batch=32)
    texts = [f"red dress {i}" for i in range(20)]
    out: dict[int, np.ndarray] = {}
    first = threading.Thread(target=lambda: out.__setitem__(-1, batched.embed_texts(["blue shoes"])[0]))
    first.start()
    assert inner.entered.wait(30)                          # the lane is busy with the first call
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, batched.embed_texts([texts[i]])[0]))
               for i in range(len(texts))]
    for t in threads:
        t.start()
    for _ in range(300):                                   # bounded: until all 20 are queued
        if len(batched.texts._queue) == len(texts):
            break
        threading.Event().wait(0.01)
    inner.gate.set()
    for t in (first, *threads):
        t.join(30)
    assert inner.sizes == [1, 20]                          # 21 queries, 2 model calls
    plain = ColourEmbedder()
    for i, text in enumerate(texts):
        assert np.allclose(out[i], plain.embed_texts([text])[0])
    assert batched.model_id == plain.model_id and batched.dim == plain.dim


def test_a_failed_call_fails_each_of_its_requests_and_the_lane_goes_on():
    inner = GatedEmbedder()
    inner.gate.set()
    batched = BatchingEmbedder(inner)
    with pytest.raises(RuntimeError, match="the model failed"):
        batched.embed_texts(["boom"])
    assert batched.embed_texts(["red dress"]).shape == (1, ColourEmbedder().dim)
