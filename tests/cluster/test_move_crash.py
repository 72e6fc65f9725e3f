"""A move of slots SIGKILLed at every point (``move_crash_child.py``) finishes when run
again: the moved accounts answer as before, on their new shard, and the audit is clean."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_support import ClusterDatabases, ids_on, move, open_accounts
from move_crash_child import KILL_POINTS

from config_files import write_config
from paycore.cluster import slot_moves
from paycore.cluster.shardmap import slot_of
from paycore.cluster.topology import build_store
from paycore.ops.audit import audit_cluster
from paycore.storage.base import CreateTransfers

CHILD = Path(__file__).with_name("move_crash_child.py")


def _run_child(config: Path, first: int, last: int, point: str) -> None:
    """Run the mover until it kills itself at ``point``."""
    done = subprocess.run(
        [sys.executable, str(CHILD), str(config), str(first), str(last), "shard-3", point],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert "survived" not in done.stdout, f"kill point {point} never met: {done.stdout}"
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_a_move_killed_at_any_point_finishes_when_run_again(
    cluster_databases: ClusterDatabases, tmp_path: Path, point: str
) -> None:
    settings = cluster_databases.settings()
    store = build_store(settings)
    await store.start()
    try:
        bank, *wallets = ids_on(store, "shard-0", 3, prefix="kc-")
        (far,) = ids_on(store, "shard-1", 1, prefix="kc-far-")
        await open_accounts(store, [bank, far], no_overdraft=False)
        await open_accounts(store, wallets)
        sent = (move("kc-1", bank, wallets[0], 50), move("kc-2", wallets[0], wallets[1], 20),
                move("kc-3", far, wallets[1], 5))  # fmt: skip
        assert all(r.ok for r in await store.execute(CreateTransfers(sent)))
        accounts = [bank, *wallets, far]
        before = await store.get_accounts(accounts)
        slots = [slot_of(a) for a in (bank, *wallets)]
    finally:
        await store.stop()
    first, last = min(slots), max(slots)
    _run_child(write_config(tmp_path / "paycore.toml", settings), first, last, point)

    store = build_store(settings)
    await store.start()
    try:
        report = await slot_moves.move_slots(store, first, last, "shard-3", adopt_seconds=0.0)
        assert report.state == "done"
        assert all(store.shard_for(a) == "shard-3" for a in (bank, *wallets))
        assert await store.get_accounts(accounts) == before
        more = await store.execute(CreateTransfers((move("kc-4", wallets[1], far, 1),)))
        assert [r.ok for r in more] == [True]
        audit = await audit_cluster(store.shards)
        assert audit.ok, audit.violations
    finally:
        await store.stop()
