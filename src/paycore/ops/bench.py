"""``paycore bench``: transfers per second and latency, in-process and over HTTP.

Scenarios (each on the same fresh data directory, each with its own transfer ids):

* ``inproc-uniform``: batches of 8,189 transfers between random accounts of 10,000
  (TigerBeetle's default benchmark shape) through ``store.execute(CreateTransfers)``,
  ``--inflight`` batches in flight; latency is per batch.
* ``inproc-hot``: the same, every transfer crediting one merchant account.
* ``http-uniform`` / ``http-hot``: single ``POST /v1/transfers`` from ``--clients``
  keep-alive connections, driven by ``paycore.ops.loadgen`` in its own process against
  one ``paycore serve`` subprocess (uvicorn, uvloop, httptools); latency is per request.
  The server's peak RSS (``VmHWM`` from ``/proc``) is sampled meanwhile.

Building the requests is part of the measured time in-process (one batch is built
while the previous ones run); the HTTP load generator's own cost is excluded by
running it in another process. After each part the ledger is audited, so a fast but
wrong store does not pass.

Over PostgreSQL (``--config FILE`` of ``backend = "postgres"`` shards, or
``--local-postgres N``), side by side on the same server and settings:

* ``pgbench-tpcb``: ``pgbench -i -s 16`` then ``pgbench -b tpcb-like -c 16 -j 2 -T 15``
  in a database of its own on the first shard's server (created and dropped by the
  bench, or ``--pgbench-dsn``); its TPS is the yardstick. Latency percentiles come from
  its per-transaction log (``-l``). No pgbench binary: the row is skipped, saying which
  Debian package provides it.
* ``pg-inproc-uniform`` / ``-hot``: the in-process scenarios above over PostgreSQL
  (goal: uniform >= 10x pgbench's TPS). A cross-shard transfer is counted once settled:
  the relay runs meanwhile and is drained before the clock stops.
* ``pg-inproc-local`` / ``-cross`` (2 or more shards): every transfer within one shard,
  then every transfer across two shards, counted only when the relay settled it
  (goal: cross >= 0.5x local).
* ``pg-http-uniform`` / ``-hot``: the HTTP scenarios against ``paycore serve --config``
  (goal: uniform >= pgbench's TPS).
* ``pg-sweep-N`` (``--accounts-sweep 10000,100000,1000000``): in-process batches (within
  a shard when there are several) on a ledger of N accounts, for the cost per transfer
  as the accounts grow (goal: at most 1.5x from the fewest to the most).

Databases must be fresh: a configured database holding any table is refused (exit 2).
``--create-databases`` (the DSN's user needs CREATEDB) and ``--local-postgres`` instead
give every part fresh databases of its own (``paycore_bench_<run>_<part>_<shard>``),
dropped at the end unless ``--keep``. The server's durability settings are read and
printed with the results; ``--local-postgres`` runs durable (``fsync=on``) unless
``--pg-fast``, which is labelled NOT durable wherever the numbers are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console
from rich.table import Table

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings, ShardConfig, load_settings, shard_specs
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.ops.audit import ClusterAuditReport, audit_cluster
from paycore.ops.loadgen import LoadResult, RawHttpClient, latency_summary
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.workers.relay import RelayWorker

if TYPE_CHECKING:  # psycopg and the server helpers load only for a PostgreSQL run
    from paycore.ops.pg_local import LocalPostgres

__all__ = ["BenchReport", "ScenarioResult", "add_arguments", "read_rss", "run_bench"]

HOT_ACCOUNT = "merchant"
CURRENCY = "USD"

# What we hold ourselves to (printed beside the measurements).
TARGET_INPROC_PER_S = 50_000
TARGET_HTTP_PER_S = 2_000
TARGET_HTTP_P99_MS = 50.0
TARGET_HOT_RATIO = 0.5
TARGET_RSS_MB = 200.0
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
    results: list[ScenarioResult]
    server_rss_mb: dict[str, float]
    inproc_rss_mb: dict[str, float]
    targets: list[TargetCheck]
    audits: dict[str, bool]
    ok: bool
    backend: str = "sqlite"
    # PostgreSQL runs: the server(s) and the settings measured under, pgbench's command.
    postgres: dict[str, Any] = msgspec.field(default_factory=dict)
    skipped: dict[str, str] = msgspec.field(default_factory=dict)  # row -> why


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``paycore bench`` options (also used by ``python -m paycore.ops.bench``)."""
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
        default=4,
        help="embedded SQLite shards (4); with more than one, most transfers cross shards",
    )
    parser.add_argument(
        "--only",
        choices=("inproc", "http", "pgbench", "sweep"),
        help="run only the in-process, the HTTP, (PostgreSQL:) the pgbench or the accounts "
        "sweep part",
    )
    parser.add_argument("--no-audit", action="store_true", help="skip the audits")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--json", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--seed", type=int, default=1)
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


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
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
        raise _UsageError(f"--accounts-sweep {text!r}: expected sizes like 10000,100000") from None
    if any(size < 2 for size in sizes):
        raise _UsageError("--accounts-sweep: every size must be at least 2")
    return sizes


def _command(o: dict[str, Any], args: argparse.Namespace) -> str:
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
    return shlex.join(parts)


class _UsageError(Exception):
    """A bad combination of options or an unusable environment: exit status 2."""


