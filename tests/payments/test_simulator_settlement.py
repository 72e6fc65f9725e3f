"""The simulator's settlement report: one line per settled amount with its fee and our
reference, a batch total per currency, seeded anomalies, served at /reports/settlement."""

from __future__ import annotations

from datetime import UTC, date, datetime

import msgspec
from litestar.testing import AsyncTestClient

from paycore.payments.processors.simulator.app import create_app
from paycore.payments.processors.simulator.book import AcquirerBook
from paycore.payments.processors.simulator.config import SimulatorConfig
from paycore.payments.processors.simulator.settlement import (
    COLUMNS,
    SettledItem,
    SettlementAnomalies,
    format_decimal,
    settlement_report,
)
from paycore.reconciliation.parse import COLUMNS as PARSED_COLUMNS
from paycore.reconciliation.parse import parse_report

DAY = date(2026, 12, 7)
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}


def _items(n: int, day: int = 7) -> list[SettledItem]:
    return [
        SettledItem("capture", f"pay{day}-{i}.a1", f"acq_au_{i:08d}", "EUR", 1000 + i)
        for i in range(n)
    ]


def test_amounts_are_exact_decimals_with_the_currencys_exponent() -> None:
    """EUR two decimals, JPY none, BHD three; negative amounts keep their sign."""
    assert format_decimal(1234, "EUR") == "12.34"
    assert format_decimal(5, "EUR") == "0.05"
    assert format_decimal(-1205, "EUR") == "-12.05"
    assert format_decimal(1234, "JPY") == "1234"
    assert format_decimal(1234, "BHD") == "1.234"


def test_the_book_settles_captures_and_refunds_of_the_day() -> None:
    """An authorization captured at once, a later capture and a refund are settled on the
    day they were done; a declined card and an uncaptured authorization are not."""
    book = AcquirerBook("acq", today=lambda: DAY)
    auth = {"amount": 700, "currency": "EUR", "card": CARD}
    book.authorize(msgspec.json.encode({"reference": "p1.a1", "capture": True, **auth}))
    book.authorize(msgspec.json.encode({"reference": "p2.a1", **auth}))
    book.authorize(msgspec.json.encode({"reference": "p3.a1", **auth}))
    book.capture("p2.a1", b'{"capture_reference": "p2.c1", "amount": 500}')
    book.refund("p1.a1", b'{"refund_reference": "r1.r1", "amount": 200}')
    declined = {**auth, "card": {**CARD, "number": "4000000000000002"}}
    book.authorize(msgspec.json.encode({"reference": "p4.a1", "capture": True, **declined}))
    settled = book.settled(DAY)
    assert [(i.kind, i.reference, i.amount) for i in settled] == [
        ("capture", "p1.a1", 700),
        ("capture", "p2.c1", 500),
        ("refund", "r1.r1", 200),
    ]
    assert book.settled(date(2026, 12, 8)) == []


def test_a_clean_report_has_a_line_per_item_and_a_total_that_adds_up() -> None:
    """Fees are basis points plus a fixed part on captures only; the total's net is the
    sum of the lines' nets; the report parses as paycore reads it."""
    items = [*_items(3), SettledItem("refund", "r1.r1", "acq_re_1", "EUR", 500)]
    report = settlement_report("acq", DAY, items)
    assert report.injected == {}
    rows = report.text.splitlines()
    assert rows[0] == ",".join(COLUMNS)
    assert tuple(COLUMNS) == tuple(PARSED_COLUMNS)
    assert rows[1] == (
        "line,acq-20261207,2026-12-07,2026-12-08,capture,pay7-0.a1,acq_au_00000000,EUR,,"
        "10.00,0.39,9.61"
    )
    assert rows[4].endswith("refund,r1.r1,acq_re_1,EUR,,5.00,0.00,-5.00")
    parsed = parse_report(report.text)
    total = parsed.totals["EUR"]
    assert total.count == 4
    assert total.net == sum(line.net for line in parsed.lines)
    assert total.fee == 3 * 39
    assert parsed.payout_date == date(2026, 12, 8)


def test_anomalies_are_seeded_and_reported() -> None:
    """The same seed injects the same anomalies; each injected one shows in the text."""
    items = _items(400)
    anomalies = SettlementAnomalies(
        seed=7, missing=0.05, duplicate=0.05, amount_difference=0.05, chargeback=0.05, unknown=3
    )
    first = settlement_report("acq", DAY, items, (), anomalies)
    again = settlement_report("acq", DAY, list(reversed(items)), (), anomalies)
    assert {k: sorted(v) for k, v in first.injected.items()} == {
        k: sorted(v) for k, v in again.injected.items()
    }
    for kind in ("missing", "duplicate", "amount_difference", "chargeback", "unknown"):
        assert first.injected.get(kind), kind
    lines = parse_report(first.text).lines
    refs = [line.reference for line in lines if line.type != "chargeback"]
    for ref in first.injected["missing"]:
        assert ref not in refs
    for ref in first.injected["duplicate"]:
        assert refs.count(ref) == 2
    for ref in first.injected["chargeback"]:
        assert any(line.type == "chargeback" and line.reference == ref for line in lines)


def test_a_late_line_moves_to_the_next_days_report() -> None:
    """A line drawn late is absent from its day's report and present in the next one."""
    anomalies = SettlementAnomalies(seed=1, late=0.2)
    today, tomorrow = _items(50, 7), _items(50, 8)
    day7 = settlement_report("acq", DAY, today, (), anomalies)
    day8 = settlement_report("acq", date(2026, 12, 8), tomorrow, today, anomalies)
    late = day8.injected["late"]
    assert late
    refs7 = {line.reference for line in parse_report(day7.text).lines}
    refs8 = {line.reference for line in parse_report(day8.text).lines}
    assert not set(late) & refs7
    assert set(late) <= refs8


async def test_the_simulator_serves_the_report_as_csv() -> None:
    """GET /reports/settlement?date= answers the day's CSV, anomalies from the query; a bad
    date or anomaly is a 400."""
    app = create_app("acq", SimulatorConfig())
    async with AsyncTestClient(app) as client:
        paid = await client.post(
            "/v1/authorizations",
            json={
                "reference": "p1.a1",
                "amount": 900,
                "currency": "USD",
                "card": CARD,
                "capture": True,
            },
        )
        assert paid.status_code == 200, paid.text
        today = datetime.now(UTC).date()
        got = await client.get("/reports/settlement", params={"date": today.isoformat()})
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("text/csv")
        assert ",p1.a1," in got.text
        with_unknown = await client.get(
            "/reports/settlement", params={"date": today.isoformat(), "unknown": "2", "seed": "3"}
        )
        assert with_unknown.text.count("unknown-") == 2
        for params in ({"date": "yesterday"}, {"date": today.isoformat(), "missing": "2"}):
            bad = await client.get("/reports/settlement", params=params)
            assert bad.status_code == 400, bad.text
            assert bad.json()["error"] == "invalid_request"
