"""The pipeline's writer thread: chunks stored in order, all of them before close() returns,
and a store error reaching the run's own thread."""
from __future__ import annotations

import threading

import pytest

from toolkit.pipeline import ChunkWriter


def test_jobs_are_written_in_order_and_all_before_close_returns():
    written, gate = [], threading.Event()

    def write(job):
        gate.wait(5)  # the writer is slower than the submitter
        written.append(job)

    writer = ChunkWriter(write, depth=2)
    submitter = threading.Thread(target=lambda: [writer.submit(i) for i in range(6)])
    submitter.start()
    submitter.join(0.3)
    assert submitter.is_alive(), "a full queue holds the submitter back (bounded memory)"
    gate.set()
    submitter.join(5)
    writer.close()
    assert written == list(range(6))


def test_a_write_error_reaches_the_submitter_and_stops_later_writes():
    written = []

    def write(job):
        if job == 1:
            raise OSError("disk full")
        written.append(job)

    writer = ChunkWriter(write)
    with pytest.raises(OSError, match="disk full"):  # on a later submit, or at the latest on close
        for i in range(4):
            writer.submit(i)
        writer.close()
    writer.close()  # raised once only; closing again is quiet
    assert written == [0]
