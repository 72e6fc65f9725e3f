"""``/v1/payments``, ``/v1/refunds``, ``/v1/payouts``: the payment paths over HTTP.

A payment is not one store command: it spans a first transaction, a processor call and
a second transaction, so its Idempotency-Key is handled by ``PaymentService`` (a claim
written with the first transaction, the answer stored with the one that records the
outcome) rather than by ``WriteExecutor``. What a client sees is the same contract:

- same key, same body: the first answer again, byte for byte, ``Idempotent-Replayed:
  true`` (errors included, except retryable ones: 503s are not kept);
- same key, another body: 409 ``idempotency_key_reused``;
- same key while the first request still runs, or while the payment it started is
  ``processing`` with no answer given yet (its request died mid-call): 409
  ``idempotency_key_in_use``; once the resolver ends that payment, a retry gets it as
  it is then (and that answer is kept for later retries).

Answers: ``POST /v1/payments`` 201 whatever the outcome (``status`` says it: succeeded,
requires_capture, processing, failed); capture and cancel 200 with the payment;
``POST /v1/refunds`` and ``/v1/payouts`` 201. A request refused before anything was
done is a problem (422 bad card, 404 unknown account, 409 wrong state...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from paycore.api.auth import tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import RequestKeys, WriteExecutor, stored_to_response
from paycore.api.payment_schemas import (
    CancelIn,
    CaptureIn,
    PaymentIn,
    PaymentOut,
    PayoutIn,
    PayoutOut,
    RefundIn,
    RefundOut,
    decode_payment_body,
    payment_out,
    payout_out,
    refund_out,
)
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.schemas import encode
from paycore.api.tenancy import Namespace, namespace_of
from paycore.config import Settings
from paycore.errors import PaycoreError
from paycore.payments.listing import refunds_of
from paycore.payments.service import (
    PaymentService,
    PaymentView,
    PayoutView,
    RefundView,
    Reply,
    ReplyOutcome,
)
from paycore.storage.base import Idempotency, StoredResponse

__all__ = ["payment_routes"]

_JSON: Final = "application/json"

Render = Callable[[ReplyOutcome], StoredResponse]


def _render(status: int, ns: Namespace) -> Render:
    """How a view (or an error) becomes the exact HTTP answer, for a route's success
    status, with ids as the caller (``ns``) knows them; pure, so that a stored answer is
    the one given."""

    def render(outcome: ReplyOutcome) -> StoredResponse:
        if isinstance(outcome, PaycoreError):
            return problem(outcome.code, ns.detail(outcome.detail))
        if isinstance(outcome, PaymentView):
            body = encode(payment_out(outcome, ns))
        elif isinstance(outcome, RefundView):
            body = encode(refund_out(outcome, ns))
        else:
            assert isinstance(outcome, PayoutView)
            body = encode(payout_out(outcome, ns))
        return StoredResponse(status, body, _JSON)

    return render


def _ok(request: Request[Any, Any, Any]) -> Render:
    """The 200 answer of a view to the request's caller."""
    return _render(200, namespace_of(request))


class _Keys:
    """The payment routes' side of the Idempotency-Key protocol: the app's ``RequestKeys``
    (one in-flight set and one cluster-wide lock per key for every write route), and what
    a payment's reply becomes."""

    def __init__(self, keys: RequestKeys) -> None:
        self.keys = keys

    def keyed(
        self, request: Request[Any, Any, Any], body: msgspec.Struct, render: Render
    ) -> Idempotency | None:
        return self.keys.of(request, body, render)

    async def run(
        self,
        key: Idempotency | None,
        render: Render,
        call: Callable[[Idempotency | None], Awaitable[Reply]],
    ) -> Response[bytes]:
        if key is None:
            reply = await call(None)
        else:
            async with self.keys.held(key.key):  # a twin, here or on another node: 409
                reply = await call(key)
        if reply.response is not None:
            return stored_to_response(reply.response, replayed=reply.replayed)
        assert reply.outcome is not None
        if isinstance(reply.outcome, PaycoreError):
            raise reply.outcome  # the problem handler shows its detail in the caller's ids
        return stored_to_response(render(reply.outcome))


async def _read_payment(service: PaymentService, payment_id: str, ns: Namespace) -> Response[bytes]:
    """A payment as its owner reads it: with its refunds (a write's answer has none)."""
    view = await service.get_payment(payment_id)
    out = payment_out(view, ns, await refunds_of(service, view))
    return stored_to_response(StoredResponse(200, encode(out), _JSON))


