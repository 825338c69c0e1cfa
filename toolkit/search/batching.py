"""Embed the queries of requests that arrive together in one model call.

Under load, `toolkit serve` has many requests in flight, each wanting one text or one photo
embedded. One model call per request pays the per-call cost (session start, tokenizer,
thread hand-off inside ONNX Runtime) every time and makes the calls contend for the same
cores; a batch of 16 costs little more than a batch of 1. So each kind of query has a lane:
a request puts its query in the lane and waits; the lane's one thread takes everything that
is waiting (up to `max_batch`), embeds it in one call and hands each request its row. An
idle lane embeds a lone query at once: batching adds no wait, it only gathers what queued
while the previous call ran.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np


class _Job:
    __slots__ = ("items", "result", "error", "done")

    def __init__(self, items: list) -> None:
        self.items, self.result, self.error, self.done = items, None, None, threading.Event()


class Lane:
    """One model function, fed by many threads, called by one."""

    def __init__(self, fn: Callable[[list], np.ndarray], max_batch: int, name: str) -> None:
        self.fn, self.max_batch = fn, max_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self.calls = 0  # model calls made, for tests and benchmarks
        self._thread = threading.Thread(target=self._run, name=f"toolkit-batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Any]) -> np.ndarray:
        job = _Job(list(items))
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _take(self) -> list[_Job]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._queue))
            batch, n = [], 0
            while self._queue and (not batch or n + len(self._queue[0].items) <= self.max_batch):
                job = self._queue.popleft()
                batch.append(job)
                n += len(job.items)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                out = self.fn([x for job in batch for x in job.items])
                self.calls += 1
                pos = 0
                for job in batch:
                    job.result = out[pos:pos + len(job.items)]
                    pos += len(job.items)
            except BaseException as exc:  # each request gets the error, as if it had called alone
                for job in batch:
                    job.error = exc
            for job in batch:
                job.done.set()


class BatchingEmbedder:
    """An Embedder whose texts and images are embedded through lanes; everything else (model_id,
    dim, tag heads) is the wrapped embedder's."""

    def __init__(self, embedder: Any, max_batch: int = 32) -> None:
        self.inner = embedder
        self.texts = Lane(embedder.embed_texts, max_batch, "texts")
        self.images = Lane(embedder.embed_images, max_batch, "images")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.texts.submit(texts)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        return self.images.submit(images)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
