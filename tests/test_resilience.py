"""The shared machinery of the cloud taggers: rate limiting, retries, the worker pool."""
from __future__ import annotations

import random
import threading
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from taggers.resilience import (CallStats, ItemFailed, Kind, Outcome, RateLimiter, RetryPolicy,
                                call_with_retries, first_line, parse_retry_after, run_pool)
from toolkit.ground.errors import FatalTaggerError


class FakeClock:
    """Time that passes only when someone sleeps: limiter arithmetic without waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_limiter_spaces_calls_at_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        limiter.acquire()
    times = list(limiter.times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) == pytest.approx(0.25)
    assert times[-1] - times[0] == pytest.approx(2.0)
    assert limiter.max_in_window(1.0) == 4


def test_limiter_holds_across_threads():
    limiter = RateLimiter(40.0)
    started = time.monotonic()

    def worker():
        for _ in range(10):
            limiter.acquire()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert len(limiter.times) == 60
    # Counted, not timed: no more calls than the rate allows in the time it took (+1 burst).
    assert len(limiter.times) <= 40.0 * elapsed + 1
    assert limiter.max_in_window(1.0) <= 41


def test_defer_holds_every_caller_back():
    clock = FakeClock()
    limiter = RateLimiter(100.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.defer(2.0)
    limiter.acquire()
    assert limiter.times[1] - limiter.times[0] >= 2.0


def test_backoff_is_full_jitter_and_never_under_retry_after():
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    delays = [policy.backoff(3, None, rng) for _ in range(500)]
    assert 0.0 <= min(delays) < 0.5 and 3.0 < max(delays) <= 4.0  # spread over [0, min(4, 0.5*2^3)]
    assert all(policy.backoff(0, 2.0, rng) >= 2.0 for _ in range(100))


@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after-ms": "250", "Retry-After": "1"}, 0.25),
    ({"x-ms-retry-after-ms": "1500"}, 1.5),
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= parse_retry_after({"Retry-After": format_datetime(when, usegmt=True)}) <= 31


def _run(outcomes: list, max_retries: int = 3):
    """call_with_retries over a function that raises the given outcomes in turn, then returns."""
    stats = CallStats("test", 1000)
    queue = list(outcomes)

    def fn():
        if queue:
            raise RuntimeError(queue.pop(0))
        return "ok"

    def classify(exc):
        kind, retry_after = exc.args[0]
        return Outcome(kind, f"service says {kind.value}", retry_after)

    limiter = RateLimiter(1000.0)
    result = call_with_retries(fn, classify, limiter, RetryPolicy(max_retries, 0.001, 0.01), stats,
                               sleep=lambda s: None)
    return result, stats


def test_retries_throttling_and_server_errors_then_succeeds():
    result, stats = _run([(Kind.THROTTLED, 0.0), (Kind.TRANSIENT, None)])
    assert result == "ok"
    assert (stats.calls, stats.retries, stats.throttled, stats.transient_errors) == (3, 2, 1, 1)


def test_gives_up_after_bounded_tries_with_the_last_message():
    with pytest.raises(ItemFailed) as info:
        _run([(Kind.TRANSIENT, None)] * 10, max_retries=3)
    assert info.value.attempts == 4
    assert info.value.message == "service says transient"


def test_item_error_is_not_retried():
    with pytest.raises(ItemFailed) as info:
        _run([(Kind.ITEM, None)])
    assert info.value.attempts == 1


def test_fatal_error_raises_at_once():
    with pytest.raises(FatalTaggerError, match="service says fatal"):
        _run([(Kind.FATAL, None)])


def test_throttle_with_retry_after_defers_the_whole_service():
    limiter = RateLimiter(1000.0)
    stats = CallStats("test", 1000)
    calls = iter([RuntimeError(), None])

    def fn():
        exc = next(calls)
        if exc:
            raise exc

    call_with_retries(fn, lambda e: Outcome(Kind.THROTTLED, "slow down", 0.2), limiter,
                      RetryPolicy(2, 0.001, 0.01), stats)
    assert limiter.times[1] - limiter.times[0] >= 0.2


def test_pool_yields_every_result():
    results = sorted(run_pool(list(range(20)), lambda i, cancel: i * i, concurrency=4))
    assert results == [i * i for i in range(20)]


def test_pool_stops_queued_work_on_a_fatal_error():
    started = []

    def work(i, cancelled):
        started.append(i)
        if i == 2:
            raise FatalTaggerError("wrong key: set TOOLKIT_X")
        cancelled.wait(0.05)
        return i

    with pytest.raises(FatalTaggerError, match="TOOLKIT_X"):
        list(run_pool(list(range(200)), work, concurrency=2))
    assert len(started) < 20


def test_first_line_flattens_and_shortens():
    assert first_line("a\n  b\tc") == "a b c"
    assert len(first_line("x" * 1000)) == 300
