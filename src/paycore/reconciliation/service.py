"""Importing a settlement report, the exception queue and the drift check (the I/O).

``import_report`` runs, in order, steps that are each safe to repeat:

1. parse the report (``ReportError``: nothing is changed); a batch recorded before with
   the same text is answered at once (``already_imported``), with another text refused;
2. read what paycore expects (every shard's approved captures and refunds through the
   processor) and what earlier reports settled, and match (``match.match_report``);
3. create the chart's accounts (again: no-op) and book each currency's legs as one
   linked chain with ids derived from the report (again: the ledger answers the
   transfers it holds, nothing moves twice);
4. record the report, its settled references and its exceptions in one transaction.

A crash between 3 and 4 leaves the bookings and no record: a rerun matches the same
way (nothing of this batch is recorded), books nothing new and records it.

Steps 2-4 of two imports of one processor must not interleave: both would read the
settled references before either records its own, so a reference in both reports would
be settled (and its ``psp:`` leg booked) twice. Given the node's lock service, an import
runs them holding ``recon:import:<processor>`` (waiting ``lock_wait`` seconds for
another import to finish, else ``import_in_progress``). The lock guards the imports
that share its service: every node of a cluster (Redis or PostgreSQL locks), or one
process in the embedded mode (in-process locks).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from paycore.config import ReconciliationConfig
from paycore.errors import ErrorCode
from paycore.locks import LockBusy, LockService
from paycore.payments.accounts import is_processor_name, parse_psp
from paycore.reconciliation.book import account_requests, chain
from paycore.reconciliation.match import (
    Exception_,
    Expected,
    Outcome,
    Rules,
    exception_id,
    match_report,
)
from paycore.reconciliation.parse import Report, parse_report
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.reconciliation import (
    ExceptionRow,
    RecordReport,
    ReportRow,
    ResolveException,
    SettledRow,
)
from paycore.storage.store import ShardStore, Store

__all__ = [
    "IMPORT_LOCK_SECONDS",
    "Drift",
    "ImportResult",
    "ReconciliationError",
    "drift",
    "drift_of",
    "import_lock_name",
    "import_report",
    "list_exceptions",
    "open_exception",
    "resolution",
    "resolve_exception",
    "rules_for",
]

# The TTL of an import's lock, renewed every third of it while the import runs.
IMPORT_LOCK_SECONDS = 30.0


class ReconciliationError(RuntimeError):
    """An import that cannot go on (``code``: ``invalid_processor``, ``report_conflict``,
    ``booking_refused``, ``import_in_progress``); nothing was recorded."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ImportResult:
    batch_id: str
    already_imported: bool
    lines: int
    matched: int
    exceptions: dict[str, int]  # reason -> count
    transfers: int  # ledger transfers of the bookings (existing ones included)


def rules_for(config: ReconciliationConfig, processor: str) -> Rules:
    """The matching rules of ``processor`` from the settings' ``[reconciliation]``."""
    return Rules(tolerance=config.tolerance(processor), grace_days=config.grace_days)


def import_lock_name(processor: str) -> str:
    return f"recon:import:{processor}"


async def import_report(
    store: Store,
    processor: str,
    text: str,
    *,
    rules: Rules = Rules(),  # noqa: B008 - frozen
    locks: LockService | None = None,
    lock_wait: float = 30.0,
    clock: Callable[[], int] | None = None,
    after_booking: Callable[[], None] | None = None,
) -> ImportResult:
    """Reconcile ``text`` (a settlement report of ``processor``); see the module docstring.

    ``locks``: the service whose lock keeps two imports of ``processor`` apart (None:
    the caller guarantees it runs alone). ``after_booking`` runs between the bookings
    and the record (tests: a crash there)."""
    if not is_processor_name(processor):
        raise ReconciliationError(
            "invalid_processor", f"processor {processor!r}: 1-24 chars of [A-Za-z0-9_-]"
        )
    report = parse_report(text)  # a bad report is refused before waiting for anything

    async def run() -> ImportResult:
        return await _import(
            store, processor, text, report, rules=rules, clock=clock, after_booking=after_booking
        )

    if locks is None:
        return await run()
    try:
        async with locks.hold(import_lock_name(processor), IMPORT_LOCK_SECONDS, wait=lock_wait):
            return await run()
    except LockBusy:
        raise ReconciliationError(
            "import_in_progress",
            f"another import of {processor}'s reports is running; retry when it is done",
        ) from None


async def _import(
    store: Store,
    processor: str,
    text: str,
    report: Report,
    *,
    rules: Rules,
    clock: Callable[[], int] | None,
    after_booking: Callable[[], None] | None,
) -> ImportResult:
    digest = hashlib.sha256(text.encode()).hexdigest()
    reads = store.key_store.reconciliation
    known = await reads.report(processor, report.batch_id)
    if known is not None:
        if known.digest != digest:
            raise ReconciliationError(
                "report_conflict",
                f"batch {report.batch_id} of {processor} was imported with other content",
            )
        return ImportResult(report.batch_id, True, known.lines, known.matched, {}, 0)
    expected = await _expected(store.shard_stores, processor)
    settled = await reads.settled(processor)
    outcome = match_report(report, expected, settled, rules)
    transfers = await _book(store, processor, report, outcome)
    if after_booking is not None:
        after_booking()
    now = (clock or _now_ns)()
    record = _record(processor, report, digest, outcome, now)
    await store.execute(record)
    counts: dict[str, int] = {}
    for exc in outcome.exceptions:
        counts[exc.reason.value] = counts.get(exc.reason.value, 0) + 1
    return ImportResult(
        report.batch_id, False, len(report.lines), len(outcome.matched), counts, transfers
    )


