"""``paycore worker``: a process running only the background jobs settles the sagas
another node started, and steps down on SIGTERM (exit 0, locks released)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from cluster_support import ClusterDatabases, move

from config_files import write_config
from paycore.cluster.router import ShardedStore
from paycore.ledger.model import TransferStatus
from paycore.locks.testing import RedisServer
from paycore.storage.base import CreateTransfers

# These tests drive the recovery path: requests leave steps 2 and 3 to the relay.
pytestmark = pytest.mark.usefixtures("relay_path")


@pytest.mark.slow
async def test_a_worker_process_settles_sagas_and_stops_on_sigterm(
    cluster: ShardedStore,
    cluster_databases: ClusterDatabases,
    wallets: dict[str, list[str]],
    tmp_path: Path,
) -> None:
    settings = cluster_databases.settings(relay_interval_seconds=0.05, leader_ttl_seconds=1.0)
    config = write_config(tmp_path / "worker.toml", settings)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paycore.cli", "worker", "--config", str(config),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        s0, s1 = list(wallets)[:2]
        batch = tuple(move(f"node-{n}", wallets[s0][0], wallets[s1][0], 1) for n in range(20))
        assert all(r.in_flight for r in await cluster.execute(CreateTransfers(batch)))
        for _ in range(300):
            views = [await cluster.get_transfer(t.id) for t in batch]
            if all(v is not None and v.status is TransferStatus.POSTED for v in views):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker process did not settle the sagas")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), timeout=15)
    assert worker.returncode == 0, stderr.decode()
    assert b"stepping down" in stderr


def _holder_pid(client: redis.Redis, job: str) -> int | None:
    owner = client.get(f"paycore:lock:{{{job}}}")
    if owner is None:
        return None
    assert isinstance(owner, bytes)  # the client does not decode responses
    return int(owner.decode().split(":")[1])


@pytest.mark.slow
async def test_a_killed_worker_node_is_replaced_within_a_lease(
    cluster: ShardedStore,
    cluster_databases: ClusterDatabases,
    wallets: dict[str, list[str]],
    own_redis: RedisServer,
    tmp_path: Path,
) -> None:
    """Two ``paycore worker`` nodes on one Redis: SIGKILL the one leading shard-0's relay;
    the other leads it within about one lease and settles the sagas started after."""
    ttl = 1.0
    settings = cluster_databases.settings(
        relay_interval_seconds=0.05, leader_ttl_seconds=ttl, locks_url=own_redis.url
    )
    config = write_config(tmp_path / "worker.toml", settings)
    nodes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "paycore.cli",
            "worker",
            "--config",
            str(config),
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    client = redis.Redis.from_url(own_redis.url)
    job = f"leader:relay:{next(iter(cluster.shards))}"
    try:
        for _ in range(200):
            leader = _holder_pid(client, job)
            if leader is not None:
                break
            await asyncio.sleep(0.05)
        assert leader in {n.pid for n in nodes}, leader
        (victim,) = [n for n in nodes if n.pid == leader]
        (survivor,) = [n for n in nodes if n.pid != leader]
        victim.kill()
        killed_at = time.monotonic()
        await victim.wait()
        while _holder_pid(client, job) != survivor.pid:
            assert time.monotonic() - killed_at < 3 * ttl, "no new leader"
            await asyncio.sleep(0.01)
        took = time.monotonic() - killed_at
        print(f"relay leadership moved {took:.2f} s after SIGKILL (lease {ttl} s)")
        assert took < ttl + ttl / 3 * 1.2 + 0.5
        s0, s1 = list(wallets)[:2]
        (result,) = await cluster.execute(
            CreateTransfers((move("after-kill", wallets[s0][0], wallets[s1][0], 1),))
        )
        assert result.in_flight
        for _ in range(200):
            view = await cluster.get_transfer("after-kill")
            if view is not None and view.status is TransferStatus.POSTED:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the surviving node did not settle the saga")
    finally:
        client.close()
        for node in nodes:
            if node.returncode is None:
                node.send_signal(signal.SIGTERM)
                await asyncio.wait_for(node.wait(), timeout=15)
