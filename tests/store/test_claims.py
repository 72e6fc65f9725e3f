"""Claims of work rows (cross-shard outbox, payment events) take at most their limit and
never the same row twice, on both backends, whatever plan PostgreSQL picks.

A claim was once ``UPDATE ... WHERE id IN (SELECT ... ORDER BY attempts LIMIT n FOR
UPDATE SKIP LOCKED)``. With the statistics of an emptied table (autovacuum's analyze of
a reused, emptied database: pages, no rows) PostgreSQL joins that subquery as the inner
side of a nested loop and runs it again for each outer row; a rerun skips the rows this
very statement already updated (locked by the same command) and picks the next ones, so
``limit=1`` updated every open row (the flaky
``test_a_saga_that_keeps_failing_does_not_starve_fresh_ones[postgres]``). The picked ids
are now a ``MATERIALIZED`` CTE, evaluated once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from backends import AnyStore, LedgerDatabase
from paycore.cluster.settlement import OPEN_STATES
from paycore.storage.base import ClaimOutbox
from paycore.storage.payments import ClaimPaymentEvents
from store.support import ManualClock

_OUTBOX_INSERT = (
    "INSERT INTO outbox (transfer_id, target_shard, debit_account_id, credit_account_id, "
    "amount, currency, code, metadata, state, created_at, updated_at, claimed_by, "
    "claimed_until, attempts) VALUES (?, 'far', 'a', 'b', 1, 'USD', 0, NULL, ?, ?, ?, NULL, 0, 0)"
)
_EVENT_INSERT = (
    "INSERT INTO payment_events (id, type, object_id, payload, created_at, timestamp) "
    "VALUES (?, 'payment.succeeded', 'pay_1', '{}', ?, ?)"
)


def _emptied_table_statistics(database: LedgerDatabase, table: str) -> None:
    """Give ``table`` the statistics of a table emptied and then analyzed (pages, no rows):
    what a reused test database, or a drained outbox, has after autovacuum. SQLite has no
    such planner input."""
    if database.backend != "postgres":
        return
    database.query(f"DELETE FROM {table}")
    if table == "outbox":
        database.query(_OUTBOX_INSERT, "seed", "held", 0, 0)
    else:
        database.query(_EVENT_INSERT, "seed", 0, 0)
    database.query(f"DELETE FROM {table}")
    database.query(f"ANALYZE {table}")


def _outbox_rows(database: LedgerDatabase, *ids: str) -> None:
    for n, transfer_id in enumerate(ids):
        database.query(_OUTBOX_INSERT, transfer_id, "held", n, n)


def _events(database: LedgerDatabase, count: int) -> list[str]:
    ids = [f"evt_{n:03}" for n in range(count)]
    for n, event_id in enumerate(ids):
        database.query(_EVENT_INSERT, event_id, n, n + 1)
    return ids


async def test_an_outbox_claim_takes_at_most_its_limit(
    database: LedgerDatabase, store: AnyStore, clock: ManualClock
) -> None:
    """The flaky saga test, made deterministic: a lapsed lease, then the fresh row alone."""
    _emptied_table_statistics(database, "outbox")
    _outbox_rows(database, "old", "new")
    # "old" is leased (for no time), so its lease has lapsed by the next claim ...
    (row,) = await store.execute(ClaimOutbox("x", OPEN_STATES, 0.0, 1))
    assert row.transfer_id == "old"
    clock.advance(1)
    # ... which takes the row tried fewer times, and that one only.
    (row,) = await store.execute(ClaimOutbox("y", OPEN_STATES, 0.0, 1))
    assert row.transfer_id == "new"
    clock.advance(1)
    rows = await store.execute(ClaimOutbox("z", OPEN_STATES, 30.0, 5))
    assert sorted(r.transfer_id for r in rows) == ["new", "old"]
    assert {r.attempts for r in rows} == {2}


async def test_a_payment_event_claim_takes_at_most_its_limit(
    database: LedgerDatabase, store: AnyStore, clock: ManualClock
) -> None:
    """Oldest first, one at a time while the leases run; a lapsed lease is taken again."""
    _emptied_table_statistics(database, "payment_events")
    ids = _events(database, 3)
    for n in range(3):
        claimed = await store.execute(ClaimPaymentEvents(store.name, f"w{n}", 10.0, 1))
        assert [e.id for e in claimed] == [ids[n]]
    clock.advance(11)
    claimed = await store.execute(ClaimPaymentEvents(store.name, "w9", 10.0, 2))
    assert [(e.id, e.attempts) for e in claimed] == [(ids[0], 2), (ids[1], 2)]


async def _concurrent_claims(
    stores: list[AnyStore], claims_per_store: int, claim: ClaimFactory, owners: Iterator[int]
) -> list[list[str]]:
    return await asyncio.gather(
        *(
            claim(store, f"owner-{next(owners)}")
            for store in stores
            for _ in range(claims_per_store)
        )
    )


class ClaimFactory:
    """Claims one row for ``owner`` (a distinct owner per claim: none re-takes its own)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def __call__(self, store: AnyStore, owner: str) -> list[str]:
        if self.kind == "outbox":
            rows = await store.execute(ClaimOutbox(owner, OPEN_STATES, 600.0, 1))
            return [r.transfer_id for r in rows]
        events = await store.execute(ClaimPaymentEvents(store.name, owner, 600.0, 1))
        return [e.id for e in events]


@pytest.mark.parametrize("kind", ["outbox", "payment_events"])
async def test_concurrent_claimers_with_limit_one_never_overlap(
    database: LedgerDatabase, clock: ManualClock, kind: str
) -> None:
    """Several nodes (stores on one database), each with several claims in flight: every
    claim gets at most one row, no row goes to two claims, and none is left while a claim
    came back empty."""
    stores = [database.store(clock=clock, name="shard-0") for _ in range(4)]
    for s in stores:
        await s.start()
    try:
        _emptied_table_statistics(database, kind)
        if kind == "outbox":
            ids = [f"t{n:03}" for n in range(24)]
            _outbox_rows(database, *ids)
        else:
            ids = _events(database, 24)
        owners, taken = itertools.count(), []
        for _ in range(2):  # 2 rounds x 4 nodes x 5 claims = 40 claims for 24 rows
            results = await _concurrent_claims(stores, 5, ClaimFactory(kind), owners)
            assert all(len(r) <= 1 for r in results), results
            taken += [row for r in results for row in r]
        assert sorted(taken) == sorted(ids)  # each row to one claim, and no row left
        claimed = database.query(
            f"SELECT {'transfer_id' if kind == 'outbox' else 'id'}, attempts FROM {kind}"
        )
        assert sorted(row[0] for row in claimed) == sorted(ids)
        assert {row[1] for row in claimed} == {1}  # every row claimed once, none twice
    finally:
        for s in stores:
            await s.stop()
