"""What every cloud tagger needs to survive a long run: a rate limiter, retries, a worker pool.

A cloud service answers four ways besides success: "slow down" (throttled), "try again" (a
server error, a timeout, a dropped connection), "not this item" (a bad image), and "not at all"
(a wrong key, a missing project). The taggers classify each SDK exception into one of those
(`Outcome`), and `call_with_retries` does the rest: waits its turn at the service's rate,
retries the first two kinds with exponential backoff and full jitter (at least the
Retry-After the service asked for), gives up on an item after a bounded number of tries, and
turns "not at all" into `FatalTaggerError`, which stops the run.
"""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

from toolkit.ground.errors import FatalTaggerError

T = TypeVar("T")
R = TypeVar("R")


class Kind(Enum):
    THROTTLED = "throttled"  # 429 / RESOURCE_EXHAUSTED: retry, and slow the whole service down
    TRANSIENT = "transient"  # 5xx, timeout, dropped connection, garbled body: retry
    ITEM = "item"  # this item is bad (unreadable image, invalid video): report it, go on
    FATAL = "fatal"  # wrong key, missing project or iteration, no credential: stop the run


@dataclass(frozen=True)
class Outcome:
    """How a tagger classified one failed call."""

    kind: Kind
    #: The service's own words, or for FATAL the one-line message naming the setting to fix.
    message: str
    #: Seconds the service asked us to wait (Retry-After, RetryInfo), if it said.
    retry_after: float | None = None


class ItemFailed(Exception):
    """An item gave up: its last error was not retryable, or its tries ran out."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts

    def report(self) -> str:
        """The line a run report shows: the service's words, and how hard we tried."""
        if self.attempts <= 1:
            return self.message
        return f"{self.message} (gave up after {self.attempts} tries)"


class Cancelled(Exception):
    """The run is stopping (another item hit a fatal error): do not start another call."""


@dataclass
class CallStats:
    """Counters a tagger keeps over a whole run, for the summary and the rate check."""

    service: str
    rate: float
    calls: int = 0  # every request sent, first tries and retries alike
    retries: int = 0
    throttled: int = 0
    transient_errors: int = 0
    items_ok: int = 0
    items_failed: int = 0
    extra: dict[str, int] = field(default_factory=dict)  # per-service counters (polls, downscaled...)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            if hasattr(self, name) and name != "extra":
                setattr(self, name, getattr(self, name) + n)
            else:
                self.extra[name] = self.extra.get(name, 0) + n

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {
                "service": self.service, "rate_limit_per_s": self.rate, "calls": self.calls,
                "retries": self.retries, "throttled": self.throttled,
                "transient_errors": self.transient_errors,
                "items_ok": self.items_ok, "items_failed": self.items_failed,
            }
            out.update(self.extra)
            return out


