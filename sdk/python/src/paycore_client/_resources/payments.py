"""``client.payments``: card and wallet payments (Stripe-like intents over the ledger)."""

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
from paycore_client.models import Payment
from paycore_client.params import CaptureParams, PaymentCreateParams, PaymentListParams

__all__ = ["AsyncPayments", "Payments"]

_payment = decoder_for(Payment)
_payments = decoder_for(PageBody[Payment])


def _create(params: PaymentCreateParams, idempotency_key: str | None) -> Call[Payment]:
    return Call("POST", "/v1/payments", _payment, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _retrieve(payment_id: str) -> Call[Payment]:
    return Call("GET", path("v1", "payments", payment_id), _payment)


def _capture(payment_id: str, params: CaptureParams, idempotency_key: str | None) -> Call[Payment]:
    route = path("v1", "payments", payment_id, "capture")
    return Call("POST", route, _payment, body=body_of(params), idempotency_key=idempotency_key)


def _cancel(payment_id: str, idempotency_key: str | None) -> Call[Payment]:
    route = path("v1", "payments", payment_id, "cancel")
    return Call("POST", route, _payment, body={}, idempotency_key=idempotency_key)


def _list(params: PaymentListParams) -> tuple[ListCall[Payment], str | None]:
    return list_call("/v1/payments", _payments, params)


class Payments:
    """A payment is created whatever its outcome: a decline is ``status="failed"`` with
    a ``failure_code``, not an exception. ``capture="manual"`` authorizes only
    (``requires_capture``); ``capture`` and ``cancel`` finish it."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[PaymentCreateParams]
    ) -> Payment:
        """Pay a merchant account from a card (``source={"card": {...}}``) or a wallet
        (``source={"wallet_account_id": ...}``)."""
        return self._sender.send(_create(params, idempotency_key))

    def retrieve(self, payment_id: str) -> Payment:
        """A payment with its attempts and refunds."""
        return self._sender.send(_retrieve(payment_id))

    def capture(
        self,
        payment_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[CaptureParams],
    ) -> Payment:
        """Capture all (no ``amount``) or part of an authorization."""
        return self._sender.send(_capture(payment_id, params, idempotency_key))

    def cancel(self, payment_id: str, *, idempotency_key: str | None = None) -> Payment:
        """Release what an authorization still holds (void)."""
        return self._sender.send(_cancel(payment_id, idempotency_key))

    def list(self, **params: Unpack[PaymentListParams]) -> Page[Payment]:
        return page(self._sender, *_list(params))


class AsyncPayments:
    """``Payments`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[PaymentCreateParams]
    ) -> Payment:
        return await self._sender.send(_create(params, idempotency_key))

    async def retrieve(self, payment_id: str) -> Payment:
        return await self._sender.send(_retrieve(payment_id))

    async def capture(
        self,
        payment_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[CaptureParams],
    ) -> Payment:
        return await self._sender.send(_capture(payment_id, params, idempotency_key))

    async def cancel(self, payment_id: str, *, idempotency_key: str | None = None) -> Payment:
        return await self._sender.send(_cancel(payment_id, idempotency_key))

    async def list(self, **params: Unpack[PaymentListParams]) -> AsyncPage[Payment]:
        return await async_page(self._sender, *_list(params))
