"""The payments benchmark: card payments per second through ``paycore serve``.

``paycore bench --only payments`` (and every full SQLite run) starts ``paycore serve`` on
the embedded default (one SQLite shard and the two simulated acquirers inside the
process, answering at once), opens a merchant account, then drives
``POST /v1/payments`` (a card, ``capture: automatic``, a fresh ``Idempotency-Key``
each) from a separate load-generator process (``python -m
paycore.tools.bench.card_payments --url URL --merchant ID``). A payment is counted when
it answers 201 ``succeeded``; any other answer is reported by status. Afterwards the
merchant's balance must equal the sum of what succeeded (read back through the API),
and ``paycore audit`` runs over the data directory. The server's CPU time per payment
is reported too: it moves less than the rate when something else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from paycore.locks.testing import free_port
from paycore.tools.bench.inproc import audit_clean, open_store
from paycore.tools.bench.over_http import load_scenario, serving
from paycore.tools.bench.report import BenchReport
from paycore.tools.loadgen import LoadResult, RawHttpClient

__all__ = [
    "AMOUNT",
    "drive_payments",
    "main",
    "open_merchant",
    "payments_part",
    "succeeded_total",
]

AMOUNT = 1_000  # minor units per payment
CURRENCY = "USD"
# A good test card of the simulated acquirers, valid for a few years from today.
_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": time.gmtime().tm_year + 3,
         "cvc": "123"}  # fmt: skip
_decode = msgspec.json.Decoder(dict[str, Any])


async def open_merchant(url: str) -> str:
    """A fresh merchant account (its id)."""
    merchant = f"bench-merchant-{uuid.uuid4().hex[:12]}"
    client = RawHttpClient.for_url(url)
    try:
        body = msgspec.json.encode({"id": merchant, "currency": CURRENCY})
        response = await client.request("POST", "/v1/accounts", body)
        if response.status != 201:
            raise RuntimeError(f"opening {merchant}: {response.status} {response.body!r}")
    finally:
        await client.close()
    return merchant


async def succeeded_total(url: str, merchant: str) -> int:
    """What the merchant's account holds, read back through the API."""
    client = RawHttpClient.for_url(url)
    try:
        response = await client.request("GET", f"/v1/accounts/{merchant}")
    finally:
        await client.close()
    if response.status != 200:
        raise RuntimeError(f"reading {merchant}: {response.status} {response.body!r}")
    balance = _decode.decode(response.body)["balance"]
    return int(balance["credits_posted"]) - int(balance["debits_posted"])


async def drive_payments(
    url: str, merchant: str, *, clients: int, duration: float, warmup: float = 0.5
) -> LoadResult:
    """``clients`` connections paying ``merchant`` by card for ``warmup + duration``
    seconds; the latter is measured. ``ok`` counts the 201s that say ``succeeded``."""
    connections = [RawHttpClient.for_url(url) for _ in range(clients)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    measured_ok = 0
    run = uuid.uuid4().hex[:8]
    body = msgspec.json.encode(
        {
            "amount": AMOUNT,
            "currency": CURRENCY,
            "merchant_account_id": merchant,
            "capture": "automatic",
            "source": {"card": _CARD},
        }
    )
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def drive(index: int, client: RawHttpClient) -> None:
        nonlocal measured_ok
        seq = 0
        while (now := time.perf_counter()) < stop_at:
            seq += 1
            key = {"Idempotency-Key": f"pay-{run}-{index}-{seq}"}
            try:
                response = await client.request("POST", "/v1/payments", body, key)
            except Exception as exc:  # noqa: BLE001 - counted, reported, never fatal
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            label = str(response.status)
            if response.status == 201:
                label += " " + str(_decode.decode(response.body).get("status"))
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)
                measured_ok += label == "201 succeeded"
            statuses[label] = statuses.get(label, 0) + 1

    try:
        await asyncio.gather(*(drive(i, c) for i, c in enumerate(connections)))
    finally:
        for client in connections:
            await client.close()
    measured = time.perf_counter() - measure_from
    # Every answer counts in ``statuses`` (the warm-up's too, so that the merchant's
    # balance can be checked against them); the rate counts the measured part only.
    return LoadResult.of(
        "raw",
        clients,
        seconds=measured,
        latencies=latencies,
        ok=measured_ok,
        statuses=statuses,
        errors=errors,
    )


def run_driver(url: str, merchant: str, *, clients: int, duration: float) -> LoadResult:
    """Run the driver in its own process (it would steal the server's CPU otherwise)."""
    cmd = [
        sys.executable, "-m", "paycore.tools.bench.card_payments", "--url", url,
        "--merchant", merchant, "--clients", str(clients), "--duration", str(duration),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, check=False, timeout=duration + 120)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"payments driver failed: {done.stderr.decode(errors='replace')}")
    return msgspec.json.decode(done.stdout.splitlines()[-1], type=LoadResult)


def payments_part(
    data_dir: Path, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    """Card payments through ``paycore serve`` on the embedded default (see
    the module docstring); the merchant's balance must match what succeeded."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [
        sys.executable, "-m", "paycore.cli", "serve", "--data-dir", str(data_dir), "--open",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PAYCORE_SYNCHRONOUS": o["synchronous"],
        "PAYCORE_EMBEDDED_SHARDS": str(o["shards"]),
        "PAYCORE_RATE_LIMIT_PER_SECOND": "0",
    }
    log_path = data_dir.parent / "serve-payments.log"
    with serving(serve, env, log_path, url) as server:
        merchant = asyncio.run(open_merchant(url))
        status.update(f"payments: {o['clients']} clients for {o['duration']:g}s...")
        cpu_before = _cpu_seconds(server.pid)
        load = run_driver(url, merchant, clients=o["clients"], duration=o["duration"])
        cpu = _cpu_seconds(server.pid) - cpu_before
        held = asyncio.run(succeeded_total(url, merchant))
    succeeded = load.statuses.get("201 succeeded", 0)
    # CPU per payment is what a busy machine changes least (the rate moves with the load
    # generator and anything else running); it counts the warm-up's payments too.
    cpu_ms = 1000.0 * cpu / succeeded if succeeded else 0.0
    # Anything but a success is an error here: the cards are good and the acquirers up.
    errors = sum(n for label, n in load.statuses.items() if label != "201 succeeded")
    errors += sum(load.errors.values())
    result = load_scenario(
        "http-payments", load, errors=errors, server_cpu_ms_per_payment=round(cpu_ms, 3)
    )
    report.results.append(result)
    console.print(
        f"http-payments: {load.ok:,} card payments succeeded in {load.duration_s:.2f}s = "
        f"[bold]{load.rate_per_s:,.0f}/s[/], p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
        f"server CPU {cpu_ms:.2f} ms per payment" + (f", [red]{errors} errors[/]" if errors else "")
    )
    expected = succeeded * AMOUNT
    report.audits["payments-merchant"] = held == expected
    mark = "[green]matches[/]" if held == expected else "[red]DIFFERS[/]"
    console.print(f"merchant balance {held:,} {mark} {succeeded:,} succeeded payments x {AMOUNT:,}")
    if o["audit"]:
        store = open_store(data_dir, o)

        async def audited() -> bool:
            await store.start()
            try:
                return await audit_clean(store, console, "payments")
            finally:
                await store.stop()

        report.audits["payments"] = asyncio.run(audited())


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paycore.tools.bench.card_payments", description=__doc__
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--merchant", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = asyncio.run(
        drive_payments(args.url, args.merchant, clients=args.clients, duration=args.duration)
    )
    sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
