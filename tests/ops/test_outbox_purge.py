"""Outbox purge: finished sagas' rows go after their retention, in bounded chunks, on
every shard; an open saga's row never goes, and a purged saga is never reopened."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from backends import AnyStore
from ops.conftest import Clock
from ops.support import transfer
from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import (
    OPEN_STATES,
    SAGA_TRANSITIONS,
    SagaState,
    hold_request,
    resolution,
)
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.ops.audit import audit_cluster, audit_store
from paycore.storage.base import (
    FINISHED_OUTBOX_STATES,
    CreateAccounts,
    CreateTransfers,
    OutboxRow,
    OutboxWrite,
    PurgeOutbox,
    ShardSnapshot,
)
from paycore.workers import MaintenanceWorker
from paycore.workers.relay import RelayWorker

HOUR = 3600
CLEARING = "clearing:shard-0:far:USD"  # this shard's clearing account for a shard "far"


async def _ledger(store: AnyStore) -> None:
    results = await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("a", "USD"),
                AccountRequest(CLEARING, "USD"),
            )
        )
    )
    assert all(r.ok for r in results), results
    (funded,) = await store.execute(CreateTransfers((transfer("fund", "bank", "a", 100_000),)))
    assert funded.ok


def _saga(transfer_id: str) -> tuple[TransferRequest, OutboxRow]:
    """Step 1 of a saga from ``a`` here to an account on shard ``far``, as the router makes it."""
    return hold_request(TransferRequest(transfer_id, "a", "b", 100), "shard-0", "far", "USD")


async def _open(store: AnyStore, *transfer_ids: str) -> None:
    steps = [_saga(t) for t in transfer_ids]
    results = await store.execute(
        CreateTransfers(
            tuple(hold for hold, _ in steps),
            tuple(OutboxWrite(i, row) for i, (_, row) in enumerate(steps)),
        )
    )
    assert all(r.ok for r in results), results


async def _finish(store: AnyStore, transfer_id: str, state: SagaState) -> None:
    """Step 3 as the relay runs it: post or void the hold and set the row's final state."""
    request, row = resolution(_saga(transfer_id)[1], state)
    (result,) = await store.execute(
        CreateTransfers((request,), (OutboxWrite(0, row, insert=False),), settlement=True)
    )
    assert result.ok, result


async def _outbox(store: AnyStore) -> dict[str, str]:
    def read(snapshot: ShardSnapshot) -> dict[str, str]:
        return {row.transfer_id: row.state for row in snapshot.outbox()}

    return await store.with_snapshot(read)


async def test_only_finished_rows_past_their_retention_are_purged(
    store: AnyStore, clock: Clock
) -> None:
    """Completed and compensated rows last updated before the retention go; a row
    finished later and an open saga's row stay; the ledger itself is untouched."""
    await _ledger(store)
    await _open(store, "done", "undone", "late", "open")
    await _finish(store, "done", SagaState.COMPLETED)
    await _finish(store, "undone", SagaState.COMPENSATED)
    clock.advance(2 * HOUR)
    await _finish(store, "late", SagaState.COMPLETED)
    clock.advance(HOUR / 2)

    assert await store.execute(PurgeOutbox(retention_seconds=HOUR)) == 2
    assert await _outbox(store) == {"late": "completed", "open": "held"}
    assert await store.execute(PurgeOutbox(retention_seconds=HOUR)) == 0

    clock.advance(100 * HOUR)
    assert await store.execute(PurgeOutbox(retention_seconds=HOUR)) == 1
    assert await store.execute(PurgeOutbox(retention_seconds=0)) == 0
    assert await _outbox(store) == {"open": "held"}  # however old, an open saga stays
    for transfer_id in ("done", "undone", "late", "open"):
        assert await store.get_transfer(transfer_id) is not None
    assert (await audit_store(store)).ok


async def test_a_purged_saga_is_not_reopened_by_a_retry(store: AnyStore, clock: Clock) -> None:
    """Step 1 retried after its row was purged answers ``exists`` and writes no new row."""
    await _ledger(store)
    await _open(store, "done")
    await _finish(store, "done", SagaState.COMPLETED)
    clock.advance(HOUR)
    assert await store.execute(PurgeOutbox(retention_seconds=0)) == 1
    hold, row = _saga("done")
    (again,) = await store.execute(CreateTransfers((hold,), (OutboxWrite(0, row),)))
    assert again.exists
    assert await _outbox(store) == {}


async def test_purge_works_in_bounded_chunks(store: AnyStore, clock: Clock) -> None:
    """``limit`` bounds one purge; repeated purges take the rest."""
    await _ledger(store)
    ids = [f"s{i}" for i in range(5)]
    await _open(store, *ids)
    for transfer_id in ids:
        await _finish(store, transfer_id, SagaState.COMPLETED)
    clock.advance(1)
    counts = [await store.execute(PurgeOutbox(0, limit=2)) for _ in range(4)]
    assert counts == [2, 2, 1, 0]


