"""Matching (pure): over any mix of seeded anomalies every one is found with its reason,
nothing else is raised, no line is matched falsely, and the bookings balance."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.payments.processors.simulator.settlement import (
    SettledItem,
    SettlementAnomalies,
    settlement_report,
)
from paycore.reconciliation.match import Expected, Reason, Rules, exception_id, match_report
from paycore.reconciliation.parse import parse_report

DAY = date(2026, 12, 7)
RATE = st.sampled_from([0.0, 0.05, 0.2])


@st.composite
def corpora(draw: st.DrawFn) -> tuple[list[SettledItem], SettlementAnomalies]:
    n = draw(st.integers(0, 60))
    items = []
    for i in range(n):
        kind = draw(st.sampled_from(["capture", "capture", "refund"]))
        currency = draw(st.sampled_from(["EUR", "JPY", "BHD"]))
        amount = draw(st.integers(1, 10**7))
        items.append(SettledItem(kind, f"ref-{i}.{kind[0]}1", f"pid{i}", currency, amount))
    anomalies = SettlementAnomalies(
        seed=draw(st.integers(0, 2**32)),
        missing=draw(RATE),
        duplicate=draw(RATE),
        amount_difference=draw(RATE),
        chargeback=draw(RATE),
        unknown=draw(st.integers(0, 3)),
    )
    return items, anomalies


def _expected(items: list[SettledItem], homes: int = 3) -> dict[str, Expected]:
    return {
        i.reference: Expected(i.reference, i.kind, i.amount, i.currency, f"s{n % homes}", DAY)
        for n, i in enumerate(items)
    }


@settings(max_examples=150, deadline=None)
@given(corpora())
def test_every_anomaly_is_found_and_nothing_is_matched_falsely(
    corpus: tuple[list[SettledItem], SettlementAnomalies],
) -> None:
    """Missing, duplicate, differing, unknown and charged-back lines each raise their
    reason, exactly for the references injected; every match is a reference of ours with
    our amount, once; every currency's legs balance."""
    items, anomalies = corpus
    report = settlement_report("acq", DAY, items, (), anomalies)
    injected = {k: set(v) for k, v in report.injected.items()}
    expected = _expected(items)
    outcome = match_report(parse_report(report.text), expected, {}, Rules(grace_days=0))

    by_reason: dict[Reason, set[str]] = {}
    for exc in outcome.exceptions:
        by_reason.setdefault(exc.reason, set()).add(exc.reference)
    missing = injected.get("missing", set())
    assert by_reason.get(Reason.MISSING_IN_REPORT, set()) == missing
    assert by_reason.get(Reason.DUPLICATE_LINE, set()) == injected.get("duplicate", set())
    assert (
        by_reason.get(Reason.AMOUNT_MISMATCH, set())
        == injected.get("amount_difference", set()) - missing
    )
    assert by_reason.get(Reason.UNKNOWN_REFERENCE, set()) == injected.get("unknown", set())
    assert by_reason.get(Reason.CHARGEBACK, set()) == injected.get("chargeback", set())
    assert set(by_reason) <= {
        Reason.MISSING_IN_REPORT,
        Reason.DUPLICATE_LINE,
        Reason.AMOUNT_MISMATCH,
        Reason.UNKNOWN_REFERENCE,
        Reason.CHARGEBACK,
    }

    matched = Counter(m.reference for m in outcome.matched)
    assert all(count == 1 for count in matched.values())
    wrong = missing | injected.get("amount_difference", set()) | injected.get("unknown", set())
    assert not set(matched) & wrong
    assert set(matched) == set(expected) - wrong
    for m in outcome.matched:
        assert m.amount == expected[m.reference].amount
    for currency, legs in outcome.legs.items():
        assert legs.balanced, (currency, legs)


def test_tolerance_matches_a_close_amount_and_books_the_difference_to_fees() -> None:
    """Within the processor's tolerance a line matches; beyond it, amount_mismatch."""
    items = [SettledItem("capture", "p1.a1", "x", "EUR", 1000)]
    text = settlement_report("acq", DAY, items, (), SettlementAnomalies(fee_bps=0, fee_fixed=0))
    close = {"p1.a1": Expected("p1.a1", "capture", 1003, "EUR", "s0", DAY)}
    report = parse_report(text.text)
    tolerant = match_report(report, close, {}, Rules(tolerance=5))
    assert [m.reference for m in tolerant.matched] == ["p1.a1"]
    legs = tolerant.legs["EUR"]
    assert (legs.bank, legs.psp, legs.fees, legs.suspense) == (1000, {"s0": 1003}, 3, 0)
    strict = match_report(report, close, {}, Rules(tolerance=2))
    assert [e.reason for e in strict.exceptions] == [Reason.AMOUNT_MISMATCH]
    assert strict.legs["EUR"].suspense == 1000


def test_a_reference_settled_before_is_a_duplicate_and_late_lines_are_not_missing() -> None:
    """A line settled by an earlier batch is ``duplicate_line``; a capture of the report's
    day (within the grace) is not missing, one older than the grace is."""
    items = [SettledItem("capture", "p1.a1", "x", "EUR", 1000)]
    report = parse_report(settlement_report("acq", DAY, items).text)
    expected = {
        "p1.a1": Expected("p1.a1", "capture", 1000, "EUR", "s0", DAY),
        "p2.a1": Expected("p2.a1", "capture", 500, "EUR", "s0", DAY),
        "p3.a1": Expected("p3.a1", "capture", 700, "EUR", "s0", DAY - timedelta(days=2)),
    }
    outcome = match_report(report, expected, {"p1.a1": "acq-20261206"})
    reasons = sorted((e.reason.value, e.reference) for e in outcome.exceptions)
    assert reasons == [("duplicate_line", "p1.a1"), ("missing_in_report", "p3.a1")]


def test_a_total_that_is_not_the_sum_of_its_lines_is_an_exception_into_suspense() -> None:
    """N:1: the batch total is checked against its lines; the difference is suspense."""
    items = [SettledItem("capture", "p1.a1", "x", "EUR", 1000)]
    text = settlement_report("acq", DAY, items).text.replace(
        ",EUR,1,10.00,0.39,9.61", ",EUR,1,10.00,0.39,9.71"
    )
    outcome = match_report(
        parse_report(text), {"p1.a1": Expected("p1.a1", "capture", 1000, "EUR", "s0", DAY)}, {}
    )
    assert [e.reason for e in outcome.exceptions] == [Reason.BATCH_TOTAL_MISMATCH]
    legs = outcome.legs["EUR"]
    assert (legs.bank, legs.suspense, legs.balanced) == (971, 10, True)


def test_kind_mismatch_and_stable_exception_ids() -> None:
    """A refund line naming our capture is kind_mismatch; exception ids are stable, and a
    missing capture has one id whatever the report."""
    items = [SettledItem("refund", "p1.a1", "x", "EUR", 1000)]
    report = parse_report(settlement_report("acq", DAY, items).text)
    ours = {"p1.a1": Expected("p1.a1", "capture", 1000, "EUR", "s0", DAY)}
    (exc,) = match_report(report, ours, {}).exceptions
    assert exc.reason is Reason.KIND_MISMATCH
    assert exception_id("acq", "b1", exc) == exception_id("acq", "b1", exc)
    assert exception_id("acq", "b1", exc) != exception_id("acq", "b2", exc)
    old = {"p9.a1": Expected("p9.a1", "capture", 1, "EUR", "s0", DAY - timedelta(days=5))}
    (missing,) = match_report(report, old, {}).exceptions[1:]
    assert exception_id("acq", "b1", missing) == exception_id("acq", "b2", missing)
