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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.ops.audit import ClusterAuditReport, audit_cluster
from paycore.ops.loadgen import LoadResult, RawHttpClient, latency_summary
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.workers.relay import RelayWorker

__all__ = ["BenchReport", "ScenarioResult", "add_arguments", "read_rss", "run_bench"]

HOT_ACCOUNT = "merchant"
CURRENCY = "USD"

# What we hold ourselves to (printed beside the measurements).
TARGET_INPROC_PER_S = 50_000
TARGET_HTTP_PER_S = 2_000
TARGET_HTTP_P99_MS = 50.0
TARGET_HOT_RATIO = 0.5
TARGET_RSS_MB = 200.0


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
    latency_of: str  # "batch" or "request"
    errors: int = 0
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class TargetCheck(msgspec.Struct):
    name: str
    target: str
    measured: str
    met: bool


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``paycore bench`` options (also used by ``python -m paycore.ops.bench``)."""
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: the whole run takes < 30 s"
    )
    parser.add_argument(
        "--transfers", type=int, help="in-process transfers per scenario (491,340; quick 65,512)"
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
        choices=("inproc", "http"),
        help="run only the in-process or only the HTTP scenarios",
    )
    parser.add_argument("--no-audit", action="store_true", help="skip the audits")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--json", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--seed", type=int, default=1)


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    return {
        "quick": quick,
        "transfers": args.transfers or (8 * args.batch_size if quick else 60 * args.batch_size),
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


def _command(o: dict[str, Any], args: argparse.Namespace) -> str:
    parts = ["paycore", "bench"]
    if o["quick"]:
        parts.append("--quick")
    parts += [
        "--transfers", str(o["transfers"]), "--batch-size", str(o["batch_size"]),
        "--accounts", str(o["accounts"]), "--inflight", str(o["inflight"]),
        "--clients", str(o["clients"]), "--duration", f"{o['duration']:g}",
        "--client", o["client"], "--synchronous", o["synchronous"], "--seed", str(o["seed"]),
        "--shards", str(o["shards"]),
    ]  # fmt: skip
    if o["only"]:
        parts += ["--only", o["only"]]
    if not o["audit"]:
        parts.append("--no-audit")
    if args.json:
        parts += ["--json", str(args.json)]
    return shlex.join(parts)


def run_bench(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark described by ``args``; 0 unless something failed."""
    o = _resolve(args)
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


def _batches(prefix: str, o: dict[str, Any], *, hot: bool, seed: int) -> Iterator[CreateTransfers]:
    """Batches built lazily (a million requests would otherwise sit in memory)."""
    rnd = random.Random(seed)
    n, size, total = o["accounts"], o["batch_size"], o["transfers"]
    ids = range(n)
    offsets = range(1, n)
    amounts = range(1, 1001)
    for start in range(0, total, size):
        k = min(size, total - start)
        debits = rnd.choices(ids, k=k)
        amount = rnd.choices(amounts, k=k)
        if hot:
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