@pytest.mark.parametrize(
    ("retention", "limit", "message"),
    [
        (-1, 10, "retention_seconds"),
        (math.nan, 10, "retention_seconds"),
        (math.inf, 10, "retention_seconds"),
        (True, 10, "retention_seconds"),
        ("72", 10, "retention_seconds"),
        (0, 0, "limit"),
        (0, -5, "limit"),
        (0, 2.5, "limit"),
    ],
)
def test_bad_purge_arguments_are_refused(retention: object, limit: object, message: str) -> None:
    """A purge that would be meaningless (negative, infinite, not a number) is never built."""
    with pytest.raises(ValueError, match=message):
        PurgeOutbox(retention, limit=limit)  # type: ignore[arg-type]


def test_finished_states_are_the_sagas_final_states() -> None:
    """The storage layer's purgeable states are exactly the saga states with no way out."""
    final = {state.value for state, nexts in SAGA_TRANSITIONS.items() if not nexts}
    assert set(FINISHED_OUTBOX_STATES) == final
    assert not set(FINISHED_OUTBOX_STATES) & set(OPEN_STATES)
    assert set(FINISHED_OUTBOX_STATES) == {
        SagaState.COMPLETED,
        SagaState.COMPENSATED,
        SagaState.RESOLVED,
    }


async def test_the_maintenance_worker_purges_after_the_retention(
    store: AnyStore, clock: Clock
) -> None:
    """A pass deletes finished rows once they are older than the worker's retention."""
    await _ledger(store)
    await _open(store, "done", "open")
    await _finish(store, "done", SagaState.COMPLETED)
    worker = MaintenanceWorker(store, outbox_retention_seconds=72 * HOUR, batch_limit=1)
    await worker.run_once()
    assert worker.outbox_purged_total == 0
    clock.advance(72 * HOUR + 1)
    await worker.run_once()
    assert worker.outbox_purged_total == 1
    assert await _outbox(store) == {"open": "held"}


@pytest.mark.parametrize("retention", [-1.0, math.nan, math.inf])
def test_the_worker_refuses_a_bad_retention(retention: float) -> None:
    with pytest.raises(ValueError, match="outbox_retention_seconds"):
        MaintenanceWorker(None, outbox_retention_seconds=retention)  # type: ignore[arg-type]


async def test_a_sharded_store_purges_every_shard(tmp_path: Path) -> None:
    """Over four shards, settled sagas' rows are purged wherever they live; a saga still
    in flight keeps its row and the cluster audits clean afterwards."""
    store = build_store(Settings(data_dir=str(tmp_path)))
    store.drive_sagas = False  # the relay settles them below, as after a crash
    await store.start()
    try:
        pairs = _cross_shard_pairs(store)
        accounts = [i for pair in pairs for i in pair]
        banks = {shard: _id_on(store, shard, "bank") for shard in store.shards}
        requests = [AccountRequest(i, "USD") for i in [*accounts, *banks.values()]]
        assert all(r.ok for r in await store.execute(CreateAccounts(tuple(requests))))
        funding = [transfer(f"fund-{a}", banks[store.shard_for(a)], a, 1_000) for a in accounts]
        assert all(r.ok for r in await store.execute(CreateTransfers(tuple(funding))))
        moves = [transfer(f"move-{a}", a, b, 10) for a, b in pairs]
        results = await store.execute(CreateTransfers(tuple(moves)))
        assert all(r.ok and r.in_flight for r in results), results
        await RelayWorker(store).drain()
        (late,) = await store.execute(CreateTransfers((transfer("late", *pairs[0], 5),)))
        assert late.in_flight  # no relay runs: this saga stays open

        worker = MaintenanceWorker(store, outbox_retention_seconds=0)
        await worker.run_once()
        assert worker.outbox_purged_total == len(pairs)
        assert await store.execute(PurgeOutbox(0)) == 0
        rows = {shard: await _outbox(s) for shard, s in store.shards.items()}  # type: ignore[arg-type]
        assert [r for shard_rows in rows.values() for r in shard_rows.items()] == [("late", "held")]
        assert (await audit_cluster(store.shards)).ok
    finally:
        await store.stop()


def _id_on(store: ShardedStore, shard: str, prefix: str) -> str:
    return next(f"{prefix}{i}" for i in range(10_000) if store.shard_for(f"{prefix}{i}") == shard)


def _cross_shard_pairs(store: ShardedStore) -> list[tuple[str, str]]:
    """One (debit, credit) pair per shard, the credit account on the next shard."""
    names = list(store.shards)
    return [
        (_id_on(store, shard, "w"), _id_on(store, names[(i + 1) % len(names)], "v"))
        for i, shard in enumerate(names)
    ]
