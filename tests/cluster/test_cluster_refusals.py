"""Refusals kept under a transfer id, on the 4-shard cluster (``paycore.ledger.refusals``).

A cross-shard transfer refused in its step 1 (the hold on the debit shard) keeps that
refusal on the debit shard, like a transfer on one shard: resent unchanged after funding
it is refused again and nothing moves; with other fields, or routed to another shard
through another debit account, it is a conflict.
"""

from __future__ import annotations

import msgspec
import pytest
from cluster_support import counters, ids_on, move

from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import hold_request, resolve_request
from paycore.errors import ErrorCode
from paycore.ledger.model import AccountRequest, Transfer, TransferFlags, TransferRequest
from paycore.ledger.refusals import fingerprint
from paycore.ledger.rules import TransferResult
from paycore.ops.audit import audit_cluster
from paycore.storage.base import CreateAccounts, CreateTransfers

E = ErrorCode
TAKEN = ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS


async def _run(store: ShardedStore, *items: TransferRequest) -> list[TransferResult]:
    results: list[TransferResult] = await store.execute(CreateTransfers(items))
    return results


async def _balances(store: ShardedStore, *ids: str) -> dict[str, tuple[int, int, int, int]]:
    found = await store.get_accounts(list(ids))
    return {i: counters(found[i]) for i in ids}


def _answer(result: TransferResult) -> tuple[ErrorCode | None, str]:
    return result.code, result.detail


@pytest.mark.parametrize("pending", [False, True], ids=["transfer", "hold"])
async def test_a_refused_cross_shard_transfer_resent_after_funding_is_refused_again(
    cluster: ShardedStore, wallets: dict[str, list[str]], pending: bool
) -> None:
    a, b = wallets["shard-0"][0], wallets["shard-2"][1]
    other = wallets["shard-1"][0]
    tid = ids_on(cluster, "shard-0", 1, prefix="xs-pay-")[0]  # the id hashes to A's shard
    (first,) = await _run(cluster, move(tid, a, b, 15_000, pending=pending))
    assert _answer(first) == (E.INSUFFICIENT_FUNDS, "available 10000, requested 15000")
    (funded,) = await _run(cluster, move("top-up", wallets["shard-0"][1], a, 10_000))
    assert funded.ok
    before = await _balances(cluster, a, b, other)
    (again,) = await _run(cluster, move(tid, a, b, 15_000, pending=pending))
    assert _answer(again) == _answer(first)
    assert not again.in_flight
    (changed,) = await _run(cluster, move(tid, a, b, 14_000, pending=pending))
    assert changed.code is TAKEN
    # Another debit account, on another shard: the id's answer lives on shard-0.
    (elsewhere,) = await _run(cluster, move(tid, other, b, 10, pending=pending))
    assert elsewhere.code is TAKEN
    assert await _balances(cluster, a, b, other) == before
    assert await cluster.get_transfer(tid) is None
    report = await audit_cluster(cluster.shards)
    assert report.ok, report.violations
    assert report.sagas_open == 0


