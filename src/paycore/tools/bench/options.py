"""The ``paycore bench`` options: the parser, their resolved values and the command line
that reproduces a run."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from paycore.config import EMBEDDED_SHARDS

__all__ = [
    "UsageError",
    "add_arguments",
    "check_options",
    "check_report_dir",
    "command_line",
    "resolve_options",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``paycore bench`` options (also used by ``python -m paycore.tools.bench.transfers``)."""
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: the whole run takes < 30 s"
    )
    parser.add_argument(
        "--transfers",
        type=int,
        help="in-process transfers per scenario (SQLite 491,340, quick 65,512; "
        "PostgreSQL 163,780, quick 16,378)",
    )
    parser.add_argument("--batch-size", type=int, default=8189, help="transfers per batch (8189)")
    parser.add_argument(
        "--accounts",
        type=int,
        default=10_000,
        help="accounts (10,000); 1000000 measures rate and RSS with 10^6 accounts",
    )
    parser.add_argument("--inflight", type=int, default=2, help="batches in flight (2)")
    parser.add_argument("--clients", type=int, default=64, help="HTTP clients (64)")
    parser.add_argument("--duration", type=float, help="seconds per HTTP scenario (10; quick 2)")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator's HTTP client (raw asyncio, or httpx)",
    )
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous (FULL)")
    parser.add_argument(
        "--shards",
        type=int,
        default=EMBEDDED_SHARDS,
        help=f"embedded SQLite shards ({EMBEDDED_SHARDS}, the embedded default); with more "
        "than one, most transfers cross shards and the local/cross rows are added",
    )
    parser.add_argument(
        "--only",
        choices=("inproc", "http", "payments", "pgbench", "sweep"),
        help="run only the in-process, the HTTP, (SQLite:) the card payments, (PostgreSQL:) "
        "the pgbench or the accounts sweep part",
    )
    parser.add_argument("--no-audit", action="store_true", help="skip the audits")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--json", type=Path, help="write the report as JSON to this file")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="write DIR/report.md (the results as a markdown table), PNG charts "
        "(throughput, p50/p99, cost per transfer as the ledger grows; they need matplotlib, "
        "pip install 'paycore[bench]': without it the markdown only, saying so) and "
        "DIR/report.json; a report already in DIR is shown beside the new numbers "
        "(DIR is made if missing)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the accounts' and amounts' draws (1)"
    )
    pg = parser.add_argument_group(
        "PostgreSQL",
        "With --config or --local-postgres the bench runs over PostgreSQL shards, beside "
        "pgbench's tpcb-like script on the same server (see the module docstring).",
    )
    where = pg.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=Path,
        help="TOML topology of PostgreSQL shards ([[shards]] backend='postgres' dsn=...); "
        "their databases must be empty, unless --create-databases",
    )
    where.add_argument(
        "--local-postgres",
        type=int,
        metavar="N",
        help="start a throwaway local PostgreSQL server (initdb + pg_ctl) with N shard "
        "databases, run everything on it, stop and delete it",
    )
    pg.add_argument(
        "--create-databases",
        action="store_true",
        help="with --config: create the bench's own fresh databases on each shard's server "
        "(the DSN's user needs CREATEDB) and drop them afterwards (unless --keep)",
    )
    pg.add_argument(
        "--pg-fast",
        action="store_true",
        help="with --local-postgres: fsync, synchronous_commit and full_page_writes off "
        "(NOT durable; labelled in the report; pgbench runs under the same settings)",
    )
    pg.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="the HTTP part's server runs `paycore serve --workers N` (1); with N > 1 its "
        "locks_url is, unless the config sets one, the first shard's database (N workers "
        "refuse in-process locks)",
    )
    pg.add_argument("--no-pgbench", action="store_true", help="skip the pgbench row")
    pg.add_argument(
        "--pgbench-clients", type=int, default=16, help="pgbench clients (-c, 16; -j 2)"
    )
    pg.add_argument(
        "--pgbench-scale", type=int, help="pgbench -i scale factor (default: the clients, 16)"
    )
    pg.add_argument(
        "--pgbench-duration", type=float, help="seconds of the pgbench run (-T; 15, quick 5)"
    )
    pg.add_argument(
        "--pgbench-dsn",
        help="a database pgbench may fill (pgbench -i replaces its pgbench_* tables); "
        "default: a database the bench creates on the first shard's server",
    )
    pg.add_argument(
        "--accounts-sweep",
        metavar="N,N,...",
        help="cost per transfer as the accounts grow, one ledger per size (PostgreSQL; "
        "default 10000,100000,1000000; quick 1000,10000,100000; 'off' to skip)",
    )
    pg.add_argument(
        "--sweep-transfers",
        type=int,
        help="in-process transfers per sweep size (10 batches; quick 1)",
    )


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    postgres = args.config is not None or args.local_postgres is not None
    pg: dict[str, Any] = {"backend": "sqlite"}
    if postgres:
        clients = args.pgbench_clients
        pg = {
            "backend": "postgres",
            "config": str(args.config) if args.config is not None else None,
            "local_postgres": args.local_postgres,
            "create_databases": bool(args.create_databases),
            "pg_fast": bool(args.pg_fast),
            "pgbench": not args.no_pgbench,
            "pgbench_clients": clients,
            "pgbench_jobs": min(2, clients),
            "pgbench_scale": args.pgbench_scale or clients,
            "pgbench_duration": args.pgbench_duration or (5.0 if quick else 15.0),
            "pgbench_dsn": args.pgbench_dsn,
            "sweep": _parse_sweep(args.accounts_sweep, quick),
            "sweep_transfers": args.sweep_transfers or ((1 if quick else 10) * args.batch_size),
        }
    return pg | {
        "quick": quick,
        "transfers": args.transfers or _default_batches(quick, postgres) * args.batch_size,
        "batch_size": args.batch_size,
        "accounts": args.accounts,
        "inflight": args.inflight,
        "clients": args.clients,
        "duration": args.duration or (2.0 if quick else 10.0),
        "client": args.client,
        "synchronous": args.synchronous.upper(),
        "shards": args.shards,
        "only": args.only,
        "audit": not args.no_audit,
        "seed": args.seed,
        "workers": args.workers,
    }


