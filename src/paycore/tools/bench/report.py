"""What ``paycore bench`` measured (``BenchReport``), the targets it holds itself to, and
how both are printed."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

__all__ = [
    "TARGET_CROSS_RATIO",
    "TARGET_HOT_RATIO",
    "TARGET_HTTP_P99_MS",
    "TARGET_HTTP_PER_S",
    "TARGET_INPROC_PER_S",
    "TARGET_PG_BATCH_VS_PGBENCH",
    "TARGET_PG_HTTP_VS_PGBENCH",
    "TARGET_RSS_MB",
    "TARGET_SWEEP_COST_GROWTH",
    "BenchReport",
    "ScenarioResult",
    "TargetCheck",
    "durability_label",
    "finish_report",
    "is_durable",
    "machine_environment",
    "print_inproc",
    "skip_row",
    "trend",
]


# What we hold ourselves to (printed beside the measurements).
TARGET_INPROC_PER_S = 50_000


TARGET_HTTP_PER_S = 2_000


TARGET_HTTP_P99_MS = 50.0


TARGET_HOT_RATIO = 0.5


TARGET_RSS_MB = 200.0
# Card payments through the embedded acquirers, paycore serve on the embedded default.
TARGET_PAYMENTS_PER_S = 1_000


# Over PostgreSQL, against pgbench's tpcb-like script on the same server and settings.
TARGET_PG_BATCH_VS_PGBENCH = 10.0  # in-process batches: at least 10x pgbench's TPS


TARGET_PG_HTTP_VS_PGBENCH = 1.0  # HTTP single transfers: at least pgbench's TPS


TARGET_CROSS_RATIO = 0.5  # cross-shard (counted when settled) vs single-shard rate


TARGET_SWEEP_COST_GROWTH = 1.5  # us/transfer at the most accounts vs at the fewest


class ScenarioResult(msgspec.Struct):
    """One measured scenario; latencies in milliseconds."""

    name: str
    transfers: int
    seconds: float
    rate_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    latency_of: str  # "batch", "request" or "transaction" (pgbench)
    errors: int = 0
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class TargetCheck(msgspec.Struct):
    """A goal beside its measurement; ``goal_ratio`` >= 1 when met (how far past it)."""

    name: str
    target: str
    measured: str
    met: bool
    what: str = ""
    goal_ratio: float | None = None


class BenchReport(msgspec.Struct):
    command: str
    environment: dict[str, Any]
    options: dict[str, Any]
    results: list[ScenarioResult] = msgspec.field(default_factory=list)
    server_rss_mb: dict[str, float] = msgspec.field(default_factory=dict)
    inproc_rss_mb: dict[str, float] = msgspec.field(default_factory=dict)
    targets: list[TargetCheck] = msgspec.field(default_factory=list)
    audits: dict[str, bool] = msgspec.field(default_factory=dict)
    ok: bool = True
    backend: str = "sqlite"
    # PostgreSQL runs: the server(s) and the settings measured under, pgbench's command.
    postgres: dict[str, Any] = msgspec.field(default_factory=dict)
    skipped: dict[str, str] = msgspec.field(default_factory=dict)  # row -> why
    finished: str = ""  # when the run ended, ISO 8601 UTC (reports written before: "")


def fresh_dir(data_dir: Path | None, console: Console) -> Path | None:
    """Where the bench works: ``data_dir`` (made if missing) or a new temporary folder;
    None, said on ``console``, when ``data_dir`` is not empty."""
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        console.print(f"[red]{data_dir} is not empty; the bench needs a fresh directory[/]")
        return None
    work_dir = data_dir or Path(tempfile.mkdtemp(prefix="paycore-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def trend(result: ScenarioResult) -> str:
    first = result.detail.get("rate_first_10pct")
    last = result.detail.get("rate_last_10pct")
    if first is None or last is None:
        return ""
    return f" (first 10% of batches {first:,.0f}/s, last 10% {last:,.0f}/s)"


def skip_row(report: BenchReport, console: Console, row: str, why: str) -> None:
    report.skipped[row] = why
    console.print(f"[yellow]skipped {row}:[/] {why}")


def durability_label(settings: dict[str, str]) -> str:
    keys = ("fsync", "synchronous_commit", "full_page_writes")
    return " ".join(f"{k}={settings.get(k, '?')}" for k in keys)


def is_durable(settings: dict[str, str]) -> bool:
    return settings.get("fsync") == "on" and settings.get("synchronous_commit") != "off"


def print_inproc(console: Console, result: ScenarioResult) -> None:
    extra = ""
    if result.detail.get("mode") == "cross" or result.detail.get("cross_shard_settled"):
        extra = (
            f"; {result.detail['cross_shard_settled']:,} cross-shard settled, the relay's "
            f"tail after the last batch {result.detail['settle_tail_s']:.2f}s"
        )
    console.print(
        f"{result.name}: {result.transfers:,} transfers in {result.seconds:.2f}s = "
        f"[bold]{result.rate_per_s:,.0f}/s[/], batch p50 {result.p50_ms:.0f} ms, "
        f"p99 {result.p99_ms:.0f} ms" + trend(result) + extra
    )


def finish_report(report: BenchReport, args: argparse.Namespace, console: Console) -> int:
    report.targets = _targets(report)
    report.finished = datetime.now(UTC).isoformat(timespec="seconds")
    report.environment["load_average_end"] = _load_average()
    report.ok = not any(r.errors for r in report.results) and all(report.audits.values())
    _print(report, console)
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"wrote {args.json}")
    if not report.ok:
        return 1
    if args.strict and not all(t.met for t in report.targets):
        return 1
    return 0


def machine_environment() -> dict[str, Any]:
    """The machine and, as the run starts, its load (1, 5 and 15 minute load averages;
    ``finish_report`` adds them at the end): a run on a busy machine says so."""
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "load_average_start": _load_average(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not every platform has one
        return []


def _at_least(
    name: str, what: str, *, goal: float, measured: float, shown: str, wanted: str
) -> TargetCheck:
    ratio = measured / goal if goal else 0.0
    return TargetCheck(name, wanted, shown, measured >= goal, what=what, goal_ratio=ratio)


def _below(
    name: str, what: str, *, goal: float, measured: float, shown: str, wanted: str
) -> TargetCheck:
    ratio = goal / measured if measured > 0 else float("inf")
    return TargetCheck(name, wanted, shown, measured < goal, what=what, goal_ratio=ratio)


def _rate(name: str, what: str, goal: int, row: ScenarioResult) -> TargetCheck:
    """``row`` ran at ``goal`` per second or more."""
    return _at_least(
        name,
        what,
        goal=goal,
        measured=row.rate_per_s,
        shown=f"{row.rate_per_s:,.0f}/s",
        wanted=f">= {goal:,}/s",
    )


def _hot_share(name: str, what: str, ratio: float) -> TargetCheck:
    """A hot rate at ``ratio`` of the uniform one, ``TARGET_HOT_RATIO`` or more."""
    return _at_least(
        name,
        what,
        goal=TARGET_HOT_RATIO,
        measured=ratio,
        shown=f"{ratio:.0%}",
        wanted=f">= {TARGET_HOT_RATIO:.0%}",
    )


def _targets(report: BenchReport) -> list[TargetCheck]:
    by_name = {r.name: r for r in report.results}
    checks: list[TargetCheck] = []
    batch = f"batches of {report.options['batch_size']:,}"
    uni, hot = by_name.get("inproc-uniform"), by_name.get("inproc-hot")
    if uni is not None:
        checks.append(
            _rate(
                "in-process rate", f"SQLite, in-process {batch}, uniform", TARGET_INPROC_PER_S, uni
            )
        )
    if uni is not None and hot is not None:
        ratio = hot.rate_per_s / uni.rate_per_s
        checks.append(
            _hot_share(
                "in-process hot / uniform",
                "SQLite, every transfer credits one merchant vs uniform",
                ratio,
            )
        )
    huni, hhot = by_name.get("http-uniform"), by_name.get("http-hot")
    clients = f"{report.options['clients']} clients"
    if huni is not None:
        checks.append(
            _rate(
                "HTTP rate",
                f"SQLite, single POST /v1/transfers, {clients}",
                TARGET_HTTP_PER_S,
                huni,
            )
        )
        checks.append(
            _below(
                "HTTP p99",
                f"SQLite, request latency, {clients}",
                goal=TARGET_HTTP_P99_MS,
                measured=huni.p99_ms,
                shown=f"{huni.p99_ms:.1f} ms",
                wanted=f"< {TARGET_HTTP_P99_MS:g} ms",
            )
        )
    if huni is not None and hhot is not None:
        ratio = hhot.rate_per_s / huni.rate_per_s if huni.rate_per_s else 0.0
        checks.append(
            _hot_share(
                "HTTP hot / uniform", "SQLite, HTTP, one merchant credited vs uniform", ratio
            )
        )
    if (pay := by_name.get("http-payments")) is not None:
        checks.append(
            _rate(
                "card payments",
                f"embedded default, POST /v1/payments (card, automatic capture), {clients}",
                TARGET_PAYMENTS_PER_S,
                pay,
            )
        )
    checks += _pg_targets(report, by_name)
    if report.server_rss_mb:
        peak = report.server_rss_mb["peak_mb"]
        checks.append(
            _below(
                "server peak RSS",
                "paycore serve VmHWM during the HTTP scenarios",
                goal=TARGET_RSS_MB,
                measured=peak,
                shown=f"{peak:.0f} MB",
                wanted=f"< {TARGET_RSS_MB:g} MB",
            )
        )
    return checks


def _pg_targets(report: BenchReport, by_name: dict[str, ScenarioResult]) -> list[TargetCheck]:
    checks: list[TargetCheck] = []
    pgb = by_name.get("pgbench-tpcb")
    batch, http = by_name.get("pg-inproc-uniform"), by_name.get("pg-http-uniform")
    if pgb is not None and pgb.rate_per_s > 0:
        tpcb = f"pgbench tpcb-like {pgb.detail.get('clients', '?')} clients"
        for row, goal, what in (
            (
                batch,
                TARGET_PG_BATCH_VS_PGBENCH,
                f"PostgreSQL, in-process batches of {report.options['batch_size']:,} "
                f"(uniform, counted when settled) vs {tpcb}, same server",
            ),
            (
                http,
                TARGET_PG_HTTP_VS_PGBENCH,
                f"PostgreSQL, HTTP single transfers, {report.options['clients']} clients "
                f"vs {tpcb}, same server",
            ),
        ):
            if row is None:
                continue
            ratio = row.rate_per_s / pgb.rate_per_s
            kind = "batch" if row is batch else "HTTP"
            checks.append(
                TargetCheck(
                    f"PG {kind} / pgbench TPS",
                    f">= {goal:g}x",
                    f"{ratio:.1f}x ({row.rate_per_s:,.0f}/s vs {pgb.rate_per_s:,.0f} TPS)",
                    ratio >= goal,
                    what=what,
                    goal_ratio=ratio / goal,
                )
            )
    local, cross = by_name.get("pg-inproc-local"), by_name.get("pg-inproc-cross")
    if local is not None and cross is not None and local.rate_per_s > 0:
        ratio = cross.rate_per_s / local.rate_per_s
        checks.append(
            TargetCheck(
                "PG cross-shard / single-shard",
                f">= {TARGET_CROSS_RATIO:g}x",
                f"{ratio:.2f}x ({cross.rate_per_s:,.0f}/s vs {local.rate_per_s:,.0f}/s)",
                ratio >= TARGET_CROSS_RATIO,
                what="PostgreSQL in-process batches: every transfer across two shards, "
                "counted when settled by the relay, vs every transfer within one shard",
                goal_ratio=ratio / TARGET_CROSS_RATIO,
            )
        )
    sweep = sorted(
        (r for r in report.results if r.name.startswith("pg-sweep-") and r.rate_per_s > 0),
        key=lambda r: int(r.detail["accounts"]),
    )
    if len(sweep) >= 2:
        first, last = sweep[0], sweep[-1]
        growth = first.rate_per_s / last.rate_per_s  # cost(last) / cost(first)
        checks.append(
            TargetCheck(
                "PG cost per transfer vs accounts",
                f"<= {TARGET_SWEEP_COST_GROWTH:g}x",
                f"{growth:.2f}x ({1e6 / first.rate_per_s:.1f} -> {1e6 / last.rate_per_s:.1f} us)",
                growth <= TARGET_SWEEP_COST_GROWTH,
                what=f"us/transfer at {int(last.detail['accounts']):,} accounts vs at "
                f"{int(first.detail['accounts']):,} (in-process batches, "
                f"{last.detail.get('mode')} transfers, a fresh ledger per size: "
                f"{'yes' if last.detail.get('fresh_ledger') else 'no'})",
                goal_ratio=TARGET_SWEEP_COST_GROWTH / growth,
            )
        )
    return checks


def _print(report: BenchReport, console: Console) -> None:
    table = Table(title="paycore bench", title_justify="left")
    for col in ("scenario", "transfers", "seconds", "transfers/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in report.results:
        table.add_row(
            f"{r.name} ({r.latency_of} latency)",
            f"{r.transfers:,}",
            f"{r.seconds:.2f}",
            f"{r.rate_per_s:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            str(r.errors) if not r.errors else f"[red]{r.errors}[/]",
        )
    console.print(table)
    sweep = [r for r in report.results if r.name.startswith("pg-sweep-")]
    if sweep:
        base = sweep[0].rate_per_s
        costs = Table(title="cost per transfer as the accounts grow", title_justify="left")
        for col in ("accounts", "transfers/s", "us/transfer", "vs fewest", "fresh ledger"):
            costs.add_column(col, justify="right")
        for r in sweep:
            costs.add_row(
                f"{int(r.detail['accounts']):,}",
                f"{r.rate_per_s:,.0f}",
                f"{1e6 / r.rate_per_s:.1f}" if r.rate_per_s else "-",
                f"{base / r.rate_per_s:.2f}x" if r.rate_per_s else "-",
                "yes" if r.detail.get("fresh_ledger") else "no",
            )
        console.print(costs)
    if report.inproc_rss_mb:
        rss = report.inproc_rss_mb
        console.print(
            f"bench process (in-process store, {report.options['accounts']:,} accounts): "
            f"RSS {rss['rss_mb']:.0f} MB, peak {rss['peak_mb']:.0f} MB"
        )
    if report.server_rss_mb:
        console.print(f"paycore serve peak RSS (VmHWM): {report.server_rss_mb['peak_mb']:.0f} MB")
    targets = Table(title="targets", title_justify="left")
    for col in ("target", "wanted", "measured", "x goal", ""):
        targets.add_column(col)
    for t in report.targets:
        targets.add_row(
            t.name,
            t.target,
            t.measured,
            "-" if t.goal_ratio is None else f"{t.goal_ratio:.2f}",
            "[green]met[/]" if t.met else "[red]missed[/]",
        )
    console.print(targets)
    for t in report.targets:
        console.print(f"  {t.name}: {t.what}")
    for row, why in report.skipped.items():
        console.print(f"[yellow]skipped {row}[/]: {why}")
    for name, ok in report.audits.items():
        console.print(f"audit {name}: " + ("[green]clean[/]" if ok else "[red]VIOLATIONS[/]"))
    env = report.environment
    if report.backend == "postgres":
        pg = report.postgres
        settings = pg.get("settings", {})
        durable = "durable commits" if pg.get("durable") else "[bold red]NOT durable[/]"
        flat = settings if "fsync" in settings else next(iter(settings.values()), {})
        console.print(
            f"python {env['python']}, {env['cpus']} CPUs, PostgreSQL {env.get('postgres', '?')} "
            f"({pg.get('source')}, {pg.get('shards')} shard(s)): "
            f"{durability_label(flat)}: {durable}"
            + (" [bold red](--pg-fast)[/]" if pg.get("pg_fast") else "")
            + "; pgbench and paycore ran on the same server under the same settings"
        )
        if "pgbench_command" in pg:
            console.print(f"pgbench: {pg['pgbench_command']}")
    else:
        console.print(
            f"python {env['python']}, sqlite {env['sqlite']}, {env['cpus']} CPUs, "
            f"synchronous={report.options['synchronous']}"
        )
    console.print(f"reproduce: [cyan]{report.command}[/]")
