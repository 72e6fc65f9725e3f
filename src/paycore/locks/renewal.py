"""Keeping a lease alive while its holder works, and telling the holder when it is gone.

A ``HeldLease`` renews its lease in a background task every ttl/3. A renewal that the
backend refuses (expired, taken over) loses the lease at once; one that cannot reach
the backend is retried every ttl/10 until the lease's local deadline, and the lease is
lost if none got through by then. Lost is final: the renewal stops, ``lost`` stays
True, ``wait_lost()`` returns and the ``on_lost`` callbacks run.

``lost`` also turns True by the clock alone (the local deadline passed), so a holder
whose event loop stalled past its lease (a GC pause, SIGSTOP, a blocking call) sees
it at its next check, before its renewal task had a chance to run. A worker checks
``held.lost`` (or calls ``held.check()``) before each write, and sends
``held.fencing_token`` with it, so a write that races the loss is still refused by the
store.

``hold()`` wraps this as ``async with``; by default it cancels the block when the
lease is lost (like ``asyncio.timeout``), and the block then ends with ``LockLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType

from paycore.locks.lease import Lease, LeaseGrants, LockBusy, LockLost, LockUnavailable

__all__ = ["HeldLease", "hold"]

log = logging.getLogger(__name__)


class HeldLease:
    """A lease renewed in the background until released or lost (see the module docstring)."""

    def __init__(
        self,
        service: LeaseGrants,
        lease: Lease,
        ttl: float,
        *,
        renew_every: float | None = None,
    ) -> None:
        self.service = service
        self.lease = lease
        self.ttl = ttl
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        self.renewals = 0
        self.lost_reason: str | None = None
        self._lost = asyncio.Event()
        self._on_lost: list[Callable[[HeldLease], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._released = False
        self._last_failure: str | None = None

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self._released else "held"
        return f"<HeldLease {self.name!r} token={self.fencing_token} {state}>"

    @property
    def name(self) -> str:
        return self.lease.name

    @property
    def fencing_token(self) -> int:
        """The token to send with every write made under this lease."""
        return self.lease.fencing_token

    @property
    def lost(self) -> bool:
        """True once the lease is gone (refused renewal, or its local deadline passed)."""
        if not self._lost.is_set() and self.lease.expired and not self._released:
            why = f" ({self._last_failure})" if self._last_failure else ""
            self._mark_lost(f"the lease expired before it could be renewed{why}")
        return self._lost.is_set()

    def check(self) -> None:
        """Raise ``LockLost`` if the lease is gone; call it before each write."""
        if self.lost:
            raise LockLost(self.name, self.lost_reason or "lost")

    async def wait_lost(self) -> None:
        """Return when the lease is lost (never, if it is released first)."""
        await self._lost.wait()

    def on_lost(self, callback: Callable[[HeldLease], None]) -> None:
        """Call ``callback(self)`` once, when the lease is lost (at once if it already is)."""
        if self._lost.is_set():
            callback(self)
        else:
            self._on_lost.append(callback)

    def start(self) -> HeldLease:
        """Start renewing; returns self."""
        if self._task is None:
            self._task = asyncio.create_task(self._renew(), name=f"renew lock {self.name}")
        return self

    async def release(self) -> bool:
        """Stop renewing and give the lock back; True if it was still held."""
        self._released = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lost.is_set():
            return False
        try:
            return await self.service.release(self.lease)
        except LockUnavailable:
            # The TTL frees it anyway; a holder must not fail because its goodbye failed.
            log.warning("could not release lock %r; it expires by its TTL", self.name)
            return False

    def _mark_lost(self, reason: str) -> None:
        if self._lost.is_set():
            return
        self.lost_reason = reason
        self._lost.set()
        log.warning("lock %r (token %d) lost: %s", self.name, self.fencing_token, reason)
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            callback(self)

    async def _renew(self) -> None:
        next_at = time.monotonic() + self.renew_every
        retry_every = max(self.ttl / 10, 0.001)
        me = asyncio.current_task()
        # ``release`` cancels this task; a backend client may turn that cancellation into
        # an error of its own (seen: redis-py during a command), which the loop below
        # would take for a failed renewal and go on, leaving ``release`` waiting for
        # ever. So the loop also stops on the released flag and on a pending cancel.
        while not self._released and not (me is not None and me.cancelling()):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self.lost or self._released:
                return
            try:
                # Bounded by what is left of the lease: past that it is lost whatever the
                # backend says later, and the holder must hear it on time.
                async with asyncio.timeout(max(0.0, self.lease.remaining())):
                    lease = await self.service.extend(self.lease, self.ttl)
            except TimeoutError:
                self._last_failure = "the backend did not answer before the lease ran out"
                next_at = time.monotonic()
                continue
            except LockLost as exc:
                self._mark_lost(f"renewal refused: {exc.detail}")
                return
            except LockUnavailable as exc:
                # Keep trying while the lease is still good: a short blip of the backend
                # must not depose a healthy leader.
                log.info("renewing lock %r failed (%s); retrying", self.name, exc.detail)
                self._last_failure = exc.detail
                next_at = min(time.monotonic() + retry_every, self.lease.expires_at)
                continue
            self.lease = lease
            self.renewals += 1
            self._last_failure = None
            next_at = time.monotonic() + self.renew_every


class _Hold:
    """``async with service.hold(...)``: acquire, renew, cancel the block on loss, release."""

    def __init__(
        self, service: LeaseGrants, name: str, ttl: float, wait: float, cancel_on_loss: bool
    ) -> None:
        self.service = service
        self.name = name
        self.ttl = ttl
        self.wait = wait
        self.cancel_on_loss = cancel_on_loss
        self.held: HeldLease | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelled = False
        self._exiting = False

    async def __aenter__(self) -> HeldLease:
        lease = await self.service.acquire(self.name, self.ttl, wait=self.wait)
        if lease is None:
            raise LockBusy(self.name, f"held by another owner after waiting {self.wait} s")
        self.held = HeldLease(self.service, lease, self.ttl)
        self._task = asyncio.current_task()
        if self.cancel_on_loss:
            self.held.on_lost(self._cancel_holder)
        return self.held.start()

    def _cancel_holder(self, held: HeldLease) -> None:
        # The holder's own task found the loss (``held.lost`` in the block): it knows
        # already, and cancelling the running task would hit its next await instead.
        if self._exiting or self._task is None or self._task is asyncio.current_task():
            return
        self._cancelled = True
        self._task.cancel(f"lock {held.name!r} lost")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.held is not None
        self._exiting = True
        await self.held.release()
        if self._cancelled and self._task is not None:
            outside_cancels = self._task.uncancel()
            if outside_cancels == 0 and exc_type is asyncio.CancelledError:
                raise LockLost(self.name, self.held.lost_reason or "lost") from exc


def hold(
    service: LeaseGrants,
    name: str,
    ttl: float,
    *,
    wait: float = 0.0,
    cancel_on_loss: bool = True,
) -> contextlib.AbstractAsyncContextManager[HeldLease]:
    """Hold ``name`` for the duration of an ``async with`` block, renewing every ttl/3.

    ``LockBusy`` if it cannot be had within ``wait`` seconds. If the lease is lost
    mid-block, the block is cancelled and ends with ``LockLost`` (``cancel_on_loss``),
    or, with ``cancel_on_loss=False``, the block keeps running and must watch
    ``held.lost`` itself.
    """
    return _Hold(service, name, ttl, wait, cancel_on_loss)