def payment_routes(
    service: PaymentService,
    settings: Settings,
    *,
    writes: WriteExecutor | None = None,
) -> list[HTTPRouteHandler]:
    """The payment handlers, bound to one payment service (it holds the store); ``writes``:
    the app's executor, whose cluster-wide key lock the payment keys share."""
    decode_payment = msgspec.json.Decoder(PaymentIn)
    decode_capture = msgspec.json.Decoder(CaptureIn)
    decode_cancel = msgspec.json.Decoder(CancelIn)
    decode_refund = msgspec.json.Decoder(RefundIn)
    decode_payout = msgspec.json.Decoder(PayoutIn)
    shared = (
        writes.keys
        if writes is not None
        else RequestKeys(
            service.store, retention_seconds=settings.idempotency_retention_hours * 3600
        )
    )
    keys = _Keys(shared)
    keyed, run = keys.keyed, keys.run

    @post(
        "/v1/payments",
        operation_class=documented({201: PaymentOut}, body=PaymentIn, idempotency_key=True),
        tags=["payments"],
    )
    async def create_payment(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Pay a merchant (or top up a wallet) from a card, or pay from a wallet."""
        body = decode_payment_body(decode_payment, await read_json_body(request))
        ns = namespace_of(request)
        created = _render(201, ns)
        key = keyed(request, body.fingerprint_body(), created)
        new = body.to_new(tenant_of(request), ns.account)
        return await run(key, created, lambda k: service.create_payment(new, k))

    @get(
        "/v1/payments/{payment_id:str}",
        operation_class=documented({200: PaymentOut}),
        tags=["payments"],
    )
    async def read_payment(
        request: Request[Any, Any, Any], payment_id: FromPath[str]
    ) -> Response[bytes]:
        """A payment with its current status, attempts and refunds."""
        await service.check_owner("payment", payment_id, tenant_of(request))
        return await _read_payment(service, payment_id, namespace_of(request))

    @post(
        "/v1/payments/{payment_id:str}/capture",
        operation_class=documented({200: PaymentOut}, body=CaptureIn, idempotency_key=True),
        tags=["payments"],
    )
    async def capture_payment(
        request: Request[Any, Any, Any], payment_id: FromPath[str]
    ) -> Response[bytes]:
        """Capture all or part of an authorization; partial captures may follow."""
        body = decode_payment_body(decode_capture, await read_json_body(request), empty=b"{}")
        ok = _ok(request)
        await service.check_owner("payment", payment_id, tenant_of(request))
        key = keyed(request, body, ok)
        return await run(
            key,
            ok,
            lambda k: service.capture(payment_id, body.amount, final=body.final_capture, keyed=k),
        )

    @post(
        "/v1/payments/{payment_id:str}/cancel",
        operation_class=documented({200: PaymentOut}, body=CancelIn, idempotency_key=True),
        tags=["payments"],
    )
    async def cancel_payment(
        request: Request[Any, Any, Any], payment_id: FromPath[str]
    ) -> Response[bytes]:
        """Release what an authorization still holds."""
        body = decode_payment_body(decode_cancel, await read_json_body(request), empty=b"{}")
        ok = _ok(request)
        await service.check_owner("payment", payment_id, tenant_of(request))
        key = keyed(request, body, ok)
        return await run(key, ok, lambda k: service.cancel(payment_id, keyed=k))

    @post(
        "/v1/refunds",
        operation_class=documented({201: RefundOut}, body=RefundIn, idempotency_key=True),
        tags=["payments"],
    )
    async def create_refund(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Give back all or part of what a card payment captured."""
        body = decode_payment_body(decode_refund, await read_json_body(request))
        created = _render(201, namespace_of(request))
        await service.check_owner("payment", body.payment_id, tenant_of(request))
        key = keyed(request, body, created)
        return await run(
            key, created, lambda k: service.refund(body.payment_id, body.amount, keyed=k)
        )

    @get(
        "/v1/refunds/{refund_id:str}",
        operation_class=documented({200: RefundOut}),
        tags=["payments"],
    )
    async def read_refund(
        request: Request[Any, Any, Any], refund_id: FromPath[str]
    ) -> Response[bytes]:
        """A refund with its current status."""
        await service.check_owner("refund", refund_id, tenant_of(request))
        return stored_to_response(_ok(request)(await service.get_refund(refund_id)))

    @post(
        "/v1/payouts",
        operation_class=documented({201: PayoutOut}, body=PayoutIn, idempotency_key=True),
        tags=["payments"],
    )
    async def create_payout(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Pay money out of a wallet to a bank account."""
        body = decode_payment_body(decode_payout, await read_json_body(request))
        ns = namespace_of(request)
        created = _render(201, ns)
        key = keyed(request, body, created)
        new = body.to_new(tenant_of(request), ns.account)
        return await run(key, created, lambda k: service.payout(new, k))

    @get(
        "/v1/payouts/{payout_id:str}",
        operation_class=documented({200: PayoutOut}),
        tags=["payments"],
    )
    async def read_payout(
        request: Request[Any, Any, Any], payout_id: FromPath[str]
    ) -> Response[bytes]:
        """A payout with its current status."""
        await service.check_owner("payout", payout_id, tenant_of(request))
        return stored_to_response(_ok(request)(await service.get_payout(payout_id)))

    return [
        create_payment,
        read_payment,
        capture_payment,
        cancel_payment,
        create_refund,
        read_refund,
        create_payout,
        read_payout,
    ]
