"""A bulkhead: at most ``max_concurrent`` calls at once, the rest wait or are refused.

One slow dependency must not take every connection, task and socket of the process
with it: the bulkhead caps the calls in flight to it. A call that finds every slot
taken waits at most ``max_wait`` seconds for one (0, the default: it does not wait)
and is then refused with ``BulkheadFull``, without running. Waiting is by the event
loop's clock (``asyncio.timeout``): it bounds real time spent queueing, so unlike the
breaker it takes no injected clock. Waiters get slots in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from paycore.resilience.errors import BulkheadFull

__all__ = ["Bulkhead", "BulkheadConfig", "BulkheadSnapshot"]

T = TypeVar("T")


class BulkheadConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_concurrent: int = 25
    max_wait: float = 0.0  # seconds a call may wait for a slot; 0: refuse at once

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if not self.max_wait >= 0:
            raise ValueError("max_wait must be a number of seconds, 0 or more")


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    name: str
    max_concurrent: int
    in_flight: int
    waiting: int
    rejected: int  # since the bulkhead was made


class Bulkhead:
    """Caps the concurrent calls through it (see the module docstring)."""

    def __init__(self, name: str, config: BulkheadConfig | None = None) -> None:
        self.name = name
        self.config = config or BulkheadConfig()
        self._semaphore = asyncio.Semaphore(self.config.max_concurrent)
        self._in_flight = 0
        self._waiting = 0
        self._rejected = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def snapshot(self) -> BulkheadSnapshot:
        return BulkheadSnapshot(
            self.name, self.config.max_concurrent, self._in_flight, self._waiting, self._rejected
        )

    async def _acquire(self) -> None:
        if self._semaphore.locked():
            if self.config.max_wait <= 0:
                self._reject()
            self._waiting += 1
            try:
                async with asyncio.timeout(self.config.max_wait):
                    await self._semaphore.acquire()
            except TimeoutError:
                self._reject()
            finally:
                self._waiting -= 1
        else:
            await self._semaphore.acquire()  # free: returns without suspending
        self._in_flight += 1

    def _reject(self) -> None:
        self._rejected += 1
        raise BulkheadFull(self.name, self.config.max_concurrent, self.config.max_wait)

    def _release(self) -> None:
        self._in_flight -= 1
        self._semaphore.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; ``BulkheadFull`` if none came within ``max_wait``."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in a slot."""
        async with self.slot():
            return await fn()
