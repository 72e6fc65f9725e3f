"""Fixtures of the cluster tests: a started 4-shard embedded store (the default topology)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_support import ids_on, move, open_accounts

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.storage.base import CreateTransfers


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ShardedStore]:
    """Four SQLite shards in a temporary directory, started, stopped after the test."""
    store = build_store(Settings(data_dir=str(tmp_path)))
    await store.start()
    yield store
    await store.stop()


@pytest.fixture
async def wallets(cluster: ShardedStore) -> dict[str, list[str]]:
    """Per shard, two no-overdraft wallets funded with 10,000 by a bank on the same shard."""
    placed: dict[str, list[str]] = {}
    for shard in cluster.shards:
        bank, *pair = ids_on(cluster, shard, 3, prefix=f"{shard}-")
        await open_accounts(cluster, [bank], no_overdraft=False)
        await open_accounts(cluster, pair)
        results = await cluster.execute(
            CreateTransfers(tuple(move(f"fund-{w}", bank, w, 10_000) for w in pair))
        )
        assert all(r.ok and not r.in_flight for r in results)
        placed[shard] = pair
    return placed
