"""The maintenance worker expires holds, purges idempotency records, and survives failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from backends import AnyStore
from ops.conftest import Clock
from ops.support import transfer
from paycore.errors import UnavailableError
from paycore.ledger.model import AccountFlags, AccountRequest, TransferStatus
from paycore.storage.base import (
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    PurgeIdempotency,
    StoredResponse,
)
from paycore.storage.store import Command
from paycore.workers import MaintenanceWorker


async def _wallet_with_holds(store: AnyStore, holds: int) -> None:
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("wallet", "USD", flags=AccountFlags(no_overdraft=True)),
            )
        )
    )
    requests = [transfer("fund", "bank", "wallet", 10_000)]
    requests += [
        transfer(f"h{i}", "wallet", "bank", 100, pending=True, timeout_seconds=2)
        for i in range(holds)
    ]
    results = await store.execute(CreateTransfers(tuple(requests)))
    assert all(r.ok for r in results), results


def _render(result: Any) -> StoredResponse:
    return StoredResponse(201, b"{}")


async def test_run_once_expires_due_holds(store: AnyStore, clock: Clock) -> None:
    """A hold past its timeout is expired by one pass and its amount released."""
    await _wallet_with_holds(store, 1)
    worker = MaintenanceWorker(store)
    assert await worker.run_once() == (0, 0)
    clock.advance(3)
    assert await worker.run_once() == (1, 0)
    view = await store.get_transfer("h0")
    assert view is not None
    assert view.status is TransferStatus.EXPIRED
    wallet = (await store.get_accounts(["wallet"]))["wallet"]
    assert wallet.debits_pending == 0
    assert worker.expired_total == 1
    assert worker.passes == 2


async def test_run_once_drains_more_than_one_batch(store: AnyStore, clock: Clock) -> None:
    """One pass keeps expiring while a batch comes back full."""
    await _wallet_with_holds(store, 5)
    clock.advance(3)
    worker = MaintenanceWorker(store, batch_limit=2)
    assert await worker.run_once() == (5, 0)
    assert await store.execute(ExpirePending()) == []


async def test_run_once_purges_old_idempotency_records(store: AnyStore, clock: Clock) -> None:
    """Records past their retention are deleted, after which the key acts anew."""
    await store.execute(CreateAccounts((AccountRequest("a", "USD"),)))
    command: Command = CreateAccounts((AccountRequest("b", "USD"),))
    idem = Idempotency("k1", "fp", _render, retention_seconds=1)
    _, replayed = await store.execute_idempotent(command, idem)
    assert not replayed
    _, replayed = await store.execute_idempotent(command, idem)
    assert replayed
    worker = MaintenanceWorker(store)
    assert await worker.run_once() == (0, 0)
    clock.advance(2)
    assert await worker.run_once() == (0, 1)
    assert await store.execute(PurgeIdempotency()) == 0
    _, replayed = await store.execute_idempotent(command, idem)
    assert not replayed


async def test_background_loop_expires_and_stops(store: AnyStore, clock: Clock) -> None:
    """Started, the worker expires a due hold within a few ticks; stop() ends it."""
    await _wallet_with_holds(store, 1)
    worker = MaintenanceWorker(store, interval_seconds=0.01)
    await worker.start()
    task = worker._task
    await worker.start()  # a second start is a no-op
    assert worker._task is task
    assert worker.running
    clock.advance(3)
    for _ in range(200):
        if worker.expired_total:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    assert task is not None
    assert task.done()
    assert worker.expired_total == 1
    await worker.stop()  # stopping twice is harmless


class _FlakyStore:
    """Fails the first ``failures`` commands, then answers like an idle store."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def execute(self, command: Command) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise UnavailableError("shard down")
        return [] if isinstance(command, ExpirePending) else 0


async def test_failed_pass_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    """A pass that fails is logged, counted, and the next tick runs again."""
    store = _FlakyStore(failures=2)
    worker = MaintenanceWorker(store, interval_seconds=0.01)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="paycore.workers.maintenance"):
        await worker.start()
        for _ in range(200):
            if worker.passes:
                break
            await asyncio.sleep(0.01)
        await worker.stop()
    assert worker.failures == 2
    assert worker.passes >= 1
    assert worker.last_error is not None
    assert "shard down" in worker.last_error
    assert "maintenance pass failed" in caplog.text


async def test_guard_can_skip_a_pass(store: AnyStore, clock: Clock) -> None:
    """A guard that yields False (another node is leader) makes the pass a no-op."""
    await _wallet_with_holds(store, 1)
    clock.advance(3)
    leader = False

    @asynccontextmanager
    async def guard() -> AsyncIterator[bool]:
        yield leader

    worker = MaintenanceWorker(store, guard=guard)
    assert await worker.run_once() == (0, 0)
    leader = True
    assert await worker.run_once() == (1, 0)


class _SlowStore:
    """Blocks each command until the test releases it."""

    name = "slow"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = 0

    async def execute(self, command: Command) -> Any:
        self.entered.set()
        await self.release.wait()
        self.finished += 1
        return [] if isinstance(command, ExpirePending) else 0


async def test_stop_lets_the_current_pass_finish() -> None:
    """stop() during a pass waits for it instead of cancelling it half-way."""
    store = _SlowStore()
    worker = MaintenanceWorker(store, interval_seconds=0.01)  # type: ignore[arg-type]
    await worker.start()
    await store.entered.wait()
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    store.release.set()
    await stopping
    assert store.finished == 3  # the expiry and both purges of that pass ran
    assert worker.passes == 1


def test_invalid_settings_are_refused() -> None:
    """A zero interval or batch limit would spin or never make progress."""
    with pytest.raises(ValueError, match="interval"):
        MaintenanceWorker(None, interval_seconds=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_limit"):
        MaintenanceWorker(None, batch_limit=0)  # type: ignore[arg-type]
