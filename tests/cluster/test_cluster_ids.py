"""Transfer ids are unique across shards: an id used by a transfer stored on one shard is
refused for a transfer debiting an account on another, whatever the order and timing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cluster_support import ids_on, move

from paycore.cluster.router import ShardedStore
from paycore.errors import ErrorCode
from paycore.ledger.model import TransferFlags, TransferRequest, TransferStatus
from paycore.ledger.rules import TransferResult
from paycore.ops.audit import ClusterViolationKind, audit_cluster
from paycore.storage.base import CreateTransfers, ReserveTransferIds
from paycore.workers.relay import RelayWorker

TAKEN = ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS


def transfer_id_on(store: ShardedStore, shard: str, prefix: str) -> str:
    """A transfer id that hashes to ``shard``."""
    return ids_on(store, shard, 1, prefix=prefix)[0]


async def one(store: ShardedStore, request: TransferRequest) -> TransferResult:
    (result,) = await store.execute(CreateTransfers((request,)))
    assert isinstance(result, TransferResult)
    return result


async def test_an_id_is_refused_for_a_debit_on_any_other_shard(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Every order: the id's own shard first, another shard first, two other shards."""
    s0, s1, s2 = list(wallets)[:3]
    (a0, b0), (a1, b1), (a2, b2) = wallets[s0], wallets[s1], wallets[s2]
    for n, (first, second) in enumerate([((a0, b0), (a1, b1)), ((a1, b1), (a0, b0))]):
        tid = transfer_id_on(cluster, s0, f"t{n}-")
        assert (await one(cluster, move(tid, *first, 10))).ok
        again = await one(cluster, move(tid, *second, 10))
        assert again.code is TAKEN, again
        assert (await one(cluster, move(tid, *first, 10))).exists  # an honest retry
    tid = transfer_id_on(cluster, s0, "t2-")
    assert (await one(cluster, move(tid, a1, b1, 10))).ok
    assert (await one(cluster, move(tid, a2, b2, 10))).code is TAKEN
    debited = await cluster.get_accounts([a0, a1, a2])  # nothing moved twice
    assert [debited[a].debits_posted for a in (a0, a1, a2)] == [10, 20, 0]


