"""Importing settlement reports into a two-shard ledger whose card payments went through
the simulator: anomalies queued, fees, chargebacks and the payout booked as linked
transfers that conserve money, idempotent, resumable, and refused whole when bad."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from paycore.cli import main
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.simulator.settlement import (
    SettlementAnomalies,
    settlement_report,
)
from paycore.reconciliation import (
    ReconciliationError,
    ReportError,
    drift,
    import_report,
    list_exceptions,
    resolve_exception,
)
from reconciliation.support import PROCESSOR, Shop, assert_ledger_clean, balances, open_shop

ANOMALIES = SettlementAnomalies(
    seed=11, duplicate=0.1, amount_difference=0.1, chargeback=0.1, missing=0.1, late=0.1, unknown=2
)


async def _trade(shop: Shop, n: int = 30) -> list[str]:
    ids = [await shop.pay(1000 + 7 * i, merchant=f"shop-{1 + i % 4}") for i in range(n)]
    for payment in ids[:3]:
        await shop.refund(payment, 250)
    return ids


async def test_a_report_with_anomalies_is_matched_booked_and_queued(tmp_path: Path) -> None:
    """Every injected anomaly of the day is queued with its reason; the matched captures
    and refunds leave the psp: accounts, so the drift is zero; the ledger audit is clean."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop)
        text = shop.report(shop.today, ANOMALIES)
        result = await import_report(shop.store, PROCESSOR, text)
        assert not result.already_imported
        assert result.transfers >= 3
        queued = await list_exceptions(shop.store, PROCESSOR)
        reasons = {(e.reason, e.reference) for e in queued}
        injected = settlement_report(
            PROCESSOR, shop.today, shop.simulator.book.settled(shop.today), (), ANOMALIES
        ).injected
        for ref in injected.get("duplicate", []):
            assert ("duplicate_line", ref) in reasons
        for ref in injected.get("unknown", []):
            assert ("unknown_reference", ref) in reasons
        for ref in injected.get("chargeback", []):
            assert ("chargeback", ref) in reasons
        for ref in set(injected.get("amount_difference", [])) - set(injected.get("missing", [])):
            assert ("amount_mismatch", ref) in reasons
        assert "missing_in_report" not in result.exceptions  # within the grace
        assert result.matched + sum(result.exceptions.values()) == result.lines
        drifts = await drift(shop.store)
        assert [d.drift for d in drifts] == [0]
        assert drifts[0].unsettled != 0  # missing, late and differing lines stay unsettled
        await assert_ledger_clean(shop.store)


async def test_manual_captures_and_refunds_settle_by_their_own_references(
    tmp_path: Path,
) -> None:
    """Two partial captures of one authorization and a refund are three lines, each
    matched by the reference paycore sent for it; nothing is left unsettled."""
    async with open_shop(tmp_path) as shop:
        payment = await shop.pay(5000, capture=CaptureMethod.MANUAL)
        await shop.capture(payment, 2000)
        await shop.capture(payment, 1000)
        await shop.refund(payment, 500)
        text = shop.report(shop.today)
        assert text.count("\nline,") == 3
        result = await import_report(shop.store, PROCESSOR, text)
        assert (result.matched, result.exceptions) == (3, {})
        (only,) = await drift(shop.store)
        assert (only.psp_balance, only.unsettled, only.drift) == (0, 0, 0)
        await assert_ledger_clean(shop.store)


async def test_late_and_missing_lines_across_two_days(tmp_path: Path) -> None:
    """A late line is matched in the next day's report; a missing one becomes
    missing_in_report once its grace is over, and once settled its exception closes."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop, 40)
        day, anomalies = shop.today, SettlementAnomalies(seed=5, late=0.15, missing=0.1)
        first = await import_report(shop.store, PROCESSOR, shop.report(day, anomalies))
        assert first.exceptions == {}
        second_text = shop.report(day + timedelta(days=1), anomalies)
        second = await import_report(shop.store, PROCESSOR, second_text)
        assert second.matched > 0  # the late lines of the day before
        queued = await list_exceptions(shop.store, PROCESSOR)
        assert queued
        assert {e.reason for e in queued} == {"missing_in_report"}
        assert second.exceptions == {"missing_in_report": len(queued)}
        # A third report (no line) flags the same captures again: still one exception each.
        third = await import_report(
            shop.store, PROCESSOR, shop.report(day + timedelta(days=2), anomalies)
        )
        assert third.exceptions == {"missing_in_report": len(queued)}
        assert len(await list_exceptions(shop.store, PROCESSOR)) == len(queued)
        assert [d.drift for d in await drift(shop.store)] == [0]
        await assert_ledger_clean(shop.store)


async def test_importing_twice_changes_nothing(tmp_path: Path) -> None:
    """The same report again books nothing and queues nothing; another text under the
    same batch is refused."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop)
        text = shop.report(shop.today, ANOMALIES)
        await import_report(shop.store, PROCESSOR, text)
        before = await balances(shop.store)
        queued = await list_exceptions(shop.store, PROCESSOR, status=None)
        again = await import_report(shop.store, PROCESSOR, text)
        assert again.already_imported
        assert await balances(shop.store) == before
        assert await list_exceptions(shop.store, PROCESSOR, status=None) == queued
        other = shop.report(shop.today, SettlementAnomalies(seed=99, duplicate=0.5))
        with pytest.raises(ReconciliationError) as caught:
            await import_report(shop.store, PROCESSOR, other)
        assert caught.value.code == "report_conflict"
        assert await balances(shop.store) == before


