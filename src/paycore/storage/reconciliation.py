"""Reconciliation in storage (migration 0020): imported settlement reports, the
references they settled, and the exception queue (``paycore.reconciliation``).

Like FX quotes, every row lives on one shard (a cluster's first, the key shard). A
report is recorded once, with what it settled and the exceptions it raised, in one
transaction (``RecordReport``): inserting again changes nothing (``ON CONFLICT DO
NOTHING``), so a rerun of an interrupted import finishes it. An exception is resolved
once, by an operator, with a note (``ResolveException``).

``ReconciliationReads.settleable`` reads any shard: the approved captures (an
authorization captured at once included), refunds and payouts of a processor, by our
reference; ``psp_balances`` the posted counters of its ``psp:`` accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from paycore.storage.base import Fetch

__all__ = [
    "ExceptionRow",
    "ReconciliationCommand",
    "ReconciliationReads",
    "RecordReport",
    "ReportRow",
    "ResolveException",
    "SettleableRow",
    "SettledRow",
    "apply_reconciliation_command",
]


class ReportRow(msgspec.Struct, frozen=True):
    """One imported report (field order = column order); ``digest``: SHA-256 of its text."""

    processor: str
    batch_id: str
    digest: str
    settlement_date: str
    payout_date: str
    lines: int
    matched: int
    exceptions: int
    imported_at: int


class SettledRow(msgspec.Struct, frozen=True):
    """A reference a report settled (a capture or refund matched 1:1)."""

    processor: str
    reference: str
    batch_id: str
    amount: int


class ExceptionRow(msgspec.Struct, frozen=True):
    """One entry of the exception queue; ``status``: ``open`` or ``resolved``."""

    id: str
    processor: str
    batch_id: str
    reason: str
    reference: str
    line_no: int
    currency: str
    expected_amount: int | None
    reported_amount: int | None
    detail: str
    status: str
    note: str | None
    created_at: int
    resolved_at: int | None


class SettleableRow(msgspec.Struct, frozen=True):
    """An approved capture, refund or payout of paycore's (reports settle the first two;
    the drift check counts all three)."""

    reference: str
    kind: str  # capture | refund | payout
    amount: int
    currency: str
    created_at: int


def _cols(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(cls))


def _insert(table: str, cls: type[msgspec.Struct]) -> str:
    cols = _cols(cls)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        "ON CONFLICT DO NOTHING"
    )


_EXC_COLS = _cols(ExceptionRow)
_SELECT_EXC = f"SELECT {', '.join(_EXC_COLS)} FROM reconciliation_exceptions"


class RecordReport(msgspec.Struct, frozen=True):
    """Record an imported report, its settled references and exceptions; result: True if
    the report is new here (False: it was recorded before, nothing changed). A missing
    reference now settled closes its ``missing_in_report`` exception."""

    report: ReportRow
    settled: tuple[SettledRow, ...] = ()
    exceptions: tuple[ExceptionRow, ...] = ()


class ResolveException(msgspec.Struct, frozen=True):
    """Resolve an open exception with an operator's note; result: the row, or None."""

    id: str
    note: str
    at: int


ReconciliationCommand = RecordReport | ResolveException


class _Sql(Protocol):
    def run_sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


def apply_reconciliation_command(tx: _Sql, command: ReconciliationCommand) -> Any:
    """Run a reconciliation command in the writer's transaction."""
    if isinstance(command, ResolveException):
        rows = tx.run_sql(f"{_SELECT_EXC} WHERE id = ?", (command.id,))
        if not rows:
            return None
        row = ExceptionRow(*rows[0])
        if row.status != "open":
            return row
        tx.run_sql(
            "UPDATE reconciliation_exceptions SET status = 'resolved', note = ?, "
            "resolved_at = ? WHERE id = ?",
            (command.note, command.at, command.id),
        )
        return msgspec.structs.replace(
            row, status="resolved", note=command.note, resolved_at=command.at
        )
    report = command.report
    found = tx.run_sql(
        "SELECT 1 FROM reconciliation_reports WHERE processor = ? AND batch_id = ?",
        (report.processor, report.batch_id),
    )
    if found:
        return False
    tx.run_sql(_insert("reconciliation_reports", ReportRow), msgspec.structs.astuple(report))
    insert_settled = _insert("reconciliation_settled", SettledRow)
    for settled in command.settled:
        tx.run_sql(insert_settled, msgspec.structs.astuple(settled))
    insert_exc = _insert("reconciliation_exceptions", ExceptionRow)
    for exc in command.exceptions:
        tx.run_sql(insert_exc, msgspec.structs.astuple(exc))
    missing = tx.run_sql(
        "SELECT id, reference FROM reconciliation_exceptions WHERE processor = ? "
        "AND reason = 'missing_in_report' AND status = 'open'",
        (report.processor,),
    )
    if missing:
        now_settled = {s.reference for s in command.settled}
        for exception_id, reference in missing:
            if reference in now_settled:
                tx.run_sql(
                    "UPDATE reconciliation_exceptions SET status = 'resolved', "
                    "resolved_at = ?, note = ? WHERE id = ?",
                    (report.imported_at, f"settled in {report.batch_id}", exception_id),
                )
    return True


