"""In-process scenarios: batches of transfers through ``store.execute(CreateTransfers)``,
placed within one shard or across two, on a ledger the bench creates and audits."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.ops.audit import ClusterAuditReport, audit_cluster
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.tools.bench.report import BenchReport, ScenarioResult, trend
from paycore.tools.bench.rss import read_rss, rss_since
from paycore.tools.loadgen import latency_summary
from paycore.workers.relay import RelayWorker

__all__ = [
    "CURRENCY",
    "HOT_ACCOUNT",
    "Placement",
    "account_id",
    "audit_clean",
    "batches_for",
    "copy_ledger",
    "create_accounts",
    "inproc_part",
    "inproc_scenario",
    "inproc_scenarios",
    "open_store",
]


HOT_ACCOUNT = "merchant"


CURRENCY = "USD"


def account_id(i: int) -> str:
    return f"acct-{i}"


def copy_ledger(source: Path, target: Path) -> None:
    """Copy a closed ledger (the store checkpoints its WAL into the file on stop)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("shard-*.sqlite3*"):
        shutil.copy2(path, target / path.name)


def open_store(data_dir: Path, o: dict[str, Any]) -> ShardedStore:
    """The embedded store the bench measures: ``--shards`` SQLite files, via the factory."""
    settings = Settings(
        data_dir=str(data_dir), synchronous=o["synchronous"], embedded_shards=o["shards"]
    )
    return build_store(settings)


async def create_accounts(data_dir: Path, o: dict[str, Any]) -> None:
    store = open_store(data_dir, o)
    await store.start()
    try:
        n, size = o["accounts"], 8189
        for start in range(0, n, size):
            requests = tuple(
                AccountRequest(account_id(i), CURRENCY) for i in range(start, min(n, start + size))
            )
            await store.execute(CreateAccounts(requests))
        await store.execute(CreateAccounts((AccountRequest(HOT_ACCOUNT, CURRENCY),)))
    finally:
        await store.stop()


class Placement:
    """Which shard each bench account lives on, for the local and cross-shard workloads."""

    def __init__(self, store: ShardedStore, accounts: int) -> None:
        names = list(store.shards)
        index = {name: i for i, name in enumerate(names)}
        self.shard_of = bytearray(index[store.shard_for(account_id(i))] for i in range(accounts))
        self.members: list[list[int]] = [[] for _ in names]
        for i, shard in enumerate(self.shard_of):
            self.members[shard].append(i)
        # Debit accounts that have a partner on their own shard / on another shard.
        self.local_debits = [i for i in range(accounts) if len(self.members[self.shard_of[i]]) > 1]
        self.cross_debits = [
            i for i in range(accounts) if len(self.members[self.shard_of[i]]) < accounts
        ]


def batches_for(
    prefix: str,
    o: dict[str, Any],
    *,
    mode: str,
    seed: int,
    placement: Placement | None = None,
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
                    TransferRequest(f"{prefix}-{start + j}", account_id(d), HOT_ACCOUNT, a)
                    for j, (d, a) in enumerate(zip(debits, amount, strict=True))
                )
            )
        else:
            offs = rnd.choices(offsets, k=k)
            yield CreateTransfers(
                tuple(
                    TransferRequest(
                        f"{prefix}-{start + j}", account_id(d), account_id((d + f) % n), a
                    )
                    for j, (d, f, a) in enumerate(zip(debits, offs, amount, strict=True))
                )
            )


def _placed(
    prefix: str, start: int, k: int, *, mode: str, placement: Placement, rnd: random.Random
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
                f"{prefix}-{start + j}", account_id(d), account_id(c), rnd.randint(1, 1000)
            )
        )
    return tuple(requests)


_SEED_OFFSET = {"uniform": 0, "hot": 1, "local": 2, "cross": 3}


