"""``client.payouts``: pay money out of a wallet account to a bank account."""

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
from paycore_client.models import Payout
from paycore_client.params import PayoutCreateParams, PayoutListParams

__all__ = ["AsyncPayouts", "Payouts"]

_payout = decoder_for(Payout)
_payouts = decoder_for(PageBody[Payout])


def _create(params: PayoutCreateParams, idempotency_key: str | None) -> Call[Payout]:
    return Call("POST", "/v1/payouts", _payout, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _retrieve(payout_id: str) -> Call[Payout]:
    return Call("GET", path("v1", "payouts", payout_id), _payout)


def _list(params: PayoutListParams) -> tuple[ListCall[Payout], str | None]:
    return list_call("/v1/payouts", _payouts, params)


class Payouts:
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[PayoutCreateParams]
    ) -> Payout:
        """Pay ``amount`` from ``wallet_account_id`` to ``destination`` through a processor;
        a failure is ``status="failed"``, with the wallet's money back."""
        return self._sender.send(_create(params, idempotency_key))

    def retrieve(self, payout_id: str) -> Payout:
        return self._sender.send(_retrieve(payout_id))

    def list(self, **params: Unpack[PayoutListParams]) -> Page[Payout]:
        return page(self._sender, *_list(params))


class AsyncPayouts:
    """``Payouts`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[PayoutCreateParams]
    ) -> Payout:
        return await self._sender.send(_create(params, idempotency_key))

    async def retrieve(self, payout_id: str) -> Payout:
        return await self._sender.send(_retrieve(payout_id))

    async def list(self, **params: Unpack[PayoutListParams]) -> AsyncPage[Payout]:
        return await async_page(self._sender, *_list(params))