async def test_concurrent_requests_with_one_id_on_two_shards_write_once(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    s0, s1, s2 = list(wallets)[:3]
    for n in range(30):
        tid = transfer_id_on(cluster, (s0, s1, s2)[n % 3], f"race{n}-")
        left, right = wallets[s1], wallets[s2]
        results = await asyncio.gather(
            one(cluster, move(tid, left[0], left[1], 1)),
            one(cluster, move(tid, right[0], right[1], 1)),
        )
        assert sorted(r.ok for r in results) == [False, True], results
        assert [r.code for r in results if not r.ok] == [TAKEN]
        view = await cluster.get_transfer(tid)
        winner = next(r for r in results if r.ok)
        assert view is not None
        assert winner.transfer is not None
        assert view.transfer.debit_account_id == winner.transfer.debit_account_id


async def test_a_linked_chain_with_a_taken_id_fails_as_a_whole(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    s0, s1 = list(wallets)[:2]
    (a0, b0), (a1, b1) = wallets[s0], wallets[s1]
    taken = transfer_id_on(cluster, s0, "taken-")
    assert (await one(cluster, move(taken, a0, b0, 5))).ok
    chain = (
        move("chain-1", a1, b1, 1, linked=True),
        move(taken, a1, b1, 1, linked=True),
        move("chain-3", b1, a1, 1),
    )
    results = await cluster.execute(CreateTransfers(chain))
    assert [r.code for r in results] == [
        ErrorCode.LINKED_EVENT_FAILED,
        TAKEN,
        ErrorCode.LINKED_EVENT_FAILED,
    ]
    assert await cluster.get_transfer("chain-1") is None
    assert await cluster.get_transfer("chain-3") is None


@pytest.mark.usefixtures("relay_path")
async def test_a_saga_id_cannot_be_reused_and_its_status_never_flips(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    s0, s1, s2 = list(wallets)[:3]
    (a0, _), (a1, b1), (a2, b2) = wallets[s0], wallets[s1], wallets[s2]
    relay = RelayWorker(cluster, interval_seconds=0.01)
    await relay.start()
    try:
        for n, shard in enumerate((s0, s1, s2)):
            tid = transfer_id_on(cluster, shard, f"saga{n}-")
            assert (await one(cluster, move(tid, a0, b1, 7))).in_flight
            statuses = [await _status(cluster, tid)]
            reused = await one(cluster, move(tid, a2, b2, 7))
            assert reused.code is TAKEN, reused
            await _settled(cluster, tid)
            statuses.append(await _status(cluster, tid))
            assert statuses == [TransferStatus.IN_FLIGHT, TransferStatus.POSTED]
            assert (await cluster.get_accounts([a2]))[a2].debits_posted == 0
            (retry,) = await cluster.execute(CreateTransfers((move(tid, a0, b1, 7),)))
            assert retry.exists
    finally:
        await relay.stop()
    assert (await cluster.get_accounts([a1]))[a1].credits_posted == 10_000


async def _status(store: ShardedStore, tid: str) -> Any:
    view = await store.get_transfer(tid)
    assert view is not None
    return view.status


async def _settled(store: ShardedStore, tid: str) -> None:
    for _ in range(500):
        if await _status(store, tid) is not TransferStatus.IN_FLIGHT:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{tid} still in flight")


async def test_a_refused_transfer_still_binds_its_id_to_its_shard(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Documented: the reservation outlives a refusal, so the retry keeps its shard; there
    the refusal is kept under the id (a retry never changes an answer)."""
    s0, s1, s2 = list(wallets)[:3]
    (a1, b1), (a2, b2) = wallets[s1], wallets[s2]
    tid = transfer_id_on(cluster, s0, "broke-")
    refused = await one(cluster, move(tid, a1, b1, 1_000_000))
    assert refused.code is ErrorCode.INSUFFICIENT_FUNDS
    assert (await one(cluster, move(tid, a2, b2, 1))).code is TAKEN
    again = await one(cluster, move(tid, a1, b1, 1_000_000))
    assert (again.code, again.detail) == (refused.code, refused.detail)
    assert (await one(cluster, move(tid, a1, b1, 1))).code is TAKEN  # other fields


async def test_post_and_void_ids_are_unique_across_shards_too(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    s0, s1 = list(wallets)[:2]
    (a0, b0), (a1, b1) = wallets[s0], wallets[s1]
    assert (await one(cluster, move("hold-0", a0, b0, 50, pending=True))).ok
    used = transfer_id_on(cluster, s0, "used-")
    assert (await one(cluster, move(used, a1, b1, 1))).ok
    post = TransferRequest(used, pending_id="hold-0", flags=TransferFlags(post_pending=True))
    assert (await one(cluster, post)).code is TAKEN
    fresh = TransferRequest("post-0", pending_id="hold-0", flags=TransferFlags(post_pending=True))
    assert (await one(cluster, fresh)).ok


async def test_ids_on_their_debit_shard_need_no_reservation(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """An id hashing to the debit account's shard costs no cross-shard write; any
    other id costs one reservation per batch and shard."""
    s0, s1 = list(wallets)[:2]
    a0, b0 = wallets[s0]
    reservations: list[ReserveTransferIds] = []
    for store in cluster.shards.values():
        _spy(store, reservations)
    local = tuple(move(transfer_id_on(cluster, s0, f"near{n}-"), a0, b0, 1) for n in range(20))
    assert all(r.ok for r in await cluster.execute(CreateTransfers(local)))
    assert reservations == []
    elsewhere = [transfer_id_on(cluster, s1, f"far{n}-") for n in range(20)]
    batch = tuple(move(tid, a0, b0, 1) for tid in elsewhere)
    assert all(r.ok for r in await cluster.execute(CreateTransfers(batch)))
    assert len(reservations) == 1
    assert len(reservations[0].entries) == 20


def _spy(store: Any, seen: list[ReserveTransferIds]) -> None:
    execute = store.execute

    async def spying(command: Any) -> Any:
        if isinstance(command, ReserveTransferIds):
            seen.append(command)
        return await execute(command)

    store.execute = spying


@pytest.mark.usefixtures("relay_path")
async def test_the_cluster_audit_finds_an_id_stored_on_two_shards(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Written past the router (as a bug or a hand edit would), a second transfer with
    the same id is a violation; a saga's credit leg repeating its id is not."""
    s0, s1 = list(wallets)[:2]
    (a0, b0), (a1, b1) = wallets[s0], wallets[s1]
    relay = RelayWorker(cluster, interval_seconds=0.01)
    await relay.start()
    try:
        assert (await one(cluster, move("saga-ok", a0, b1, 3))).in_flight
        await _settled(cluster, "saga-ok")
    finally:
        await relay.stop()
    assert (await audit_cluster(cluster.shards)).ok
    await cluster.shards[s0].execute(CreateTransfers((move("twice", a0, b0, 1),)))
    await cluster.shards[s1].execute(CreateTransfers((move("twice", a1, b1, 1),)))
    report = await audit_cluster(cluster.shards)
    assert [(v.kind, v.transfer_id) for v in report.violations] == [
        (ClusterViolationKind.DUPLICATE_TRANSFER_ID, "twice")
    ]
