"""``client.refunds``: give back all or part of what a card payment captured."""

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
from paycore_client.models import Refund
from paycore_client.params import RefundCreateParams, RefundListParams

__all__ = ["AsyncRefunds", "Refunds"]

_refund = decoder_for(Refund)
_refunds = decoder_for(PageBody[Refund])


def _create(params: RefundCreateParams, idempotency_key: str | None) -> Call[Refund]:
    return Call("POST", "/v1/refunds", _refund, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _retrieve(refund_id: str) -> Call[Refund]:
    return Call("GET", path("v1", "refunds", refund_id), _refund)


def _list(params: RefundListParams) -> tuple[ListCall[Refund], str | None]:
    return list_call("/v1/refunds", _refunds, params)


class Refunds:
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[RefundCreateParams]
    ) -> Refund:
        """Refund ``amount`` (all that is left when absent) of ``payment_id``."""
        return self._sender.send(_create(params, idempotency_key))

    def retrieve(self, refund_id: str) -> Refund:
        return self._sender.send(_retrieve(refund_id))

    def list(self, **params: Unpack[RefundListParams]) -> Page[Refund]:
        return page(self._sender, *_list(params))


class AsyncRefunds:
    """``Refunds`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[RefundCreateParams]
    ) -> Refund:
        return await self._sender.send(_create(params, idempotency_key))

    async def retrieve(self, refund_id: str) -> Refund:
        return await self._sender.send(_retrieve(refund_id))

    async def list(self, **params: Unpack[RefundListParams]) -> AsyncPage[Refund]:
        return await async_page(self._sender, *_list(params))
