"""HTTP scenarios: a ``paycore serve`` subprocess driven by ``paycore.tools.loadgen`` in
its own process, the server's peak RSS sampled meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from paycore.locks.testing import free_port
from paycore.tools.bench.inproc import HOT_ACCOUNT, audit_clean, open_store
from paycore.tools.bench.report import BenchReport, ScenarioResult
from paycore.tools.bench.rss import RssSampler
from paycore.tools.bench.workers import wait_workers
from paycore.tools.loadgen import LoadResult, RawHttpClient

__all__ = ["http_part", "serve_and_load"]


async def wait_ready(url: str, server: subprocess.Popen[bytes], within: float = 30.0) -> None:
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


def http_part(
    data_dir: Path, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    env = {
        **os.environ,
        "PAYCORE_SYNCHRONOUS": o["synchronous"],
        "PAYCORE_EMBEDDED_SHARDS": str(o["shards"]),
    }
    serve_and_load(
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


def serve_and_load(
    where: list[str],
    o: dict[str, Any],
    report: BenchReport,
    console: Console,
    status: Any,
    *,
    env: dict[str, str],
    log_path: Path,
    scenarios: tuple[tuple[str, bool], ...],
    workers: int = 1,
) -> None:
    """Start ``paycore serve`` (``where``: its ``--data-dir`` or ``--config``; ``workers``
    processes, each answering before the load starts), drive each scenario at it from the
    load generator's process, sample its RSS (with several workers: the first worker's),
    stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # --open: the load generator carries no API key; the server listens on 127.0.0.1
    # only, for the length of the run. (A key check is one cached dict lookup and a
    # SHA-256 per request.)
    serve = [
        sys.executable, "-m", "paycore.cli", "serve", *where, "--open",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    if workers > 1:
        serve += ["--workers", str(workers)]
    # The load generator is one caller asking thousands of times a second: measure the
    # ledger, not the per-caller rate limit.
    env = {**env, "PAYCORE_RATE_LIMIT_PER_SECOND": "0"}
    with serving(serve, env, log_path, url) as server:
        measured = server.pid
        if workers > 1:
            measured = wait_workers(server.pid, workers, port)[0]
            console.print(f"paycore serve: {workers} worker processes answer; RSS of one of them")
        with RssSampler(measured) as rss:
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
    if server.returncode not in (0, -15):
        console.print(f"[red]paycore serve exited with {server.returncode}[/]; see {log_path}")
        console.print(log_path.read_text(errors="replace")[-2000:])


@contextlib.contextmanager
def serving(
    serve: list[str], env: dict[str, str], log_path: Path, url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The ``paycore serve`` command ``serve`` running, its output in ``log_path``, once it
    answers at ``url``; stopped at the end (SIGTERM, SIGKILL after 15 s)."""
    with log_path.open("wb") as log:
        server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    try:
        asyncio.run(wait_ready(url, server))
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def _audit_dir(data_dir: Path, o: dict[str, Any], console: Console) -> bool:
    store = open_store(data_dir, o)
    await store.start()
    try:
        return await audit_clean(store, console, "HTTP")
    finally:
        await store.stop()


def _load(url: str, name: str, o: dict[str, Any], *, hot: bool) -> ScenarioResult:
    cmd = [
        sys.executable, "-m", "paycore.tools.loadgen", "--url", url,
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
    return load_scenario(name, load, errors=load.requests - load.ok + sum(load.errors.values()))


def load_scenario(name: str, load: LoadResult, *, errors: int, **detail: Any) -> ScenarioResult:
    """The row of a load generator's run: its requests' rate and latency, ``errors``, and
    its clients, statuses and exceptions followed by ``detail``."""
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
        detail={
            "clients": load.clients,
            "statuses": load.statuses,
            "exceptions": load.errors,
            **detail,
        },
    )
