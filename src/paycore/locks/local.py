"""In-process locks for the embedded mode: the Redis semantics without a server.

One ``LocalLockService`` per process is the lock backend that every task and thread
of that process shares (state behind a ``threading.Lock``, no awaits inside, so it
works from any event loop). It cannot exclude other processes: the embedded mode runs
one. Expiry is lazy (a lock past its deadline is free for the next grant), on the
monotonic clock; fencing tokens follow the rule in ``paycore.locks.base``, so they
keep growing across a restart of the process, which loses the counters. Expired
grants and counters unused for a minute are swept every 1024 grants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from paycore.locks._service import LockServiceBase

__all__ = ["LocalLockService"]


_SWEEP_EVERY = 1024
_CLOCK_STEP_MARGIN_US = 60_000_000


def _wall_microseconds() -> int:
    return time.time_ns() // 1000


@dataclass(slots=True)
class _Grant:
    owner: str
    expires_at: float


class LocalLockService(LockServiceBase):
    """Locks inside this process (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_microseconds: Callable[[], int] = _wall_microseconds,
    ) -> None:
        self._clock = clock
        self._wall_microseconds = wall_microseconds
        self._mutex = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._last_tokens: dict[str, int] = {}
        self._grants_since_sweep = 0

    async def _grant(self, name: str, owner: str, ttl: float) -> int | None:
        with self._mutex:
            now = self._clock()
            grant = self._grants.get(name)
            if grant is not None and grant.expires_at > now:
                return None
            token = max(self._last_tokens.get(name, 0) + 1, self._wall_microseconds())
            self._last_tokens[name] = token
            self._grants[name] = _Grant(owner, now + ttl)
            self._grants_since_sweep += 1
            if self._grants_since_sweep >= _SWEEP_EVERY:
                self._sweep(now)
            return token

    def _sweep(self, now: float) -> None:
        """Forget expired grants, and counters that the clock floor has overtaken by a
        margin: the next token of such a name is at least the clock anyway, so memory
        stays bounded by the names used lately. The margin keeps tokens growing through
        a wall-clock step back of up to that much (an NTP correction)."""
        self._grants_since_sweep = 0
        for name in [n for n, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[name]
        overtaken = self._wall_microseconds() - _CLOCK_STEP_MARGIN_US
        for name in [n for n, t in self._last_tokens.items() if t < overtaken]:
            if name not in self._grants:
                del self._last_tokens[name]

    async def _release(self, name: str, owner: str) -> bool:
        with self._mutex:
            grant = self._grants.get(name)
            if grant is None or grant.owner != owner or grant.expires_at <= self._clock():
                return False
            del self._grants[name]
            return True

    async def _extend(self, name: str, owner: str, ttl: float) -> bool:
        with self._mutex:
            now = self._clock()
            grant = self._grants.get(name)
            if grant is None or grant.owner != owner or grant.expires_at <= now:
                return False
            grant.expires_at = now + ttl
            return True

    async def ping(self) -> None:
        return None