def run_bench(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark described by ``args``; 0 unless something failed."""
    try:
        o = _resolve(args)
        _check_options(args, o)
    except _UsageError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    if o["backend"] == "postgres":
        return _run_postgres(args, o, console)
    command = _command(o, args)
    console.print(f"[bold]paycore bench[/]  reproduce with: [cyan]{command}[/]")
    if args.data_dir is not None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        console.print(f"[red]{args.data_dir} is not empty; the bench needs a fresh directory[/]")
        return 2
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="paycore-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    report = BenchReport(
        command=command,
        environment=_environment(),
        options=o,
        results=[],
        server_rss_mb={},
        inproc_rss_mb={},
        targets=[],
        audits={},
        ok=True,
    )
    try:
        with console.status("creating accounts...") as status:
            t0 = time.perf_counter()
            # Each part starts from the same ledger: the accounts and no transfer yet.
            base, inproc_dir, http_dir = data_dir / "base", data_dir / "inproc", data_dir / "http"
            asyncio.run(_create_accounts(base, o))
            console.print(
                f"created {o['accounts']:,} accounts + {HOT_ACCOUNT!r} "
                f"in {time.perf_counter() - t0:.1f}s ({data_dir})"
            )
            if o["only"] != "http":
                status.update("in-process batches...")
                _copy_ledger(base, inproc_dir)
                asyncio.run(_inproc_part(inproc_dir, o, report, console))
            if o["only"] != "inproc":
                status.update("HTTP: starting paycore serve...")
                _copy_ledger(base, http_dir)
                _http_part(http_dir, o, report, console, status)
    finally:
        if args.data_dir is None and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return _finish(report, args, console)


# -- in-process ---------------------------------------------------------------------------


def _account_id(i: int) -> str:
    return f"acct-{i}"


def _copy_ledger(source: Path, target: Path) -> None:
    """Copy a closed ledger (the store checkpoints its WAL into the file on stop)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("shard-*.sqlite3*"):
        shutil.copy2(path, target / path.name)


def _store(data_dir: Path, o: dict[str, Any]) -> ShardedStore:
    """The embedded store the bench measures: ``--shards`` SQLite files, via the factory."""
    settings = Settings(
        data_dir=str(data_dir), synchronous=o["synchronous"], embedded_shards=o["shards"]
    )
    return build_store(settings)


async def _create_accounts(data_dir: Path, o: dict[str, Any]) -> None:
    store = _store(data_dir, o)
    await store.start()
    try:
        n, size = o["accounts"], 8189
        for start in range(0, n, size):
            requests = tuple(
                AccountRequest(_account_id(i), CURRENCY) for i in range(start, min(n, start + size))
            )
            await store.execute(CreateAccounts(requests))
        await store.execute(CreateAccounts((AccountRequest(HOT_ACCOUNT, CURRENCY),)))
    finally:
        await store.stop()


class _Placement:
    """Which shard each bench account lives on, for the local and cross-shard workloads."""

    def __init__(self, store: ShardedStore, accounts: int) -> None:
        names = list(store.shards)
        index = {name: i for i, name in enumerate(names)}
        self.shard_of = bytearray(index[store.shard_for(_account_id(i))] for i in range(accounts))
        self.members: list[list[int]] = [[] for _ in names]
        for i, shard in enumerate(self.shard_of):
            self.members[shard].append(i)
        # Debit accounts that have a partner on their own shard / on another shard.
        self.local_debits = [i for i in range(accounts) if len(self.members[self.shard_of[i]]) > 1]
        self.cross_debits = [
            i for i in range(accounts) if len(self.members[self.shard_of[i]]) < accounts
        ]


def _batches(
    prefix: str,
    o: dict[str, Any],
    *,
    mode: str,
    seed: int,
    placement: _Placement | None = None,
) -> Iterator[CreateTransfers]:
    """Batches built lazily (a million requests would otherwise sit in memory).

    ``mode``: ``uniform`` (random pairs of accounts), ``hot`` (every transfer credits
    the merchant), ``local`` (both accounts on one shard), ``cross`` (on two shards).
    """
    rnd = random.Random(seed)
    n, size, total = o["accounts"], o["batch_size"], o["transfers"]
    ids = range(n)
    offsets = range(1, n)
    amounts = range(1, 1001)
    for start in range(0, total, size):
        k = min(size, total - start)
        if mode in ("local", "cross"):
            assert placement is not None
            yield CreateTransfers(
                _placed(prefix, start, k, mode=mode, placement=placement, rnd=rnd)
            )
            continue
        debits = rnd.choices(ids, k=k)
        amount = rnd.choices(amounts, k=k)
        if mode == "hot":
            yield CreateTransfers(
                tuple(
                    TransferRequest(f"{prefix}-{start + j}", _account_id(d), HOT_ACCOUNT, a)
                    for j, (d, a) in enumerate(zip(debits, amount, strict=True))
                )
            )
        else:
            offs = rnd.choices(offsets, k=k)
            yield CreateTransfers(
                tuple(
                    TransferRequest(
                        f"{prefix}-{start + j}", _account_id(d), _account_id((d + f) % n), a
                    )
                    for j, (d, f, a) in enumerate(zip(debits, offs, amount, strict=True))
                )
            )


def _placed(
    prefix: str, start: int, k: int, *, mode: str, placement: _Placement, rnd: random.Random
) -> tuple[TransferRequest, ...]:
    """``k`` transfers whose two accounts share a shard (``local``) or do not (``cross``)."""
    shard_of, members = placement.shard_of, placement.members
    n = len(shard_of)
    debits = rnd.choices(placement.local_debits if mode == "local" else placement.cross_debits, k=k)
    requests = []
    for j, d in enumerate(debits):
        home = shard_of[d]
        if mode == "local":
            peers = members[home]
            c = d
            while c == d:
                c = peers[rnd.randrange(len(peers))]
        else:
            c = rnd.randrange(n)
            while shard_of[c] == home:
                c = rnd.randrange(n)
        requests.append(
            TransferRequest(
                f"{prefix}-{start + j}", _account_id(d), _account_id(c), rnd.randint(1, 1000)
            )
        )
    return tuple(requests)


_SEED_OFFSET = {"uniform": 0, "hot": 1, "local": 2, "cross": 3}


async def _inproc_scenario(
    store: ShardedStore,
    name: str,
    o: dict[str, Any],
    *,
    mode: str,
    placement: _Placement | None = None,
    seed: int | None = None,
) -> ScenarioResult:
    """Batches through ``store.execute``; a cross-shard transfer counts once settled (the
    relay is drained before the clock stops), and in ``cross`` mode only the settled
    sagas are counted."""
    if seed is None:
        seed = o["seed"] + _SEED_OFFSET[mode]
    batches = _batches(name, o, mode=mode, seed=seed, placement=placement)
    latencies: list[float] = []
    finished: list[tuple[float, int]] = []  # (completion time, cumulative transfers)
    ok = errors = 0

    async def worker() -> None:
        nonlocal ok, errors
        for batch in batches:  # a shared iterator: each batch is taken by one worker
            t0 = time.perf_counter()
            results = await store.execute(batch)
            latencies.append(time.perf_counter() - t0)
            for r in results:
                if r.ok:
                    ok += 1
                else:
                    errors += 1
            finished.append((time.perf_counter(), ok + errors))

    groups0, jobs0 = store.writer_stats
    relay = RelayWorker(store, interval_seconds=0.05)
    await relay.start()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(o["inflight"])))
    submitted = time.perf_counter()
    await relay.stop()  # counted: a cross-shard transfer is done once settled
    seconds = time.perf_counter() - start
    groups, jobs = store.writer_stats
    settled = relay.settlement.completed
    detail: dict[str, Any] = {
        "shards": len(store.shards),
        "mode": mode,
        "accounts": o["accounts"],
        "cross_shard_settled": settled,
        "cross_shard_compensated": relay.settlement.compensated,
        "settle_tail_s": seconds - (submitted - start),
        "batches": len(latencies),
        "transactions": groups - groups0,
        "jobs": jobs - jobs0,
    }
    counted = ok
    if mode == "cross":
        counted = settled
        detail["step1_accepted"] = ok
        errors += ok - settled  # accepted but compensated (or left open): not a transfer
    # The table grows as the run goes on: show the rate at the start and at the end
    # (from 20 batches on: with fewer, the last two often finish in one group commit,
    # and a tenth of the batches is no window at all).
    tenth = max(1, len(finished) // 10)
    if len(finished) >= 20:
        t_first, n_first = finished[tenth - 1]
        t_late, n_late = finished[-tenth - 1]
        t_end, n_end = finished[-1]
        detail["rate_first_10pct"] = n_first / (t_first - start)
        detail["rate_last_10pct"] = (n_end - n_late) / (t_end - t_late)
    return ScenarioResult(
        name=name,
        transfers=counted,
        seconds=seconds,
        rate_per_s=counted / seconds,
        latency_of="batch",
        errors=errors,
        detail=detail,
        **latency_summary(latencies),
    )


def _trend(result: ScenarioResult) -> str:
    first = result.detail.get("rate_first_10pct")
    last = result.detail.get("rate_last_10pct")
    if first is None or last is None:
        return ""
    return f" (first 10% of batches {first:,.0f}/s, last 10% {last:,.0f}/s)"


async def _inproc_part(
    data_dir: Path, o: dict[str, Any], report: BenchReport, console: Console
) -> None:
    store = _store(data_dir, o)
    await store.start()
    try:
        rss_before = read_rss(os.getpid())
        for name, mode in (("inproc-uniform", "uniform"), ("inproc-hot", "hot")):
            result = await _inproc_scenario(store, name, o, mode=mode)
            report.results.append(result)
            console.print(
                f"{name}: {result.transfers:,} transfers in {result.seconds:.2f}s = "
                f"[bold]{result.rate_per_s:,.0f}/s[/], batch p50 {result.p50_ms:.0f} ms, "
                f"p99 {result.p99_ms:.0f} ms" + _trend(result)
            )
        rss = read_rss(os.getpid())
        report.inproc_rss_mb = {
            "before_mb": rss_before.get("VmRSS", 0.0),
            "rss_mb": rss.get("VmRSS", 0.0),
            "peak_mb": rss.get("VmHWM", 0.0),
        }
        if o["audit"]:
            report.audits["inproc"] = await _audit(store, console, "in-process")
    finally:
        await store.stop()


async def _audit(store: ShardedStore, console: Console, label: str) -> bool:
    t0 = time.perf_counter()
    await RelayWorker(store).drain()  # whatever a stopped server left in flight
    audit: ClusterAuditReport = await audit_cluster(store.shards)
    kinds = {k.value for r in audit.shards.values() for k in r.kinds()}
    kinds |= {v.kind.value for v in audit.violations}
    count = sum(r.violation_count for r in audit.shards.values()) + len(audit.violations)
    mark = "[green]clean[/]" if audit.ok else f"[red]{count} violation(s)[/]"
    transfers = sum(r.transfers for r in audit.shards.values())
    console.print(
        f"audit after {label}: {mark} ({transfers:,} transfers on {len(audit.shards)} shards "
        f"replayed in {time.perf_counter() - t0:.1f}s; kinds: {', '.join(sorted(kinds)) or 'none'})"
    )
    return audit.ok


# -- HTTP -----------------------------------------------------------------------------------


def read_rss(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process in MB, from ``/proc/<pid>/status``."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024  # kB -> MB
    return found


class _RssSampler:
    """Polls a process's RSS in a thread; ``VmHWM`` gives the kernel's own peak too."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0.0
        self.hwm = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss = read_rss(self.pid)
        self.peak = max(self.peak, rss.get("VmRSS", 0.0))
        self.hwm = max(self.hwm, rss.get("VmHWM", 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_ready(url: str, server: subprocess.Popen[bytes], within: float = 30.0) -> None:
    client = RawHttpClient.for_url(url, timeout=2.0)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"paycore serve exited with status {server.returncode}")
            try:
                if (await client.request("GET", "/healthz")).status == 200:
                    return
            except (OSError, TimeoutError):
                await client.close()
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    raise RuntimeError(f"paycore serve not ready after {within:.0f}s")


def _http_part(
    data_dir: Path, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    env = {
        **os.environ,
        "PAYCORE_SYNCHRONOUS": o["synchronous"],
        "PAYCORE_EMBEDDED_SHARDS": str(o["shards"]),
    }
    _serve_and_load(
        ["--data-dir", str(data_dir)],
        o,
        report,
        console,
        status,
        env=env,
        log_path=data_dir / "serve.log",
        scenarios=(("http-uniform", False), ("http-hot", True)),
    )
    if o["audit"]:
        report.audits["http"] = asyncio.run(_audit_dir(data_dir, o, console))


def _serve_and_load(
    where: list[str],
    o: dict[str, Any],
    report: BenchReport,
    console: Console,
    status: Any,
    *,
    env: dict[str, str],
    log_path: Path,
    scenarios: tuple[tuple[str, bool], ...],
) -> None:
    """Start ``paycore serve`` (``where``: its ``--data-dir`` or ``--config``), drive each
    scenario at it from the load generator's process, sample its RSS, stop it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # --open: the load generator carries no API key; the server listens on 127.0.0.1
    # only, for the length of the run. (A key check is one cached dict lookup and a
    # SHA-256 per request.)
    serve = [
        sys.executable, "-m", "paycore.cli", "serve", *where, "--open",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    # The load generator is one caller asking thousands of times a second: measure the
    # ledger, not the per-caller rate limit.
    env = {**env, "PAYCORE_RATE_LIMIT_PER_SECOND": "0"}
    with log_path.open("wb") as log:
        server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    try:
        asyncio.run(_wait_ready(url, server))
        with _RssSampler(server.pid) as rss:
            for name, hot in scenarios:
                status.update(f"{name}: {o['clients']} clients for {o['duration']:g}s...")
                result = _load(url, name, o, hot=hot)
                report.results.append(result)
                console.print(
                    f"{name}: {result.transfers:,} transfers in {result.seconds:.2f}s = "
                    f"[bold]{result.rate_per_s:,.0f}/s[/], p50 {result.p50_ms:.1f} ms, "
                    f"p99 {result.p99_ms:.1f} ms"
                    + (f", [red]{result.errors} errors[/]" if result.errors else "")
                )
        report.server_rss_mb = {"peak_sampled_mb": rss.peak, "peak_mb": rss.hwm}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.returncode not in (0, -15):
        console.print(f"[red]paycore serve exited with {server.returncode}[/]; see {log_path}")
        console.print(log_path.read_text(errors="replace")[-2000:])


async def _audit_dir(data_dir: Path, o: dict[str, Any], console: Console) -> bool:
    store = _store(data_dir, o)
    await store.start()
    try:
        return await _audit(store, console, "HTTP")
    finally:
        await store.stop()


def _load(url: str, name: str, o: dict[str, Any], *, hot: bool) -> ScenarioResult:
    cmd = [
        sys.executable, "-m", "paycore.ops.loadgen", "--url", url,
        "--clients", str(o["clients"]), "--duration", str(o["duration"]),
        "--accounts", str(o["accounts"]), "--prefix", name, "--client", o["client"],
        "--seed", str(o["seed"]),
    ]  # fmt: skip
    if hot:
        cmd += ["--hot", HOT_ACCOUNT]
    done = subprocess.run(cmd, capture_output=True, check=False, timeout=o["duration"] + 120)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode(errors='replace')}")
    load = msgspec.json.decode(done.stdout.splitlines()[-1], type=LoadResult)
    errors = load.requests - load.ok + sum(load.errors.values())
    return ScenarioResult(
        name=name,
        transfers=load.ok,
        seconds=load.duration_s,
        rate_per_s=load.rate_per_s,
        p50_ms=load.p50_ms,
        p95_ms=load.p95_ms,
        p99_ms=load.p99_ms,
        max_ms=load.max_ms,
        latency_of="request",
        errors=errors,
        detail={"clients": load.clients, "statuses": load.statuses, "exceptions": load.errors},
    )


# -- PostgreSQL -----------------------------------------------------------------------------

PGBENCH_HINT = (
    "pgbench not found on PATH nor in /usr/lib/postgresql/*/bin: install Debian's "
    "postgresql-client (PostgreSQL 16 and later) or postgresql-contrib (15 and earlier, "
    "where pgbench ships in the server package postgresql-NN)"
)


def _check_options(args: argparse.Namespace, o: dict[str, Any]) -> None:
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
            )
            if given
        ]
        if o["only"] in ("pgbench", "sweep"):
            pg_only.append(f"--only {o['only']}")
        if pg_only:
            raise _UsageError(f"{', '.join(pg_only)}: only with --config or --local-postgres")
        return
    if o["pg_fast"] and o["local_postgres"] is None:
        raise _UsageError(
            "--pg-fast needs --local-postgres: a configured server runs with its own "
            "settings (the bench reads and reports them)"
        )
    if o["create_databases"] and o["config"] is None:
        raise _UsageError("--create-databases goes with --config (--local-postgres makes its own)")
    if o["local_postgres"] is not None and not 1 <= o["local_postgres"] <= 64:
        raise _UsageError("--local-postgres N: N shard databases, 1 to 64")
    if o["pgbench_clients"] < 1 or o["pgbench_scale"] < 1:
        raise _UsageError("--pgbench-clients and --pgbench-scale must be at least 1")


