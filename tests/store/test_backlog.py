"""A shard's backlog for /metrics (``ShardStore.backlog``): open sagas, open payments,
undelivered webhook events and the event stream's lag, each with its oldest row, read by
index seeks on both backends."""

from __future__ import annotations

from backends import AnyStore, LedgerDatabase
from paycore.cluster.settlement import SagaState
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import FINISHED_OUTBOX_STATES, CreateAccounts, CreateTransfers
from paycore.storage.event_stream import AdvanceStreamCursor
from paycore.storage.usage import OPEN_OUTBOX_STATES, Oldest
from store.support import ManualClock

NS = 1_000_000_000


def _outbox_row(database: LedgerDatabase, transfer_id: str, state: str, created_at: int) -> None:
    database.query(
        "INSERT INTO outbox (transfer_id, target_shard, debit_account_id, credit_account_id, "
        "amount, currency, code, state, created_at, updated_at) "
        "VALUES (?, 'shard-1', 'a', 'b', 10, 'USD', 0, ?, ?, ?)",
        transfer_id,
        state,
        created_at,
        created_at,
    )


def _payment_row(database: LedgerDatabase, payment_id: str, status: str, updated_at: int) -> None:
    database.query(
        "INSERT INTO payments (id, merchant_account_id, amount, currency, capture_method, "
        "status, source_type, version, created_at, updated_at) "
        "VALUES (?, 'm1', 100, 'USD', 'automatic', ?, 'card', 1, ?, ?)",
        payment_id,
        status,
        updated_at,
        updated_at,
    )


def test_open_outbox_states_are_every_saga_state_not_finished() -> None:
    """The states the backlog seeks are exactly the saga states that are not final."""
    assert set(OPEN_OUTBOX_STATES) == {s.value for s in SagaState} - set(FINISHED_OUTBOX_STATES)


async def test_an_empty_shard_has_no_backlog(store: AnyStore, clock: ManualClock) -> None:
    """Nothing waits on a new shard; the backlog carries the store's clock."""
    backlog = await store.backlog(stream=True)
    assert backlog.now == clock.now
    assert backlog.sagas == Oldest()
    assert backlog.payments == {"processing": Oldest(), "requires_capture": Oldest()}
    assert backlog.webhook_events == Oldest()
    assert [(lag.log, lag.behind) for lag in backlog.stream] == [("ledger", 0), ("payments", 0)]
    assert (await store.backlog()).stream == []


async def test_open_sagas_and_payments_count_with_their_oldest(
    store: AnyStore, database: LedgerDatabase, clock: ManualClock
) -> None:
    """Unfinished outbox rows and open payments count, finished ones do not, and the
    oldest's time is kept."""
    t0 = clock.now
    _outbox_row(database, "x1", "held", t0)
    _outbox_row(database, "x2", "credited", t0 + 5 * NS)
    _outbox_row(database, "x3", "completed", t0 - 50 * NS)
    _payment_row(database, "p1", "processing", t0 + NS)
    _payment_row(database, "p2", "processing", t0 + 2 * NS)
    _payment_row(database, "p3", "succeeded", t0 - 50 * NS)
    _payment_row(database, "p4", "requires_capture", t0 + 3 * NS)
    clock.advance(60)
    backlog = await store.backlog()
    assert backlog.sagas == Oldest(2, t0)
    assert backlog.payments["processing"] == Oldest(2, t0 + NS)
    assert backlog.payments["requires_capture"] == Oldest(1, t0 + 3 * NS)
    assert backlog.now - backlog.sagas.since == 60 * NS


async def test_stream_lag_counts_transfers_after_the_cursor(
    store: AnyStore, clock: ManualClock
) -> None:
    """The ledger log is behind by the transfers chained after its cursor, and caught up
    once the cursor reaches the head."""
    opened = await store.execute(
        CreateAccounts((AccountRequest("bank", "USD"), AccountRequest("w", "USD")))
    )
    assert all(r.ok for r in opened)
    for n in range(3):
        clock.advance(1)
        done = await store.execute(
            CreateTransfers((TransferRequest(f"t{n}", "bank", "w", 10 + n, "USD"),))
        )
        assert done[0].ok, done
    ledger = (await store.backlog(stream=True)).stream[0]
    assert ledger.log == "ledger"
    assert ledger.behind == 3
    first = await store.get_transfer("t0")
    assert first is not None
    assert ledger.since == first.transfer.timestamp
    last = await store.get_transfer("t2")
    assert last is not None
    await store.execute(AdvanceStreamCursor("shard-0", "ledger", 3, last.transfer.timestamp))
    assert (await store.backlog(stream=True)).stream[0].behind == 0
