"""``paycore cluster up|down|status|drill|tools``: the command line over ``LocalCluster``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from paycore.redaction import redact_url
from paycore.tools.local_cluster.control import (
    ClusterStartError,
    LocalCluster,
    process_alive,
    supervisor_alive,
)
from paycore.tools.local_cluster.spec import load_cluster_spec
from paycore.tools.local_cluster.toolbox import Toolbox, ToolMissingError, install_tools

__all__ = ["add_arguments", "cluster_status"]

_BREAKER_LINE = re.compile(
    r'^paycore_processor_breaker_state\{processor="([^"]+)",state="([^"]+)"\} 1\.0$', re.M
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML file with a [cluster] table")
        p.add_argument("--data-dir", help="override [cluster] data_dir (paycore-cluster)")

    up = sub.add_parser(
        "up",
        help="start the cluster (returns once it serves through nginx)",
        description="Start the cluster of the [cluster] table in its data directory under a "
        "supervisor that outlives this command and restarts what dies; return once it "
        "serves through nginx. Exits 0 running, 1 when it did not come up (the logs are "
        "named), 2 when a program it needs is missing.",
    )
    common(up)
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (300)")
    down = sub.add_parser(
        "down",
        help="stop every process of the cluster",
        description="Stop every process of the cluster in this data directory (the "
        "supervisor does it in order; what a killed supervisor left is stopped too). Exits "
        "0 when it stopped a cluster (or, with --purge, deleted its data), 1 when none was "
        "running, 2 when the directory holds no cluster (then nothing is deleted).",
    )
    common(down)
    down.add_argument("--purge", action="store_true", help="also delete the data directory")
    status = sub.add_parser(
        "status",
        help="processes, primaries, replication lag, breakers",
        description="Show the cluster's processes, each shard's primary and replication lag, "
        "and the API nodes' breakers. Exits 0 when running, 1 when not, 2 when the "
        "directory holds no cluster.",
    )
    common(status)
    status.add_argument("--json", action="store_true", help="print JSON only")
    add_shard = sub.add_parser(
        "add-shard",
        help="start one more shard and move it its share of the slots",
        description="Start a new replicated shard (a Patroni group on free ports) in the "
        "running cluster, migrate it, restart the API nodes one at a time so that they "
        "know it (nginx sends the requests to the others meanwhile), then move it an even "
        "share of the slots while the cluster serves (as 'paycore shards add'; "
        "docs/resharding.md). Exits 0 when done, 1 when a step failed.",
    )
    common(add_shard)
    add_shard.add_argument("--wait", type=float, default=30.0, help="see 'shards move' (30)")
    drill = sub.add_parser(
        "drill",
        help="failure drills under write load: kill a primary, an API node, Redis",
        description="Break one part of the running cluster under a write load of retried "
        "transfers, let it recover, and report per drill: transfers acknowledged, retried "
        "and refused, the longest write gap per shard, throughput, and an audit; every "
        "acknowledged transfer must be in the ledger. Exits 1 when a drill fails.",
    )
    common(drill)
    drill.add_argument(
        "--kind",
        action="append",
        choices=("primary", "primary-machine", "api-node", "redis"),
        help="which drill (repeatable): primary (SIGKILL a shard's primary PostgreSQL), "
        "primary-machine (its Patroni too, as if the machine died), api-node, redis; "
        "default: primary, api-node and redis",
    )
    drill.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    drill.add_argument("--before", type=float, default=5.0, help="load seconds before the fault")
    drill.add_argument("--after", type=float, default=10.0, help="load seconds after recovery")
    bench = sub.add_parser(
        "bench",
        help="transfers/s through nginx and through one API node",
        description="Measure single transfers/s and latency (p50, p99) of the running "
        "cluster, through nginx and then sent to one API node.",
    )
    common(bench)
    bench.add_argument("--clients", type=int, default=64, help="concurrent clients (64)")
    bench.add_argument("--seconds", type=float, default=10.0, help="seconds per target (10)")
    bench.add_argument("--accounts", type=int, default=2000, help="accounts (2000)")
    tools = sub.add_parser(
        "tools",
        help="check, or fetch, the programs a cluster runs",
        description="Say where each program a cluster runs (etcd, nginx, redis-server, "
        "patroni) is found, or what is missing; 'install' first fetches the missing ones "
        "into a tools directory. Exits 1 when one is still missing.",
    )
    tools.add_argument(
        "action",
        choices=("check", "install"),
        help="check: find them; install: fetch the missing ones, then check",
    )
    tools.add_argument("--tools-dir", type=Path, help="where to unpack (PAYCORE_TOOLS_DIR)")


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    if args.cluster_command == "tools":
        return _tools(args, console)
    try:
        spec = load_cluster_spec(args.config, data_dir=args.data_dir)
    except (OSError, ValueError) as error:
        Console(stderr=True).print(f"[red]{error}[/]")
        return 2
    cluster = LocalCluster(Path(spec.data_dir))
    if args.cluster_command == "up":
        try:
            cluster.up(spec, timeout=args.timeout, progress=lambda m: console.print(f"  {m}"))
        except ToolMissingError as error:
            Console(stderr=True).print(f"[red]cannot start the cluster:[/]\n{error}")
            return 2
        except ClusterStartError as error:
            Console(stderr=True).print(f"[red]{error}[/]")
            return 1
        console.print(f"[green]cluster running[/]: {cluster.url} (nginx)")
        _print_status(cluster_status(cluster), console)
        return 0
    if args.cluster_command == "down":
        return _down(cluster, args, console)
    if args.cluster_command == "status":
        if not cluster.layout.exists():
            Console(stderr=True).print(f"[red]no cluster in {cluster.layout.root}[/]")
            return 2
        report = cluster_status(cluster)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_status(report, console)
        return 0 if report["status"] == "running" else 1
    if args.cluster_command == "add-shard":
        return _add_shard(cluster, args, console)
    if args.cluster_command == "drill":
        return _drill(cluster, args, console)
    if args.cluster_command == "bench":
        return _bench(cluster, args, console)
    raise AssertionError(args.cluster_command)


def _add_shard(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> int:
    """Start the shard, then balance the slots onto it (around pending holds)."""
    import asyncio  # noqa: PLC0415

    from paycore.config import load_settings  # noqa: PLC0415
    from paycore.ops.resharding import balance  # noqa: PLC0415

    try:
        index = cluster.add_shard(progress=lambda m: console.print(f"  {m}"))
        name = f"s{index}"
        console.print(f"shard {name} started; the API nodes know it")
        settings = load_settings(cluster.layout.node_config, env={})
        held = asyncio.run(balance(settings, name, wait_seconds=args.wait, say=console.print))
    except (ClusterStartError, ValueError) as error:
        Console(stderr=True).print(f"[red]{error}[/]")
        return 1
    console.print(f"[green]{name} holds {held:,} slots[/]")
    return 0


def _down(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> int:
    """0: a cluster was stopped (or, with --purge, its data deleted); 1: none was
    running, nothing done; 2: the directory holds no cluster (nothing deleted either)."""
    root = cluster.layout.root
    if not cluster.holds_cluster():
        Console(stderr=True).print(f"[red]no cluster in {root}[/]: nothing stopped or deleted")
        return 2
    stopped = cluster.down(purge=args.purge)
    deleted = " and its data deleted" if args.purge else ""
    if stopped:
        console.print(f"cluster stopped{deleted}")
        return 0
    if args.purge:
        console.print(f"no cluster was running in {root}; its data deleted")
        return 0
    Console(stderr=True).print(f"no cluster running in {root}: nothing to stop")
    return 1


def _tools(args: argparse.Namespace, console: Console) -> int:
    box = Toolbox(args.tools_dir)
    if args.action == "install":
        install_tools(args.tools_dir, say=lambda m: console.print(f"  {m}"))
    problems = box.missing()
    for name in ("etcd", "nginx", "redis-server", "patroni"):
        with contextlib.suppress(ToolMissingError):
            console.print(f"{name}: {box.find(name).path}")
    for problem in problems:
        console.print(f"[red]{problem}[/]")
    return 1 if problems else 0


def cluster_status(cluster: LocalCluster) -> dict[str, Any]:
    """Everything ``status`` shows, as data."""
    state = cluster.state() or {}
    spec, ports = cluster.spec, cluster.ports
    supervisor_running = supervisor_alive(state)
    processes = []
    for process in state.get("processes", []):
        processes.append({**process, "alive": process_alive(process.get("pid"))})
    shards = [cluster.shard(k).as_dict() for k in range(spec.shards)]
    nodes = []
    with httpx.Client(timeout=2.0) as client:
        for index, url in enumerate(cluster.api_urls):
            node: dict[str, Any] = {"name": f"api-{index}", "url": url}
            try:
                ready = client.get(f"{url}/readyz")
                node["ready"] = ready.status_code == 200
                metrics = client.get(f"{url}/metrics").text
                node["breakers"] = dict(_BREAKER_LINE.findall(metrics))
            except httpx.HTTPError as error:
                node["ready"] = False
                node["error"] = type(error).__name__
            nodes.append(node)
    status = state.get("status", "unknown") if supervisor_running else "stopped"
    return {
        "status": status,
        "reason": state.get("reason"),
        "data_dir": str(cluster.layout.root),
        "url": cluster.url,
        "locks_url": redact_url(f"redis://127.0.0.1:{ports.redis}/0"),
        "supervisor_pid": state.get("supervisor_pid") if supervisor_running else None,
        "processes": processes,
        "shards": shards,
        "api_nodes": nodes,
    }


def _print_status(report: dict[str, Any], console: Console) -> None:
    console.print(
        f"cluster [bold]{report['status']}[/] in {report['data_dir']}; front door {report['url']}"
    )
    processes = Table("process", "kind", "pid", "alive", "port", "restarts", title="processes")
    for p in report["processes"]:
        alive = (
            "[green]yes[/]" if p["alive"] else ("[yellow]held[/]" if p["held"] else "[red]no[/]")
        )
        processes.add_row(
            p["name"], p["kind"], str(p["pid"]), alive, str(p["port"]), str(p["restarts"])
        )
    console.print(processes)
    shards = Table(
        "shard",
        "member",
        "role",
        "state",
        "port",
        "lag (bytes)",
        "timeline",
        title="PostgreSQL (Patroni)",
    )
    for shard in report["shards"]:
        if not shard["members"]:
            shards.add_row(f"s{shard['shard']}", "-", "[red]no member answers[/]", "", "", "", "")
        for m in shard["members"]:
            role = f"[bold]{m['role']}[/]" if m["role"] == "leader" else m["role"]
            shards.add_row(
                f"s{shard['shard']}",
                m["name"],
                role,
                m["state"],
                str(m["port"]),
                "-" if m["lag_bytes"] is None else str(m["lag_bytes"]),
                str(m["timeline"]),
            )
    console.print(shards)
    nodes = Table("node", "url", "ready", "breakers", title="API nodes")
    for node in report["api_nodes"]:
        breakers = ", ".join(f"{k}: {v}" for k, v in sorted(node.get("breakers", {}).items()))
        ready = "[green]yes[/]" if node["ready"] else "[red]no[/]"
        nodes.add_row(node["name"], node["url"], ready, breakers or node.get("error", ""))
    console.print(nodes)


def _drill(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> int:
    from paycore.tools.local_cluster.drill import run_drill  # noqa: PLC0415

    state = cluster.state() or {}
    if state.get("status") != "running":
        Console(stderr=True).print("[red]the cluster is not running: 'paycore cluster up'[/]")
        return 2
    reports = []
    for kind in args.kind or ["primary", "api-node", "redis"]:
        console.print(f"drill [bold]{kind}[/] ...")
        report = asyncio.run(
            run_drill(cluster, kind, before=args.before, after=args.after, clients=args.clients)
        )
        reports.append(report)
    table = Table(
        "drill",
        "acked",
        "retried",
        "refused",
        "lost",
        "audit",
        "longest write gap per shard",
        "transfers/s",
        title="drills",
    )
    for r in reports:
        gaps = ", ".join(f"{k}: {v:.2f} s" for k, v in sorted(r.write_gap_seconds.items()))
        table.add_row(
            r.name,
            str(r.acked),
            str(r.retried),
            str(len(r.refused) + len(r.given_up)),
            str(len(r.missing)),
            "clean" if r.audit_ok else "[red]VIOLATIONS[/]",
            gaps,
            f"{r.throughput:.0f}",
        )
    console.print(table)
    for r in reports:
        for note in r.notes:
            console.print(f"  {r.name}: {note}")
    console.print(
        "reproduce: paycore cluster drill "
        + " ".join(f"--kind {k}" for k in (args.kind or []))
        + f" --clients {args.clients}"
    )
    return 0 if all(r.ok for r in reports) else 1


def _bench(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> int:
    import os  # noqa: PLC0415

    from paycore.tools.local_cluster.throughput import run_bench  # noqa: PLC0415

    if (cluster.state() or {}).get("status") != "running":
        Console(stderr=True).print("[red]the cluster is not running: 'paycore cluster up'[/]")
        return 2
    rows = run_bench(cluster, clients=args.clients, seconds=args.seconds, accounts=args.accounts)
    table = Table("target", "transfers/s", "p50 ms", "p99 ms", "answers", title="throughput")
    for row in rows:
        table.add_row(
            row["target"],
            f"{row['rate_per_s']:.0f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            json.dumps(row["statuses"]),
        )
    console.print(table)
    console.print(
        f"{args.clients} clients, {args.seconds:g} s per target, {args.accounts} accounts, "
        f"load average {os.getloadavg()[0]:.1f}; reproduce: paycore cluster bench "
        f"--data-dir {cluster.layout.root} --clients {args.clients} --seconds {args.seconds:g}"
    )
    return 0
