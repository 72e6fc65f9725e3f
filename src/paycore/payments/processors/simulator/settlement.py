"""The simulator's daily settlement report (pure, no I/O): what an acquirer says it paid.

``settlement_report(processor, day, today, yesterday, anomalies)`` renders the CSV of
the day ``day`` from the items the book settled that day and the day before (the late
ones of the day before arrive in this report). The columns are documented in
docs/reconciliation.md (``COLUMNS`` is the header):

- one ``line`` per captured, refunded or charged-back amount, with its fee and our
  reference (the one paycore sent: an authorization's captured at once, a capture's or
  a refund's);
- one ``total`` per currency: the settlement batch total (count, gross, fees, net =
  what is paid out on ``payout_date``, the next day).

Anomalies (``SettlementAnomalies``) are drawn per reference from a seeded hash, not
from the order of the items, so a report is the same whatever else the book holds, and
a line late on day D (missing from D's report) is the one added to D+1's. What was
injected is returned with the text (``SettlementReport.injected``), for tests.

Amounts are integers in minor units, written as exact decimals with the currency's
exponent (``12.34`` EUR, ``1234`` JPY, ``1.234`` BHD); never floats.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from paycore.money import CURRENCY_MINOR_UNITS
from paycore.payments.settlement_format import COLUMNS

__all__ = [
    "COLUMNS",
    "SettledItem",
    "SettlementAnomalies",
    "SettlementReport",
    "format_decimal",
    "settlement_report",
]

Rate = Annotated[float, Meta(ge=0.0, le=1.0)]
Minor = Annotated[int, Meta(ge=0, le=10**12)]


class SettledItem(msgspec.Struct, frozen=True, gc=False):
    """One amount the acquirer settles: a capture or a refund, by our reference."""

    kind: str  # capture | refund
    reference: str
    processor_id: str
    currency: str
    amount: int


class SettlementAnomalies(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What goes wrong in a report, per line (rates) or per report (counts), seeded.

    ``fee_bps`` and ``fee_fixed`` make a capture's fee (basis points of its amount,
    rounded down, plus a fixed amount in minor units); refunds carry no fee; a
    chargeback carries ``chargeback_fee``."""

    seed: int = 0
    missing: Rate = 0.0  # a line left out (never paid)
    duplicate: Rate = 0.0  # a line written twice (and paid twice)
    amount_difference: Rate = 0.0  # a line's gross differs from what was done
    late: Rate = 0.0  # a line moved to the next day's report
    chargeback: Rate = 0.0  # a capture charged back (an extra line, same reference)
    unknown: Annotated[int, Meta(ge=0, le=10_000)] = 0  # lines with references never sent
    fee_bps: Annotated[int, Meta(ge=0, le=10_000)] = 140
    fee_fixed: Minor = 25
    chargeback_fee: Minor = 1500


class SettlementReport(msgspec.Struct, frozen=True):
    """A rendered report and what was injected into it (reference lists by anomaly)."""

    text: str
    batch_id: str
    injected: dict[str, list[str]]


