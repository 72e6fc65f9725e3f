"""``paycore demo``'s last act: the day's settlement reports reconciled, then a USD wallet
paying a EUR merchant.

After the payments act, each simulated processor is asked for the day's settlement
report (``GET /reports/settlement?date=``); ``acq-b``'s comes with anomalies injected
(lines duplicated, amounts changed, chargebacks, lines left out, references it never
got from us). The operator imports the three through the admin API
(``POST /v1/reconciliation/reports``, the service ``paycore reconcile`` runs) and
the act checks what came back against what it can tell on its own:

- a clean report (the same day's report without anomalies, fetched too) matches line
  for line: no exception;
- the anomalous report's exceptions are exactly the anomalies, each found by diffing it
  with its clean twin (a reference the clean one lacks: ``unknown_reference``; a line
  again: ``duplicate_line``; another gross: ``amount_mismatch``; a chargeback line:
  ``chargeback``), and nothing else; lines left out are within the grace day;
- each processor's ``psp:`` accounts agree with the captures less refunds no report
  settled (drift 0); importing a report again changes nothing.

Then a wallet the payments act topped up by card pays a EUR merchant: a quote for the
euros, converted through paycore's FX accounts; the wallet moves by exactly the quoted
dollars, the merchant by the euros.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import msgspec
from rich.console import Console
from rich.table import Table

from paycore.money import format_minor
from paycore.reconciliation import ReportError, drift, parse_report
from paycore.reconciliation.parse import Report
from paycore.storage.store import Store
from paycore.tools.demo.asgi_client import AsgiClient
from paycore.tools.demo.promises import Promise

__all__ = ["ReconReport", "ReconRow", "print_recon", "run_recon_act"]

Json = dict[str, Any]
CURRENCY: Final = "USD"
WITH_ANOMALIES: Final = "acq-b"
ANOMALIES: Final = {"duplicate": 0.04, "amount_difference": 0.04, "chargeback": 0.04,
                    "missing": 0.04, "unknown": 2}  # fmt: skip
EUR_MERCHANT: Final = "demo.shop-eur"
_EMPTY: Final = (
    "record,batch_id,settlement_date,payout_date,type,reference,processor_id,currency,count,"
    "gross,fee,net\ntotal,none,2000-01-01,2000-01-01,,,,USD,0,0.00,0.00,0.00\n"
)
_encode = msgspec.json.Encoder().encode


class ReconRow(msgspec.Struct):
    """One processor's report: what it held, what matched, what was queued (by reason),
    what the act injected, and what was booked (minor units of ``currency``)."""

    processor: str
    batch_id: str
    lines: int
    matched: int
    exceptions: dict[str, int]
    injected: dict[str, int]
    left_out: int  # lines of the clean report missing from this one (within the grace day)
    payout: int  # the batch's net, to the bank account
    fees: int
    chargebacks: int
    suspense: int  # what the processor paid for lines that did not match
    currency: str = CURRENCY


class ReconReport(msgspec.Struct):
    rows: list[ReconRow]
    fx_payment: str


class _Act:
    def __init__(
        self,
        client: AsgiClient,
        operator: dict[str, str],
        http: httpx.AsyncClient,
        urls: dict[str, str],
        seed: int,
    ) -> None:
        self.client = client
        self.operator = operator  # headers of the operator's admin key (tenant default)
        self.http = http
        self.urls = urls
        self.seed = seed

    async def call(
        self, method: str, path: str, body: Json | None = None, *, admin: bool = False
    ) -> tuple[int, Any]:
        raw = None if body is None else _encode(body)
        headers = self.operator if admin else None
        response = await self.client.request(method, path, raw, headers)
        return response.status, msgspec.json.decode(response.body) if response.body else None

    async def fetch(self, processor: str, **anomalies: Any) -> str:
        day = datetime.now(UTC).date().isoformat()
        query = {"date": day, "seed": self.seed, **anomalies}
        response = await self.http.get(f"{self.urls[processor]}/reports/settlement", params=query)
        response.raise_for_status()
        return response.text

    async def booked(self, processor: str, role: str) -> int:
        """What the chart's account ``role`` of ``processor`` holds (debit side positive,
        suspense credit side positive)."""
        status, account = await self.call(
            "GET", f"/v1/accounts/recon:{role}:{processor}:{CURRENCY}", admin=True
        )
        if status != 200:
            return 0  # not made: nothing was booked there
        balance = account["balance"]
        net = int(balance["debits_posted"]) - int(balance["credits_posted"])
        return -net if role == "suspense" else net


def expected_exceptions(clean: Report, anomalous: Report) -> Counter[tuple[str, str]]:
    """The exceptions the anomalous report must raise, by (reason, reference), found by
    diffing it with the clean report of the same day (see the module docstring)."""
    ours = {line.reference: line for line in clean.lines}
    seen: set[str] = set()
    expected: Counter[tuple[str, str]] = Counter()
    for line in anomalous.lines:
        ref = line.reference
        if line.type == "chargeback":
            expected["chargeback", ref] += 1
        elif ref not in ours:
            expected["unknown_reference", ref] += 1
        elif ref in seen:
            expected["duplicate_line", ref] += 1
        elif line.gross != ours[ref].gross:
            expected["amount_mismatch", ref] += 1
        seen.add(ref)
    return expected


async def run_recon_act(
    client: AsgiClient,
    store: Store,
    *,
    operator: dict[str, str],
    http: httpx.AsyncClient,
    urls: dict[str, str],
    seed: int,
    promise: Promise,
    p_again: Promise,
    p_fx: Promise,
) -> ReconReport:
    """Reconcile every processor's report of the day, then the wallet's EUR payment."""
    act = _Act(client, operator, http, urls, seed)
    rows = [await _reconcile(act, name, promise, p_again) for name in sorted(urls)]
    for d in await drift(store):
        if d.processor in urls:
            promise.check(d.drift == 0, f"{d.processor} {d.currency}: drift {d.drift}")
    return ReconReport(rows, await _pay_in_euros(act, p_fx))


async def _reconcile(act: _Act, processor: str, promise: Promise, p_again: Promise) -> ReconRow:
    clean_text = await act.fetch(processor)
    anomalies = ANOMALIES if processor == WITH_ANOMALIES else {}
    text = await act.fetch(processor, **anomalies) if anomalies else clean_text
    try:
        clean, report = parse_report(clean_text), parse_report(text)
    except ReportError as exc:
        promise.check(False, f"{processor}: the simulator's report does not parse: {exc}")
        clean = report = parse_report(_EMPTY)
    expected = expected_exceptions(clean, report)
    left_out = len({x.reference for x in clean.lines} - {x.reference for x in report.lines})
    body = {"processor": processor, "report": text}
    key = {"Idempotency-Key": f"demo-recon-{processor}"}
    raw = _encode(body)
    response = await act.client.request(
        "POST", "/v1/reconciliation/reports", raw, {**act.operator, **key}
    )
    result = msgspec.json.decode(response.body)
    promise.check(response.status == 201, f"{processor}: import {response.status} {result}")
    found: Counter[tuple[str, str]] = Counter()
    cursor: str | None = None
    while True:
        query = f"?processor={processor}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        _, page = await act.call("GET", f"/v1/reconciliation/exceptions{query}", admin=True)
        found.update((e["reason"], e["reference"] or "") for e in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    for item in sorted((expected | found).keys()):
        want, got = expected[item], found[item]
        promise.check(
            want == got, f"{processor}: {item[0]} {item[1]}: {got} queued, {want} injected"
        )
    roles = ("bank", "fees", "chargebacks", "suspense")
    booked = [await act.booked(processor, role) for role in roles]
    again = await act.call("POST", "/v1/reconciliation/reports", body, admin=True)
    p_again.check(
        again[0] == 200 and again[1].get("already_imported") is True,
        f"{processor}: imported again: {again}",
    )
    after = [await act.booked(processor, role) for role in roles]
    p_again.check(after == booked, f"{processor}: booked {booked}, then {after}")
    return ReconRow(
        processor=processor,
        batch_id=str(result.get("batch_id", "?")),
        lines=int(result.get("lines", 0)),
        matched=int(result.get("matched", 0)),
        exceptions=dict(result.get("exceptions", {})),
        injected=dict(Counter(reason for reason, _ in expected.elements())),
        left_out=left_out,
        payout=booked[0],
        fees=booked[1],
        chargebacks=booked[2],
        suspense=booked[3],
    )


async def _pay_in_euros(act: _Act, promise: Promise) -> str:
    """The richest wallet of the payments act pays 12.34 EUR to a EUR merchant."""
    from paycore.tools.demo.payments_act import WALLETS  # noqa: PLC0415 - its own names

    available = {}
    for wallet in WALLETS:
        _, account = await act.call("GET", f"/v1/accounts/{wallet}")
        available[wallet] = int(account["balance"]["available"])
    wallet = max(available, key=lambda w: available[w])
    status, _ = await act.call("POST", "/v1/accounts", {"id": EUR_MERCHANT, "currency": "EUR"})
    promise.check(status == 201, f"account {EUR_MERCHANT}: {status}")
    ask = {"sell_currency": CURRENCY, "buy_currency": "EUR", "buy_amount": 12_34}
    status, quote = await act.call("POST", "/v1/fx/quotes", ask)
    promise.check(status == 201, f"quote: {status} {quote}")
    if status != 201 or available[wallet] < quote["sell_amount"]:
        return f"no wallet holds the {quote.get('sell_amount')} USD a 12.34 EUR payment costs"
    convert = {"quote_id": quote["id"], "debit_account_id": wallet,
               "credit_account_id": EUR_MERCHANT}  # fmt: skip
    status, paid = await act.call("POST", "/v1/fx/conversions", convert)
    promise.check(status == 201, f"conversion: {status} {paid}")
    _, after = await act.call("GET", f"/v1/accounts/{wallet}")
    _, shop = await act.call("GET", f"/v1/accounts/{EUR_MERCHANT}")
    spent = available[wallet] - int(after["balance"]["available"])
    received = int(shop["balance"]["credits_posted"])
    promise.check(spent == quote["sell_amount"], f"{wallet} paid {spent}, quoted {quote}")
    promise.check(received == quote["buy_amount"], f"{EUR_MERCHANT} got {received}, {quote}")
    return (
        f"wallet {wallet} paid {format_minor(received, 'EUR')} to {EUR_MERCHANT} with "
        f"{format_minor(spent, CURRENCY)} at {quote['rate']} (one linked chain through "
        "paycore's FX accounts)"
    )


def print_recon(report: ReconReport, console: Console) -> None:
    table = Table(title="reconciliation act: the day's settlement reports", title_justify="left")
    for col in ("processor", "lines", "matched", "exceptions (injected)", "payout", "fees",
                "chargebacks", "suspense"):  # fmt: skip
        table.add_column(col, justify="left" if col.startswith(("proc", "exc")) else "right")
    for row in report.rows:
        reasons = "\n".join(
            [
                f"{n} {reason} ({row.injected.get(reason, 0)})"
                for reason, n in sorted(row.exceptions.items())
            ]
            + ([f"{row.left_out} left out (a day's grace)"] if row.left_out else [])
        )
        table.add_row(
            row.processor,
            f"{row.lines:,}",
            f"{row.matched:,}",
            reasons or "-",
            *(format_minor(v, row.currency) for v in
              (row.payout, row.fees, row.chargebacks, row.suspense)),
        )  # fmt: skip
    console.print(table)
    console.print(f"[bold]paying in another currency[/]: {report.fx_payment}")
