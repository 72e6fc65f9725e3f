"""Fixtures of the cluster tests (registered by conftest.py): a started 4-shard store on
the test's backend.

The backend comes from the suite's ``backend`` fixture (ids ``[sqlite]`` and
``[postgres]``): four embedded SQLite files, or four fresh databases on the session's
PostgreSQL server (see ``ClusterDatabases``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cluster_support import ClusterDatabases, ids_on, move, open_accounts

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.storage.base import CreateTransfers


@pytest.fixture
def cluster_databases(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ClusterDatabases]:
    """The four shard databases of the test's backend, dropped after the test."""
    server = request.getfixturevalue("postgres_server") if backend == "postgres" else None
    databases = ClusterDatabases(backend, tmp_path / "cluster", server)
    yield databases
    databases.drop()


@pytest.fixture
async def cluster(cluster_databases: ClusterDatabases) -> AsyncIterator[ShardedStore]:
    """The router over the four shards, started, stopped after the test."""
    store = build_store(cluster_databases.settings())
    await store.start()
    yield store
    await store.stop()


@pytest.fixture
async def wallets(cluster: ShardedStore) -> dict[str, list[str]]:
    """Per shard, two no-overdraft wallets funded with 10,000 by a bank on the same shard."""

    async def place(shard: str) -> list[str]:
        bank, *pair = ids_on(cluster, shard, 3, prefix=f"{shard}-")
        await open_accounts(cluster, [bank], no_overdraft=False)
        await open_accounts(cluster, pair)
        results = await cluster.execute(
            CreateTransfers(tuple(move(f"fund-{w}", bank, w, 10_000) for w in pair))
        )
        assert all(r.ok and not r.in_flight for r in results)
        return pair

    # The shards are independent: set them up at once (a PostgreSQL round trip is slow).
    pairs = await asyncio.gather(*(place(shard) for shard in cluster.shards))
    return dict(zip(cluster.shards, pairs, strict=True))


@pytest.fixture
def relay_path(cluster: ShardedStore) -> ShardedStore:
    """The cluster with requests that stop after step 1 of a saga, as a node that died
    right after it would: the relay (the recovery path) does the rest."""
    cluster.drive_sagas = False
    return cluster
