"""The pipeline's writer thread: chunks stored in order, all of them before close() returns,
and a store error reaching the run's own thread."""
from __future__ import annotations

import threading

import pytest

from toolkit.ingest.writer import ChunkWriter


def test_jobs_are_written_in_order_and_all_before_close_returns():
    written, gate = [], threading.Event()

    def write(job):
        gate.wait(5)  # the writer is slower than the submitter
        written.append(job)

    writer = ChunkWriter(lambda jobs: [write(j) for j in jobs], depth=2)
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

    writer = ChunkWriter(lambda jobs: [write(j) for j in jobs])
    with pytest.raises(OSError, match="disk full"):  # on a later submit, or at the latest on close
        for i in range(4):
            writer.submit(i)
        writer.close()
    writer.close()  # raised once only; closing again is quiet
    assert written == [0]


def test_grouped_writes_gather_jobs_up_to_a_batch_and_flush_the_rest_on_close():
    groups = []
    writer = ChunkWriter(write_many=lambda jobs: groups.append(list(jobs)), prepare=lambda job: job * 10,
                         size=lambda job: 1, batch=3, max_wait=60)
    for i in range(7):
        writer.submit(i)
    writer.close()
    assert groups == [[0, 10, 20], [30, 40, 50], [60]]


def test_grouped_writes_do_not_wait_longer_than_max_wait():
    written = threading.Event()
    writer = ChunkWriter(write_many=lambda jobs: written.set(), size=lambda job: 1, batch=100, max_wait=0.05)
    writer.submit("only")
    assert written.wait(5), "a lone job is written once it has waited max_wait"
    writer.close()


def test_grouped_jobs_of_size_zero_are_written_at_once():
    written = threading.Event()
    writer = ChunkWriter(write_many=lambda jobs: written.set(), size=lambda job: 0, batch=100, max_wait=60)
    writer.submit("nothing to store")
    assert written.wait(5)
    writer.close()