async def test_a_crash_between_booking_and_recording_resumes(tmp_path: Path) -> None:
    """Killed after the bookings and before the record, a rerun books nothing twice and
    records the report: the balances are those of one clean import."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop)
        text = shop.report(shop.today, ANOMALIES)

        def crash() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await import_report(shop.store, PROCESSOR, text, after_booking=crash)
        booked = await balances(shop.store)
        assert await list_exceptions(shop.store, PROCESSOR) == []
        resumed = await import_report(shop.store, PROCESSOR, text)
        assert not resumed.already_imported
        assert await balances(shop.store) == booked
        assert await list_exceptions(shop.store, PROCESSOR)
        assert [d.drift for d in await drift(shop.store)] == [0]
        await assert_ledger_clean(shop.store)


async def test_a_bad_report_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A report with an inexact amount is refused with invalid_report; no account and no
    exception is written."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop, 5)
        before = await balances(shop.store)
        text = shop.report(shop.today).replace(",0.39,", ",0.390,", 1)
        with pytest.raises(ReportError) as caught:
            await import_report(shop.store, PROCESSOR, text)
        assert caught.value.code == "invalid_report"
        assert "line 2" in str(caught.value)
        assert await balances(shop.store) == before
        assert await list_exceptions(shop.store, PROCESSOR, status=None) == []
        with pytest.raises(ReconciliationError) as bad_name:
            await import_report(shop.store, "no:such", shop.report(shop.today))
        assert bad_name.value.code == "invalid_processor"
        assert await balances(shop.store) == before


async def test_an_operator_resolves_an_exception_with_a_note(tmp_path: Path) -> None:
    """Resolved with a note, an exception leaves the open queue; resolving it again
    keeps the first note; an unknown id is None."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop, 5)
        await import_report(
            shop.store, PROCESSOR, shop.report(shop.today, SettlementAnomalies(unknown=1))
        )
        (exc,) = await list_exceptions(shop.store, PROCESSOR)
        assert exc.reason == "unknown_reference"
        done = await resolve_exception(shop.store, exc.id, "refunded to the acquirer")
        assert done is not None
        assert (done.status, done.note) == ("resolved", "refunded to the acquirer")
        again = await resolve_exception(shop.store, exc.id, "another note")
        assert again is not None
        assert again.note == "refunded to the acquirer"
        assert await list_exceptions(shop.store, PROCESSOR) == []
        assert await resolve_exception(shop.store, "rx_nope", "x") is None


def test_the_command_line_imports_lists_and_resolves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """paycore reconcile --report imports (0), a bad file exits 2, exceptions lists the
    queue, resolve closes one, and audit prints the drift section."""

    async def trade() -> tuple[str, str]:
        async with open_shop(tmp_path, shards=4) as shop:  # the default topology
            await _trade(shop, 5)
            return shop.report(shop.today, SettlementAnomalies(unknown=1)), shop.settings.data_dir

    text, data_dir = asyncio.run(trade())
    report = tmp_path / "report.csv"
    report.write_text(text)
    args = ["--processor", PROCESSOR, "--data-dir", data_dir]
    assert main(["reconcile", *args, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "exception unknown_reference: 1" in out
    assert main(["reconcile", *args, "--report", str(report)]) == 0
    assert "imported before: nothing to do" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("nope\n")
    assert main(["reconcile", *args, "--report", str(bad)]) == 2
    assert "invalid_report" in capsys.readouterr().err
    assert main(["reconcile", "exceptions", *args, "--json"]) == 0
    listed = capsys.readouterr().out
    assert "unknown_reference" in listed
    exc_id = listed.split('"id": "', 1)[1].split('"', 1)[0]
    resolve = ["reconcile", "resolve", exc_id, "--note", "ok", "--data-dir", data_dir]
    assert main(resolve) == 0
    assert "resolved" in capsys.readouterr().out
    assert main(["reconcile", "resolve", "rx_nope", "--note", "x", "--data-dir", data_dir]) == 2
    assert main(["audit", "--data-dir", data_dir]) == 0
    assert f"{PROCESSOR} USD: psp 0, unsettled 0, drift 0 ok" in capsys.readouterr().out
