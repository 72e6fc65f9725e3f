"""``client.reconciliation``: processors' settlement reports and the exception queue
(an ``admin`` key of the operator's tenant is needed).

Importing the same report again changes nothing (``already_imported``); what a report
did not match waits in the exception queue until an operator resolves it with a note.
"""

from __future__ import annotations

from typing import Unpack

from paycore_client._call import Call, PageBody, body_of, decoder_for, path
from paycore_client._pagination import AsyncPage, Page
from paycore_client._resources._sender import (
    AsyncSender,
    ListCall,
    Sender,
    async_page,
    list_call,
    page,
)
from paycore_client.models import ReconciliationException, ReportImport, SettlementReport
from paycore_client.params import (
    ReconciliationExceptionListParams,
    ReconciliationReportListParams,
    ReportImportParams,
    ResolveExceptionParams,
)

__all__ = ["AsyncReconciliation", "Reconciliation"]

_REPORTS = "/v1/reconciliation/reports"
_EXCEPTIONS = "/v1/reconciliation/exceptions"
_imported = decoder_for(ReportImport)
_exception = decoder_for(ReconciliationException)
_reports = decoder_for(PageBody[SettlementReport])
_exceptions = decoder_for(PageBody[ReconciliationException])


def _import(params: ReportImportParams, idempotency_key: str | None) -> Call[ReportImport]:
    return Call("POST", _REPORTS, _imported, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _resolve(
    exception_id: str, params: ResolveExceptionParams, idempotency_key: str | None
) -> Call[ReconciliationException]:
    return Call("POST", path("v1", "reconciliation", "exceptions", exception_id, "resolve"),
                _exception, body=body_of(params), idempotency_key=idempotency_key)  # fmt: skip


def _list_reports(
    params: ReconciliationReportListParams,
) -> tuple[ListCall[SettlementReport], str | None]:
    return list_call(_REPORTS, _reports, params)


def _list_exceptions(
    params: ReconciliationExceptionListParams,
) -> tuple[ListCall[ReconciliationException], str | None]:
    return list_call(_EXCEPTIONS, _exceptions, params)


class Reconciliation:
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def import_report(
        self, *, idempotency_key: str | None = None, **params: Unpack[ReportImportParams]
    ) -> ReportImport:
        """Import a processor's settlement report (its CSV text): match, book, queue."""
        return self._sender.send(_import(params, idempotency_key))

    def list_reports(
        self, **params: Unpack[ReconciliationReportListParams]
    ) -> Page[SettlementReport]:
        """The imported reports, oldest first."""
        return page(self._sender, *_list_reports(params))

    def list_exceptions(
        self, **params: Unpack[ReconciliationExceptionListParams]
    ) -> Page[ReconciliationException]:
        """The exception queue, oldest first (``status="open"``: what is left to do)."""
        return page(self._sender, *_list_exceptions(params))

    def resolve_exception(
        self,
        exception_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[ResolveExceptionParams],
    ) -> ReconciliationException:
        """Close an exception with a note (one closed before keeps its first note)."""
        return self._sender.send(_resolve(exception_id, params, idempotency_key))


class AsyncReconciliation:
    """``Reconciliation`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def import_report(
        self, *, idempotency_key: str | None = None, **params: Unpack[ReportImportParams]
    ) -> ReportImport:
        return await self._sender.send(_import(params, idempotency_key))

    async def list_reports(
        self, **params: Unpack[ReconciliationReportListParams]
    ) -> AsyncPage[SettlementReport]:
        return await async_page(self._sender, *_list_reports(params))

    async def list_exceptions(
        self, **params: Unpack[ReconciliationExceptionListParams]
    ) -> AsyncPage[ReconciliationException]:
        return await async_page(self._sender, *_list_exceptions(params))

    async def resolve_exception(
        self,
        exception_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[ResolveExceptionParams],
    ) -> ReconciliationException:
        return await self._sender.send(_resolve(exception_id, params, idempotency_key))