async def test_a_batch_mixing_shards_answers_its_refusals_again(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    (a0, b0), (a1, _), (a3, b3) = wallets["shard-0"], wallets["shard-1"], wallets["shard-3"]
    batch = (
        move("mix-1", a0, a1, 15_000),  # cross-shard, too much until funded
        move("mix-2", a3, b3, 15_000),  # one shard, likewise
        move("mix-3", a0, b3, 100),  # cross-shard, fine
        move("mix-4", a3, b3, 5, linked=True),  # a chain on shard-3 that fails at its end
        move("mix-5", a3, b3, 10_000),
    )
    first = await _run(cluster, *batch)
    assert [r.code for r in first] == [
        E.INSUFFICIENT_FUNDS,
        E.INSUFFICIENT_FUNDS,
        None,
        E.LINKED_EVENT_FAILED,
        E.INSUFFICIENT_FUNDS,
    ]
    funding = [move(f"more-{w}", w2, w, 10_000) for w, w2 in ((a0, b0), (a3, b3))]
    assert all(r.ok for r in await _run(cluster, *funding))
    before = await _balances(cluster, a0, a1, a3, b3)
    again = await _run(cluster, *batch)
    assert [_answer(r) for r in again] == [_answer(r) for r in first]
    assert again[2].exists
    assert await _balances(cluster, a0, a1, a3, b3) == before


async def test_a_cross_shard_transfer_to_a_missing_account_stays_refused(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """B is missing: the router sees it reading both accounts, and A's shard keeps the
    refusal under the id, so a resend after B is created is refused the same way, as on
    one shard; so is a credit account that is closed, or of another currency."""
    a = wallets["shard-0"][0]
    ghost = ids_on(cluster, "shard-2", 1, prefix="later-")[0]
    (first,) = await _run(cluster, move("to-ghost", a, ghost, 10))
    assert first.code is E.ACCOUNT_NOT_FOUND
    assert all(r.ok for r in await cluster.execute(CreateAccounts((AccountRequest(ghost, "USD"),))))
    (again,) = await _run(cluster, move("to-ghost", a, ghost, 10))
    assert _answer(again) == _answer(first)


async def test_a_cross_shard_refusal_on_the_credit_side_is_kept(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A credit account of another currency: the refusal is kept under its id on A's
    shard (a resend gets it again, detail included), and no transfer is stored."""
    a = wallets["shard-0"][0]
    eur = ids_on(cluster, "shard-3", 1, prefix="eur-")[0]
    assert all(r.ok for r in await cluster.execute(CreateAccounts((AccountRequest(eur, "EUR"),))))
    (first,) = await _run(cluster, move("to-eur", a, eur, 10))
    assert first.code is E.CURRENCY_MISMATCH
    (again,) = await _run(cluster, move("to-eur", a, eur, 10))
    assert _answer(again) == _answer(first)
    assert (await cluster.get_transfers(["to-eur"])) == {}


@pytest.mark.parametrize("pending", [False, True], ids=["transfer", "hold"])
@pytest.mark.parametrize("metadata", [None, {"ref": "r1"}], ids=["bare", "metadata"])
def test_a_saga_step_is_fingerprinted_as_the_client_sent_it(
    pending: bool, metadata: dict[str, str] | None
) -> None:
    """Step 1's hold and a post of a cross-shard hold keep and compare refusals by the
    client's request, so that a resend meets its refusal on every path (found by the
    model test: a resend inside a chain, checked by the chain's plan, met a refusal kept
    by step 1 and answered transfer_exists_with_different_fields)."""
    flags = TransferFlags(pending=pending, linked=True, balancing=not pending)
    sent = TransferRequest(
        "x1", "a", "b", 40, code=3, flags=flags, timeout_seconds=5 * pending, metadata=metadata
    )
    hold, _ = hold_request(sent, "shard-0", "shard-1", "USD")
    assert hold.credit_account_id != sent.credit_account_id
    assert fingerprint(hold) == fingerprint(sent)
    stored, _ = hold_request(msgspec.structs.replace(sent, flags=TransferFlags(pending=True)),
                             "shard-0", "shard-1", "USD")  # fmt: skip
    transfer = Transfer(
        "x1", "a", stored.credit_account_id or "", 40, "USD", 3, stored.flags, None, 5,
        stored.metadata, 1,
    )  # fmt: skip
    ends: tuple[tuple[str | None, str | None], ...] = ((None, None), ("a", "b"))
    for given in ends:
        post = TransferRequest(
            "p1", *given, amount=10, flags=TransferFlags(post_pending=True), pending_id="x1",
            metadata=metadata,
        )  # fmt: skip
        assert fingerprint(resolve_request(post, transfer)) == fingerprint(post)


async def test_an_id_refused_by_the_router_answers_its_resend_as_one_shard(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A cross-shard item the router refuses (B in another currency), then the same id
    again in the same batch without an amount: the id's own check answers first, as on
    one shard (transfer_exists_with_different_fields), not the router's look at the
    fields (found by the model test: it said invalid_request)."""
    a = wallets["shard-0"][0]
    eur = ids_on(cluster, "shard-3", 1, prefix="eur2-")[0]
    assert all(r.ok for r in await cluster.execute(CreateAccounts((AccountRequest(eur, "EUR"),))))
    first = move("dup-1", a, eur, 10)
    again = msgspec.structs.replace(first, amount=None)
    results = await _run(cluster, first, again)
    assert [r.code for r in results] == [E.CURRENCY_MISMATCH, TAKEN], results
