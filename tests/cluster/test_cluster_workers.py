"""The background jobs under leader election: every (job, shard) has one leader among
the nodes, a stopped leader is replaced, and a deposed leader's writes are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cluster_support import move

from paycore.cluster.router import ShardedStore
from paycore.config import Settings
from paycore.errors import FencedError
from paycore.ledger.model import TransferStatus
from paycore.locks import LocalLockService, LockServiceBase, open_lock_service
from paycore.locks.testing import RedisServer
from paycore.storage.base import CreateTransfers, Fence
from paycore.workers.supervisor import WorkerSupervisor

FAST = Settings(
    leader_ttl_seconds=0.5, relay_interval_seconds=0.02, maintenance_interval_seconds=0.05
)

# These tests drive the recovery path: requests leave steps 2 and 3 to the relay.
pytestmark = pytest.mark.usefixtures("relay_path")


@pytest.fixture
async def two_nodes(redis_server: RedisServer) -> AsyncIterator[list[LockServiceBase]]:
    """Two lock clients of one Redis: two nodes' views of the lock service."""
    services = [open_lock_service(redis_server.url) for _ in range(2)]
    for service in services:
        await service.open()
    yield services
    for service in services:
        await service.aclose()


async def _until(predicate: object, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def _settled(store: ShardedStore, tid: str) -> None:
    for _ in range(500):
        view = await store.get_transfer(tid)
        if view is not None and view.status is not TransferStatus.IN_FLIGHT:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{tid} still in flight")


def _leaders(*nodes: WorkerSupervisor) -> dict[tuple[str, str | None], int]:
    count: dict[tuple[str, str | None], int] = {}
    for node in nodes:
        for job in node.status()["jobs"]:
            key = (job["job"], job["shard"])
            count[key] = count.get(key, 0) + int(job["leader"])
    return count


async def test_one_node_with_local_locks_leads_every_job_and_settles(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    s0, s1 = list(wallets)[:2]
    node = WorkerSupervisor(cluster, FAST, LocalLockService())
    await node.start()
    try:
        await _until(lambda: all(_leaders(node).values()))
        assert set(_leaders(node)) == {
            # webhooks: endpoints may be added over HTTP at any time (the admin API)
            (job, shard)
            for job in ("relay", "maintenance", "webhooks")
            for shard in cluster.shards
        }
        (result,) = await cluster.execute(
            CreateTransfers((move("w-1", wallets[s0][0], wallets[s1][0], 5),))
        )
        assert result.in_flight
        await _settled(cluster, "w-1")
        view = await cluster.get_transfer("w-1")
        assert view is not None
        assert view.status is TransferStatus.POSTED
    finally:
        await node.stop()


async def test_two_nodes_share_the_jobs_and_one_takes_over_when_the_other_stops(
    cluster: ShardedStore, wallets: dict[str, list[str]], two_nodes: list[LockServiceBase]
) -> None:
    a = WorkerSupervisor(cluster, FAST, two_nodes[0])
    b = WorkerSupervisor(cluster, FAST, two_nodes[1])
    await a.start()
    await b.start()
    try:
        await _until(lambda: set(_leaders(a, b).values()) == {1})  # one leader per job
        s0, s1 = list(wallets)[:2]
        (result,) = await cluster.execute(
            CreateTransfers((move("w-2", wallets[s0][0], wallets[s1][0], 5),))
        )
        assert result.in_flight
        await _settled(cluster, "w-2")
        await a.stop()  # graceful: releases its locks
        await _until(lambda: all(j["leader"] for j in b.status()["jobs"]), within=5.0)
        (result,) = await cluster.execute(
            CreateTransfers((move("w-3", wallets[s1][1], wallets[s0][1], 5),))
        )
        await _settled(cluster, "w-3")
    finally:
        await a.stop()
        await b.stop()


async def test_a_deposed_relay_leader_cannot_settle(
    cluster: ShardedStore, wallets: dict[str, list[str]], two_nodes: list[LockServiceBase]
) -> None:
    """Node A led shard-0's relay with token t; B leads it now with a newer token. A
    pass A makes with t (it has not noticed yet) is refused before it writes."""
    s0, s1 = list(wallets)[:2]
    name = f"leader:relay:{s0}"
    first = await two_nodes[0].acquire(name, 0.3)
    assert first is not None
    await asyncio.sleep(0.4)  # A's lease runs out while it "pauses"
    b = WorkerSupervisor(cluster, FAST, two_nodes[1])
    await b.start()
    try:
        await _until(lambda: _leaders(b)[("relay", s0)] == 1)
        a = WorkerSupervisor(cluster, FAST, two_nodes[0])
        assert a.relay is not None
        (result,) = await cluster.execute(
            CreateTransfers((move("w-4", wallets[s0][0], wallets[s1][0], 5),))
        )
        assert result.in_flight
        with pytest.raises(FencedError):
            await a.relay.settlement.run_shard(s0, Fence(name, first.fencing_token))
        await _settled(cluster, "w-4")  # B settles it
    finally:
        await b.stop()