async def _inproc_scenario(
    store: ShardedStore, name: str, o: dict[str, Any], *, hot: bool
) -> ScenarioResult:
    batches = _batches(name, o, hot=hot, seed=o["seed"] + hot)
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
    await relay.stop()  # counted: a cross-shard transfer is done once settled
    seconds = time.perf_counter() - start
    groups, jobs = store.writer_stats
    detail: dict[str, Any] = {
        "shards": len(store.shards),
        "cross_shard_settled": relay.settlement.completed,
        "batches": len(latencies),
        "transactions": groups - groups0,
        "jobs": jobs - jobs0,
    }
    # The table grows as the run goes on: show the rate at the start and at the end.
    tenth = max(1, len(finished) // 10)
    if len(finished) >= 2 * tenth + 1:
        t_first, n_first = finished[tenth - 1]
        t_late, n_late = finished[-tenth - 1]
        t_end, n_end = finished[-1]
        detail["rate_first_10pct"] = n_first / (t_first - start)
        detail["rate_last_10pct"] = (n_end - n_late) / (t_end - t_late)
    return ScenarioResult(
        name=name,
        transfers=ok,
        seconds=seconds,
        rate_per_s=ok / seconds,
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
        for name, hot in (("inproc-uniform", False), ("inproc-hot", True)):
            result = await _inproc_scenario(store, name, o, hot=hot)
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
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "serve.log"
    env = {
        **os.environ,
        "PAYCORE_SYNCHRONOUS": o["synchronous"],
        "PAYCORE_EMBEDDED_SHARDS": str(o["shards"]),
    }
    serve = [
        sys.executable, "-m", "paycore.cli", "serve", "--data-dir", str(data_dir),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    try:
        asyncio.run(_wait_ready(url, server))
        with _RssSampler(server.pid) as rss:
            for name, hot in (("http-uniform", False), ("http-hot", True)):
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
    if o["audit"]:
        report.audits["http"] = asyncio.run(_audit_dir(data_dir, o, console))


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


# -- report -----------------------------------------------------------------------------------


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def _targets(report: BenchReport) -> list[TargetCheck]:
    by_name = {r.name: r for r in report.results}
    checks: list[TargetCheck] = []
    uni, hot = by_name.get("inproc-uniform"), by_name.get("inproc-hot")
    if uni is not None:
        checks.append(
            TargetCheck(
                "in-process rate",
                f">= {TARGET_INPROC_PER_S:,}/s",
                f"{uni.rate_per_s:,.0f}/s",
                uni.rate_per_s >= TARGET_INPROC_PER_S,
            )
        )
    if uni is not None and hot is not None:
        ratio = hot.rate_per_s / uni.rate_per_s
        checks.append(
            TargetCheck(
                "in-process hot / uniform",
                f">= {TARGET_HOT_RATIO:.0%}",
                f"{ratio:.0%}",
                ratio >= TARGET_HOT_RATIO,
            )
        )
    huni, hhot = by_name.get("http-uniform"), by_name.get("http-hot")
    if huni is not None:
        checks.append(
            TargetCheck(
                "HTTP rate",
                f">= {TARGET_HTTP_PER_S:,}/s",
                f"{huni.rate_per_s:,.0f}/s",
                huni.rate_per_s >= TARGET_HTTP_PER_S,
            )
        )
        checks.append(
            TargetCheck(
                "HTTP p99",
                f"< {TARGET_HTTP_P99_MS:g} ms",
                f"{huni.p99_ms:.1f} ms",
                huni.p99_ms < TARGET_HTTP_P99_MS,
            )
        )
    if huni is not None and hhot is not None:
        ratio = hhot.rate_per_s / huni.rate_per_s if huni.rate_per_s else 0.0
        checks.append(
            TargetCheck(
                "HTTP hot / uniform",
                f">= {TARGET_HOT_RATIO:.0%}",
                f"{ratio:.0%}",
                ratio >= TARGET_HOT_RATIO,
            )
        )
    if report.server_rss_mb:
        peak = report.server_rss_mb["peak_mb"]
        checks.append(
            TargetCheck(
                "server peak RSS", f"< {TARGET_RSS_MB:g} MB", f"{peak:.0f} MB", peak < TARGET_RSS_MB
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
    if report.inproc_rss_mb:
        rss = report.inproc_rss_mb
        console.print(
            f"bench process (in-process store, {report.options['accounts']:,} accounts): "
            f"RSS {rss['rss_mb']:.0f} MB, peak {rss['peak_mb']:.0f} MB"
        )
    if report.server_rss_mb:
        console.print(f"paycore serve peak RSS (VmHWM): {report.server_rss_mb['peak_mb']:.0f} MB")
    targets = Table(title="targets", title_justify="left")
    for col in ("target", "wanted", "measured", ""):
        targets.add_column(col)
    for t in report.targets:
        targets.add_row(
            t.name, t.target, t.measured, "[green]met[/]" if t.met else "[red]missed[/]"
        )
    console.print(targets)
    for name, ok in report.audits.items():
        console.print(f"audit {name}: " + ("[green]clean[/]" if ok else "[red]VIOLATIONS[/]"))
    env = report.environment
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
