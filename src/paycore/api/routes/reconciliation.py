"""``/v1/reconciliation``: the operator imports processors' settlement reports and works
the exception queue, what ``paycore reconcile`` does, over HTTP (docs/reconciliation.md).

- ``POST /v1/reconciliation/reports`` ``{processor, report}`` (the report's CSV text in a
  JSON string) imports a report with the service ``paycore reconcile`` runs: 201 with
  what it matched, booked and queued; 200 ``already_imported`` for a batch imported
  before with the same text (nothing changes). A report that does not parse: 422
  ``invalid_report`` naming its first bad line; a processor the node does not know:
  422 ``unknown_processor``; the batch imported before with another text: 409
  ``report_conflict``; another import of the processor running: 409
  ``import_in_progress`` (retry); nothing is changed by any of them.
- ``GET /v1/reconciliation/reports``, ``GET /v1/reconciliation/exceptions``: pages of
  ``{data, next_cursor}``, oldest first (``order=desc``: newest first), filtered by
  ``processor`` (and ``status``, ``open`` or ``resolved``, for exceptions).
- ``POST /v1/reconciliation/exceptions/{exception_id}/resolve`` ``{note}``: 200 with the
  exception resolved (one resolved before is answered as it is, its first note kept).

Who: an ``admin`` key of the operator's tenant (``default``; an open dev server acts
for it). Settlement reports are the platform's business with its processors, not a
tenant's, so another tenant's admin key is refused (403 ``forbidden_scope``).

Every POST honours an Idempotency-Key. An import is several transactions (each safe to
repeat, ``paycore.reconciliation.service``), so its answer is stored after them
(``WriteExecutor.run_steps``); a resolve is one command on the key shard.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from paycore.api.auth import Scope, principal_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import WriteExecutor
from paycore.api.listing import ListQuery, encode_list_cursor
from paycore.api.problems import problem
from paycore.api.reconciliation_schemas import (
    EXCEPTION_ID_PATTERN,
    PROCESSOR_PATTERN,
    ExceptionOut,
    ExceptionPageOut,
    ImportOut,
    ReportIn,
    ReportPageOut,
    ResolveIn,
    decode_report_cursor,
    encode_report_cursor,
    exception_out,
    import_out,
    report_out,
)
from paycore.api.routes._docs import documented
from paycore.api.schemas import decode_body, encode
from paycore.config import Settings
from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.ledger.model import DEFAULT_TENANT
from paycore.locks import LockService
from paycore.reconciliation import (
    ReconciliationError,
    ReportError,
    import_report,
    resolution,
    rules_for,
)
from paycore.storage.base import StoredResponse
from paycore.storage.reconciliation import ExceptionRow, ReconciliationReads
from paycore.storage.store import Store

__all__ = ["reconciliation_routes"]

_JSON: Final = "application/json"
_ADMIN: Final[dict[str, Any]] = {"scope": Scope.ADMIN}
_TAGS: Final = ["reconciliation"]
_STATUSES: Final = ("open", "resolved")
_EXCEPTION_ID_RE: Final = re.compile(EXCEPTION_ID_PATTERN)
_PROCESSOR_RE: Final = re.compile(PROCESSOR_PATTERN)
_Q = FromQuery[str | None]  # a documented query parameter (read by ListQuery)


def _operator_only(request: Request[Any, Any, Any]) -> None:
    """Refuse every caller but the operator's tenant (the module docstring)."""
    tenant = principal_of(request).tenant
    if tenant != DEFAULT_TENANT:
        raise RequestError(
            ErrorCode.FORBIDDEN_SCOPE,
            f"reconciliation is the operator's: it needs an admin key of tenant "
            f"{DEFAULT_TENANT!r}, not of {tenant!r}",
        )


def _json(out: msgspec.Struct, status: int = 200) -> Response[bytes]:
    return Response(encode(out), status_code=status, media_type=_JSON)


def reconciliation_routes(
    store: Store,
    writes: WriteExecutor,
    settings: Settings,
    *,
    processors: Collection[str],
    locks: LockService | None,
) -> list[HTTPRouteHandler]:
    """The reconciliation handlers over ``store``; ``processors``: the names the node
    knows (its payment service's); ``locks``: the lock service that keeps two imports of
    one processor apart, on this node and (Redis, PostgreSQL) on every other."""
    return [
        *_report_routes(store, writes, settings, frozenset(processors), locks),
        *_exception_routes(store, writes, settings),
    ]


def _reads(store: Store) -> ReconciliationReads:
    return store.key_store.reconciliation  # the rows live on the key shard