async def inproc_scenario(
    store: ShardedStore,
    name: str,
    o: dict[str, Any],
    *,
    mode: str,
    placement: Placement | None = None,
    seed: int | None = None,
) -> ScenarioResult:
    """Batches through ``store.execute``; a cross-shard transfer counts once settled (the
    relay is drained before the clock stops), and in ``cross`` mode only the settled
    sagas are counted."""
    if seed is None:
        seed = o["seed"] + _SEED_OFFSET[mode]
    batches = batches_for(name, o, mode=mode, seed=seed, placement=placement)
    latencies: list[float] = []
    finished: list[tuple[float, int]] = []  # (completion time, cumulative transfers)
    ok = errors = answered_settled = 0

    async def worker() -> None:
        nonlocal ok, errors, answered_settled
        for batch in batches:  # a shared iterator: each batch is taken by one worker
            t0 = time.perf_counter()
            results = await store.execute(batch)
            latencies.append(time.perf_counter() - t0)
            for r in results:
                if r.ok:
                    ok += 1
                    answered_settled += not r.in_flight  # the request drove its saga
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
    # Sagas settled by their own request, plus those a fault left to the relay.
    settled = (answered_settled if mode == "cross" else 0) + relay.settlement.completed
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
        detail.update(decile_rates(finished, start))
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


def decile_rates(finished: list[tuple[float, int]], start: float) -> dict[str, list[float]]:
    """The rate in each tenth of the batches (by completion) and the transfers written
    by the end of it: how the cost per transfer moves as the ledger grows. ``finished``
    holds (completion time, cumulative transfers), 20 batches or more."""
    rates: list[float] = []
    written: list[float] = []
    t_prev, n_prev = start, 0
    for k in range(1, 11):
        t_k, n_k = finished[round(k * len(finished) / 10) - 1]
        rates.append((n_k - n_prev) / (t_k - t_prev) if t_k > t_prev else 0.0)
        written.append(float(n_k))
        t_prev, n_prev = t_k, n_k
    return {"rate_per_decile": rates, "transfers_at_decile": written}


def inproc_scenarios(
    store: ShardedStore, o: dict[str, Any], prefix: str
) -> tuple[list[tuple[str, str]], Placement | None, str | None]:
    """The in-process rows to run on ``store`` (``prefix``-uniform and -hot; over several
    shards with accounts to pair, -local and -cross too), the placement they use, and why
    no -cross row runs (None when one does)."""
    scenarios = [(f"{prefix}-uniform", "uniform"), (f"{prefix}-hot", "hot")]
    if len(store.shards) <= 1:
        return scenarios, None, "one shard: no transfer crosses shards (give 2 or more shards)"
    # Within one shard and across two: what a saga costs beside a local transfer.
    placement = Placement(store, o["accounts"])
    if not (placement.local_debits and placement.cross_debits):
        return scenarios, placement, "too few accounts to pair per shard"
    scenarios += [(f"{prefix}-local", "local"), (f"{prefix}-cross", "cross")]
    return scenarios, placement, None


async def inproc_part(
    data_dir: Path, o: dict[str, Any], report: BenchReport, console: Console
) -> None:
    store = open_store(data_dir, o)
    await store.start()
    try:
        rss_before = read_rss(os.getpid())
        scenarios, placement, _ = inproc_scenarios(store, o, "inproc")
        for name, mode in scenarios:
            result = await inproc_scenario(store, name, o, mode=mode, placement=placement)
            report.results.append(result)
            console.print(
                f"{name}: {result.transfers:,} transfers in {result.seconds:.2f}s = "
                f"[bold]{result.rate_per_s:,.0f}/s[/], batch p50 {result.p50_ms:.0f} ms, "
                f"p99 {result.p99_ms:.0f} ms" + trend(result)
            )
        report.inproc_rss_mb = rss_since(rss_before)
        if o["audit"]:
            report.audits["inproc"] = await audit_clean(store, console, "in-process")
    finally:
        await store.stop()


async def audit_clean(store: ShardedStore, console: Console, label: str) -> bool:
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
