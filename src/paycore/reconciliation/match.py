"""Matching a settlement report against paycore's captures and refunds (pure, no I/O).

``match_report`` takes the parsed report, what paycore expects the processor to settle
(``Expected``: approved captures and refunds by our reference, with the shard whose
``psp:`` account holds them) and what earlier reports settled, and decides every line:

==================== ===================================================================
outcome              when
==================== ===================================================================
matched              a capture or refund line whose reference paycore sent, of that kind
                     and currency, gross within the processor's tolerance of our amount
chargeback           a chargeback line of a capture paycore made (booked; queued for an
                     operator, who recovers it from the merchant)
duplicate_line       a reference already settled in this report or an earlier one
unknown_reference    a reference paycore never sent (or a chargeback of one)
kind_mismatch        a reference of ours, but of another kind or currency
amount_mismatch      gross beyond the tolerance of our amount
batch_total_mismatch a currency's total (N:1) is not the sum of its lines
missing_in_report    a capture or refund of ours, done at least ``grace_days`` before the
                     report's date, that no report settled (late lines are not: they
                     arrive within the grace)
==================== ===================================================================

Every outcome but ``matched`` is an exception for the queue. The money (``Legs``, per
currency) follows the report: the bank receives the batch total's net; a matched line
settles our amount from the shard's ``psp:`` account, its fee (and a difference within
tolerance) goes to fees; a chargeback to chargebacks, its fee to fees; whatever the
exceptions were paid lands in suspense until an operator resolves it. So
``bank + fees + chargebacks = sum(psp) + suspense``: the bookings balance by
construction (``Legs.balanced``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum

import msgspec

from paycore.reconciliation.parse import Report, ReportLine

__all__ = [
    "Exception_",
    "Expected",
    "Legs",
    "Matched",
    "Outcome",
    "Reason",
    "Rules",
    "exception_id",
    "match_report",
]


class Reason(StrEnum):
    """Why a line (or a capture of ours) is in the exception queue."""

    CHARGEBACK = "chargeback"
    DUPLICATE_LINE = "duplicate_line"
    UNKNOWN_REFERENCE = "unknown_reference"
    KIND_MISMATCH = "kind_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    BATCH_TOTAL_MISMATCH = "batch_total_mismatch"
    MISSING_IN_REPORT = "missing_in_report"


@dataclass(frozen=True, slots=True)
class Rules:
    """A processor's matching rules: ``tolerance`` in minor units (a gross this close to
    ours matches, the difference booked to fees); ``grace_days``: how late a line may
    arrive before its capture is ``missing_in_report``."""

    tolerance: int = 0
    grace_days: int = 1


class Expected(msgspec.Struct, frozen=True, gc=False):
    """A capture or refund paycore made through the processor, by our reference."""

    reference: str
    kind: str  # capture | refund
    amount: int
    currency: str
    home: str  # the shard whose psp: account holds it
    day: date


class Matched(msgspec.Struct, frozen=True, gc=False):
    reference: str
    amount: int
    line_no: int


@dataclass(frozen=True, slots=True)
class Exception_:
    reason: Reason
    reference: str
    line_no: int  # 0: not a line (a capture missing from the report)
    currency: str
    expected: int | None
    reported: int | None
    detail: str


@dataclass(slots=True)
class Legs:
    """The money of one currency, in minor units (debits of bank, fees, chargebacks;
    credits of each shard's psp: account and of suspense; any may be negative)."""

    bank: int = 0
    fees: int = 0
    chargebacks: int = 0
    suspense: int = 0
    psp: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.bank + self.fees + self.chargebacks == sum(self.psp.values()) + self.suspense


@dataclass(frozen=True, slots=True)
class Outcome:
    matched: list[Matched]
    exceptions: list[Exception_]
    legs: dict[str, Legs]


def match_report(
    report: Report,
    expected: Mapping[str, Expected],
    settled: Mapping[str, str],
    rules: Rules = Rules(),
) -> Outcome:
    """Decide every line of ``report`` (see the module docstring). ``settled``: the
    references earlier reports settled -> their batch."""
    matched: list[Matched] = []
    exceptions: list[Exception_] = []
    legs = {currency: Legs(bank=total.net) for currency, total in report.totals.items()}
    seen: dict[tuple[str, str], int] = {}
    sums: dict[str, list[int]] = {c: [0, 0, 0, 0] for c in report.totals}

    for line in report.lines:
        running = sums[line.currency]
        running[0] += 1
        running[1] += line.signed
        running[2] += line.fee
        running[3] += line.net
        ours = expected.get(line.reference)
        key = (
            (line.type, line.reference) if line.type == "chargeback" else ("settle", line.reference)
        )
        first = seen.setdefault(key, line.line_no)
        leg = legs[line.currency]
        refusal = _refusal(line, ours, first, settled, rules)
        if refusal is not None or ours is None:
            reason, detail = refusal or (Reason.UNKNOWN_REFERENCE, "")
            known = None if ours is None else ours.amount
            exceptions.append(_exception(line, reason, detail, known))
            leg.suspense += line.net
        elif line.type == "chargeback":
            leg.chargebacks += line.gross
            leg.fees += line.fee
            detail = f"charged back, fee {line.fee}; recover it from the merchant"
            exceptions.append(_exception(line, Reason.CHARGEBACK, detail, ours.amount))
        else:
            ours_signed = ours.amount if ours.kind == "capture" else -ours.amount
            leg.psp[ours.home] = leg.psp.get(ours.home, 0) + ours_signed
            leg.fees += ours_signed - line.net
            matched.append(Matched(line.reference, ours.amount, line.line_no))
    for currency, total in report.totals.items():
        count, gross, fee, net = sums[currency]
        if (count, gross, fee, net) != (total.count, total.gross, total.fee, total.net):
            detail = (
                f"total says {total.count} lines, net {total.net}; the lines: {count}, net {net}"
            )
            exceptions.append(
                Exception_(
                    Reason.BATCH_TOTAL_MISMATCH, "", total.line_no, currency, net, total.net, detail
                )
            )
            legs[currency].suspense += total.net - net
    due = report.settlement_date - timedelta(days=rules.grace_days)
    in_report = {ref for _, ref in seen}
    for ours in expected.values():
        if ours.day <= due and ours.reference not in settled and ours.reference not in in_report:
            exceptions.append(
                Exception_(
                    Reason.MISSING_IN_REPORT,
                    ours.reference,
                    0,
                    ours.currency,
                    ours.amount,
                    None,
                    f"our {ours.kind} of {ours.day.isoformat()} is in no report",
                )
            )
    return Outcome(matched, exceptions, legs)


def _refusal(
    line: ReportLine,
    ours: Expected | None,
    first: int,
    settled: Mapping[str, str],
    rules: Rules,
) -> tuple[Reason, str] | None:
    """Why ``line`` does not match (None: it does); ``first``: the line number of the
    first line of its reference (and kind, for chargebacks)."""
    if first != line.line_no:
        return Reason.DUPLICATE_LINE, f"the same reference as line {first}"
    if line.type != "chargeback" and line.reference in settled:
        return Reason.DUPLICATE_LINE, f"already settled in batch {settled[line.reference]}"
    if ours is None:
        return Reason.UNKNOWN_REFERENCE, f"no {line.type} of ours has this reference"
    kind = "capture" if line.type == "chargeback" else line.type
    if ours.kind != kind or ours.currency != line.currency:
        return Reason.KIND_MISMATCH, f"ours is a {ours.kind} in {ours.currency}"
    if line.type != "chargeback" and abs(line.gross - ours.amount) > rules.tolerance:
        detail = f"reported {line.gross}, ours {ours.amount} (tolerance {rules.tolerance})"
        return Reason.AMOUNT_MISMATCH, detail
    return None


def _exception(line: ReportLine, reason: Reason, detail: str, ours: int | None) -> Exception_:
    return Exception_(reason, line.reference, line.line_no, line.currency, ours, line.gross, detail)


def exception_id(processor: str, batch_id: str, exc: Exception_) -> str:
    """A stable id: the same report raises the same exceptions; a capture missing from
    several reports is one exception."""
    batch = "" if exc.reason is Reason.MISSING_IN_REPORT else batch_id
    key = f"{processor}\x1f{batch}\x1f{exc.reason.value}\x1f{exc.reference}\x1f{exc.line_no}"
    return "rx_" + hashlib.sha256(key.encode()).hexdigest()[:24]
