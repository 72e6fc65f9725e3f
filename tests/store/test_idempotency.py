"""Idempotency records: stored with the effect, replayed byte for byte, purged after retention."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from backends import AnyStore, LedgerDatabase, StoreFactory
from paycore.errors import ErrorCode, IdempotencyError, PaycoreError
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    Idempotency,
    PurgeIdempotency,
    StoredResponse,
)
from store.support import ManualClock

_encoder = msgspec.json.Encoder()


def render(result: Any) -> StoredResponse:
    """Render like an API would: 201 when every item passed, 409 otherwise."""
    items = result if isinstance(result, list) else [result]
    status = 201 if all(r.ok for r in items) else 409
    return StoredResponse(status, _encoder.encode(result))


def key(name: str, fingerprint: str = "fp-1", retention: int = 60) -> Idempotency:
    return Idempotency(name, fingerprint, render, retention_seconds=retention)


def pay(transfer_id: str = "t1", amount: int = 5) -> CreateTransfers:
    return CreateTransfers((TransferRequest(transfer_id, "a", "b", amount),))


def _rows(database: LedgerDatabase) -> list[tuple[str, str]]:
    rows = database.query("SELECT key, fingerprint FROM idempotency ORDER BY key")
    return [(key, fingerprint) for key, fingerprint in rows]


@pytest.fixture
async def ledger(store: AnyStore) -> AnyStore:
    await store.execute(CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD"))))
    return store


async def test_a_retry_replays_the_first_answer_and_acts_once(ledger: AnyStore) -> None:
    """The same key and fingerprint replay the stored response, with no new effect."""
    first, replayed = await ledger.execute_idempotent(pay(), key("k1"))
    assert (first.status, replayed) == (201, False)
    again, replayed = await ledger.execute_idempotent(pay(), key("k1"))
    assert replayed
    assert again == first
    accounts = await ledger.get_accounts(["a"])
    assert accounts["a"].debits_posted == 5


async def test_a_replay_returns_the_first_answer_even_if_the_state_changed(
    ledger: AnyStore,
) -> None:
    """The replayed body is the stored one, not a recomputation on today's state."""
    first, _ = await ledger.execute_idempotent(CloseAccount("b"), key("close"))
    await ledger.execute(CreateAccounts((AccountRequest("c", "USD"),)))
    again, replayed = await ledger.execute_idempotent(CloseAccount("b"), key("close"))
    assert replayed
    assert again.body == first.body


async def test_failures_are_stored_and_replayed_too(ledger: AnyStore) -> None:
    """A rejected command's answer is kept, so a retry cannot turn a failure into a success."""
    bad = CreateTransfers((TransferRequest("t1", "a", "ghost", 5),))
    first, _ = await ledger.execute_idempotent(bad, key("k1"))
    assert first.status == 409
    await ledger.execute(CreateAccounts((AccountRequest("ghost", "USD"),)))
    again, replayed = await ledger.execute_idempotent(bad, key("k1"))
    assert (replayed, again) == (True, first)
    assert await ledger.get_transfer("t1") is None


async def test_a_key_reused_with_another_request_is_refused(ledger: AnyStore) -> None:
    """The same key with another fingerprint raises idempotency_key_reused (409), acting not."""
    await ledger.execute_idempotent(pay("t1"), key("k1", "fp-1"))
    with pytest.raises(IdempotencyError) as raised:
        await ledger.execute_idempotent(pay("t2"), key("k1", "fp-2"))
    err = raised.value
    assert (err.code, err.status, err.retryable) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, 409, False)
    assert await ledger.get_transfer("t2") is None


async def test_keys_are_independent(ledger: AnyStore) -> None:
    """Two keys never share answers, even with the same fingerprint."""
    r1, _ = await ledger.execute_idempotent(pay("t1"), key("k1"))
    r2, replayed = await ledger.execute_idempotent(pay("t2"), key("k2"))
    assert not replayed
    assert r1.body != r2.body


