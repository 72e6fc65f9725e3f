"""The chaos run of issue 7 on the real HA cluster: the workload through nginx while the
nemesis kills API nodes and a primary PostgreSQL, restarts Redis and takes a processor
down; the checker must find nothing, and the cluster must heal by itself afterwards.
``paycore chaos --cluster DATA_DIR --minutes 10`` is the long version."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from rich.console import Console

from paycore.chaos.nemesis import FaultKind
from paycore.chaos.run import ChaosOptions, run_cluster
from paycore.tools.local_cluster.control import LocalCluster

pytestmark = pytest.mark.slow

FAULTS = (
    FaultKind.KILL_API_NODE,
    FaultKind.KILL_PRIMARY,
    FaultKind.RESTART_REDIS,
    FaultKind.PROCESSOR_DOWN,
)


def test_a_chaos_run_on_the_cluster_finds_no_violation(
    ha_cluster: LocalCluster, tmp_path: Path
) -> None:
    options = ChaosOptions(seconds=45.0, seed=6, clients=6, faults=FAULTS, out=tmp_path / "chaos")
    report = asyncio.run(
        run_cluster(ha_cluster.layout.root, options, Console(width=120, highlight=False))
    )
    print(f"\n[chaos] ops {report.ops}, acknowledged {report.acknowledged}, faults "
          f"{report.faults}, violations {report.violations_by_kind}")  # fmt: skip
    assert report.ok, report.violations[:10]
    injected = {kind for kind, counts in report.faults.items() if counts.get("injected")}
    assert len(injected) >= 3, report.faults
    assert report.refused > 0  # definite refusals happened, and none took effect
    # Healed by itself: every shard has its leader and a streaming synchronous standby.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        roles = [
            sorted((m.role, m.state) for m in ha_cluster.shard(k).members)
            for k in range(ha_cluster.spec.shards)
        ]
        if all(r == [("leader", "running"), ("sync_standby", "streaming")] for r in roles):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the cluster did not heal: {roles}")
