"""Reconciliation through the SDK (``client.reconciliation``), sync and async, against a
real ``paycore serve`` (embedded processors sim-a and sim-b) with the operator's key."""

from __future__ import annotations

import asyncio

import pytest

from paycore_client import (
    AsyncPaycore,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    Paycore,
    PermissionDeniedError,
)
from sdk.support import LiveServer

_HEADER = (
    "record,batch_id,settlement_date,payout_date,type,reference,processor_id,currency,"
    "count,gross,fee,net\n"
)


def _report(batch: str, reference: str) -> str:
    """A report of one line whose reference paycore never sent (an exception)."""
    days = "2026-12-07,2026-12-08"
    return (
        f"{_HEADER}line,{batch},{days},capture,{reference},p1,USD,,10.00,0.39,9.61\n"
        f"total,{batch},{days},,,,USD,1,10.00,0.39,9.61\n"
    )


def test_an_operator_imports_a_report_and_resolves_its_exception(
    live_server: LiveServer, uid: str
) -> None:
    """import_report (again: already_imported), list_reports, list_exceptions page by
    page, resolve_exception; a bad report, another text for the batch and an unknown
    exception raise their families."""
    text = _report(f"{uid}-b1", f"{uid}-ref")
    with Paycore(live_server.operator_key, base_url=live_server.base_url) as operator:
        recon = operator.reconciliation
        imported = recon.import_report(processor="sim-a", report=text, idempotency_key=uid)
        assert (imported.already_imported, imported.lines, imported.matched) == (False, 1, 0)
        assert imported.exceptions == {"unknown_reference": 1}
        assert recon.import_report(processor="sim-a", report=text).already_imported
        reports = list(recon.list_reports(processor="sim-a", limit=1).auto_paging_iter())
        assert f"{uid}-b1" in [r.batch_id for r in reports]
        queued = [
            e
            for e in recon.list_exceptions(status="open", limit=1).auto_paging_iter()
            if e.reference == f"{uid}-ref"
        ]
        assert [(e.reason, e.reported_amount, e.line_no) for e in queued] == [
            ("unknown_reference", 1000, 2)
        ]
        resolved = recon.resolve_exception(queued[0].id, note="not ours")
        assert (resolved.status, resolved.note) == ("resolved", "not ours")

        with pytest.raises(InvalidRequestError) as bad:
            recon.import_report(processor="sim-a", report="nope\n")
        assert bad.value.code == "invalid_report"
        with pytest.raises(ConflictError) as conflict:
            recon.import_report(processor="sim-a", report=_report(f"{uid}-b1", f"{uid}-x"))
        assert conflict.value.code == "report_conflict"
        with pytest.raises(NotFoundError):
            recon.resolve_exception("rx_" + "0" * 24, note="x")


def test_a_tenants_admin_key_may_not_reconcile(live_server: LiveServer) -> None:
    """Settlement reports are the operator's: another tenant's admin key gets 403."""
    with (
        Paycore(live_server.admin_key, base_url=live_server.base_url) as tenant,
        pytest.raises(PermissionDeniedError),
    ):
        tenant.reconciliation.list_exceptions()


def test_the_async_client_imports_and_lists(live_server: LiveServer, uid: str) -> None:
    async def run() -> None:
        async with AsyncPaycore(live_server.operator_key, base_url=live_server.base_url) as op:
            done = await op.reconciliation.import_report(
                processor="sim-b", report=_report(f"{uid}-b2", f"{uid}-ref2")
            )
            assert done.exceptions == {"unknown_reference": 1}
            page = await op.reconciliation.list_exceptions(processor="sim-b", status="open")
            assert f"{uid}-ref2" in [e.reference for e in page.data]
            reports = await op.reconciliation.list_reports(processor="sim-b", order="desc")
            assert reports.data[0].batch_id == f"{uid}-b2"

    asyncio.run(run())
