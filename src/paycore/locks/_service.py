"""The backend-independent half of a lock service.

A backend supplies three atomic primitives (grant, release, extend, each one round
trip) plus ``ping`` and ``aclose``; this base turns them into the ``LockService``:
argument checks, lease values with their local deadline, waiting with jittered
backoff, all-or-nothing multi-name acquire in sorted order, and ``hold``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from paycore.locks.base import (
    Lease,
    LockLost,
    LockUnavailable,
    check_names,
    check_ttl,
    check_wait,
    local_deadline,
    new_owner,
)
from paycore.locks.renewal import HeldLease, hold

__all__ = ["LockServiceBase"]

# Waiting for a busy lock polls (no backend here pushes a release to the waiters):
# from 5 ms, doubling to 100 ms, each pause jittered so waiters do not march in step.
_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.1
# The background releases of each service (see ``_forget_later``), ended by its close.
_FORGETTING: weakref.WeakKeyDictionary[LockServiceBase, set[asyncio.Task[None]]] = (
    weakref.WeakKeyDictionary()
)


class LockServiceBase(ABC):
    """``LockService`` over a backend's grant / release / extend primitives."""

    # -- what a backend implements ------------------------------------------------------

    @abstractmethod
    async def _grant(self, name: str, owner: str, ttl: float) -> int | None:
        """Atomically: if ``name`` is free (or expired), give it to ``owner`` for ``ttl``
        seconds and answer a new fencing token; else None."""

    @abstractmethod
    async def _release(self, name: str, owner: str) -> bool:
        """Atomically free ``name`` if ``owner`` holds it; True if it did."""

    @abstractmethod
    async def _extend(self, name: str, owner: str, ttl: float) -> bool:
        """Atomically reset the expiry of ``name`` to ``ttl`` seconds from now if
        ``owner`` holds it and it has not expired; True if it did."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the backend answers, else ``LockUnavailable``."""

    async def open(self) -> None:  # noqa: B027 - an optional hook, most backends need none
        """Prepare connections (a backend may connect lazily instead)."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, most backends need none
        """Close connections; leases still held expire by their TTL."""

    async def __aenter__(self) -> LockServiceBase:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the LockService ------------------------------------------------------------------

    async def acquire(self, name: str, ttl: float, *, wait: float = 0.0) -> Lease | None:
        (name,) = check_names([name])
        ttl = check_ttl(ttl)
        deadline = time.monotonic() + check_wait(wait)
        owner = new_owner()
        pause = _FIRST_PAUSE
        while True:
            started = time.monotonic()
            try:
                token = await self._grant(name, owner, ttl)
            except LockUnavailable:
                # The grant may still run when a stalled backend resumes, leaving the
                # lock held by an owner nobody knows for a whole TTL: release that owner
                # later, in the background (a release of a lock not held is a no-op).
                self._forget_later(name, owner)
                raise
            if token is not None:
                return Lease(name, owner, token, local_deadline(started, ttl))
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            jitter = random.uniform(0.5, 1.5)  # noqa: S311 - spreading retries, not crypto
            await asyncio.sleep(min(left, pause * jitter))
            pause = min(pause * 2, _MAX_PAUSE)

    def _forget_later(self, name: str, owner: str) -> None:
        async def forget() -> None:
            for delay in (0.5, 2.0, 8.0):
                await asyncio.sleep(delay)
                try:
                    await self._release(name, owner)
                except LockUnavailable:
                    continue
                return

        task = asyncio.get_running_loop().create_task(forget(), name=f"forget {name}")
        tasks = _FORGETTING.setdefault(self, set())
        tasks.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(tasks.discard)

    async def _stop_forgetting(self) -> None:
        """End the background releases before the client closes: one that ran after it
        would open a fresh connection nobody closes (the lease expires by its TTL)."""
        tasks = _FORGETTING.pop(self, set())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def acquire_many(
        self, names: Sequence[str], ttl: float, *, wait: float = 0.0
    ) -> tuple[Lease, ...] | None:
        ordered = check_names(names)
        ttl = check_ttl(ttl)
        deadline = time.monotonic() + check_wait(wait)
        leases: list[Lease] = []
        try:
            for name in ordered:
                lease = await self.acquire(name, ttl, wait=max(0.0, deadline - time.monotonic()))
                if lease is None:
                    break
                leases.append(lease)
        except BaseException:
            await asyncio.shield(self._roll_back(leases))
            raise
        if len(leases) < len(ordered):
            await self._roll_back(leases)
            return None
        return tuple(leases)

    async def _roll_back(self, leases: Sequence[Lease]) -> None:
        """Release what a failed multi-acquire took; what cannot be released expires."""
        for lease in leases:
            try:
                await self.release(lease)
            except LockUnavailable:  # the TTL frees it anyway
                continue

    async def release(self, lease: Lease) -> bool:
        return await self._release(lease.name, lease.owner)

    async def release_many(self, leases: Sequence[Lease]) -> None:
        for lease in sorted(leases, key=lambda held: held.name, reverse=True):
            await self.release(lease)

    async def extend(self, lease: Lease, ttl: float) -> Lease:
        ttl = check_ttl(ttl)
        started = time.monotonic()
        if not await self._extend(lease.name, lease.owner, ttl):
            raise LockLost(lease.name, "not held any more (expired or taken over)")
        return dataclasses.replace(lease, expires_at=local_deadline(started, ttl))

    def hold(
        self, name: str, ttl: float, *, wait: float = 0.0, cancel_on_loss: bool = True
    ) -> AbstractAsyncContextManager[HeldLease]:
        return hold(self, name, check_ttl(ttl), wait=wait, cancel_on_loss=cancel_on_loss)
