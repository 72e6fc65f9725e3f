"""Request and response bodies of ``/v1/reconciliation`` (``paycore.api.routes.reconciliation``)."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

from paycore.api.listing import decode_opaque_cursor, encode_opaque_cursor
from paycore.api.schemas import rfc3339
from paycore.reconciliation import ImportResult
from paycore.storage.reconciliation import ExceptionRow, ReportRow

__all__ = [
    "EXCEPTION_ID_PATTERN",
    "PROCESSOR_PATTERN",
    "ExceptionOut",
    "ExceptionPageOut",
    "ImportOut",
    "ReportIn",
    "ReportOut",
    "ReportPageOut",
    "ResolveIn",
    "decode_report_cursor",
    "encode_report_cursor",
    "exception_out",
    "import_out",
    "report_out",
]

PROCESSOR_PATTERN: Final = r"^[A-Za-z0-9_-]{1,24}$"
EXCEPTION_ID_PATTERN: Final = r"^rx_[0-9a-f]{24}$"
MAX_NOTE_LENGTH: Final = 1000
ProcessorName = Annotated[
    str, Meta(pattern=PROCESSOR_PATTERN, description="A processor's name, as in the settings")
]


class ReportIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A processor's settlement report to import: its CSV text as the processor sent it
    (docs/reconciliation.md); the request body's size is bounded by ``max_body_bytes``."""

    processor: ProcessorName
    report: Annotated[str, Meta(min_length=1, description="The report's CSV text")]


class ResolveIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the operator did or found."""

    note: Annotated[str, Meta(min_length=1, max_length=MAX_NOTE_LENGTH)]

    def __post_init__(self) -> None:
        if not self.note.strip():
            raise ValueError("note must say something")


class ImportOut(msgspec.Struct, frozen=True):
    """An import's outcome. ``already_imported``: the batch was imported before with
    this very text, so nothing was done (its ``exceptions`` and ``transfers`` are then
    empty; the report's own figures are in ``GET /v1/reconciliation/reports``)."""

    processor: str
    batch_id: str
    already_imported: bool
    lines: int
    matched: int
    exceptions: dict[str, int]  # reason -> how many were queued
    transfers: int  # ledger transfers of the bookings


class ReportOut(msgspec.Struct, frozen=True):
    processor: str
    batch_id: str
    settlement_date: str
    payout_date: str
    lines: int
    matched: int
    exceptions: int
    digest: str  # SHA-256 of the report's text
    imported_at: str


class ReportPageOut(msgspec.Struct, frozen=True):
    data: list[ReportOut]
    next_cursor: str | None


class ExceptionOut(msgspec.Struct, frozen=True):
    """One entry of the exception queue (amounts in minor units of ``currency``)."""

    id: str
    processor: str
    batch_id: str
    reason: str
    reference: str | None  # None: not a line's (a batch total)
    line_no: int | None  # None: not a line (a capture missing from every report)
    currency: str
    expected_amount: int | None
    reported_amount: int | None
    detail: str
    status: str  # open | resolved
    note: str | None
    created_at: str
    resolved_at: str | None


class ExceptionPageOut(msgspec.Struct, frozen=True):
    data: list[ExceptionOut]
    next_cursor: str | None


def import_out(processor: str, result: ImportResult) -> ImportOut:
    return ImportOut(
        processor=processor,
        batch_id=result.batch_id,
        already_imported=result.already_imported,
        lines=result.lines,
        matched=result.matched,
        exceptions=dict(sorted(result.exceptions.items())),
        transfers=result.transfers,
    )


def report_out(row: ReportRow) -> ReportOut:
    return ReportOut(
        processor=row.processor,
        batch_id=row.batch_id,
        settlement_date=row.settlement_date,
        payout_date=row.payout_date,
        lines=row.lines,
        matched=row.matched,
        exceptions=row.exceptions,
        digest=row.digest,
        imported_at=rfc3339(row.imported_at),
    )


def exception_out(row: ExceptionRow) -> ExceptionOut:
    return ExceptionOut(
        id=row.id,
        processor=row.processor,
        batch_id=row.batch_id,
        reason=row.reason,
        reference=row.reference or None,
        line_no=row.line_no or None,
        currency=row.currency,
        expected_amount=row.expected_amount,
        reported_amount=row.reported_amount,
        detail=row.detail,
        status=row.status,
        note=row.note,
        created_at=rfc3339(row.created_at),
        resolved_at=None if row.resolved_at is None else rfc3339(row.resolved_at),
    )


# A report's page key is (imported_at, processor, batch_id): a batch id may be longer
# than the list endpoints' cursors take, so these cursors are their own, as opaque.
_ReportKey = tuple[int, str, str]
_report_key = msgspec.json.Decoder(tuple[Annotated[int, Meta(ge=0)], str, str])


def encode_report_cursor(row: ReportRow) -> str:
    return encode_opaque_cursor(msgspec.json.encode((row.imported_at, row.processor, row.batch_id)))


def decode_report_cursor(cursor: str | None) -> _ReportKey | None:
    return None if cursor is None else decode_opaque_cursor(cursor, _report_key.decode)
