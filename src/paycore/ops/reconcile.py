"""``paycore reconcile``: import a processor's settlement report, list and resolve the
exception queue (``paycore.reconciliation``; docs/reconciliation.md).

Each action opens the topology's store, does its work and closes it. Exit codes: 0 done
(exceptions found are not a failure: they are queued), 2 bad input (a report that does
not parse, another text under a batch imported before, another import of the processor
running, an unknown exception), 1 the lock service could not be reached.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.locks import LockError, open_lock_service
from paycore.reconciliation import (
    Drift,
    ImportResult,
    ReconciliationError,
    ReportError,
    Rules,
    import_report,
    list_exceptions,
    resolve_exception,
)
from paycore.storage.reconciliation import ExceptionRow

__all__ = ["print_drift", "run_exceptions", "run_import", "run_resolve"]


async def run_import(
    settings: Settings,
    console: Console,
    processor: str,
    report: Path,
    text: str,
    *,
    rules: Rules,
    json: bool = False,
) -> int:
    """Import ``text``, the report read from the file ``report``, holding the processor's
    import lock in the settings' lock service (``locks_url``)."""
    errors = Console(stderr=True, highlight=False)
    store = build_store(settings)
    await store.start()
    try:
        async with open_lock_service(settings.locks_url) as locks:
            result = await import_report(
                store,
                processor,
                text,
                rules=rules,
                locks=locks,
                lock_wait=settings.reconciliation.lock_wait_seconds,
            )
    except ReportError as exc:
        errors.print(f"[red]error:[/] {exc.code}: {escape(str(report))}: {escape(str(exc))}")
        return 2
    except ReconciliationError as exc:
        errors.print(f"[red]error:[/] {exc.code}: {escape(str(exc))}")
        return 2
    except LockError as exc:  # the lock service is down (or the lease was lost): retry
        errors.print(f"[red]error:[/] {exc.code}: {escape(str(exc))}; run the import again")
        return 1
    finally:
        await store.stop()
    if json:
        console.print_json(msgspec.json.encode(result).decode())
    else:
        _print_import(result, console)
    return 0


def _print_import(result: ImportResult, console: Console) -> None:
    if result.already_imported:
        console.print(
            f"batch [bold]{escape(result.batch_id)}[/] was imported before: nothing to do"
        )
        return
    console.print(
        f"batch [bold]{escape(result.batch_id)}[/]: {result.lines} lines, "
        f"{result.matched} matched, {result.transfers} ledger transfers booked"
    )
    for reason, count in sorted(result.exceptions.items()):
        console.print(f"  exception {reason}: {count}")


async def run_exceptions(
    settings: Settings, console: Console, processor: str, *, everything: bool, json: bool
) -> int:
    store = build_store(settings)
    await store.start()
    try:
        rows = await list_exceptions(store, processor, status=None if everything else "open")
    finally:
        await store.stop()
    if json:
        console.print_json(msgspec.json.encode(rows).decode())
        return 0
    table = Table("id", "reason", "reference", "line", "expected", "reported", "status", "detail")
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table)
    console.print(f"{len(rows)} exception(s) of {escape(processor)}")
    return 0


def _cells(row: ExceptionRow) -> tuple[str, ...]:
    def amount(value: int | None) -> str:
        return "-" if value is None else str(value)

    detail = row.detail if row.note is None else f"{row.detail} [note: {row.note}]"
    return (
        row.id,
        row.reason,
        row.reference,
        str(row.line_no),
        amount(row.expected_amount),
        amount(row.reported_amount),
        row.status,
        escape(detail),
    )


async def run_resolve(settings: Settings, console: Console, exception_id: str, note: str) -> int:
    errors = Console(stderr=True, highlight=False)
    if not note.strip():
        errors.print("[red]error:[/] --note must say something")
        return 2
    store = build_store(settings)
    await store.start()
    try:
        row = await resolve_exception(store, exception_id, note)
    finally:
        await store.stop()
    if row is None:
        errors.print(f"[red]error:[/] no exception {escape(exception_id)!r}")
        return 2
    console.print(f"exception [bold]{row.id}[/] {row.status}: {escape(row.note or '')}")
    return 0


def print_drift(drifts: list[Drift], console: Console) -> None:
    """The audit's drift section: per processor and currency, the psp: balance against
    the unsettled captures less refunds and payouts."""
    if not drifts:
        return
    console.print("processor drift (psp: balance against unsettled captures - refunds):")
    for d in drifts:
        mark = "ok" if d.drift == 0 else "[yellow]DRIFT[/]"
        console.print(
            f"  {escape(d.processor)} {d.currency}: psp {d.psp_balance}, "
            f"unsettled {d.unsettled}, drift {d.drift} {mark}"
        )
