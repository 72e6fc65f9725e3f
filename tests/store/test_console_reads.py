"""The storage reads the operator console lists from, on both backends: a shard's
unfinished sagas past a bound (``ShardStore.open_sagas``) and a tenant's failing webhook
deliveries (``DeliveryReads.failing``), each ordered, bounded and paged."""

from __future__ import annotations

from backends import AnyStore, LedgerDatabase
from store.support import ManualClock

NS = 1_000_000_000


def _outbox_row(database: LedgerDatabase, transfer_id: str, state: str, created_at: int) -> None:
    database.query(
        "INSERT INTO outbox (transfer_id, target_shard, debit_account_id, credit_account_id, "
        "amount, currency, code, state, created_at, updated_at) "
        "VALUES (?, 'shard-1', 'a', 'b', 10, 'USD', 0, ?, ?, ?)",
        transfer_id, state, created_at, created_at,
    )  # fmt: skip


def _event(database: LedgerDatabase, event_id: str, tenant: str, claimed_until: int) -> None:
    database.query(
        "INSERT INTO payment_events (id, type, object_id, payload, created_at, timestamp, "
        "claimed_until, attempts, tenant) VALUES (?, 'payment.succeeded', 'pay_1', '{}', 1, ?, "
        "?, 1, ?)",
        event_id, claimed_until, claimed_until, tenant,
    )  # fmt: skip


def _delivery(
    database: LedgerDatabase, event_id: str, endpoint: str, status: str, *, attempts: int,
    updated_at: int,
) -> None:  # fmt: skip
    database.query(
        "INSERT INTO webhook_deliveries (event_id, endpoint, status, outcome, attempts, "
        "last_status, last_error, created_at, updated_at) VALUES (?, ?, ?, 'error', ?, 503, "
        "'boom', 1, ?)",
        event_id, endpoint, status, attempts, updated_at,
    )  # fmt: skip


async def test_open_sagas_are_the_unfinished_ones_begun_before_the_bound_oldest_first(
    store: AnyStore, database: LedgerDatabase, clock: ManualClock
) -> None:
    """Only rows in the states asked and begun before the bound come back, oldest
    first, at most ``limit``."""
    t0 = clock.now
    _outbox_row(database, "x-new", "held", t0)
    _outbox_row(database, "x-old", "credited", t0 - 100 * NS)
    _outbox_row(database, "x-older", "held", t0 - 200 * NS)
    _outbox_row(database, "x-done", "completed", t0 - 300 * NS)
    _outbox_row(database, "x-hold", "open", t0 - 300 * NS)
    states = ("held", "credited")
    found = await store.open_sagas(states, created_before=t0 - 60 * NS, limit=10)
    assert [(r.transfer_id, r.state) for r in found] == [("x-older", "held"), ("x-old", "credited")]
    one = await store.open_sagas(states, created_before=t0 + NS, limit=1)
    assert [r.transfer_id for r in one] == ["x-older"]


async def test_failing_deliveries_are_the_tenants_given_up_or_retried_latest_first(
    store: AnyStore, database: LedgerDatabase
) -> None:
    """Failed deliveries and pending ones after an attempt are listed, the tenant's
    only, by (updated_at, event, endpoint) descending; a cursor resumes after a row; a
    pending one carries its event's next claim time."""
    _event(database, "evt_a", "alice", 5000)
    _event(database, "evt_b", "alice", 6000)
    _event(database, "evt_bob", "bob", 7000)
    _delivery(database, "evt_a", "https://one.example", "failed", attempts=8, updated_at=100)
    _delivery(database, "evt_a", "we_2", "pending", attempts=2, updated_at=300)
    _delivery(database, "evt_b", "we_1", "pending", attempts=1, updated_at=300)
    # Never attempted yet: not failing.
    _delivery(database, "evt_b", "we_3", "pending", attempts=0, updated_at=400)
    _delivery(database, "evt_b", "we_4", "delivered", attempts=1, updated_at=500)
    _delivery(database, "evt_bob", "we_9", "failed", attempts=3, updated_at=600)
    reads = store.deliveries
    found = await reads.failing("alice")
    keys = [(f.delivery.event_id, f.delivery.endpoint) for f in found]
    assert keys == [("evt_b", "we_1"), ("evt_a", "we_2"), ("evt_a", "https://one.example")]
    assert [f.next_retry_at for f in found] == [6000, 5000, None]
    assert {f.event_type for f in found} == {"payment.succeeded"}
    rest = await reads.failing("alice", before=(300, "evt_b", "we_1"), limit=1)
    assert [(f.delivery.event_id, f.delivery.endpoint) for f in rest] == [("evt_a", "we_2")]
    assert [f.delivery.event_id for f in await reads.failing("bob")] == ["evt_bob"]