def settlement_report(
    processor: str,
    day: date,
    today: Iterable[SettledItem],
    yesterday: Iterable[SettledItem] = (),
    anomalies: SettlementAnomalies | None = None,
    *,
    currency: str = "EUR",
) -> SettlementReport:
    """The CSV report of ``day``: ``today``'s items (less the late ones) and the late
    ones of ``yesterday``, with ``anomalies`` injected; a day with no line has a zero
    total in ``currency``."""
    a = anomalies or SettlementAnomalies()
    batch_id = f"{processor}-{day.strftime('%Y%m%d')}"
    payout = day + timedelta(days=1)
    injected: dict[str, list[str]] = defaultdict(list)
    items = [i for i in today if not _drawn(a, "late", i.reference, a.late)]
    for item in yesterday:
        if _drawn(a, "late", item.reference, a.late):
            items.append(item)
            injected["late"].append(item.reference)
    lines: list[tuple[str, str, str, str, int, int]] = []  # type ref pid cur gross fee
    for item in items:
        ref = item.reference
        if _drawn(a, "missing", ref, a.missing):
            injected["missing"].append(ref)
            continue
        gross = item.amount
        if _drawn(a, "amount", ref, a.amount_difference):
            delta = 1 + _hash(a, "delta", ref) % 100
            gross = gross + delta if gross <= delta else gross - delta
            injected["amount_difference"].append(ref)
        fee = (gross * a.fee_bps) // 10_000 + a.fee_fixed if item.kind == "capture" else 0
        fee = min(fee, gross)
        line = (item.kind, ref, item.processor_id, item.currency, gross, fee)
        lines.append(line)
        if _drawn(a, "duplicate", ref, a.duplicate):
            lines.append(line)
            injected["duplicate"].append(ref)
        if item.kind == "capture" and _drawn(a, "chargeback", ref, a.chargeback):
            lines.append(
                ("chargeback", ref, item.processor_id, item.currency, gross, a.chargeback_fee)
            )
            injected["chargeback"].append(ref)
    currencies = sorted({line[3] for line in lines}) or [currency]
    for n in range(a.unknown):
        ref = f"unknown-{day.strftime('%Y%m%d')}-{n:05d}"
        amount = 100 + _hash(a, "unknown", ref) % 100_000
        cur = currencies[n % len(currencies)]
        lines.append(("capture", ref, f"{processor}_xx_{n:08d}", cur, amount, 0))
        injected["unknown"].append(ref)
    text = _render(batch_id, day, payout, lines, currency)
    return SettlementReport(text, batch_id, dict(injected))


def format_decimal(amount: int, currency: str) -> str:
    """``amount`` minor units of ``currency`` as an exact decimal (``-12.05``)."""
    digits = CURRENCY_MINOR_UNITS[currency]
    sign = "-" if amount < 0 else ""
    whole, part = divmod(abs(amount), 10**digits)
    return f"{sign}{whole}.{part:0{digits}d}" if digits else f"{sign}{whole}"


def _render(
    batch_id: str,
    day: date,
    payout: date,
    lines: Sequence[tuple[str, str, str, str, int, int]],
    empty_currency: str,
) -> str:
    out = [",".join(COLUMNS)]
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    head = f"{batch_id},{day.isoformat()},{payout.isoformat()}"
    for kind, ref, pid, cur, gross, fee in lines:
        signed = gross if kind == "capture" else -gross
        net = signed - fee
        f = format_decimal
        out.append(
            f"line,{head},{kind},{ref},{pid},{cur},,{f(gross, cur)},{f(fee, cur)},{f(net, cur)}"
        )
        total = totals[cur]
        total[0] += 1
        total[1] += signed
        total[2] += fee
        total[3] += net
    if not totals:
        totals[empty_currency] = [0, 0, 0, 0]
    for cur in sorted(totals):
        count, gross, fee, net = totals[cur]
        f = format_decimal
        out.append(f"total,{head},,,,{cur},{count},{f(gross, cur)},{f(fee, cur)},{f(net, cur)}")
    return "\n".join(out) + "\n"


# Each reference gets one 64-byte digest of (seed, reference); anomaly ``what`` reads its
# own 8 bytes of it, so the draws are independent and cost one hash per line.
_SLOTS: Final = {
    w: i for i, w in enumerate(("late", "missing", "amount", "delta", "duplicate", "chargeback"))
}


@functools.lru_cache(maxsize=16)  # a line's draws come one after the other
def _digest(seed: int, reference: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{reference}".encode(), digest_size=64).digest()


def _hash(a: SettlementAnomalies, what: str, reference: str) -> int:
    digest = _digest(a.seed, reference)
    at = _SLOTS.get(what, 7) * 8
    return int.from_bytes(digest[at : at + 8], "big")


def _drawn(a: SettlementAnomalies, what: str, reference: str, rate: float) -> bool:
    return rate > 0.0 and _hash(a, what, reference) < int(rate * 2**64)
