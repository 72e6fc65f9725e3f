"""Refusals kept under a transfer id, on each backend (``paycore.ledger.refusals``).

A transfer refused for a reason that depends on state, resent unchanged once that state
changed, gets the same refusal again and has no effect (single items, batches, linked
chains); with other fields it is a conflict; the refusal is written in the refusing
transaction, survives a restart, is kept per tenant, and is never a transfer.
"""

from __future__ import annotations

from typing import Any

from backends import AnyStore, LedgerDatabase
from paycore.errors import ErrorCode
from paycore.ledger.model import (
    SYSTEM_TENANT,
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from paycore.ledger.rules import TransferResult
from paycore.ops.audit import audit_store
from paycore.storage.base import CreateAccounts, CreateTransfers, Idempotency, StoredResponse
from store.support import ManualClock

E = ErrorCode
TAKEN = ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
LINKED = TransferFlags(linked=True)


async def _open(store: AnyStore, tenant: str = "default") -> None:
    """``bank`` (unlimited) and two empty no-overdraft wallets ``w1``, ``w2``."""
    wallet = AccountFlags(no_overdraft=True)
    results = await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD", tenant=tenant),
                AccountRequest("w1", "USD", flags=wallet, tenant=tenant),
                AccountRequest("w2", "USD", flags=wallet, tenant=tenant),
            )
        )
    )
    assert all(r.ok for r in results), results


async def _run(store: AnyStore, *items: TransferRequest, tenant: str | None = None) -> list[Any]:
    results: list[TransferResult] = await store.execute(CreateTransfers(items, tenant=tenant))
    return [(r.code, r.detail) if r.code is not None else "ok" for r in results]


async def _fund(store: AnyStore, tid: str, wallet: str, amount: int) -> None:
    assert await _run(store, TransferRequest(tid, "bank", wallet, amount)) == ["ok"]