def _report_routes(
    store: Store,
    writes: WriteExecutor,
    settings: Settings,
    known: frozenset[str],
    locks: LockService | None,
) -> list[HTTPRouteHandler]:
    decode_report = msgspec.json.Decoder(ReportIn)
    config = settings.reconciliation

    async def imported(body: ReportIn) -> StoredResponse:
        """Import the report: its answer, or the refusal that a retry would meet again
        (a conflict); what a retry may not meet again is raised, and not stored."""
        try:
            result = await import_report(
                store,
                body.processor,
                body.report,
                rules=rules_for(config, body.processor),
                locks=locks,
                lock_wait=config.lock_wait_seconds,
            )
        except ReportError as exc:  # the body is invalid: refused like a malformed one
            raise RequestError(ErrorCode.INVALID_REPORT, str(exc)) from None
        except ReconciliationError as exc:
            if exc.code == "report_conflict":
                return problem(ErrorCode.REPORT_CONFLICT, str(exc))
            if exc.code == "import_in_progress":
                raise RequestError(ErrorCode.IMPORT_IN_PROGRESS, str(exc)) from None
            if exc.code == "invalid_processor":
                raise RequestError(ErrorCode.UNKNOWN_PROCESSOR, str(exc)) from None
            # booking_refused: the ledger refused a chain that match_report built
            # balanced over accounts it made; a bug, not the caller's doing.
            raise PaycoreError(ErrorCode.INTERNAL_ERROR, str(exc)) from exc
        status = 200 if result.already_imported else 201
        return StoredResponse(status, encode(import_out(body.processor, result)), _JSON)

    @post(
        "/v1/reconciliation/reports",
        operation_class=documented(
            {201: ImportOut, 200: ImportOut}, body=ReportIn, idempotency_key=True
        ),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def import_settlement_report(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Import a processor's settlement report (its CSV text in ``report``): match its
        lines against the captures and refunds, book fees, chargebacks and the payout as
        linked transfers, queue what does not match. The same report again changes
        nothing (200, ``already_imported``). Operator's admin keys only."""
        _operator_only(request)
        body = decode_body(decode_report, await read_json_body(request))
        if body.processor not in known:
            raise RequestError(
                ErrorCode.UNKNOWN_PROCESSOR,
                f"processor {body.processor!r} is not one of this node's: "
                f"{', '.join(sorted(known)) or 'none'}",
            )
        return await writes.run_steps(request, body, lambda: imported(body))

    @get(
        "/v1/reconciliation/reports",
        operation_class=documented({200: ReportPageOut}),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def list_settlement_reports(
        request: Request[Any, Any, Any],
        *,
        processor: _Q = None,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
    ) -> Response[bytes]:
        """The imported reports, oldest first (``order=desc``: newest first)."""
        _operator_only(request)
        query = ListQuery(request.query_params, ("processor",))
        name = _processor(query)
        page = _page_size(query, settings)
        descending = query.choice("order", ("asc", "desc")) == "desc"
        after = decode_report_cursor(query.text("cursor"))
        rows = await _reads(store).report_page(
            name, after=after, limit=page + 1, descending=descending
        )
        out = ReportPageOut(
            data=[report_out(r) for r in rows[:page]],
            next_cursor=encode_report_cursor(rows[page - 1]) if len(rows) > page else None,
        )
        return _json(out)

    return [import_settlement_report, list_settlement_reports]


def _exception_routes(
    store: Store, writes: WriteExecutor, settings: Settings
) -> list[HTTPRouteHandler]:
    decode_resolve = msgspec.json.Decoder(ResolveIn)

    @get(
        "/v1/reconciliation/exceptions",
        operation_class=documented({200: ExceptionPageOut}),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def list_reconciliation_exceptions(
        request: Request[Any, Any, Any],
        *,
        processor: _Q = None,
        status: _Q = None,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
    ) -> Response[bytes]:
        """The exception queue: what did not match, with its reason, oldest first;
        ``status=open`` for what is left to do."""
        _operator_only(request)
        query = ListQuery(request.query_params, ("processor", "status"))
        name = _processor(query)
        wanted = query.choice("status", _STATUSES)
        page = query.page(settings)
        rows = await _reads(store).exception_page(
            name,
            status=wanted,
            after=page.after,
            limit=page.limit + 1,
            descending=page.descending,
        )
        last = rows[page.limit - 1] if len(rows) > page.limit else None
        out = ExceptionPageOut(
            data=[exception_out(r) for r in rows[: page.limit]],
            next_cursor=None if last is None else encode_list_cursor((last.created_at, last.id)),
        )
        return _json(out)

    @post(
        "/v1/reconciliation/exceptions/{exception_id:str}/resolve",
        operation_class=documented({200: ExceptionOut}, body=ResolveIn, idempotency_key=True),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def resolve_reconciliation_exception(
        request: Request[Any, Any, Any], exception_id: FromPath[str]
    ) -> Response[bytes]:
        """Close an open exception with a note of what the operator did or found; one
        resolved before is answered as it is (its first note kept)."""
        _operator_only(request)
        body = decode_body(decode_resolve, await read_json_body(request))
        missing = f"reconciliation exception {exception_id!r} not found"
        if not _EXCEPTION_ID_RE.fullmatch(exception_id):
            raise RequestError(ErrorCode.RECONCILIATION_EXCEPTION_NOT_FOUND, missing)

        def render(row: ExceptionRow | None) -> StoredResponse:
            if row is None:
                return problem(ErrorCode.RECONCILIATION_EXCEPTION_NOT_FOUND, missing)
            return StoredResponse(200, encode(exception_out(row)), _JSON)

        command = resolution(exception_id, body.note)
        return await writes.run(request, command, render, body)

    return [list_reconciliation_exceptions, resolve_reconciliation_exception]


def _processor(query: ListQuery) -> str | None:
    name = query.text("processor")
    if name is not None and not _PROCESSOR_RE.fullmatch(name):
        raise RequestError(
            ErrorCode.INVALID_REQUEST, "processor must be 1-24 characters of [A-Za-z0-9_-]"
        )
    return name


def _page_size(query: ListQuery, settings: Settings) -> int:
    size = query.integer("limit", 1, settings.max_page_size)
    return min(100, settings.max_page_size) if size is None else size
