"""A short real chaos run on the local setup: faults of several kinds, zero violations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

from paycore.chaos.checker import Violation
from paycore.chaos.nemesis import FaultKind
from paycore.chaos.run import ChaosOptions, run_local
from paycore.tools.local_postgres import find_bindir

pytestmark = pytest.mark.slow


async def test_short_run_finds_no_violation(tmp_path: Path) -> None:
    """25 s of the mixed workload on 2 API nodes and 2 PostgreSQL shards while API nodes
    are killed and paused, Redis restarts, a processor goes down and a node's link to a
    shard is cut: the checker (and the audit) find nothing."""
    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    kinds = (
        FaultKind.KILL_API_NODE,
        FaultKind.RESTART_REDIS,
        FaultKind.PROCESSOR_DOWN,
        FaultKind.NET_PARTITION,
        FaultKind.PAUSE_PROCESS,
    )
    options = ChaosOptions(seconds=25, seed=5, clients=6, faults=kinds, out=tmp_path / "out")
    with (tmp_path / "console.txt").open("w") as out:
        report = await run_local(options, Console(file=out))
    assert report.ok, _explained(report.violations, tmp_path / "out" / "history.jsonl")
    injected = {kind for kind, counts in report.faults.items() if counts.get("injected")}
    assert len(injected) >= 3, report.faults
    assert report.acknowledged > 100
    assert report.refused > 0  # definite refusals happened, and none took effect
    assert (tmp_path / "out" / "report.json").exists()
    assert (tmp_path / "out" / "history.jsonl").exists()


def _explained(violations: Sequence[Violation], history: Path) -> str:
    """The violations, each with the recorded requests that name its evidence's ids (a
    fresh clone's temporary directory is gone when CI reports a failure)."""
    lines = history.read_text().splitlines() if history.exists() else []
    out = []
    for v in violations[:5]:
        out.append(f"{v.kind}: {v.detail}")
        ids = [str(x) for x in v.evidence.values() if isinstance(x, str)]
        out += [f"  {line[:600]}" for line in lines if any(i in line for i in ids)][:30]
    return "\n".join(out)
