"""Linked chains whose transfers touch several shards: all or nothing, as on one shard."""

from __future__ import annotations

import pytest
from cluster_support import counters, ids_on, move, open_accounts

from paycore.cluster.router import ShardedStore
from paycore.errors import ErrorCode
from paycore.ledger.model import TransferFlags, TransferRequest, TransferStatus
from paycore.ops.audit import audit_cluster
from paycore.storage.base import CloseAccount, CreateTransfers, StaleChains
from paycore.workers.relay import RelayWorker


async def _counters(cluster: ShardedStore, *ids: str) -> list[tuple[int, int, int, int]]:
    found = await cluster.get_accounts(list(ids))
    return [counters(found[i]) for i in ids]


async def _empty_wallets(cluster: ShardedStore, shards: list[str]) -> list[str]:
    ids = [ids_on(cluster, shard, 1, prefix=f"empty-{shard}-")[0] for shard in shards]
    await open_accounts(cluster, ids)
    return ids


async def test_a_chain_spends_what_an_earlier_item_gave_across_shards(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A(s0) -> B(s1), B(s1) -> C(s2) where B starts empty with no overdraft succeeds,
    because B's credit is applied on its shard before its debit, as on one shard."""
    s0, s1, s2 = list(wallets)[:3]
    a = wallets[s0][0]
    (b,) = await _empty_wallets(cluster, [s1])
    c = wallets[s2][0]
    chain = (move("c1", a, b, 300, linked=True), move("c2", b, c, 300))
    results = await cluster.execute(CreateTransfers(chain))
    assert [r.code for r in results] == [None, None]
    assert not any(r.in_flight for r in results)
    assert await _counters(cluster, a, b, c) == [
        (0, 300, 0, 10_000),
        (0, 300, 0, 300),
        (0, 0, 0, 10_300),
    ]
    for tid in ("c1", "c2"):
        view = await cluster.get_transfer(tid)
        assert view is not None
        assert view.status is TransferStatus.POSTED
    listed = await cluster.account_transfers(b, limit=10)
    assert [v.transfer.id for v in listed.data] == ["c1", "c2"]
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_failing_item_leaves_every_shard_unchanged(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """The last item lacks funds: every item answers as on one shard, nothing moved."""
    s0, s1, s2 = list(wallets)[:3]
    a, b, c = wallets[s0][0], wallets[s1][0], wallets[s2][0]
    before = await _counters(cluster, a, b, c)
    chain = (
        move("f1", a, b, 100, linked=True),
        move("f2", b, c, 50, linked=True),
        move("f3", c, a, 10**9),
    )
    results = await cluster.execute(CreateTransfers(chain))
    assert [r.code for r in results] == [
        ErrorCode.LINKED_EVENT_FAILED,
        ErrorCode.LINKED_EVENT_FAILED,
        ErrorCode.INSUFFICIENT_FUNDS,
    ]
    assert await _counters(cluster, a, b, c) == before
    for tid in ("f1", "f2", "f3"):
        assert await cluster.get_transfer(tid) is None
    assert (await audit_cluster(cluster.shards)).ok


async def test_holds_posts_and_balancing_inside_a_chain_across_shards(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A chain that opens a hold across shards, posts part of an older cross-shard hold
    and moves a balancing amount applies every item, with the one-shard numbers."""
    s0, s1, s2 = list(wallets)[:3]
    a, b, c = wallets[s0][0], wallets[s1][0], wallets[s2][0]
    await cluster.execute(CreateTransfers((move("old", a, b, 1_000, pending=True),)))
    post = TransferRequest(
        "old-post",
        pending_id="old",
        amount=400,
        flags=TransferFlags(post_pending=True, linked=True),
    )
    hold = move("new-hold", b, c, 200, linked=True, pending=True)
    sweep = TransferRequest("sweep", c, a, 10**12, "USD", flags=TransferFlags(balancing=True))
    results = await cluster.execute(CreateTransfers((post, hold, sweep)))
    assert [r.code for r in results] == [None, None, None], results
    # c had 10,000; nothing pending out of it; the balancing item takes all of it.
    assert await _counters(cluster, a, b, c) == [
        (0, 400, 0, 20_000),
        (200, 0, 0, 10_400),
        (0, 10_000, 200, 10_000),
    ]
    view = await cluster.get_transfer("old")
    assert view is not None
    assert view.status is TransferStatus.POSTED
    view = await cluster.get_transfer("new-hold")
    assert view is not None
    assert view.status is TransferStatus.PENDING
    void = TransferRequest(
        "new-void", pending_id="new-hold", flags=TransferFlags(void_pending=True)
    )
    (voided,) = await cluster.execute(CreateTransfers((void,)))
    assert voided.ok
    assert await _counters(cluster, b, c) == [(0, 0, 0, 10_400), (0, 10_000, 0, 10_000)]
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_repeated_chain_changes_nothing(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Sending a chain again answers each item as existing and moves nothing more."""
    s0, s1 = list(wallets)[:2]
    a, b = wallets[s0][0], wallets[s1][0]
    chain = (move("r1", a, b, 10, linked=True), move("r2", b, a, 3))
    first = await cluster.execute(CreateTransfers(chain))
    assert [r.code for r in first] == [None, None]
    after_first = await _counters(cluster, a, b)
    again = await cluster.execute(CreateTransfers(chain))
    assert [(r.code, r.exists) for r in again] == [(None, True), (None, True)]
    assert await _counters(cluster, a, b) == after_first


@pytest.mark.usefixtures("relay_path")
async def test_a_prepared_chain_holds_its_money_and_the_recovery_finishes_it(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A participant whose request died after the decision is finished by the relay; while
    prepared, its money is reserved and its account cannot be closed."""
    from paycore.storage.base import DecideChain, FinishChain, PrepareChain

    s0, s1 = list(wallets)[:2]
    a, b = wallets[s0]
    leg = move("p1", a, b, 9_000)  # a leg on s0 alone, as a participant keeps it
    (prepared,) = await cluster.shards[s0].execute(PrepareChain("chain.t1", s1, (leg,)))
    assert prepared.ok
    # 9,000 of a's 10,000 are reserved: another debit of 2,000 fails, one of 1,000 passes.
    (over,) = await cluster.execute(CreateTransfers((move("o1", a, b, 2_000),)))
    assert over.code is ErrorCode.INSUFFICIENT_FUNDS
    closing = await cluster.execute(CloseAccount(a))
    assert closing.code is ErrorCode.ACCOUNT_HAS_PENDING_TRANSFERS
    decided = await cluster.shards[s1].execute(DecideChain("chain.t1", (s0,)))
    assert decided.state == "committed"
    stale = await cluster.shards[s0].execute(StaleChains(0))
    assert stale == [("chain.t1", s1)]
    relay = RelayWorker(cluster, lease_seconds=0.001)
    await relay.drain()
    assert await cluster.shards[s0].execute(StaleChains(0)) == []
    assert (await cluster.shards[s0].execute(FinishChain("chain.t1", True))).state == "committed"
    (a_after,) = await _counters(cluster, a)
    assert a_after == (0, 9_000, 0, 10_000)


async def test_a_chain_posting_a_hold_an_earlier_item_of_the_batch_made(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Batch [hold A->B across shards; C->A linked; post of the hold]: the chain of the
    last two spans shards and posts a hold the batch itself made (found by hypothesis:
    the chain looked the hold up before the first item had written it)."""
    s0, s1, s2 = list(wallets)[:3]
    a, b, c = wallets[s0][0], wallets[s1][0], wallets[s2][0]
    sent = (
        TransferRequest("bh-1", a, b, 128, flags=TransferFlags(pending=True)),
        move("bh-2", c, a, 10, linked=True),
        TransferRequest("bh-3", pending_id="bh-1", flags=TransferFlags(post_pending=True)),
    )
    results = await cluster.execute(CreateTransfers(sent))
    assert [(r.ok, r.in_flight) for r in results] == [(True, False)] * 3, results
    assert await _counters(cluster, a, b, c) == [
        (0, 128, 0, 10_010),
        (0, 0, 0, 10_128),
        (0, 10, 0, 10_000),
    ]
    view = await cluster.get_transfer("bh-1")
    assert view is not None
    assert view.status is TransferStatus.POSTED
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_chains_transfer_sent_again_alone_answers_exists(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Each item's id is bound to the shard storing it, as a plain transfer's is: a chain's
    last transfer sent again alone (same fields) answers "exists", whichever shard its id
    hashes to (the credit's shard, a third one, the debit's own)."""
    s0, s1, s2, s3 = list(cluster.shards)
    a, b = wallets[s0][0], wallets[s1][0]
    for n, shard in enumerate((s1, s2, s0, s3)):
        last = ids_on(cluster, shard, 1, prefix=f"again-{n}-")[0]
        chain = (move(f"lead-{n}", a, b, 10, linked=True), move(last, a, b, 20, pending=n == 3))
        assert [r.code for r in await cluster.execute(CreateTransfers(chain))] == [None] * 2
        before = await _counters(cluster, a, b)
        (again,) = await cluster.execute(CreateTransfers(chain[1:]))
        assert again.code is None, (last, again.code, again.detail)
        assert again.exists
        assert await _counters(cluster, a, b) == before
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_chain_whose_id_is_taken_on_another_shard_is_refused_whole(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """An item whose id a transfer between other accounts (on another shard) holds is
    refused as one shard would refuse it; the chain moves nothing."""
    s0, s1, s2 = list(wallets)[:3]
    a, b, c = wallets[s0][0], wallets[s1][0], wallets[s2][0]
    taken = ids_on(cluster, s1, 1, prefix="taken-")[0]
    (first,) = await cluster.execute(CreateTransfers((move(taken, c, wallets[s2][1], 5),)))
    assert first.code is None
    before = await _counters(cluster, a, b, c)
    chain = (move("t-ok", a, b, 10, linked=True), move(taken, a, b, 20))
    results = await cluster.execute(CreateTransfers(chain))
    assert [r.code for r in results] == [
        ErrorCode.LINKED_EVENT_FAILED,
        ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    ]
    assert await _counters(cluster, a, b, c) == before
    assert await cluster.get_transfer("t-ok") is None
    assert (await audit_cluster(cluster.shards)).ok


async def test_an_id_named_twice_in_a_chain_answers_one_stored_transfer(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A chain across shards naming one id twice: the second item answers "exists" with the
    transfer as stored (its timestamp too), as one shard answers it."""
    s0, s1, s2 = list(wallets)[:3]
    (a, b), c, d = wallets[s0], wallets[s1][0], wallets[s2][0]
    # Earlier writes on s0, so that its next timestamp is not the clock's reading.
    assert all(r.ok for r in await cluster.execute(CreateTransfers((move("tw-0", a, b, 1),))))
    twice = move("tw-1", a, b, 5, linked=True)
    results = await cluster.execute(CreateTransfers((twice, twice, move("tw-2", c, d, 7))))
    assert [(r.code, r.exists) for r in results] == [(None, False), (None, True), (None, False)]
    view = await cluster.get_transfer("tw-1")
    assert view is not None
    stamps = [r.transfer.timestamp for r in results[:2] if r.transfer is not None]
    assert stamps == [view.transfer.timestamp] * 2