def _skip(report: BenchReport, console: Console, row: str, why: str) -> None:
    report.skipped[row] = why
    console.print(f"[yellow]skipped {row}:[/] {why}")


class _PgTarget:
    """Where a PostgreSQL bench keeps its ledgers.

    When the bench may create databases (``--local-postgres``, ``--create-databases``)
    each part gets a fresh ledger of its own (``paycore_bench_<run>_<part>_<shard>``, one
    database per shard, dropped at the end unless ``--keep``); otherwise every part runs
    in the config's databases, one after the other (each with its own transfer ids).
    """

    def __init__(
        self, base: Settings, admins: dict[str, str] | None, local: LocalPostgres | None
    ) -> None:
        self.base = base
        self.admins = admins  # shard -> DSN to issue CREATE/DROP DATABASE through
        self.local = local
        self.run_id = uuid.uuid4().hex[:6]
        self.created: list[tuple[str, str]] = []  # (admin DSN, database)
        self.accounts: dict[str, int] = {}  # ledger -> accounts acct-0.. created so far
        self.hot: set[str] = set()  # ledgers holding the merchant account

    @property
    def fresh(self) -> bool:
        return self.admins is not None

    def server_dsns(self) -> dict[str, str]:
        """A DSN per shard to read its server's settings through."""
        if self.admins is not None:
            return dict(self.admins)
        return {s.name: str(s.dsn) for s in self.base.shards}

    def _create(self, admin: str, name: str) -> str:
        from paycore.ops.pg_local import admin_dsn, create_database  # noqa: PLC0415

        create_database(admin, name)
        self.created.append((admin, name))
        return admin_dsn(admin, name)

    def ledger(self, tag: str) -> tuple[Settings, str]:
        """The settings of a ledger for part ``tag``, and its key in ``accounts``."""
        if self.admins is None:
            return self.base, "config"
        shards = tuple(
            msgspec.structs.replace(
                shard,
                dsn=self._create(
                    self.admins[shard.name], f"paycore_bench_{self.run_id}_{tag}_{shard.name}"
                ),
            )
            for shard in self.base.shards
        )
        return msgspec.structs.replace(self.base, shards=shards), tag

    def pgbench_database(self, explicit: str | None) -> tuple[str, tuple[str, str] | None]:
        """A database for pgbench on the first shard's server: ``explicit`` or a new one."""
        if explicit:
            return explicit, None
        first = self.base.shards[0]
        admin = self.admins[first.name] if self.admins is not None else str(first.dsn)
        name = f"paycore_bench_{self.run_id}_pgbench"
        return self._create(admin, name), (admin, name)

    def drop(self, admin: str, name: str) -> None:
        from paycore.ops.pg_local import drop_database  # noqa: PLC0415

        drop_database(admin, name)
        with contextlib.suppress(ValueError):
            self.created.remove((admin, name))

    def drop_ledger(self, settings: Settings) -> None:
        """Drop a fresh ledger's databases now (a sweep's big ones free their disk)."""
        from paycore.ops.pg_local import database_name  # noqa: PLC0415

        if self.admins is None:
            return
        for shard in settings.shards:
            self.drop(self.admins[shard.name], database_name(str(shard.dsn)))

    def checkpoint(self) -> None:
        """``CHECKPOINT`` each server (when allowed), so that a part does not pay for the
        dirty pages of the one before it."""
        import psycopg  # noqa: PLC0415

        for dsn in dict.fromkeys(self.server_dsns().values()):
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn,
            ):
                conn.execute("CHECKPOINT")

    def close(self, *, keep: bool, console: Console) -> None:
        import psycopg  # noqa: PLC0415

        from paycore.ops.pg_local import drop_database  # noqa: PLC0415

        try:
            if keep and self.created:
                console.print("kept databases: " + ", ".join(name for _, name in self.created))
            elif not keep:
                for admin, name in reversed(self.created):
                    try:
                        drop_database(admin, name)
                    except psycopg.Error as exc:
                        console.print(f"[yellow]could not drop database {name}: {exc}[/]")
                self.created = []
        finally:
            if self.local is not None:
                self.local.stop()
                if keep and self.local.root is not None:
                    console.print(f"kept the stopped server's directory {self.local.root}")


