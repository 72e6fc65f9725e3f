"""``client.transfers``: ``/v1/transfers``, batches, and the post or void of a hold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Unpack

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
from paycore_client.models import BatchResult, Transfer
from paycore_client.params import (
    BatchTransferParams,
    PostPendingParams,
    TransferCreateParams,
    TransferListParams,
    VoidPendingParams,
)

__all__ = ["AsyncTransfers", "Transfers"]

_transfer = decoder_for(Transfer)
_transfers = decoder_for(PageBody[Transfer])
_batch = decoder_for(BatchResult)


def _create(params: TransferCreateParams, idempotency_key: str | None) -> Call[Transfer]:
    return Call("POST", "/v1/transfers", _transfer, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _create_batch(
    transfers: Sequence[BatchTransferParams], idempotency_key: str | None
) -> Call[BatchResult]:
    body = body_of({"transfers": [body_of(item) for item in transfers]})
    return Call("POST", "/v1/transfers/batch", _batch, body=body, idempotency_key=idempotency_key)


def _resolve(
    action: Literal["post", "void"],
    pending_id: str,
    params: PostPendingParams | VoidPendingParams,
    idempotency_key: str | None,
) -> Call[Transfer]:
    route = path("v1", "transfers", pending_id, action)
    return Call("POST", route, _transfer, body=body_of(params), idempotency_key=idempotency_key)


def _retrieve(transfer_id: str) -> Call[Transfer]:
    return Call("GET", path("v1", "transfers", transfer_id), _transfer)


def _list(params: TransferListParams) -> tuple[ListCall[Transfer], str | None]:
    return list_call("/v1/transfers", _transfers, params)


class Transfers:
    """Transfers move money between two accounts of one currency; a ``pending`` one is
    a hold, later posted (in full or part) or voided. A transfer's ``id`` makes it
    idempotent by itself: the same id with the same fields answers the original."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[TransferCreateParams]
    ) -> Transfer:
        """Move money, or hold it with ``pending=True``."""
        return self._sender.send(_create(params, idempotency_key))

    def create_batch(
        self, transfers: Sequence[BatchTransferParams], *, idempotency_key: str | None = None
    ) -> BatchResult:
        """Apply many transfers in order, one result each; ``linked`` chains are atomic.
        Refused items are results, not exceptions."""
        return self._sender.send(_create_batch(transfers, idempotency_key))

    def post_pending(
        self,
        pending_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[PostPendingParams],
    ) -> Transfer:
        """Capture a hold, in full or (``amount``) in part; the rest is released."""
        return self._sender.send(_resolve("post", pending_id, params, idempotency_key))

    def void_pending(
        self,
        pending_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[VoidPendingParams],
    ) -> Transfer:
        """Release a hold in full."""
        return self._sender.send(_resolve("void", pending_id, params, idempotency_key))

    def retrieve(self, transfer_id: str) -> Transfer:
        """A transfer with its current status."""
        return self._sender.send(_retrieve(transfer_id))

    def list(self, **params: Unpack[TransferListParams]) -> Page[Transfer]:
        """A page of the key's transfers, oldest first; ``auto_paging_iter()`` for all."""
        return page(self._sender, *_list(params))


class AsyncTransfers:
    """``Transfers`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[TransferCreateParams]
    ) -> Transfer:
        return await self._sender.send(_create(params, idempotency_key))

    async def create_batch(
        self, transfers: Sequence[BatchTransferParams], *, idempotency_key: str | None = None
    ) -> BatchResult:
        return await self._sender.send(_create_batch(transfers, idempotency_key))

    async def post_pending(
        self,
        pending_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[PostPendingParams],
    ) -> Transfer:
        return await self._sender.send(_resolve("post", pending_id, params, idempotency_key))

    async def void_pending(
        self,
        pending_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[VoidPendingParams],
    ) -> Transfer:
        return await self._sender.send(_resolve("void", pending_id, params, idempotency_key))

    async def retrieve(self, transfer_id: str) -> Transfer:
        return await self._sender.send(_retrieve(transfer_id))

    async def list(self, **params: Unpack[TransferListParams]) -> AsyncPage[Transfer]:
        return await async_page(self._sender, *_list(params))
