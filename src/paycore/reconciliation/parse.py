"""Strict parsing of a processor's settlement report (CSV; docs/reconciliation.md).

``parse_report(text)`` gives a ``Report`` or raises ``ReportError`` naming the first
bad line: nothing is booked from a report that does not parse. What is refused: another
header; a row with another number of fields; a ``record`` other than ``line`` and
``total``; rows of another batch or dates; an unknown type or currency; a reference
outside ``[A-Za-z0-9_.:-]{1,64}``; an amount that is not an exact decimal with the
currency's exponent (``12.30`` EUR, ``1230`` JPY: never ``12.3``, ``1e3`` or ``12,30``);
a gross not above zero, a negative fee, a net other than the signed gross less the fee;
a currency with lines but no total, or two totals.

Amounts become integers in minor units, exactly (no float on the way).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from typing import Final

import msgspec

from paycore.money import CURRENCY_MINOR_UNITS
from paycore.payments.settlement_format import COLUMNS

__all__ = [
    "COLUMNS",
    "LINE_TYPES",
    "Report",
    "ReportError",
    "ReportLine",
    "ReportTotal",
    "parse_report",
]

LINE_TYPES: Final = frozenset({"capture", "refund", "chargeback"})
# Types and currencies repeat on every line: keep one string object of each.
_SHARED: Final = {s: s for s in (*LINE_TYPES, *CURRENCY_MINOR_UNITS)}
_REFERENCE: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_BATCH: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
_COUNT: Final = re.compile(r"0|[1-9][0-9]{0,11}")
_AMOUNT: Final = {
    digits: re.compile(
        rf"-?(?:0|[1-9][0-9]{{0,14}})\.[0-9]{{{digits}}}" if digits else r"-?(?:0|[1-9][0-9]{0,14})"
    )
    for digits in set(CURRENCY_MINOR_UNITS.values())
}


class ReportError(ValueError):
    """The report is refused (code ``invalid_report``); ``line`` is 1-based (0: the file)."""

    code: Final = "invalid_report"

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


class ReportLine(msgspec.Struct, frozen=True, gc=False):
    """A settled amount: ``gross`` > 0 and ``fee`` >= 0 in minor units; ``net`` signed
    (captures: gross - fee; refunds and chargebacks: -gross - fee)."""

    line_no: int
    type: str
    reference: str
    processor_id: str
    currency: str
    gross: int
    fee: int
    net: int

    @property
    def signed(self) -> int:
        return self.gross if self.type == "capture" else -self.gross


class ReportTotal(msgspec.Struct, frozen=True):
    """The batch total of a currency: ``net`` is what is paid out on ``payout_date``."""

    line_no: int
    currency: str
    count: int
    gross: int
    fee: int
    net: int


class Report(msgspec.Struct, frozen=True):
    batch_id: str
    settlement_date: date
    payout_date: date
    lines: list[ReportLine]
    totals: dict[str, ReportTotal]


def parse_report(text: str) -> Report:
    """The report in ``text``, or ``ReportError`` (see the module docstring)."""
    if "\x00" in text:
        raise ReportError(0, "the report holds a NUL byte")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ReportError(0, "the report is empty")
        if tuple(header) != COLUMNS:
            raise ReportError(1, f"the header must be {','.join(COLUMNS)}")
        head: tuple[str, str, str] | None = None
        lines: list[ReportLine] = []
        totals: dict[str, ReportTotal] = {}
        for row in reader:
            n = reader.line_num
            if len(row) != len(COLUMNS):
                raise ReportError(n, f"{len(row)} fields, {len(COLUMNS)} expected")
            record, batch, settled, payout, kind, ref, pid, cur, count, gross, fee, net = row
            if head is None:
                head = _head(n, batch, settled, payout)
            elif (batch, settled, payout) != head:
                raise ReportError(n, "batch_id and dates must be those of the first row")
            if cur not in CURRENCY_MINOR_UNITS:
                raise ReportError(n, f"unknown currency {cur!r}")
            if record == "line":
                lines.append(_line(n, row))
            elif record == "total":
                if kind or ref or pid:
                    raise ReportError(n, "a total has no type, reference or processor_id")
                if cur in totals:
                    raise ReportError(n, f"a second total for {cur}")
                if not _COUNT.fullmatch(count):
                    raise ReportError(n, f"count {count!r} is not a whole number")
                totals[cur] = ReportTotal(
                    n,
                    cur,
                    int(count),
                    _amount(n, gross, cur),
                    _fee(n, fee, cur),
                    _amount(n, net, cur),
                )
            else:
                raise ReportError(n, f"record {record!r} is neither 'line' nor 'total'")
    except csv.Error as exc:
        raise ReportError(reader.line_num, f"not CSV: {exc}") from None
    if head is None:
        raise ReportError(0, "the report has no rows")
    missing = sorted({line.currency for line in lines} - totals.keys())
    if missing:
        raise ReportError(0, f"no total for {', '.join(missing)}")
    return Report(head[0], date.fromisoformat(head[1]), date.fromisoformat(head[2]), lines, totals)


def _head(n: int, batch: str, settled: str, payout: str) -> tuple[str, str, str]:
    if not _BATCH.fullmatch(batch):
        raise ReportError(n, f"batch_id {batch!r} is not 1-100 chars of [A-Za-z0-9_.:-]")
    days = []
    for name, value in (("settlement_date", settled), ("payout_date", payout)):
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ReportError(n, f"{name} {value!r} is not YYYY-MM-DD")
        try:
            days.append(date.fromisoformat(value))
        except ValueError:
            raise ReportError(n, f"{name} {value!r} is not a date") from None
    if days[1] < days[0]:
        raise ReportError(n, "payout_date is before settlement_date")
    return batch, settled, payout


def _line(n: int, row: list[str]) -> ReportLine:
    _, _, _, _, kind, ref, pid, cur, count, gross, fee, net = row
    kind, cur = _SHARED.get(kind, kind), _SHARED.get(cur, cur)  # one string per value
    if kind not in LINE_TYPES:
        raise ReportError(n, f"type {kind!r} is not one of {', '.join(sorted(LINE_TYPES))}")
    if not _REFERENCE.fullmatch(ref):
        raise ReportError(n, f"reference {ref!r} is not 1-64 chars of [A-Za-z0-9_.:-]")
    if len(pid) > 100:
        raise ReportError(n, "processor_id is longer than 100 chars")
    if count:
        raise ReportError(n, "a line has no count")
    line = ReportLine(
        n, kind, ref, pid, cur, _amount(n, gross, cur), _fee(n, fee, cur), _amount(n, net, cur)
    )
    if line.gross <= 0:
        raise ReportError(n, "gross must be above zero")
    if line.net != line.signed - line.fee:
        raise ReportError(
            n, f"net is not the {'' if kind == 'capture' else 'negated '}gross less the fee"
        )
    return line


def _amount(n: int, text: str, currency: str) -> int:
    digits = CURRENCY_MINOR_UNITS[currency]
    if not _AMOUNT[digits].fullmatch(text):
        raise ReportError(
            n, f"amount {text!r} is not an exact decimal with {digits} decimals ({currency})"
        )
    return int(text.replace(".", ""))


def _fee(n: int, text: str, currency: str) -> int:
    fee = _amount(n, text, currency)
    if fee < 0:
        raise ReportError(n, "fee must not be negative")
    return fee