async def test_the_same_key_twice_in_one_group_acts_once(ledger: AnyStore) -> None:
    """Concurrent retries with one key, grouped in one transaction, produce one effect."""
    outcomes = await asyncio.gather(
        *(ledger.execute_idempotent(pay("t1"), key("k1")) for _ in range(10))
    )
    assert [replayed for _, replayed in outcomes] == [False] + [True] * 9
    assert len({response for response, _ in outcomes}) == 1
    accounts = await ledger.get_accounts(["a"])
    assert accounts["a"].debits_posted == 5


async def test_a_replay_survives_a_restart(make_store: StoreFactory, clock: ManualClock) -> None:
    """The record is durable with the effect: a retry after reopening the store still replays."""
    store = make_store(clock=clock)
    await store.start()
    await store.execute(CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD"))))
    first, _ = await store.execute_idempotent(pay(), key("k1"))
    await store.stop()
    reopened = make_store(clock=clock)
    await reopened.start()
    try:
        again, replayed = await reopened.execute_idempotent(pay(), key("k1"))
        assert (replayed, again) == (True, first)
        with pytest.raises(IdempotencyError):
            await reopened.execute_idempotent(pay(), key("k1", "other"))
        accounts = await reopened.get_accounts(["a"])
        assert accounts["a"].debits_posted == 5
    finally:
        await reopened.stop()


async def test_no_effect_is_kept_without_its_record(
    ledger: AnyStore, database: LedgerDatabase
) -> None:
    """If storing the answer fails, the effect is rolled back with it: both or neither."""

    def broken_render(result: Any) -> StoredResponse:
        raise RuntimeError("cannot render")

    with pytest.raises(PaycoreError) as raised:
        await ledger.execute_idempotent(pay(), Idempotency("k1", "fp", broken_render))
    assert raised.value.code is ErrorCode.INTERNAL_ERROR
    assert await ledger.get_transfer("t1") is None
    assert _rows(database) == []
    # the key is still free: a good retry acts now
    response, replayed = await ledger.execute_idempotent(pay(), key("k1"))
    assert (response.status, replayed) == (201, False)


async def test_a_record_past_retention_no_longer_replays(
    ledger: AnyStore, clock: ManualClock
) -> None:
    """After its retention a key is forgotten: the command runs again (and finds the transfer)."""
    await ledger.execute_idempotent(pay(), key("k1", retention=60))
    clock.advance(59)
    assert (await ledger.execute_idempotent(pay(), key("k1", retention=60)))[1]
    clock.advance(1)
    again, replayed = await ledger.execute_idempotent(pay(), key("k1", "other-fp", retention=60))
    assert not replayed
    (result,) = msgspec.json.decode(again.body)
    assert result["exists"]  # the transfer id is an idempotency key of its own
    accounts = await ledger.get_accounts(["a"])
    assert accounts["a"].debits_posted == 5


async def test_purge_deletes_only_expired_records(
    ledger: AnyStore, clock: ManualClock, database: LedgerDatabase
) -> None:
    """PurgeIdempotency removes records at or past their expiry and keeps the others."""
    await ledger.execute_idempotent(pay("t1"), key("short", retention=10))
    await ledger.execute_idempotent(pay("t2"), key("long", retention=100))
    assert await ledger.execute(PurgeIdempotency()) == 0
    clock.advance(10)
    assert await ledger.execute(PurgeIdempotency()) == 1
    assert [k for k, _ in _rows(database)] == ["long"]
    assert await ledger.execute(PurgeIdempotency()) == 0
    clock.advance(90)
    assert await ledger.execute(PurgeIdempotency()) == 1
    assert _rows(database) == []


async def test_purge_works_in_bounded_slices(
    ledger: AnyStore, clock: ManualClock, database: LedgerDatabase
) -> None:
    """A purge deletes at most ``limit`` records, so one call never holds the writer for long."""
    for i in range(5):
        await ledger.execute_idempotent(pay(f"t{i}"), key(f"k{i}", retention=1))
    clock.advance(2)
    assert await ledger.execute(PurgeIdempotency(limit=2)) == 2
    assert await ledger.execute(PurgeIdempotency(limit=2)) == 2
    assert await ledger.execute(PurgeIdempotency(limit=2)) == 1
    assert _rows(database) == []
