"""Fault steering shared by the fake cloud services: which calls of which items fail, and how."""
from __future__ import annotations

import hashlib
import threading
from typing import ClassVar


def key_of(item: bytes | str) -> str:
    """Items are named by the SHA-256 of their bytes, or by a key the test already has."""
    return hashlib.sha256(item).hexdigest() if isinstance(item, bytes) else item


def fraction(text: str) -> float:
    """A stable number in [0, 1) from a text: the same items are picked on every run."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


class FaultSteering:
    """Mixin: `fail_once`, `fail_always`, `fault_share`, and `_next_fault` for the handler."""

    FAULTS: ClassVar[tuple[str, ...]]
    DEFAULT_ONCE: ClassVar[str]
    DEFAULT_ALWAYS: ClassVar[str]

    def _init_faults(self) -> None:
        self._fault_lock = threading.Lock()
        self._once: dict[str, list[str]] = {}
        self._always: dict[str, str] = {}
        self._seen: set[str] = set()
        self._share: tuple[float, tuple[str, ...], str] | None = None

    def _check(self, fault: str) -> str:
        if fault not in self.FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {self.FAULTS}")
        return fault

    def fail_once(self, item: bytes | str, fault: str | None = None, times: int = 1) -> None:
        """The item's next `times` calls fail with `fault`; later calls succeed."""
        fault = self._check(fault or self.DEFAULT_ONCE)
        with self._fault_lock:
            self._once.setdefault(key_of(item), []).extend([fault] * times)

    def fail_always(self, item: bytes | str, fault: str | None = None) -> None:
        fault = self._check(fault or self.DEFAULT_ALWAYS)
        with self._fault_lock:
            self._always[key_of(item)] = fault

    def fault_share(self, share: float, faults: tuple[str, ...] | None = None, seed: str = "") -> None:
        """A fixed `share` of items (chosen by content hash) fail their first call, the fault
        picked among `faults` the same way."""
        picked = tuple(self._check(f) for f in (faults or (self.DEFAULT_ONCE,)))
        with self._fault_lock:
            self._share = (share, picked, seed)

    def faulted_first_time(self, item: bytes | str) -> bool:
        """Whether `fault_share` picks this item."""
        return self._share is not None and fraction(self._share[2] + key_of(item)) < self._share[0]

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._once.clear()
            self._always.clear()
            self._seen.clear()
            self._share = None

    def _next_fault(self, key: str) -> str | None:
        with self._fault_lock:
            if key in self._always:
                return self._always[key]
            queue = self._once.get(key)
            if queue:
                return queue.pop(0)
            first_time = key not in self._seen
            self._seen.add(key)
            if first_time and self._share is not None:
                share, faults, seed = self._share
                if fraction(seed + key) < share:
                    return faults[int(hashlib.sha256((seed + key).encode()).hexdigest()[8:12], 16) % len(faults)]
            return None
