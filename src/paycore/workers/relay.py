"""The relay worker: drives the outbox of cross-shard transfers to completion.

One loop per source shard claims that shard's open outbox rows (a lease: a crashed
relay's rows are retaken when it ends), credits the target shards (step 2) and posts
or voids the holds (step 3); see ``paycore.cluster.settlement``. The router wakes the
loop of a shard right after step 1 committed there, so a saga settles within a few
group commits; otherwise each loop looks every ``interval_seconds``.

Safe on several nodes at once (row claims, idempotent steps); a failing pass (a shard
down) is logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable

from paycore.cluster.settlement import Settlement
from paycore.errors import FencedError
from paycore.storage.base import Fence
from paycore.storage.store import Store

__all__ = ["RelayWorker"]

log = logging.getLogger(__name__)


class RelayWorker:
    """Settles the cross-shard transfers of ``store`` until stopped."""

    def __init__(
        self,
        store: Store,
        *,
        interval_seconds: float = 0.5,
        lease_seconds: float = 30.0,
        batch_limit: int = 8189,
        owner: str | None = None,
        gather_seconds: float = 0.005,
    ) -> None:
        if interval_seconds <= 0 or lease_seconds <= 0 or batch_limit <= 0:
            raise ValueError("interval, lease and batch limit must be positive")
        self.store = store
        self.interval_seconds = interval_seconds
        self.gather_seconds = gather_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.settlement = Settlement(
            store.shard_stores,
            owner=self.owner,
            lease_seconds=lease_seconds,
            batch_limit=batch_limit,
        )
        self._wake = {name: asyncio.Event() for name in store.shard_stores}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        self.failures = 0
        self.last_error: str | None = None
        store.on_saga(self.wake)

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def wake(self, shard: str) -> None:
        """Ask the loop of ``shard`` to look at its outbox now."""
        event = self._wake.get(shard)
        if event is not None:
            event.set()

    async def start(self) -> None:
        """Start one loop per shard in the background; a second call is a no-op."""
        if self.running:
            return
        self._stopping = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._loop(name), name=f"paycore-relay-{name}")
            for name in self.store.shard_stores
        ]

    async def stop(self) -> None:
        """Let the passes in progress finish, end the loops, then settle what is left
        (so that a graceful shutdown leaves no saga to wait for a lease to end)."""
        tasks, self._tasks = self._tasks, []
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            try:
                await self.drain()
            except Exception as exc:  # noqa: BLE001 - another node or the next start settles
                log.warning("relay: sagas left open at stop: %s: %s", type(exc).__name__, exc)

    async def run_once(self) -> int:
        """One pass over every shard's outbox; returns the rows claimed."""
        counts = await asyncio.gather(
            *(self.settlement.run_shard(name) for name in self.store.shard_stores),
            return_exceptions=True,
        )
        for count in counts:
            if isinstance(count, BaseException):
                raise count
        return sum(c for c in counts if isinstance(c, int))

    async def drain(self, *, max_passes: int = 1000) -> None:
        """Run passes until no shard has an open saga this relay can claim."""
        for _ in range(max_passes):
            if not await self.run_once():
                return
        raise RuntimeError(f"the outbox was not drained in {max_passes} passes")

    async def serve_shard(
        self, shard: str, fence: Fence | None = None, check: Callable[[], None] | None = None
    ) -> None:
        """Settle ``shard``'s sagas until cancelled, every write fenced with ``fence``;
        ``check`` runs before each pass and raises when the leadership is gone
        (``HeldLease.check``). A pass refused as fenced ends the loop with the error."""
        await self._loop(shard, fence, check)

    async def _loop(
        self, shard: str, fence: Fence | None = None, check: Callable[[], None] | None = None
    ) -> None:
        wake = self._wake[shard]
        while not self._stopping.is_set():
            wake.clear()
            if check is not None:
                check()
            try:
                claimed = await self.settlement.run_shard(shard, fence)
                self.passes += 1
            except FencedError:
                raise  # another node leads this shard's relay now
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next tick
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("relay pass on %s failed: %s", shard, self.last_error)
                claimed = 0
            if claimed >= self.settlement.batch_limit:
                continue  # there is more: look again at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval_seconds)
                # Woken by a new saga: let a few more arrive, so that one pass (three
                # transactions) settles many of them rather than one each.
                await asyncio.sleep(self.gather_seconds)