class RateLimiter:
    """A token bucket: at most `rate` calls a second, in bursts of at most `burst`.

    Thread-safe. Each `acquire` is one call; the limiter keeps their times so a run can show
    how close it came to the configured rate. `defer` holds every caller back when the
    service says it is overloaded, so one 429 slows the whole service, not just one thread.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, keep: int = 100_000) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._not_before = 0.0
        self._lock = threading.Lock()
        self.times: deque[float] = deque(maxlen=keep)

    def acquire(self, cancelled: threading.Event | None = None) -> None:
        while True:
            with self._lock:
                wait_s = self._reserve()
                if wait_s <= 0:
                    self.times.append(self._clock())
                    return
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            self._sleep(min(wait_s, 0.25))  # short naps, so a cancel is noticed

    def _reserve(self) -> float:
        """Take a token if one is due now; otherwise return how long until one is."""
        now = self._clock()
        if now < self._not_before:
            return self._not_before - now
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def defer(self, seconds: float) -> None:
        """Nobody calls for `seconds` from now (the service asked us to back off)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)
            self._tokens = 0.0

    def max_in_window(self, window: float = 1.0) -> int:
        """Most calls started within any `window` seconds of the run."""
        times = sorted(self.times)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # tries after the first
    base_delay: float = 0.5  # seconds before the first retry, doubled each time (before jitter)
    max_delay: float = 30.0

    def backoff(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Full jitter: uniform(0, min(max, base * 2**retry)); never less than Retry-After."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** retry))
        delay = rng.uniform(0.0, ceiling)
        if retry_after is not None:
            # Waiting exactly Retry-After would send every throttled thread back at once.
            delay = max(delay, retry_after + rng.uniform(0.0, self.base_delay))
        return delay


def call_with_retries(fn: Callable[[], R], classify: Callable[[BaseException], Outcome],
                      limiter: RateLimiter, policy: RetryPolicy, stats: CallStats,
                      cancelled: threading.Event | None = None,
                      rng: random.Random | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> R:
    """Call `fn` at the limiter's pace until it succeeds, fails for good, or the run stops.

    Raises ItemFailed (the item's last error), FatalTaggerError (stop everything) or Cancelled.
    """
    rng = rng or random.Random()
    for attempt in range(policy.max_retries + 1):
        if cancelled is not None and cancelled.is_set():
            raise Cancelled()
        limiter.acquire(cancelled)
        if cancelled is not None and cancelled.is_set():
            raise Cancelled()  # the run stopped while this call waited its turn
        stats.add("calls")
        if attempt:
            stats.add("retries")
        try:
            return fn()
        except (Cancelled, ItemFailed, FatalTaggerError):
            raise  # already decided, by a nested call_with_retries or a credential check
        except Exception as exc:  # noqa: BLE001 - every SDK error is classified below
            outcome = classify(exc)
        if outcome.kind is Kind.FATAL:
            raise FatalTaggerError(outcome.message)
        if outcome.kind is Kind.ITEM or attempt == policy.max_retries:
            raise ItemFailed(outcome.message, attempt + 1)
        if outcome.kind is Kind.THROTTLED:
            stats.add("throttled")
            if outcome.retry_after:
                limiter.defer(outcome.retry_after)
        else:
            stats.add("transient_errors")
        _sleep_unless_cancelled(policy.backoff(attempt, outcome.retry_after, rng), cancelled, sleep)
    raise AssertionError("unreachable")  # the loop always returns or raises


def _sleep_unless_cancelled(seconds: float, cancelled: threading.Event | None,
                            sleep: Callable[[float], None]) -> None:
    if cancelled is None:
        sleep(seconds)
    elif cancelled.wait(seconds):
        raise Cancelled()


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` / `x-ms-retry-after-ms` (Azure) or `Retry-After`
    (seconds or an HTTP date). None when the service did not say."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in lower:
            try:
                return max(0.0, float(lower[name]) / 1000.0)
            except ValueError:
                pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def run_pool(items: Sequence[T], work: Callable[[T, threading.Event], R], concurrency: int) -> Iterator[R]:
    """Run `work` over `items` on up to `concurrency` threads, yielding results as they finish.

    `work` gets a cancel event. When one item raises FatalTaggerError the event is set,
    queued items never start, calls in flight stop at their next wait, and the error is
    re-raised here once the pool is drained (so no thread outlives the run).
    """
    cancelled = threading.Event()

    def guarded(item: T) -> R:
        if cancelled.is_set():
            raise Cancelled()
        try:
            return work(item, cancelled)
        except FatalTaggerError:
            cancelled.set()  # at once, not when the consumer next looks: other threads stop sooner
            raise

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="tagger")
    fatal: FatalTaggerError | None = None
    try:
        pending: set[Future[R]] = {pool.submit(guarded, item) for item in items}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                if fut.cancelled():
                    continue
                try:
                    result = fut.result()
                except FatalTaggerError as exc:
                    fatal = fatal or exc
                    cancelled.set()
                    for other in pending:
                        other.cancel()  # queued items never start
                    continue
                except Cancelled:
                    continue
                if fatal is None:
                    yield result
    finally:
        cancelled.set()
        pool.shutdown(wait=True, cancel_futures=True)
    if fatal is not None:
        raise fatal


def first_line(text: str, limit: int = 300) -> str:
    """Services send multi-line and HTML bodies; a report line wants one short line."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"