async def _counters(store: AnyStore, *ids: str) -> dict[str, tuple[int, int, int, int]]:
    found = await store.get_accounts(list(ids))
    return {
        i: (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        for i, a in found.items()
    }


async def test_a_refused_transfer_resent_after_funding_is_refused_again(store: AnyStore) -> None:
    """The reported fault: refused for lack of funds, funded, resent unchanged -> posted.
    Now the same refusal (code and detail), nothing moves; other fields -> 409."""
    await _open(store)
    pay = TransferRequest("pay-1", "w1", "w2", 500, "USD")
    (first,) = await _run(store, pay)
    assert first == (E.INSUFFICIENT_FUNDS, "available 0, requested 500")
    await _fund(store, "fund-1", "w1", 1_000)
    before = await _counters(store, "w1", "w2")
    assert await _run(store, pay) == [first]
    assert await _run(store, TransferRequest("pay-1", "w1", "w2", 400, "USD")) == [
        (TAKEN, "transfer 'pay-1' was refused (insufficient_funds) with other fields")
    ]
    assert await _counters(store, "w1", "w2") == before
    assert await store.get_transfer("pay-1") is None  # a refusal is not a transfer
    assert await _run(store, TransferRequest("pay-2", "w1", "w2", 500, "USD")) == ["ok"]


async def test_a_refused_hold_and_post_keep_their_refusals(store: AnyStore) -> None:
    """A post of a hold that does not exist yet stays refused once the hold exists."""
    await _open(store)
    await _fund(store, "fund-1", "w1", 100)
    post = TransferRequest("cap-1", pending_id="hold-1", flags=TransferFlags(post_pending=True))
    (first,) = await _run(store, post)
    assert first[0] is E.PENDING_TRANSFER_NOT_FOUND
    hold = TransferRequest("hold-1", "w1", "w2", 60, flags=TransferFlags(pending=True))
    assert await _run(store, hold) == ["ok"]
    assert await _run(store, post) == [first]
    assert (await _counters(store, "w1"))["w1"] == (60, 0, 0, 100)


async def test_a_batch_answers_every_refused_item_again(store: AnyStore) -> None:
    await _open(store)
    batch = (
        TransferRequest("b-1", "w1", "w2", 10),
        TransferRequest("b-2", "bank", "w2", 10),
        TransferRequest("b-3", "w1", "ghost", 10),
        TransferRequest("b-4", "w2", "w1", 10),  # w2 is credited by b-2 first: passes
    )
    first = await _run(store, *batch)
    assert [r if r == "ok" else r[0] for r in first] == [
        E.INSUFFICIENT_FUNDS,
        "ok",
        E.ACCOUNT_NOT_FOUND,
        "ok",
    ]
    await _fund(store, "fund-1", "w1", 1_000)
    await store.execute(CreateAccounts((AccountRequest("ghost", "USD"),)))
    before = await _counters(store, "w1", "w2", "ghost")
    assert await _run(store, *batch) == [first[0], "ok", first[2], "ok"]  # "ok": exists
    assert await _counters(store, "w1", "w2", "ghost") == before


async def test_a_linked_chain_resent_fails_again_at_the_same_item(store: AnyStore) -> None:
    """The failing item's refusal is kept: the chain as a whole gives its first answer."""
    await _open(store)
    await _fund(store, "fund-1", "w1", 10)
    chain = (
        TransferRequest("c-1", "w1", "w2", 10, flags=LINKED),
        TransferRequest("c-2", "w1", "w2", 5),  # w1 has nothing left after c-1
    )
    first = await _run(store, *chain)
    assert first == [
        (E.LINKED_EVENT_FAILED, ""),
        (E.INSUFFICIENT_FUNDS, "available 0, requested 5"),
    ]
    await _fund(store, "fund-2", "w1", 1_000)
    before = await _counters(store, "w1", "w2")
    assert await _run(store, *chain) == first
    assert await _counters(store, "w1", "w2") == before
    # The other item never failed on its own: its id is free.
    assert await _run(store, TransferRequest("c-1", "w1", "w2", 10)) == ["ok"]


async def test_refusals_survive_a_restart(database: LedgerDatabase, clock: ManualClock) -> None:
    store = database.store(clock=clock)
    await store.start()
    try:
        await _open(store)
        (first,) = await _run(store, TransferRequest("r-1", "w1", "w2", 7))
        await _fund(store, "fund-1", "w1", 100)
    finally:
        await store.stop()
    rows = database.query("SELECT id, tenant, code, detail FROM transfer_refusals")
    assert rows == [("r-1", SYSTEM_TENANT, "insufficient_funds", first[1])]
    again = database.store(clock=clock)
    await again.start()
    try:
        assert await _run(again, TransferRequest("r-1", "w1", "w2", 7)) == [first]
    finally:
        await again.stop()


async def test_bad_input_is_not_kept(store: AnyStore, database: LedgerDatabase) -> None:
    await _open(store)
    await _fund(store, "fund-1", "w1", 100)
    (bad,) = await _run(store, TransferRequest("v-1", "w1", "w1", 5))
    assert bad[0] is E.ACCOUNTS_MUST_BE_DIFFERENT
    assert await _run(store, TransferRequest("v-1", "w1", "w2", 5)) == ["ok"]
    assert database.query("SELECT count(*) FROM transfer_refusals") == [(0,)]


async def test_a_refusal_is_replayed_only_to_its_tenant(store: AnyStore) -> None:
    """Another tenant reusing the id is answered as if it had never been refused."""
    await _open(store, tenant="acme")
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("z-bank", "USD", tenant="zeta"),
                AccountRequest("z-w", "USD", tenant="zeta"),
            )
        )
    )
    (first,) = await _run(store, TransferRequest("t-1", "w1", "w2", 5), tenant="acme")
    assert first[0] is E.INSUFFICIENT_FUNDS
    theirs = await _run(store, TransferRequest("t-1", "z-bank", "z-w", 5, code=3), tenant="zeta")
    assert theirs == ["ok"]
    assert await _run(store, TransferRequest("t-1", "w1", "w2", 5), tenant="acme") == [first]
    assert (await _counters(store, "z-w"))["z-w"] == (0, 0, 0, 5)


async def test_an_idempotency_key_does_not_bypass_the_kept_refusal(store: AnyStore) -> None:
    """A new key on the same transfer id gets the refusal the id keeps."""
    await _open(store)
    pay = TransferRequest("k-1", "w1", "w2", 50)
    (first,) = await _run(store, pay)
    await _fund(store, "fund-1", "w1", 100)

    def render(results: list[TransferResult]) -> StoredResponse:
        (result,) = results
        return StoredResponse(409 if result.code else 201, str(result.code).encode())

    response, replayed = await store.execute_idempotent(
        CreateTransfers((pay,)), Idempotency("new-key", "fp", render)
    )
    assert (response.status, response.body, replayed) == (409, b"insufficient_funds", False)
    assert first[0] is E.INSUFFICIENT_FUNDS


async def test_refusals_are_not_transfers_to_the_audit(store: AnyStore) -> None:
    await _open(store)
    await _fund(store, "fund-1", "w1", 10)
    await _run(store, TransferRequest("a-1", "w1", "w2", 50), TransferRequest("a-2", "w1", "x", 1))
    report = await audit_store(store)
    assert report.ok, report.violations
    assert report.transfers == 1
