"""The yardstick: pgbench's tpcb-like script in a database of its own on the first
shard's server, its TPS and latency percentiles read from its output and log."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from paycore.tools.bench.pg_target import PgTarget
from paycore.tools.bench.report import BenchReport, ScenarioResult, skip_row
from paycore.tools.loadgen import latency_summary

__all__ = ["PGBENCH_HINT", "pgbench_part", "pgbench_result"]


PGBENCH_HINT = (
    "pgbench not found on PATH nor in /usr/lib/postgresql/*/bin: install Debian's "
    "postgresql-client (PostgreSQL 16 and later) or postgresql-contrib (15 and earlier, "
    "where pgbench ships in the server package postgresql-NN)"
)


def _pgbench_conn(dsn: str) -> tuple[str, dict[str, str]]:
    """The conninfo to give pgbench and its environment (a password goes in PGPASSWORD,
    not on the command line)."""
    import psycopg  # noqa: PLC0415

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}), env


def pgbench_part(
    target: PgTarget,
    o: dict[str, Any],
    report: BenchReport,
    console: Console,
    status: Any,
    *,
    work_dir: Path,
) -> None:
    """pgbench -i, then its built-in tpcb-like script, in a database of its own on the
    first shard's server; its transactions per second is the yardstick."""
    import psycopg  # noqa: PLC0415

    from paycore.redaction import redact_dsn  # noqa: PLC0415
    from paycore.tools.local_postgres import find_tool  # noqa: PLC0415

    row = "pgbench-tpcb"
    exe = find_tool("pgbench", target.local.bindir if target.local is not None else None)
    if exe is None:
        skip_row(report, console, row, PGBENCH_HINT)
        return
    try:
        dsn, created = target.pgbench_database(o["pgbench_dsn"])
    except psycopg.Error as exc:
        skip_row(
            report,
            console,
            row,
            f"no database for pgbench ({str(exc).strip().splitlines()[0]}); pass "
            "--pgbench-dsn of a database pgbench may fill, or use a user that may CREATE DATABASE",
        )
        return
    try:
        conninfo, env = _pgbench_conn(dsn)
        scale, clients, jobs = o["pgbench_scale"], o["pgbench_clients"], o["pgbench_jobs"]
        seconds = max(1, round(o["pgbench_duration"]))
        status.update(f"pgbench -i -s {scale}...")
        t0 = time.perf_counter()
        init = subprocess.run(  # noqa: S603
            [str(exe), "-i", "-q", "-s", str(scale), conninfo],
            capture_output=True, text=True, env=env, check=False, timeout=600 + 60 * scale,
        )  # fmt: skip
        if init.returncode != 0:
            skip_row(report, console, row, f"pgbench -i failed: {init.stderr.strip()[-500:]}")
            return
        init_s = time.perf_counter() - t0
        log_dir = work_dir / "pgbench-log"
        log_dir.mkdir(exist_ok=True)
        args = [
            "-b", "tpcb-like", "-c", str(clients), "-j", str(jobs), "-T", str(seconds),
            "-l", f"--log-prefix={log_dir / 'pgbench'}",
        ]  # fmt: skip
        shown = [
            "pgbench", "-b", "tpcb-like", "-c", str(clients), "-j", str(jobs),
            "-T", str(seconds), redact_dsn(dsn),
        ]  # fmt: skip
        report.postgres["pgbench_command"] = (
            f"pgbench -i -s {scale} {redact_dsn(dsn)} && {shlex.join(shown)}"
        )
        report.postgres["pgbench_binary"] = str(exe)
        status.update(f"pgbench tpcb-like: {clients} clients for {seconds}s...")
        done = subprocess.run(  # noqa: S603
            [str(exe), *args, conninfo],
            capture_output=True, text=True, env=env, check=False, timeout=seconds + 300,
        )  # fmt: skip
        if done.returncode != 0:
            skip_row(report, console, row, f"pgbench failed: {done.stderr.strip()[-500:]}")
            return
        result = pgbench_result(row, done.stdout, log_dir, seconds)
        result.detail.update(scale=scale, clients=clients, jobs=jobs, init_seconds=round(init_s, 2))
        report.results.append(result)
        console.print(
            f"{row}: {result.transfers:,} transactions in {result.seconds:.2f}s = "
            f"[bold]{result.rate_per_s:,.0f} TPS[/] ({clients} clients, scale {scale}), "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
        )
    finally:
        if created is not None:
            with contextlib.suppress(psycopg.Error):
                target.drop(*created)
        target.checkpoint()


def pgbench_result(name: str, stdout: str, log_dir: Path, seconds: int) -> ScenarioResult:
    def number(pattern: str) -> float | None:
        found = re.search(pattern, stdout)
        return float(found.group(1)) if found else None

    processed = int(number(r"number of transactions actually processed: (\d+)") or 0)
    tps = (
        number(r"tps = ([\d.]+) \((?:without initial connection time|excluding connections)")
        or number(r"tps = ([\d.]+)")
        or 0.0
    )
    failed = int(number(r"number of failed transactions: (\d+)") or 0)
    average = number(r"latency average = ([\d.]+) ms")
    latencies: list[float] = []
    for path in sorted(log_dir.glob("pgbench*")):
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]) / 1_000_000)  # microseconds -> seconds
    summary = latency_summary(latencies)
    return ScenarioResult(
        name=name,
        transfers=processed,
        seconds=processed / tps if tps else float(seconds),
        rate_per_s=tps,
        latency_of="transaction",
        errors=failed,
        detail={"latency_average_ms": average, "logged_transactions": len(latencies)},
        **summary,
    )
