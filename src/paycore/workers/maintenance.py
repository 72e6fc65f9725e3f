"""The maintenance worker: expire timed-out holds, purge old idempotency records and
the outbox rows of finished cross-shard transfers.

One pass runs ``ExpirePending`` until no due hold is left, then ``PurgeIdempotency``
until no expired record is left, then ``PurgeOutbox`` until no completed or
compensated saga older than ``outbox_retention_seconds`` is left (an open saga's row
is never deleted), each command a short transaction of at most ``batch_limit`` rows,
so the writer keeps serving transfers in between. A pass is
wrapped by a ``PassGuard``: today every node runs every pass (``always_run``); with
leader election a guard that holds a lock (and yields False when another node owns
it) is passed in, and nothing else changes.

A failing pass (shard down, lock lost) is logged and retried on the next tick; the
loop itself only ends on ``stop()``, which lets the current pass finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from paycore.errors import FencedError
from paycore.storage.base import ExpirePending, Fence, PurgeIdempotency, PurgeOutbox
from paycore.storage.payments import PurgePaymentEvents
from paycore.storage.store import Store

__all__ = ["MaintenanceWorker", "PassGuard", "always_run"]

log = logging.getLogger(__name__)

PassGuard = Callable[[], AbstractAsyncContextManager[bool]]
"""Makes the context a pass runs in; it yields whether this node may run the pass."""


@contextlib.asynccontextmanager
async def always_run() -> AsyncIterator[bool]:
    """The guard of a single node: every pass runs."""
    yield True


class MaintenanceWorker:
    """Runs a maintenance pass on ``store`` every ``interval_seconds`` until stopped."""

    def __init__(
        self,
        store: Store,
        interval_seconds: float = 1.0,
        *,
        batch_limit: int = 10_000,
        outbox_retention_seconds: float = 72 * 3600,
        event_retention_seconds: float | None = None,
        undelivered_events_too: bool = False,
        unpublished_events_too: bool = True,
        guard: PassGuard = always_run,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        if batch_limit <= 0:
            raise ValueError("batch_limit must be positive")
        if not (math.isfinite(outbox_retention_seconds) and outbox_retention_seconds >= 0):
            raise ValueError("outbox_retention_seconds must be a finite number >= 0")
        self.store = store
        self.interval_seconds = interval_seconds
        self.batch_limit = batch_limit
        self.outbox_retention_seconds = outbox_retention_seconds
        # Payment events and processor notifications (None: kept for ever); events not
        # delivered yet are kept too, unless no webhook endpoint will ever take them.
        self.event_retention_seconds = event_retention_seconds
        self.undelivered_events_too = undelivered_events_too
        # False while an event stream is configured: what it has not published stays.
        self.unpublished_events_too = unpublished_events_too
        self.events_purged_total = 0
        self.guard = guard
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Counters for /metrics and the demo.
        self.passes = 0
        self.failures = 0
        self.expired_total = 0
        self.purged_total = 0
        self.outbox_purged_total = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the loop in the background; a second call is a no-op."""
        if self.running:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="paycore-maintenance")

    async def stop(self) -> None:
        """Ask the loop to end and wait for the pass in progress (if any) to finish."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        await task

    async def run_once(self, fence: Fence | None = None) -> tuple[int, int]:
        """One pass under the guard: ``(holds expired, idempotency records purged)``;
        the outbox rows it purged are counted in ``outbox_purged_total``. ``fence``: the
        token of this node's leadership of the job, carried by every write of the pass."""
        async with self.guard() as allowed:
            if not allowed:
                return 0, 0
            expired = await self._drain_expiry(fence)
            purged = await self._drain_purge(fence)
            outbox_purged = await self._drain_outbox(fence)
            await self._drain_events(fence)
        self.passes += 1
        if expired or purged or outbox_purged:
            log.info(
                "maintenance: expired %d holds, purged %d idempotency records and %d "
                "finished outbox rows",
                expired,
                purged,
                outbox_purged,
            )
        return expired, purged

    async def serve(
        self, fence: Fence | None = None, check: Callable[[], None] | None = None
    ) -> None:
        """Run a pass every ``interval_seconds`` until cancelled, fenced with ``fence``;
        ``check`` runs before each pass and raises when the leadership is gone. A pass
        refused as fenced ends the loop with the error; other failures are retried."""
        while True:
            if check is not None:
                check()
            try:
                await self.run_once(fence)
            except FencedError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next tick
                self._failed(exc)
            await asyncio.sleep(self.interval_seconds)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "maintenance pass failed, retrying in %.1fs: %s", self.interval_seconds, self.last_error
        )

    async def _drain_expiry(self, fence: Fence | None) -> int:
        total = 0
        while True:
            ids: list[str] = await self.store.execute(
                ExpirePending(limit=self.batch_limit, fence=fence)
            )
            total += len(ids)
            self.expired_total += len(ids)  # counted at once: a later failure keeps them
            if len(ids) < self.batch_limit or self._stopping.is_set():
                return total

    async def _drain_purge(self, fence: Fence | None) -> int:
        total = 0
        while True:
            count: int = await self.store.execute(
                PurgeIdempotency(limit=self.batch_limit, fence=fence)
            )
            total += count
            self.purged_total += count
            if count < self.batch_limit or self._stopping.is_set():
                return total

    async def _drain_events(self, fence: Fence | None) -> int:
        if self.event_retention_seconds is None:
            return 0
        total = 0
        while True:
            before = time.time_ns() - int(self.event_retention_seconds * 1_000_000_000)
            command = PurgePaymentEvents(
                before,
                self.batch_limit,
                self.undelivered_events_too,
                fence=fence,
                published_only=not self.unpublished_events_too,
            )
            count: int = await self.store.execute(command)
            total += count
            self.events_purged_total += count
            if count < self.batch_limit or self._stopping.is_set():
                return total

    async def _drain_outbox(self, fence: Fence | None) -> int:
        total = 0
        command = PurgeOutbox(self.outbox_retention_seconds, limit=self.batch_limit, fence=fence)
        while True:
            count: int = await self.store.execute(command)
            total += count
            self.outbox_purged_total += count
            if count < self.batch_limit or self._stopping.is_set():
                return total

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next tick
                self._failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)
