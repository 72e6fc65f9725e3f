"""Sliding windows of call outcomes for the circuit breaker: pure, O(1) per call.

``CountWindow(n)`` keeps the last ``n`` calls in a ring buffer. ``TimeWindow(n)``
keeps the calls of the last ``n`` seconds in ``n`` one-second buckets indexed by
``floor(now) mod n``, as resilience4j's ``SlidingTimeWindowMetrics`` does: moving to a
later second clears the buckets of the seconds that fell out of the window (at most
``n`` of them, however long the gap), so the window holds the calls recorded in the
seconds ``floor(now) - n + 1 .. floor(now)``. Both keep running totals, so reading the
rates never walks the buffer.

``now`` comes from the breaker's monotonic clock; a time that goes backwards is taken
as the newest second seen (a window never un-evicts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CountWindow", "SlidingWindow", "TimeWindow", "Totals"]


@dataclass(frozen=True, slots=True)
class Totals:
    """What a window holds: calls, how many failed, how many were slow."""

    calls: int = 0
    failed: int = 0
    slow: int = 0

    def failure_rate(self) -> float:
        """Failed calls as a percentage of the calls (0 when there are none)."""
        return 100.0 * self.failed / self.calls if self.calls else 0.0

    def slow_call_rate(self) -> float:
        """Slow calls as a percentage of the calls (0 when there are none)."""
        return 100.0 * self.slow / self.calls if self.calls else 0.0


class SlidingWindow(Protocol):
    def add(self, *, failed: bool, slow: bool, now: float) -> Totals: ...

    def totals(self, now: float) -> Totals: ...


class CountWindow:
    """The outcomes of the last ``size`` calls."""

    __slots__ = ("_calls", "_failed", "_next", "_ring", "_slow", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a count window needs at least 1 call, not {size}")
        self.size = size
        self._ring: list[tuple[bool, bool] | None] = [None] * size
        self._next = 0
        self._calls = self._failed = self._slow = 0

    def add(self, *, failed: bool, slow: bool, now: float) -> Totals:
        evicted = self._ring[self._next]
        if evicted is not None:
            self._calls -= 1
            self._failed -= evicted[0]
            self._slow -= evicted[1]
        self._ring[self._next] = (failed, slow)
        self._next = (self._next + 1) % self.size
        self._calls += 1
        self._failed += failed
        self._slow += slow
        return self.totals(now)

    def totals(self, now: float) -> Totals:
        return Totals(self._calls, self._failed, self._slow)


class _Bucket:
    __slots__ = ("calls", "failed", "slow")

    def __init__(self) -> None:
        self.calls = self.failed = self.slow = 0


class TimeWindow:
    """The outcomes of the calls recorded in the last ``seconds`` whole seconds."""

    __slots__ = ("_buckets", "_calls", "_failed", "_head", "_slow", "seconds")

    def __init__(self, seconds: int) -> None:
        if seconds < 1:
            raise ValueError(f"a time window needs at least 1 second, not {seconds}")
        self.seconds = seconds
        self._buckets = [_Bucket() for _ in range(seconds)]
        self._head: int | None = None  # the newest second the window has moved to
        self._calls = self._failed = self._slow = 0

    def _move_to(self, now: float) -> _Bucket:
        second = math.floor(now)
        if self._head is None:
            self._head = second
        elif second > self._head:
            # Clear the buckets of the seconds head+1 .. second (they held seconds that
            # are now out of the window); a gap of a whole window or more clears them all.
            steps = min(second - self._head, self.seconds)
            for s in range(second - steps + 1, second + 1):
                bucket = self._buckets[s % self.seconds]
                self._calls -= bucket.calls
                self._failed -= bucket.failed
                self._slow -= bucket.slow
                bucket.calls = bucket.failed = bucket.slow = 0
            self._head = second
        return self._buckets[self._head % self.seconds]

    def add(self, *, failed: bool, slow: bool, now: float) -> Totals:
        bucket = self._move_to(now)
        bucket.calls += 1
        bucket.failed += failed
        bucket.slow += slow
        self._calls += 1
        self._failed += failed
        self._slow += slow
        return Totals(self._calls, self._failed, self._slow)

    def totals(self, now: float) -> Totals:
        self._move_to(now)
        return Totals(self._calls, self._failed, self._slow)
