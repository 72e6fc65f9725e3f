"""``paycore worker``: a process running only the background jobs settles the sagas
another node started, and steps down on SIGTERM (exit 0, locks released)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_support import ClusterDatabases, move, write_config

from paycore.cluster.router import ShardedStore
from paycore.ledger.model import TransferStatus
from paycore.storage.base import CreateTransfers


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