async def _expected(
    shards: Mapping[str, ShardStore], processor: str, *, payouts: bool = False
) -> dict[str, Expected]:
    """Our approved captures and refunds (and payouts: ``payouts``) by reference."""
    expected: dict[str, Expected] = {}
    for home, shard in shards.items():
        for row in await shard.reconciliation.settleable(processor):
            if row.kind == "payout" and not payouts:
                continue
            day = datetime.fromtimestamp(row.created_at / 1e9, UTC).date()
            expected[row.reference] = Expected(
                row.reference, row.kind, row.amount, row.currency, home, day
            )
    return expected


async def _book(store: Store, processor: str, report: Report, outcome: Outcome) -> int:
    currencies = sorted(outcome.legs)
    if not currencies:
        return 0
    await store.execute(CreateAccounts(account_requests(processor, *currencies)))
    count = 0
    for currency in currencies:
        legs = outcome.legs[currency]
        if not legs.balanced:  # match_report builds them balanced: a bug if not
            raise AssertionError(f"unbalanced legs for {currency}: {legs}")
        items = chain(processor, report.batch_id, currency, legs)
        if not items:
            continue
        results = await store.execute(CreateTransfers(tuple(items), internal=True))
        refused = [r for r in results if not r.ok]
        if refused:
            first = refused[0]
            code = first.code.value if isinstance(first.code, ErrorCode) else str(first.code)
            raise ReconciliationError(
                "booking_refused",
                f"the bookings of {report.batch_id} in {currency} were refused: "
                f"{first.id}: {code} {first.detail}",
            )
        count += len(items)
    return count


def _record(
    processor: str, report: Report, digest: str, outcome: Outcome, now: int
) -> RecordReport:
    row = ReportRow(
        processor,
        report.batch_id,
        digest,
        report.settlement_date.isoformat(),
        report.payout_date.isoformat(),
        len(report.lines),
        len(outcome.matched),
        len(outcome.exceptions),
        now,
    )
    settled = tuple(
        SettledRow(processor, m.reference, report.batch_id, m.amount) for m in outcome.matched
    )
    exceptions = tuple(
        open_exception(processor, report.batch_id, e, now) for e in outcome.exceptions
    )
    return RecordReport(row, settled, exceptions)


def open_exception(processor: str, batch_id: str, e: Exception_, now: int) -> ExceptionRow:
    """The row of an exception the match found in ``processor``'s batch: open since ``now``."""
    return ExceptionRow(
        exception_id(processor, batch_id, e),
        processor,
        batch_id,
        e.reason.value,
        e.reference,
        e.line_no,
        e.currency,
        e.expected,
        e.reported,
        e.detail,
        "open",
        None,
        now,
        None,
    )


async def list_exceptions(
    store: Store, processor: str, *, status: str | None = "open", limit: int = 1000
) -> list[ExceptionRow]:
    return await store.key_store.reconciliation.exceptions(processor, status=status, limit=limit)


async def resolve_exception(
    store: Store, exception_id: str, note: str, *, clock: Callable[[], int] | None = None
) -> ExceptionRow | None:
    """Resolve an open exception with ``note``; None: no such exception. A resolved one
    is answered as it is (its first note kept)."""
    result: ExceptionRow | None = await store.execute(resolution(exception_id, note, clock=clock))
    return result


def resolution(
    exception_id: str, note: str, *, clock: Callable[[], int] | None = None
) -> ResolveException:
    """The command resolving ``exception_id`` with ``note`` (its result: the row, or None
    for no such exception), for a caller that runs it itself (under an Idempotency-Key)."""
    if not note.strip():
        raise ValueError("a note is required")
    return ResolveException(exception_id, note, (clock or _now_ns)())


@dataclass(frozen=True, slots=True)
class Drift:
    """One processor and currency: the ``psp:`` accounts' balance (what it owes us, summed
    over shards: posted debits less credits) against our captures less refunds that no
    report settled yet, less our payouts through it (never in a settlement report)."""

    processor: str
    currency: str
    psp_balance: int
    unsettled: int

    @property
    def drift(self) -> int:
        return self.psp_balance - self.unsettled


async def drift(store: Store) -> list[Drift]:
    """The drift of every processor and currency with a ``psp:`` account."""
    return await drift_of(store.shard_stores, store.key_store)


async def drift_of(shards: Mapping[str, ShardStore], key: ShardStore) -> list[Drift]:
    """``drift`` over shard stores opened one by one (``paycore audit``); ``key``: the
    shard that keeps the reconciliation's rows (the first)."""
    balances: dict[tuple[str, str], int] = {}
    for home, shard in shards.items():
        for account, debits, credits in await shard.reconciliation.psp_balances():
            parsed = parse_psp(account)
            if parsed is not None and parsed[0] == home:
                pair = (parsed[1], parsed[2])
                balances[pair] = balances.get(pair, 0) + debits - credits
    unsettled: dict[tuple[str, str], int] = {}
    for processor in sorted({p for p, _ in balances}):
        settled = await key.reconciliation.settled(processor)
        for ours in (await _expected(shards, processor, payouts=True)).values():
            if ours.reference not in settled:
                pair = (processor, ours.currency)
                signed = ours.amount if ours.kind == "capture" else -ours.amount
                unsettled[pair] = unsettled.get(pair, 0) + signed
    return [
        Drift(processor, currency, balance, unsettled.get((processor, currency), 0))
        for (processor, currency), balance in sorted(balances.items())
    ]


def _now_ns() -> int:
    return time.time_ns()