class ReconciliationReads:
    """Reconciliation rows of one shard, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def report(self, processor: str, batch_id: str) -> ReportRow | None:
        rows = await self._fetch(
            f"SELECT {', '.join(_cols(ReportRow))} FROM reconciliation_reports "
            "WHERE processor = ? AND batch_id = ?",
            (processor, batch_id),
        )
        return ReportRow(*rows[0]) if rows else None

    async def settled(self, processor: str) -> dict[str, str]:
        """Every reference of ``processor`` settled so far -> its batch."""
        rows = await self._fetch(
            "SELECT reference, batch_id FROM reconciliation_settled WHERE processor = ?",
            (processor,),
        )
        return {r[0]: r[1] for r in rows}

    async def exception(self, exception_id: str) -> ExceptionRow | None:
        rows = await self._fetch(f"{_SELECT_EXC} WHERE id = ?", (exception_id,))
        return ExceptionRow(*rows[0]) if rows else None

    async def exceptions(
        self, processor: str, *, status: str | None = "open", limit: int = 1000
    ) -> list[ExceptionRow]:
        """``processor``'s exceptions (``status`` None: all), oldest first."""
        where, params = "processor = ?", [processor]
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        rows = await self._fetch(
            f"{_SELECT_EXC} WHERE {where} ORDER BY created_at, id LIMIT ?", (*params, limit)
        )
        return [ExceptionRow(*r) for r in rows]

    async def report_page(
        self,
        processor: str | None,
        *,
        after: tuple[int, str, str] | None,
        limit: int,
        descending: bool = False,
    ) -> list[ReportRow]:
        """Imported reports (of ``processor``; None: every one) by (imported_at,
        processor, batch_id), strictly after the key ``after`` (before, ``descending``)."""
        where, params = _page_where(
            "(imported_at, processor, batch_id)", after, descending, processor
        )
        order = "DESC" if descending else "ASC"
        rows = await self._fetch(
            f"SELECT {', '.join(_cols(ReportRow))} FROM reconciliation_reports{where} "
            f"ORDER BY imported_at {order}, processor {order}, batch_id {order} LIMIT ?",
            (*params, limit),
        )
        return [ReportRow(*r) for r in rows]

    async def exception_page(
        self,
        processor: str | None,
        *,
        status: str | None,
        after: tuple[int, str] | None,
        limit: int,
        descending: bool = False,
    ) -> list[ExceptionRow]:
        """Exceptions (of ``processor``, in ``status``; None: any) by (created_at, id),
        strictly after the key ``after`` (before, ``descending``)."""
        where, params = _page_where("(created_at, id)", after, descending, processor)
        if status is not None:
            where += f"{' AND' if where else ' WHERE'} status = ?"
            params.append(status)
        order = "DESC" if descending else "ASC"
        rows = await self._fetch(
            f"{_SELECT_EXC}{where} ORDER BY created_at {order}, id {order} LIMIT ?",
            (*params, limit),
        )
        return [ExceptionRow(*r) for r in rows]

    async def settleable(self, processor: str) -> list[SettleableRow]:
        """This shard's approved captures and refunds through ``processor``."""
        rows = await self._fetch(
            "SELECT a.reference, a.operation, a.amount, p.currency, a.created_at "
            "FROM payment_attempts a JOIN payments p ON p.id = a.parent_id "
            "WHERE a.processor = ? AND a.outcome = 'approved' AND (a.operation = 'capture' "
            "OR (a.operation = 'authorize' AND p.capture_method = 'automatic')) "
            "UNION ALL "
            "SELECT a.reference, a.operation, a.amount, r.currency, a.created_at "
            "FROM payment_attempts a JOIN refunds r ON r.id = a.parent_id "
            "WHERE a.processor = ? AND a.outcome = 'approved' AND a.operation = 'refund' "
            "UNION ALL "
            "SELECT a.reference, a.operation, a.amount, o.currency, a.created_at "
            "FROM payment_attempts a JOIN payouts o ON o.id = a.parent_id "
            "WHERE a.processor = ? AND a.outcome = 'approved' AND a.operation = 'payout'",
            (processor, processor, processor),
        )
        return [SettleableRow(r[0], _KINDS.get(r[1], "capture"), r[2], r[3], r[4]) for r in rows]

    async def psp_balances(self) -> list[tuple[str, int, int]]:
        """This shard's ``psp:`` accounts: (id, debits_posted, credits_posted)."""
        rows = await self._fetch(
            "SELECT id, debits_posted, credits_posted FROM accounts "
            "WHERE id >= ? AND id < ? ORDER BY id",
            ("psp:", "psp;"),
        )
        return [(r[0], int(r[1]), int(r[2])) for r in rows]


_KINDS = {"refund": "refund", "payout": "payout"}


def _page_where(
    key: str, after: tuple[Any, ...] | None, descending: bool, processor: str | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of a page: its processor, and its key past ``after``."""
    clauses: list[str] = []
    params: list[Any] = []
    if processor is not None:
        clauses.append("processor = ?")
        params.append(processor)
    if after is not None:
        marks = ", ".join("?" * len(after))
        clauses.append(f"{key} {'<' if descending else '>'} ({marks})")
        params.extend(after)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
