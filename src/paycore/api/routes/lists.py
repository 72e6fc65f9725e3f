"""The list endpoints: ``GET /v1/accounts``, ``/v1/transfers``, ``/v1/payments``,
``/v1/refunds``, ``/v1/payouts``.

Each answers ``{data, next_cursor}``: up to ``limit`` items (default 100, at most the
``max_page_size`` setting), each rendered exactly as a read of its id renders it, oldest
first (``order=desc``: newest first); ``next_cursor`` (null on the last page) is passed
back as ``cursor`` for the next page. A caller lists its own tenant's objects only, and
never paycore's own (clearing and processor accounts, the settlement's and the payments'
ledger transfers). Filters and the page are read by ``paycore.api.listing``; the rows by
``paycore.storage.listing`` (one index walk per shard and page).

Each handler names its query parameters for the OpenAPI document only: Litestar would
convert them leniently, ``ListQuery`` reads them strictly (and refuses unknown ones).
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery

from paycore.api.auth import tenant_of
from paycore.api.listing import ListQuery, encode_list_cursor
from paycore.api.payment_schemas import (
    PaymentPageOut,
    PayoutPageOut,
    RefundPageOut,
    payment_out,
    payout_out,
    refund_out,
)
from paycore.api.routes._docs import documented
from paycore.api.schemas import (
    AccountPageOut,
    TransferListOut,
    account_out,
    encode,
    transfer_out,
)
from paycore.api.tenancy import Namespace, namespace_of
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import TransferStatus
from paycore.ledger.tenancy import id_prefix
from paycore.payments.intents import PaymentStatus, PayoutStatus, RefundStatus
from paycore.payments.listing import list_payments, list_payouts, list_refunds
from paycore.payments.service import PaymentService
from paycore.storage.listing import (
    AccountFilter,
    PaymentFilter,
    PayoutFilter,
    RefundFilter,
    TransferFilter,
)
from paycore.storage.store import Store

__all__ = ["list_routes"]

_JSON: Final = "application/json"
_CREATED: Final = ("created_gte", "created_lt")
_ACCOUNT_FILTERS: Final = ("currency", "code", "no_overdraft", "history", "closed", *_CREATED)
_TRANSFER_FILTERS: Final = ("account_id", "status", *_CREATED)
_PAYMENT_FILTERS: Final = ("merchant_account_id", "status", *_CREATED)
_REFUND_FILTERS: Final = ("payment_id", "status", *_CREATED)
_PAYOUT_FILTERS: Final = ("wallet_account_id", "status", *_CREATED)


def _json(out: Any) -> Response[bytes]:
    return Response(encode(out), media_type=_JSON)


async def _own_account(store: Store, ns: Namespace, client_id: str | None) -> str | None:
    """The store's id of the caller's account ``client_id``; 404 ``account_not_found``
    for another's (a miss, as ``GET /v1/accounts/{id}``) and for paycore's own."""
    if client_id is None:
        return None
    internal = ns.account(client_id)
    account = (await store.get_accounts([internal])).get(internal)
    if account is None or account.tenant != ns.tenant:
        raise RequestError(ErrorCode.ACCOUNT_NOT_FOUND, f"account {client_id!r} not found")
    return internal


async def _accounts(store: Store, settings: Settings, request: Request[Any, Any, Any]) -> Any:
    query = ListQuery(request.query_params, _ACCOUNT_FILTERS, metadata=True)
    created_gte, created_lt = query.created()
    f = AccountFilter(
        tenant=tenant_of(request),
        currency=query.currency(),
        code=query.integer("code", 0, 2**31 - 1),
        no_overdraft=query.boolean("no_overdraft"),
        history=query.boolean("history"),
        closed=query.boolean("closed"),
        metadata=query.metadata(),
        created_gte=created_gte,
        created_lt=created_lt,
    )
    page = query.page(settings)
    listed = await store.list_accounts(f, page)
    ns = namespace_of(request)
    return AccountPageOut(
        data=[account_out(ns.account_out(a)) for a in listed.items],
        next_cursor=encode_list_cursor(listed.next_after),
    )


async def _transfers(store: Store, settings: Settings, request: Request[Any, Any, Any]) -> Any:
    query = ListQuery(request.query_params, _TRANSFER_FILTERS)
    created_gte, created_lt = query.created()
    status = query.choice("status", [s.value for s in TransferStatus])
    account = query.client_id("account_id")
    page = query.page(settings)
    ns = namespace_of(request)
    f = TransferFilter(
        owner=id_prefix(ns.tenant),
        account_id=await _own_account(store, ns, account),
        status=status,
        created_gte=created_gte,
        created_lt=created_lt,
    )
    listed = await store.list_transfers(f, page)
    return TransferListOut(
        data=[transfer_out(ns.transfer_out(v.transfer), v.status) for v in listed.items],
        next_cursor=encode_list_cursor(listed.next_after),
    )


async def _payments(
    store: Store, service: PaymentService, settings: Settings, request: Request[Any, Any, Any]
) -> Any:
    query = ListQuery(request.query_params, _PAYMENT_FILTERS)
    created_gte, created_lt = query.created()
    status = query.choice("status", [s.value for s in PaymentStatus])
    merchant = query.client_id("merchant_account_id")
    page = query.page(settings)
    ns = namespace_of(request)
    f = PaymentFilter(
        owner=id_prefix(ns.tenant),
        merchant_account_id=await _own_account(store, ns, merchant),
        status=status,
        created_gte=created_gte,
        created_lt=created_lt,
    )
    listed = await list_payments(service, f, page)
    return PaymentPageOut(
        data=[payment_out(view, ns, refunds) for view, refunds in listed.items],
        next_cursor=encode_list_cursor(listed.next_after),
    )


async def _refunds(
    service: PaymentService, settings: Settings, request: Request[Any, Any, Any]
) -> Any:
    query = ListQuery(request.query_params, _REFUND_FILTERS)
    created_gte, created_lt = query.created()
    status = query.choice("status", [s.value for s in RefundStatus])
    payment_id = query.client_id("payment_id")
    page = query.page(settings)
    ns = namespace_of(request)
    if payment_id is not None:  # 404 payment_not_found unless the caller's
        await service.check_owner("payment", payment_id, ns.tenant)
    f = RefundFilter(
        owner=id_prefix(ns.tenant),
        payment_id=payment_id,
        status=status,
        created_gte=created_gte,
        created_lt=created_lt,
    )
    listed = await list_refunds(service, f, page)
    return RefundPageOut(
        data=[refund_out(view, ns) for view in listed.items],
        next_cursor=encode_list_cursor(listed.next_after),
    )


async def _payouts(
    store: Store, service: PaymentService, settings: Settings, request: Request[Any, Any, Any]
) -> Any:
    query = ListQuery(request.query_params, _PAYOUT_FILTERS)
    created_gte, created_lt = query.created()
    status = query.choice("status", [s.value for s in PayoutStatus])
    wallet = query.client_id("wallet_account_id")
    page = query.page(settings)
    ns = namespace_of(request)
    f = PayoutFilter(
        owner=id_prefix(ns.tenant),
        wallet_account_id=await _own_account(store, ns, wallet),
        status=status,
        created_gte=created_gte,
        created_lt=created_lt,
    )
    listed = await list_payouts(service, f, page)
    return PayoutPageOut(
        data=[payout_out(view, ns) for view in listed.items],
        next_cursor=encode_list_cursor(listed.next_after),
    )


_Q = FromQuery[str | None]  # a documented query parameter (read by ListQuery)


def list_routes(
    store: Store, service: PaymentService, settings: Settings
) -> list[HTTPRouteHandler]:
    """The list handlers, bound to one store and its payment service."""

    @get("/v1/accounts", operation_class=documented({200: AccountPageOut}), tags=["accounts"])
    async def list_accounts_route(
        request: Request[Any, Any, Any],
        *,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
        currency: _Q = None,
        code: _Q = None,
        no_overdraft: _Q = None,
        history: _Q = None,
        closed: _Q = None,
        created_gte: _Q = None,
        created_lt: _Q = None,
    ) -> Response[bytes]:
        """The caller's accounts, as ``GET /v1/accounts/{id}`` shows each. Filters:
        ``currency``, ``code``, the flags ``no_overdraft``, ``history``, ``closed``
        (``true`` or ``false``), ``metadata[<key>]=<value>`` (a top-level metadata key
        holding that string; up to 10, all must hold), ``created_gte`` and
        ``created_lt`` (RFC 3339). Page: ``limit``, ``cursor``, ``order`` (asc, desc)."""
        return _json(await _accounts(store, settings, request))

    @get("/v1/transfers", operation_class=documented({200: TransferListOut}), tags=["transfers"])
    async def list_transfers_route(
        request: Request[Any, Any, Any],
        *,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
        account_id: _Q = None,
        status: _Q = None,
        created_gte: _Q = None,
        created_lt: _Q = None,
    ) -> Response[bytes]:
        """The caller's transfers, as ``GET /v1/transfers/{id}`` shows each (paycore's
        own, of payments and of the settlement, are not listed). Filters:
        ``account_id`` (either side), ``status`` (posted, pending, voided, expired,
        in_flight), ``created_gte`` and ``created_lt`` (RFC 3339). Page: ``limit``,
        ``cursor``, ``order`` (asc, desc)."""
        return _json(await _transfers(store, settings, request))

    @get("/v1/payments", operation_class=documented({200: PaymentPageOut}), tags=["payments"])
    async def list_payments_route(
        request: Request[Any, Any, Any],
        *,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
        merchant_account_id: _Q = None,
        status: _Q = None,
        created_gte: _Q = None,
        created_lt: _Q = None,
    ) -> Response[bytes]:
        """The caller's payments (crediting its accounts), as ``GET /v1/payments/{id}``
        shows each, refunds included. Filters: ``merchant_account_id``, ``status``,
        ``created_gte`` and ``created_lt`` (RFC 3339). Page: ``limit``, ``cursor``,
        ``order`` (asc, desc)."""
        return _json(await _payments(store, service, settings, request))

    @get("/v1/refunds", operation_class=documented({200: RefundPageOut}), tags=["payments"])
    async def list_refunds_route(
        request: Request[Any, Any, Any],
        *,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
        payment_id: _Q = None,
        status: _Q = None,
        created_gte: _Q = None,
        created_lt: _Q = None,
    ) -> Response[bytes]:
        """The refunds of the caller's payments, as ``GET /v1/refunds/{id}`` shows each.
        Filters: ``payment_id``, ``status``, ``created_gte`` and ``created_lt`` (RFC
        3339). Page: ``limit``, ``cursor``, ``order`` (asc, desc)."""
        return _json(await _refunds(service, settings, request))

    @get("/v1/payouts", operation_class=documented({200: PayoutPageOut}), tags=["payments"])
    async def list_payouts_route(
        request: Request[Any, Any, Any],
        *,
        limit: _Q = None,
        cursor: _Q = None,
        order: _Q = None,
        wallet_account_id: _Q = None,
        status: _Q = None,
        created_gte: _Q = None,
        created_lt: _Q = None,
    ) -> Response[bytes]:
        """The caller's payouts (from its wallets), as ``GET /v1/payouts/{id}`` shows
        each. Filters: ``wallet_account_id``, ``status``, ``created_gte`` and
        ``created_lt`` (RFC 3339). Page: ``limit``, ``cursor``, ``order`` (asc, desc)."""
        return _json(await _payouts(store, service, settings, request))

    return [
        list_accounts_route,
        list_transfers_route,
        list_payments_route,
        list_refunds_route,
        list_payouts_route,
    ]
