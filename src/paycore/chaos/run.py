"""``paycore chaos``: a cluster, the workload, the nemesis, the checker, the report.

``run_chaos(options, console)`` starts the local setup (``LocalCluster``; the HA cluster
plugs in through the same ``ClusterControl``), sets the workload up, then runs it and the
nemesis's seeded schedule side by side for the run's length, heals, waits until the system
is quiet, reads the final state through the API, audits the store, checks, and writes
``history.jsonl``, ``report.json`` and ``timeline.png`` into the output directory.
Returns 0 when no violation was found, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from paycore.chaos.checker import check
from paycore.chaos.history import write_history
from paycore.chaos.nemesis import ClusterControl, FaultKind, Nemesis, make_schedule
from paycore.chaos.report import (
    ChaosReport,
    plot_timeline,
    print_summary,
    summarize,
    write_report,
)
from paycore.chaos.workload import Topology, Workload, WorkloadOptions

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "DEFAULT_FAULTS",
    "ChaosOptions",
    "run_against",
    "run_chaos",
    "run_cluster",
    "run_local",
]

DEFAULT_FAULTS: tuple[FaultKind, ...] = (
    FaultKind.KILL_API_NODE,
    FaultKind.PAUSE_PROCESS,
    FaultKind.RESTART_REDIS,
    FaultKind.PROCESSOR_DOWN,
    FaultKind.PROCESSOR_SLOW,
    FaultKind.NET_LATENCY,
    FaultKind.NET_PARTITION,
    FaultKind.KILL_PRIMARY,
)


class ChaosOptions(msgspec.Struct, frozen=True, kw_only=True):
    seconds: float = 60.0
    seed: int = 1
    clients: int = 8
    cross_shard_share: float = 0.3
    faults: tuple[FaultKind, ...] = DEFAULT_FAULTS
    out: Path = Path("chaos-out")
    nodes: int = 2
    shards: int = 2
    quiet_bound: float = 60.0


async def run_against(
    control: ClusterControl,
    topology: Topology,
    options: ChaosOptions,
    console: Console,
) -> ChaosReport:
    """The workload and the nemesis against a running cluster; the checked report."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    tag = f"c{options.seed}x{int(time.time()) % 1_000_000}"
    workload = Workload(
        control.api_nodes(),
        topology,
        WorkloadOptions(
            clients=options.clients,
            cross_shard_share=options.cross_shard_share,
            seed=options.seed,
        ),
        tag=tag,
        headers=control.auth_headers(),
    )
    try:
        console.print(f"setting up accounts on {len(topology.shards)} shards...")
        await workload.setup()
        schedule = make_schedule(options.seed, options.seconds, options.faults, control.targets())
        console.print(
            f"running {options.seconds:g} s: {options.clients} clients, {len(schedule)} faults "
            f"({', '.join(sorted({f.kind.value for f in schedule}))})"
        )
        nemesis = Nemesis(control, schedule)
        t0 = time.monotonic()
        await asyncio.gather(workload.run(t0 + options.seconds), nemesis.run(t0))
        seconds = time.monotonic() - t0
        console.print("faults over; waiting until nothing is in flight...")
        quiet, waited, still = await workload.quiesce(options.quiet_bound)
        state = await workload.final_state()
        state.quiet, state.quiet_after, state.still_open = quiet, waited, still
        audit = await control.audit()
        notes = [] if audit is not None else ["no DB access: the store was not audited"]
        violations = check(workload.history, state, audit=audit or ())
        skipped = {r.note for r in nemesis.records if r.note}
        notes += sorted(skipped)
        report = summarize(
            workload.history,
            nemesis.records,
            violations,
            seed=options.seed,
            seconds=seconds,
            quiet_after=waited,
            notes=notes,
        )
        write_history(out / "history.jsonl", workload.history)
        (out / "final-state.json").write_bytes(msgspec.json.encode(state))
        write_report(report, out / "report.json")
        if plot_timeline(workload.history, nemesis.records, t0, out / "timeline.png"):
            notes.append(f"timeline: {out / 'timeline.png'}")
        print_summary(report, console)
        console.print(f"history, final state, report and timeline in {out}/")
        return report
    finally:
        await workload.aclose()


async def run_local(options: ChaosOptions, console: Console) -> ChaosReport:
    """``run_against`` the local setup (``LocalCluster``), started and stopped here."""
    from paycore.chaos.local import PROCESSORS, LocalCluster  # noqa: PLC0415

    cluster = LocalCluster(
        options.out / "cluster", nodes=options.nodes, shards=options.shards, seed=options.seed
    )
    console.print(
        f"starting the local setup: PostgreSQL ({options.shards} shards), Redis, "
        f"{len(PROCESSORS)} acquirer simulators, {options.nodes} API nodes behind TCP proxies..."
    )
    try:
        await cluster.start()
        topology = Topology(
            shards=cluster.shard_names, processors=PROCESSORS, tenant=cluster.api_key_tenant
        )
        return await run_against(cluster, topology, options, console)
    finally:
        await cluster.stop()


async def run_cluster(data_dir: Path, options: ChaosOptions, console: Console) -> ChaosReport:
    """``run_against`` the running ``paycore cluster`` of ``data_dir`` (through nginx)."""
    from paycore.chaos.cluster_control import HaClusterControl  # noqa: PLC0415
    from paycore.tools.local_cluster.control import LocalCluster  # noqa: PLC0415

    cluster = LocalCluster(data_dir)
    if (cluster.state() or {}).get("status") != "running":
        raise RuntimeError(f"no running cluster in {data_dir}: 'paycore cluster up' first")
    control = HaClusterControl(cluster)
    console.print(f"against the cluster in {data_dir}: {cluster.url} (nginx)")
    try:
        return await run_against(control, control.topology(), options, console)
    finally:
        await control.aclose()


def run_chaos(options: ChaosOptions, console: Console, cluster: Path | None = None) -> int:
    """The command's core: 0 when the run found nothing wrong, 1 otherwise."""
    if cluster is not None:
        report = asyncio.run(run_cluster(cluster, options, console))
    else:
        report = asyncio.run(run_local(options, console))
    return 0 if report.ok else 1
