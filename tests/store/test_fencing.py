"""Fencing tokens checked by the store: a write carrying a token older than the newest
seen for its lock is refused in its own transaction and changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from backends import AnyStore, StoreFactory
from paycore.errors import ErrorCode, FencedError
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import (
    AdvanceFence,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Fence,
    PurgeIdempotency,
)

LOCK = "relay:shard-0"


def pay(transfer_id: str, token: int, lock: str = LOCK) -> CreateTransfers:
    return CreateTransfers(
        (TransferRequest(transfer_id, "a", "b", 5, "USD"),), fence=Fence(lock, token)
    )


@pytest.fixture
async def ledger(store: AnyStore) -> AnyStore:
    await store.execute(CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD"))))
    return store


async def _posted(store: AnyStore) -> int:
    return (await store.get_accounts(["b"]))["b"].credits_posted


async def test_an_older_token_is_refused_after_a_newer_one_wrote(ledger: AnyStore) -> None:
    assert (await ledger.execute(pay("t1", 1)))[0].ok
    assert (await ledger.execute(pay("t2", 1)))[0].ok  # the same holder writes on
    assert (await ledger.execute(pay("t3", 2)))[0].ok  # the next holder took over
    with pytest.raises(FencedError) as refused:
        await ledger.execute(pay("t4", 1))
    assert refused.value.code is ErrorCode.FENCING_TOKEN_STALE
    assert refused.value.status == 409
    assert await ledger.get_transfer("t4") is None
    assert await _posted(ledger) == 15


async def test_a_new_holder_announcing_itself_shuts_the_old_one_out(ledger: AnyStore) -> None:
    assert (await ledger.execute(pay("t1", 7)))[0].ok
    assert await ledger.execute(AdvanceFence(Fence(LOCK, 8))) is None
    for command in (pay("t2", 7), ExpirePending(fence=Fence(LOCK, 7))):
        with pytest.raises(FencedError):
            await ledger.execute(command)
    with pytest.raises(FencedError):
        await ledger.execute(AdvanceFence(Fence(LOCK, 3)))  # nor can it announce itself
    assert (await ledger.execute(pay("t3", 8)))[0].ok
    assert await _posted(ledger) == 10


async def test_locks_are_fenced_independently_and_unfenced_writes_pass(
    ledger: AnyStore,
) -> None:
    assert (await ledger.execute(pay("t1", 50, lock="relay:shard-9")))[0].ok
    assert (await ledger.execute(pay("t2", 1)))[0].ok  # another lock's token is no bar
    assert (await ledger.execute(CreateTransfers((TransferRequest("t3", "a", "b", 5),))))[0].ok
    assert await ledger.execute(PurgeIdempotency(fence=Fence("maintenance:shard-0", 1))) == 0


async def test_in_one_group_commit_a_stale_write_fails_alone(ledger: AnyStore) -> None:
    """Queued together, the newer holder's write and the stale one share a transaction:
    the stale one is refused, the rest commit."""
    outcomes = await asyncio.gather(
        ledger.execute(pay("new", 2)),
        ledger.execute(pay("old", 1)),
        ledger.execute(CreateTransfers((TransferRequest("plain", "a", "b", 5),))),
        return_exceptions=True,
    )
    assert outcomes[0][0].ok  # type: ignore[index]
    assert isinstance(outcomes[1], FencedError)
    assert outcomes[2][0].ok  # type: ignore[index]
    assert await ledger.get_transfer("old") is None


async def test_the_newest_token_survives_a_restart(make_store: StoreFactory) -> None:
    store = make_store()
    await store.start()
    await store.execute(AdvanceFence(Fence(LOCK, 41)))
    await store.stop()
    reopened = make_store()
    await reopened.start()
    try:
        with pytest.raises(FencedError):
            await reopened.execute(AdvanceFence(Fence(LOCK, 40)))
        assert await reopened.execute(AdvanceFence(Fence(LOCK, 41))) is None
    finally:
        await reopened.stop()