def _open_target(args: argparse.Namespace, o: dict[str, Any], status: Any) -> _PgTarget:
    import psycopg  # noqa: PLC0415

    from paycore.ops.pg_local import (  # noqa: PLC0415
        LocalPostgres,
        PostgresNotFoundError,
        database_name,
        public_tables,
    )
    from paycore.redaction import redact_dsn  # noqa: PLC0415

    if o["local_postgres"] is not None:
        try:
            local = LocalPostgres(fast=o["pg_fast"], keep=bool(args.keep))
        except PostgresNotFoundError as exc:
            raise _UsageError(str(exc)) from exc
        status.update(f"starting a local PostgreSQL server ({local.bindir})...")
        try:
            local.start()
        except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            local.stop()
            raise _UsageError(f"could not start a local PostgreSQL server: {exc}") from exc
        shards = tuple(
            ShardConfig(f"s{i}", backend="postgres", dsn=local.dsn())
            for i in range(o["local_postgres"])
        )
        return _PgTarget(Settings(shards=shards), {s.name: local.dsn() for s in shards}, local)
    config = Path(o["config"])
    try:
        settings = load_settings(config)
        shard_specs(settings)
    except (OSError, ValueError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise _UsageError(f"{config}: {exc}") from exc
    if not settings.shards:
        raise _UsageError(f"{config} lists no [[shards]]: the PostgreSQL bench needs them")
    others = [s.name for s in settings.shards if s.backend != "postgres"]
    if others:
        raise _UsageError(
            f'{config}: shard(s) {", ".join(others)} are not backend = "postgres" '
            "(the embedded SQLite bench is `paycore bench --shards N`)"
        )
    if o["create_databases"]:
        return _PgTarget(settings, {s.name: str(s.dsn) for s in settings.shards}, None)
    for shard in settings.shards:
        dsn = str(shard.dsn)
        try:
            tables = public_tables(dsn)
        except psycopg.Error as exc:
            raise _UsageError(f"shard {shard.name} ({redact_dsn(dsn)}): {exc}") from exc
        if tables:
            more = ", ..." if len(tables) > 5 else ""
            raise _UsageError(
                f"shard {shard.name}: database {database_name(dsn)!r} is not empty "
                f"({len(tables)} tables: {', '.join(tables[:5])}{more}). The bench needs fresh, "
                "empty databases: point the config at empty ones, or pass --create-databases "
                "to let the bench create (and drop) its own on the same servers."
            )
    return _PgTarget(settings, None, None)


def _durability(settings: dict[str, str]) -> str:
    keys = ("fsync", "synchronous_commit", "full_page_writes")
    return " ".join(f"{k}={settings.get(k, '?')}" for k in keys)


def _is_durable(settings: dict[str, str]) -> bool:
    return settings.get("fsync") == "on" and settings.get("synchronous_commit") != "off"


def _describe_servers(
    target: _PgTarget, o: dict[str, Any], report: BenchReport, console: Console
) -> None:
    from paycore.ops.pg_local import server_settings  # noqa: PLC0415
    from paycore.redaction import redact_dsn  # noqa: PLC0415

    per_shard = {name: server_settings(dsn) for name, dsn in target.server_dsns().items()}
    first = next(iter(per_shard.values()))
    same = all(s == first for s in per_shard.values())
    durable = all(_is_durable(s) for s in per_shard.values())
    where = (
        target.local.describe()
        if target.local is not None
        else ", ".join(f"{s.name}={redact_dsn(str(s.dsn))}" for s in target.base.shards)
    )
    report.postgres = {
        "source": "local" if target.local is not None else "config",
        "where": where,
        "shards": len(target.base.shards),
        "settings": first if same else per_shard,
        "durable": durable,
        "pg_fast": o["pg_fast"],
        "fresh_database_per_part": target.fresh,
    }
    report.environment["postgres"] = first.get("server_version", "?")
    console.print(f"PostgreSQL {first.get('server_version', '?')}: {where}")
    for name, s in per_shard.items() if not same else [("all shards", first)]:
        label = (
            "[green]durable: a commit waits for its WAL flush[/]"
            if _is_durable(s)
            else "[bold red]NOT durable: commits do not wait for the disk[/]"
        )
        console.print(
            f"  {name}: {_durability(s)}, shared_buffers={s.get('shared_buffers')}: {label}"
        )
    if o["pg_fast"]:
        console.print(
            "[bold red]--pg-fast[/]: fsync, synchronous_commit and full_page_writes are off; "
            "these numbers do not measure durable commits (pgbench runs under the same settings)"
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


def _pgbench_part(
    target: _PgTarget,
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

    from paycore.ops.pg_local import find_tool  # noqa: PLC0415
    from paycore.redaction import redact_dsn  # noqa: PLC0415

    row = "pgbench-tpcb"
    exe = find_tool("pgbench", target.local.bindir if target.local is not None else None)
    if exe is None:
        _skip(report, console, row, PGBENCH_HINT)
        return
    try:
        dsn, created = target.pgbench_database(o["pgbench_dsn"])
    except psycopg.Error as exc:
        _skip(
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
            _skip(report, console, row, f"pgbench -i failed: {init.stderr.strip()[-500:]}")
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
            _skip(report, console, row, f"pgbench failed: {done.stderr.strip()[-500:]}")
            return
        result = _pgbench_result(row, done.stdout, log_dir, seconds)
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


def _pgbench_result(name: str, stdout: str, log_dir: Path, seconds: int) -> ScenarioResult:
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


async def _ensure_accounts(
    store: ShardedStore, target: _PgTarget, key: str, n: int, *, hot: bool = True
) -> float:
    """Create accounts ``acct-0 .. acct-<n-1>`` (and the merchant) not yet in ledger
    ``key``; two batches in flight. Returns the seconds it took."""
    t0 = time.perf_counter()
    have = target.accounts.get(key, 0)
    chunks = iter(range(have, n, 8189))

    async def worker() -> None:
        for start in chunks:
            requests = tuple(
                AccountRequest(_account_id(i), CURRENCY) for i in range(start, min(n, start + 8189))
            )
            results = await store.execute(CreateAccounts(requests))
            failed = [r for r in results if not r.ok]
            if failed:
                raise RuntimeError(f"creating accounts failed: {failed[0]}")

    if n > have:
        await asyncio.gather(worker(), worker())
        target.accounts[key] = n
    if hot and key not in target.hot:
        await store.execute(CreateAccounts((AccountRequest(HOT_ACCOUNT, CURRENCY),)))
        target.hot.add(key)
    return time.perf_counter() - t0


def _print_inproc(console: Console, result: ScenarioResult) -> None:
    extra = ""
    if result.detail.get("mode") == "cross" or result.detail.get("cross_shard_settled"):
        extra = (
            f"; {result.detail['cross_shard_settled']:,} cross-shard settled, the relay's "
            f"tail after the last batch {result.detail['settle_tail_s']:.2f}s"
        )
    console.print(
        f"{result.name}: {result.transfers:,} transfers in {result.seconds:.2f}s = "
        f"[bold]{result.rate_per_s:,.0f}/s[/], batch p50 {result.p50_ms:.0f} ms, "
        f"p99 {result.p99_ms:.0f} ms" + _trend(result) + extra
    )


async def _pg_inproc_part(
    target: _PgTarget, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    settings, key = target.ledger("main")
    store = build_store(settings)
    await store.start()
    try:
        status.update(f"creating {o['accounts']:,} accounts...")
        created = await _ensure_accounts(store, target, key, o["accounts"])
        console.print(f"created {o['accounts']:,} accounts + {HOT_ACCOUNT!r} in {created:.1f}s")
        scenarios = [("pg-inproc-uniform", "uniform"), ("pg-inproc-hot", "hot")]
        placement = None
        if len(store.shards) > 1:
            placement = _Placement(store, o["accounts"])
            if placement.local_debits and placement.cross_debits:
                scenarios += [("pg-inproc-local", "local"), ("pg-inproc-cross", "cross")]
            else:
                _skip(report, console, "pg-inproc-cross", "too few accounts to pair per shard")
        else:
            _skip(
                report,
                console,
                "pg-inproc-cross",
                "one shard: no transfer crosses shards (give 2 or more shards)",
            )
        rss_before = read_rss(os.getpid())
        for name, mode in scenarios:
            status.update(f"{name}: in-process batches...")
            result = await _inproc_scenario(store, name, o, mode=mode, placement=placement)
            report.results.append(result)
            _print_inproc(console, result)
        rss = read_rss(os.getpid())
        report.inproc_rss_mb = {
            "before_mb": rss_before.get("VmRSS", 0.0),
            "rss_mb": rss.get("VmRSS", 0.0),
            "peak_mb": rss.get("VmHWM", 0.0),
        }
        if o["audit"]:
            status.update("auditing...")
            report.audits["pg-inproc"] = await _audit(store, console, "PostgreSQL in-process")
    finally:
        await store.stop()
    target.checkpoint()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string


def settings_toml(settings: Settings) -> str:
    """``settings`` as a TOML file that ``load_settings`` reads back to the same."""
    lines = []
    for field in msgspec.structs.fields(Settings):
        value = getattr(settings, field.name)
        if isinstance(value, str | int | float | bool):
            lines.append(f"{field.name} = {_toml_value(value)}")
    for table, items in (("shards", settings.shards), ("placement", settings.placement)):
        for item in items:
            lines += ["", f"[[{table}]]"]
            lines += [
                f"{k} = {_toml_value(v)}"
                for k, v in msgspec.structs.asdict(item).items()
                if v is not None
            ]
    return "\n".join(lines) + "\n"


async def _prepare_ledger(settings: Settings, target: _PgTarget, key: str, n: int) -> float:
    store = build_store(settings)
    await store.start()
    try:
        return await _ensure_accounts(store, target, key, n)
    finally:
        await store.stop()


async def _audit_settings(settings: Settings, console: Console, label: str) -> bool:
    store = build_store(settings)
    await store.start()
    try:
        return await _audit(store, console, label)
    finally:
        await store.stop()


def _pg_http_part(
    target: _PgTarget,
    o: dict[str, Any],
    report: BenchReport,
    console: Console,
    status: Any,
    *,
    work_dir: Path,
) -> None:
    settings, key = target.ledger("http")
    status.update(f"HTTP: creating {o['accounts']:,} accounts...")
    asyncio.run(_prepare_ledger(settings, target, key, o["accounts"]))
    config = work_dir / "serve.toml"
    config.touch(mode=0o600)  # the DSNs may carry passwords
    config.write_text(settings_toml(settings))
    status.update("HTTP: starting paycore serve --config ...")
    _serve_and_load(
        ["--config", str(config)],
        o,
        report,
        console,
        status,
        env=dict(os.environ),
        log_path=work_dir / "serve.log",
        scenarios=(("pg-http-uniform", False), ("pg-http-hot", True)),
    )
    if o["audit"]:
        status.update("auditing...")
        report.audits["pg-http"] = asyncio.run(
            _audit_settings(settings, console, "PostgreSQL HTTP")
        )
    target.checkpoint()


async def _pg_sweep_part(
    target: _PgTarget, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    """The uniform batch scenario at each size of ``--accounts-sweep``, each on a fresh
    ledger when the bench may create databases."""
    if not target.fresh:
        console.print(
            "[yellow]accounts sweep in the config's databases: the sizes grow in one ledger "
            "that also holds the earlier parts' transfers (--create-databases or "
            "--local-postgres give each size a fresh ledger)[/]"
        )
    for i, size in enumerate(o["sweep"]):
        settings, key = target.ledger(f"sw{size}")
        store = build_store(settings)
        await store.start()
        try:
            status.update(f"accounts sweep: creating {size:,} accounts...")
            have = target.accounts.get(key, 0)
            created = await _ensure_accounts(store, target, key, size, hot=False)
            sub = {**o, "accounts": size, "transfers": o["sweep_transfers"]}
            name = f"pg-sweep-{size}"
            # Within a shard: the sweep measures the ledger's cost per account count; what
            # the relay adds is the cross-shard row's business.
            mode, placement = "uniform", None
            if len(store.shards) > 1:
                placement = _Placement(store, size)
                mode = "local" if placement.local_debits else "uniform"
            status.update(f"accounts sweep: {size:,} accounts, in-process batches...")
            result = await _inproc_scenario(
                store, name, sub, mode=mode, placement=placement, seed=o["seed"] + 10 + i
            )
            result.detail.update(
                us_per_transfer=1e6 / result.rate_per_s if result.rate_per_s else None,
                accounts_created=max(0, size - have),
                create_seconds=round(created, 2),
                fresh_ledger=target.fresh,
            )
            report.results.append(result)
            console.print(
                f"{name}: {size:,} accounts (created {max(0, size - have):,} in {created:.1f}s): "
                f"{result.transfers:,} transfers = [bold]{result.rate_per_s:,.0f}/s[/] "
                f"({1e6 / result.rate_per_s if result.rate_per_s else 0:.1f} us/transfer)"
            )
            if o["audit"]:
                status.update(f"auditing the {size:,}-account ledger...")
                report.audits[name] = await _audit(store, console, f"sweep {size:,} accounts")
        finally:
            await store.stop()
        target.drop_ledger(settings)
        target.checkpoint()


def _run_postgres(args: argparse.Namespace, o: dict[str, Any], console: Console) -> int:
    import psycopg  # noqa: PLC0415

    from paycore.redaction import redact_dsn  # noqa: PLC0415

    command = _command(o, args)
    console.print(f"[bold]paycore bench[/] (PostgreSQL)  reproduce with: [cyan]{command}[/]")
    if args.data_dir is not None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        console.print(f"[red]{args.data_dir} is not empty; the bench needs a fresh directory[/]")
        return 2
    work_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="paycore-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    shown = {**o, "pgbench_dsn": redact_dsn(o["pgbench_dsn"]) if o["pgbench_dsn"] else None}
    report = BenchReport(
        command=command,
        environment=_environment(),
        options=shown,
        results=[],
        server_rss_mb={},
        inproc_rss_mb={},
        targets=[],
        audits={},
        ok=True,
        backend="postgres",
    )
    target: _PgTarget | None = None
    only = o["only"]
    try:
        with console.status("PostgreSQL...") as status:
            try:
                target = _open_target(args, o, status)
                _describe_servers(target, o, report, console)
            except (_UsageError, psycopg.Error) as exc:
                console.print(f"[red]{exc}[/]")
                return 2
            if not o["pgbench"]:
                report.skipped["pgbench-tpcb"] = "--no-pgbench"
            elif only in (None, "pgbench"):
                _pgbench_part(target, o, report, console, status, work_dir=work_dir)
            if only in (None, "inproc"):
                asyncio.run(_pg_inproc_part(target, o, report, console, status))
            if only in (None, "http"):
                _pg_http_part(target, o, report, console, status, work_dir=work_dir)
            if only in (None, "sweep") and o["sweep"]:
                asyncio.run(_pg_sweep_part(target, o, report, console, status))
    finally:
        if target is not None:
            target.close(keep=bool(args.keep), console=console)
        if args.data_dir is None and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    return _finish(report, args, console)


def _finish(report: BenchReport, args: argparse.Namespace, console: Console) -> int:
    report.targets = _targets(report)
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


# -- report -----------------------------------------------------------------------------------


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


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


def _targets(report: BenchReport) -> list[TargetCheck]:
    by_name = {r.name: r for r in report.results}
    checks: list[TargetCheck] = []
    batch = f"batches of {report.options['batch_size']:,}"
    uni, hot = by_name.get("inproc-uniform"), by_name.get("inproc-hot")
    if uni is not None:
        checks.append(
            _at_least(
                "in-process rate",
                f"SQLite, in-process {batch}, uniform",
                goal=TARGET_INPROC_PER_S,
                measured=uni.rate_per_s,
                shown=f"{uni.rate_per_s:,.0f}/s",
                wanted=f">= {TARGET_INPROC_PER_S:,}/s",
            )
        )
    if uni is not None and hot is not None:
        ratio = hot.rate_per_s / uni.rate_per_s
        checks.append(
            _at_least(
                "in-process hot / uniform",
                "SQLite, every transfer credits one merchant vs uniform",
                goal=TARGET_HOT_RATIO,
                measured=ratio,
                shown=f"{ratio:.0%}",
                wanted=f">= {TARGET_HOT_RATIO:.0%}",
            )
        )
    huni, hhot = by_name.get("http-uniform"), by_name.get("http-hot")
    clients = f"{report.options['clients']} clients"
    if huni is not None:
        checks.append(
            _at_least(
                "HTTP rate",
                f"SQLite, single POST /v1/transfers, {clients}",
                goal=TARGET_HTTP_PER_S,
                measured=huni.rate_per_s,
                shown=f"{huni.rate_per_s:,.0f}/s",
                wanted=f">= {TARGET_HTTP_PER_S:,}/s",
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
            _at_least(
                "HTTP hot / uniform",
                "SQLite, HTTP, one merchant credited vs uniform",
                goal=TARGET_HOT_RATIO,
                measured=ratio,
                shown=f"{ratio:.0%}",
                wanted=f">= {TARGET_HOT_RATIO:.0%}",
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
            f"({pg.get('source')}, {pg.get('shards')} shard(s)): {_durability(flat)}: {durable}"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paycore.ops.bench", description=__doc__)
    add_arguments(parser)
    return run_bench(parser.parse_args(argv), Console(highlight=False))


if __name__ == "__main__":
    sys.exit(main())
