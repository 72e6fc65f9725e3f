"""What reconciling a large settlement report costs: time and peak memory per stage.

``python -m paycore.tools.bench.reconcile`` makes ``--lines`` (10^6) captures and refunds
over ``--shards`` shards, renders the simulator's report of them with seeded anomalies
(``--anomalies`` rate each: missing, duplicate, amount difference, chargeback, late),
then times each stage of an import:

* render: the simulator's CSV (``settlement_report``);
* parse: strict parsing (``parse_report``);
* match: every line against paycore's expected captures (``match_report``);
* book: the linked chains of the bookings (``book.chain``), per currency;
* record (``--store``): the ``RecordReport`` write of the settled references and the
  exceptions into a fresh embedded SQLite store, in one transaction.

It prints seconds, lines per second and the process's peak resident memory after each
stage (``ru_maxrss``: it only grows). Numbers, not assertions: the tests never time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.payments.processors.simulator.settlement import (
    SettledItem,
    SettlementAnomalies,
    settlement_report,
)
from paycore.reconciliation.book import chain
from paycore.reconciliation.match import Expected, Outcome, Rules, match_report
from paycore.reconciliation.parse import parse_report
from paycore.reconciliation.service import open_exception
from paycore.storage.reconciliation import RecordReport, ReportRow, SettledRow

__all__ = ["main"]

T = TypeVar("T")
DAY = date(2026, 12, 7)
CURRENCIES = ("EUR", "USD", "JPY")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _stage(name: str, lines: int, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    took = time.perf_counter() - started
    rate = lines / took if took > 0 else float("inf")
    sys.stdout.write(
        f"{name:<8} {took:8.2f} s  {rate:12,.0f} lines/s  peak RSS {_peak_mb():8.0f} MB\n"
    )
    sys.stdout.flush()
    return result


def _corpus(lines: int, shards: int) -> tuple[list[SettledItem], dict[str, Expected]]:
    items: list[SettledItem] = []
    expected: dict[str, Expected] = {}
    for i in range(lines):
        kind = "refund" if i % 10 == 9 else "capture"
        currency = CURRENCIES[i % len(CURRENCIES)]
        reference = f"pay_{i:024x}.{kind[0]}1"
        amount = 100 + (i * 7919) % 1_000_000
        items.append(SettledItem(kind, reference, f"sim_{i:010d}", currency, amount))
        expected[reference] = Expected(
            reference, kind, amount, currency, f"shard-{i % shards}", DAY
        )
    return items, expected


def _record(processor: str, batch: str, outcome: Outcome, text: str) -> RecordReport:
    digest = hashlib.sha256(text.encode()).hexdigest()
    row = ReportRow(processor, batch, digest, DAY.isoformat(), DAY.isoformat(), 0, 0, 0, 0)
    settled = tuple(SettledRow(processor, m.reference, batch, m.amount) for m in outcome.matched)
    exceptions = tuple(open_exception(processor, batch, e, 0) for e in outcome.exceptions)
    return RecordReport(row, settled, exceptions)


async def _write(record: RecordReport) -> None:
    with tempfile.TemporaryDirectory(prefix="paycore-bench-recon-") as data_dir:
        store = build_store(Settings(data_dir=data_dir, embedded_shards=1))
        await store.start()
        try:
            await store.execute(record)
        finally:
            await store.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paycore.tools.bench.reconcile",
        description="Time and peak memory of reconciling a settlement report of N lines.",
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="captures/refunds (10^6)")
    parser.add_argument("--shards", type=int, default=4, help="shards the captures are on (4)")
    parser.add_argument("--anomalies", type=float, default=0.01, help="rate of each anomaly (0.01)")
    parser.add_argument("--seed", type=int, default=1, help="anomalies' seed (1)")
    parser.add_argument(
        "--store", action="store_true", help="also write the record into a SQLite store"
    )
    args = parser.parse_args(argv)
    rate = args.anomalies
    anomalies = SettlementAnomalies(
        seed=args.seed,
        missing=rate,
        duplicate=rate,
        amount_difference=rate,
        chargeback=rate,
        late=rate,
        unknown=int(args.lines * rate),
    )
    n = args.lines
    sys.stdout.write(f"reconcile bench: {n:,} captures/refunds, anomalies {rate:.2%} each\n")
    items, expected = _stage("corpus", n, lambda: _corpus(n, args.shards))
    report = _stage("render", n, lambda: settlement_report("sim", DAY, items, (), anomalies))
    text = report.text
    sys.stdout.write(f"report: {len(text) / 1e6:.1f} MB of CSV\n")
    parsed = _stage("parse", n, lambda: parse_report(text))
    rules = Rules(grace_days=0)  # missing and late lines show as missing_in_report
    outcome = _stage("match", n, lambda: match_report(parsed, expected, {}, rules))
    chains = _stage(
        "book",
        n,
        lambda: [chain("sim", parsed.batch_id, c, legs) for c, legs in outcome.legs.items()],
    )
    reasons: dict[str, int] = {}
    for exc in outcome.exceptions:
        reasons[exc.reason.value] = reasons.get(exc.reason.value, 0) + 1
    sys.stdout.write(
        f"lines {len(parsed.lines):,}, matched {len(outcome.matched):,}, "
        f"exceptions {reasons}, transfers {sum(len(c) for c in chains)}\n"
    )
    if args.store:
        record = _record("sim", parsed.batch_id, outcome, text)
        _stage("record", n, lambda: asyncio.run(_write(record)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