def _default_batches(quick: bool, postgres: bool) -> int:
    """Batches per in-process scenario: fewer over PostgreSQL, whose cross-shard
    scenarios run at a few thousand a second (``--quick`` stays near a minute)."""
    if postgres:
        return 2 if quick else 20
    return 8 if quick else 60


def _parse_sweep(text: str | None, quick: bool) -> list[int]:
    if text is None:
        return [1_000, 10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    if text.strip().lower() in ("", "off", "none"):
        return []
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--accounts-sweep {text!r}: expected sizes like 10000,100000") from None
    if any(size < 2 for size in sizes):
        raise UsageError("--accounts-sweep: every size must be at least 2")
    return sizes


def command_line(o: dict[str, Any], args: argparse.Namespace) -> str:
    from paycore.redaction import redact_dsn  # noqa: PLC0415

    parts = ["paycore", "bench"]
    if o["quick"]:
        parts.append("--quick")
    if o["backend"] == "postgres":
        if o["local_postgres"] is not None:
            parts += ["--local-postgres", str(o["local_postgres"])]
            if o["pg_fast"]:
                parts.append("--pg-fast")
        else:
            parts += ["--config", o["config"]]
            if o["create_databases"]:
                parts.append("--create-databases")
    parts += [
        "--transfers", str(o["transfers"]), "--batch-size", str(o["batch_size"]),
        "--accounts", str(o["accounts"]), "--inflight", str(o["inflight"]),
        "--clients", str(o["clients"]), "--duration", f"{o['duration']:g}",
        "--client", o["client"],
    ]  # fmt: skip
    if o["backend"] == "postgres":
        if o["pgbench"]:
            parts += [
                "--pgbench-clients", str(o["pgbench_clients"]),
                "--pgbench-scale", str(o["pgbench_scale"]),
                "--pgbench-duration", f"{o['pgbench_duration']:g}",
            ]  # fmt: skip
            if o["pgbench_dsn"]:
                parts += ["--pgbench-dsn", redact_dsn(o["pgbench_dsn"])]
        else:
            parts.append("--no-pgbench")
        parts += ["--accounts-sweep", ",".join(map(str, o["sweep"])) or "off"]
        if o["sweep"]:
            parts += ["--sweep-transfers", str(o["sweep_transfers"])]
        parts += ["--seed", str(o["seed"])]
        if o["workers"] != 1:
            parts += ["--workers", str(o["workers"])]
    else:
        parts += [
            "--synchronous", o["synchronous"], "--seed", str(o["seed"]),
            "--shards", str(o["shards"]),
        ]  # fmt: skip
    if o["only"]:
        parts += ["--only", o["only"]]
    if not o["audit"]:
        parts.append("--no-audit")
    if args.json:
        parts += ["--json", str(args.json)]
    if args.report:
        parts += ["--report", str(args.report)]
    return shlex.join(parts)


class UsageError(Exception):
    """A bad combination of options or an unusable environment: exit status 2."""


def check_report_dir(path: Path) -> None:
    """``--report DIR`` can be written: a directory, or one that can be made (checked
    before the run, so that a long run does not fail at its end)."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--report {path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"--report {path}: the directory is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--report {path}: cannot be made, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--report {path}: cannot be made, {parent} is not writable")


def check_options(args: argparse.Namespace, o: dict[str, Any]) -> None:
    if args.report is not None:
        check_report_dir(args.report)
        if args.json is not None and args.json.absolute().parent == args.report.absolute():
            raise UsageError(
                f"--json {args.json}: not inside --report {args.report}, whose files the "
                "report rewrites (it writes the same JSON as report.json there)"
            )
    if o["backend"] == "sqlite":
        pg_only = [
            flag
            for flag, given in (
                ("--create-databases", args.create_databases),
                ("--pg-fast", args.pg_fast),
                ("--no-pgbench", args.no_pgbench),
                ("--pgbench-scale", args.pgbench_scale is not None),
                ("--pgbench-duration", args.pgbench_duration is not None),
                ("--pgbench-dsn", args.pgbench_dsn is not None),
                ("--accounts-sweep", args.accounts_sweep is not None),
                ("--sweep-transfers", args.sweep_transfers is not None),
                ("--workers", args.workers != 1),
            )
            if given
        ]
        if o["only"] in ("pgbench", "sweep"):
            pg_only.append(f"--only {o['only']}")
        if pg_only:
            raise UsageError(f"{', '.join(pg_only)}: only with --config or --local-postgres")
        return
    if o["pg_fast"] and o["local_postgres"] is None:
        raise UsageError(
            "--pg-fast needs --local-postgres: a configured server runs with its own "
            "settings (the bench reads and reports them)"
        )
    if o["create_databases"] and o["config"] is None:
        raise UsageError("--create-databases goes with --config (--local-postgres makes its own)")
    if o["local_postgres"] is not None and not 1 <= o["local_postgres"] <= 64:
        raise UsageError("--local-postgres N: N shard databases, 1 to 64")
    if o["workers"] < 1:
        raise UsageError("--workers N: N worker processes, at least 1")
    if o["pgbench_clients"] < 1 or o["pgbench_scale"] < 1:
        raise UsageError("--pgbench-clients and --pgbench-scale must be at least 1")
