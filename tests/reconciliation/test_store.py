"""The reconciliation's rows (migration 0020) and reserved names: a report is recorded
once, a settled reference closes its missing_in_report exception, and clients may not
create or name the chart's accounts and transfers."""

from __future__ import annotations

from backends import StoreFactory
from paycore.cluster.namespaces import refusal_of_account, refusal_of_client_item
from paycore.ledger.model import SYSTEM_TENANT, AccountRequest, TransferRequest
from paycore.storage.reconciliation import ExceptionRow, RecordReport, ReportRow, SettledRow


def _report(batch: str) -> ReportRow:
    return ReportRow("acq", batch, "d" * 64, "2026-12-07", "2026-12-08", 1, 1, 1, 5)


def _missing(reference: str) -> ExceptionRow:
    return ExceptionRow(
        f"rx_{reference}", "acq", "b1", "missing_in_report", reference, 0, "EUR", 100, None,
        "in no report", "open", None, 5, None,
    )  # fmt: skip


async def test_a_report_is_recorded_once_and_settling_closes_a_missing_exception(
    make_store: StoreFactory,
) -> None:
    """RecordReport is True once then False; a later batch settling a missing reference
    resolves its exception with a note naming the batch (SQLite and PostgreSQL)."""
    store = make_store()
    await store.start()
    try:
        first = RecordReport(_report("b1"), (), (_missing("p1.a1"), _missing("p2.a1")))
        assert await store.execute(first) is True
        assert await store.execute(first) is False
        reads = store.reconciliation
        assert len(await reads.exceptions("acq")) == 2
        late = RecordReport(_report("b2"), (SettledRow("acq", "p1.a1", "b2", 100),))
        assert await store.execute(late) is True
        (still,) = await reads.exceptions("acq")
        assert still.reference == "p2.a1"
        closed = await reads.exception("rx_p1.a1")
        assert closed is not None
        assert (closed.status, closed.note) == ("resolved", "settled in b2")
        assert await reads.settled("acq") == {"p1.a1": "b2"}
        assert (await reads.report("acq", "b1")) == _report("b1")
    finally:
        await store.stop()


async def test_reports_and_exceptions_are_paged_by_their_keys(make_store: StoreFactory) -> None:
    """Pages of reports (by imported_at, processor, batch) and exceptions (by created_at,
    id), filtered by processor and status, either way, with ties on the time broken by
    the rest of the key and nothing skipped or repeated (SQLite and PostgreSQL)."""
    store = make_store()
    await store.start()
    try:
        batches = [("acq", "b1", 5), ("acq", "b2", 5), ("bcq", "b1", 5), ("acq", "b3", 9)]
        for processor, batch, at in batches:
            row = ReportRow(processor, batch, "d" * 64, "2026-12-07", "2026-12-08", 1, 0, 2, at)
            excs = tuple(
                ExceptionRow(
                    f"rx_{processor}.{batch}.{n}",
                    processor,
                    batch,
                    "unknown_reference",
                    f"r{n}",
                    n,
                    "EUR",
                    None,
                    1,
                    "",
                    "open",
                    None,
                    at,
                    None,
                )
                for n in (1, 2)
            )
            assert await store.execute(RecordReport(row, (), excs)) is True
        reads = store.reconciliation

        async def reports(processor: str | None, descending: bool) -> list[tuple[str, str]]:
            seen: list[tuple[str, str]] = []
            after = None
            while True:
                page = await reads.report_page(
                    processor, after=after, limit=1, descending=descending
                )
                if not page:
                    return seen
                seen += [(r.processor, r.batch_id) for r in page]
                after = (page[-1].imported_at, page[-1].processor, page[-1].batch_id)

        ordered = [("acq", "b1"), ("acq", "b2"), ("bcq", "b1"), ("acq", "b3")]
        assert await reports(None, False) == ordered
        assert await reports(None, True) == ordered[::-1]
        assert await reports("acq", False) == [("acq", "b1"), ("acq", "b2"), ("acq", "b3")]

        async def exceptions(processor: str | None, status: str | None) -> list[str]:
            seen: list[str] = []
            after = None
            while True:
                page = await reads.exception_page(processor, status=status, after=after, limit=3)
                if not page:
                    return seen
                seen += [e.id for e in page]
                after = (page[-1].created_at, page[-1].id)

        everything = await exceptions(None, None)
        assert len(everything) == len(set(everything)) == 8
        assert everything[-2:] == ["rx_acq.b3.1", "rx_acq.b3.2"]  # the latest last
        assert await exceptions("bcq", "open") == ["rx_bcq.b1.1", "rx_bcq.b1.2"]
        assert await exceptions("acq", "resolved") == []
    finally:
        await store.stop()


def test_the_charts_names_are_reserved() -> None:
    """recon: accounts are made only by paycore (system tenant); rc. ids and recon:
    accounts are refused in a client's transfer, allowed in paycore's own."""
    assert refusal_of_account(AccountRequest("recon:bank:acq:EUR", "EUR")) is not None
    own = AccountRequest("recon:bank:acq:EUR", "EUR", tenant=SYSTEM_TENANT)
    assert refusal_of_account(own) is None
    item = TransferRequest("rc.abc.fees", "recon:fees:acq:EUR", "recon:bank:acq:EUR", 5, "EUR")
    refused = refusal_of_client_item(item)
    assert refused is not None
    assert "rc." in refused[1]
    named = TransferRequest("t1", "recon:fees:acq:EUR", "a", 5, "EUR")
    assert refusal_of_client_item(named) is not None
    assert refusal_of_client_item(item, internal=True) is None
