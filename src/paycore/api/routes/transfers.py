"""``/v1/transfers``: create, batch, post or void a hold, read.

``POST /v1/transfers`` is the hot path: one strict decode, one store command
(the store's writer coalesces concurrent ones into one transaction), one encode.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from paycore.api.auth import tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import WriteExecutor
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.schemas import (
    BatchIn,
    BatchItemOut,
    BatchOut,
    ItemError,
    PostPendingIn,
    TransferIn,
    TransferOut,
    VoidPendingIn,
    decode_body,
    encode,
    transfer_out,
    written_status,
)
from paycore.api.tenancy import namespace_of
from paycore.config import Settings
from paycore.errors import ERROR_SPECS, ErrorCode, RequestError
from paycore.ledger.model import TransferStatus
from paycore.ledger.rules import TransferResult
from paycore.storage.base import CreateTransfers, StoredResponse
from paycore.storage.store import Store

__all__ = ["render_batch", "render_transfer", "resolving_transfer_id", "transfer_routes"]

_JSON = "application/json"


def render_transfer(results: list[TransferResult]) -> StoredResponse:
    """201 with the new transfer, 200 with the original one for a repeated id."""
    result = results[0]
    transfer = result.transfer
    if result.code is not None or transfer is None:
        return problem(result.code or ErrorCode.INTERNAL_ERROR, result.detail)
    status = TransferStatus.IN_FLIGHT if result.in_flight else written_status(transfer)
    body = encode(transfer_out(transfer, status))
    return StoredResponse(200 if result.exists else 201, body, _JSON)


def render_batch(results: list[TransferResult]) -> StoredResponse:
    """200 with one result per item, in order: a status, or an error code."""
    items: list[BatchItemOut] = []
    for result in results:
        if result.code is None and result.transfer is not None:
            status = (
                TransferStatus.IN_FLIGHT if result.in_flight else written_status(result.transfer)
            )
            items.append(BatchItemOut(result.id, status=status))
        else:
            code = result.code or ErrorCode.INTERNAL_ERROR
            error = ItemError(code, result.detail or ERROR_SPECS[code].title)
            items.append(BatchItemOut(result.id, error=error))
    return StoredResponse(200, encode(BatchOut(items)), _JSON)


def resolving_transfer_id(action: str, pending_id: str) -> str:
    """The id of the post or void of a hold when the client gives none (the client's
    id: the route keeps it in the caller's namespace, like any id a client sends, so no
    other tenant can take it first).

    Derived from the hold rather than random: a hold is resolved at most once,
    so a retried capture finds its own first transfer (200, same body) instead
    of failing with ``pending_transfer_already_posted``.
    """
    digest = hashlib.sha256(pending_id.encode()).hexdigest()[:40]
    return f"{action}_{digest}"


def transfer_routes(
    store: Store, writes: WriteExecutor, settings: Settings
) -> list[HTTPRouteHandler]:
    """The transfer handlers, bound to one store."""
    decode_transfer = msgspec.json.Decoder(TransferIn)
    decode_batch = msgspec.json.Decoder(BatchIn)
    decode_post = msgspec.json.Decoder(PostPendingIn)
    decode_void = msgspec.json.Decoder(VoidPendingIn)
    max_batch = settings.max_batch_size

    @post(
        "/v1/transfers",
        operation_class=documented(
            {201: TransferOut, 200: TransferOut}, body=TransferIn, idempotency_key=True
        ),
        tags=["transfers"],
    )
    async def create_transfer(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Move money, or hold it with ``pending``; the id makes a retry safe."""
        body = decode_body(decode_transfer, await read_json_body(request))
        ns = namespace_of(request)
        command = CreateTransfers(
            (ns.transfer_request(body.to_request()),), tenant=tenant_of(request)
        )
        return await writes.run(request, command, ns.transfers(render_transfer), body)

    @post(
        "/v1/transfers/batch",
        operation_class=documented({200: BatchOut}, body=BatchIn, idempotency_key=True),
        tags=["transfers"],
    )
    async def create_transfers(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Apply many transfers in order; ``linked`` chains succeed or fail as one."""
        body = decode_body(decode_batch, await read_json_body(request))
        if len(body.transfers) > max_batch:
            raise RequestError(
                ErrorCode.BATCH_TOO_LARGE,
                f"{len(body.transfers)} transfers; at most {max_batch} per batch",
            )
        ns = namespace_of(request)
        command = CreateTransfers(
            tuple(ns.transfer_request(item.to_request()) for item in body.transfers),
            tenant=tenant_of(request),
        )
        return await writes.run(request, command, ns.transfers(render_batch), body)

    async def resolve(
        request: Request[Any, Any, Any],
        transfer_id: str,
        action: Literal["post", "void"],
        body: PostPendingIn | VoidPendingIn,
    ) -> Response[bytes]:
        """Post or void the hold ``transfer_id`` with the body's own id (or one derived)."""
        own_id = body.id or resolving_transfer_id(action, transfer_id)
        ns = namespace_of(request)
        item = ns.transfer_request(body.to_request(own_id, transfer_id))
        command = CreateTransfers((item,), tenant=tenant_of(request))
        return await writes.run(request, command, ns.transfers(render_transfer), body)

    @post(
        "/v1/transfers/{transfer_id:str}/post",
        operation_class=documented(
            {201: TransferOut, 200: TransferOut}, body=PostPendingIn, idempotency_key=True
        ),
        tags=["transfers"],
    )
    async def post_pending(
        request: Request[Any, Any, Any], transfer_id: FromPath[str]
    ) -> Response[bytes]:
        """Capture a hold, in full or (with ``amount``) in part; the rest is released."""
        body = decode_body(decode_post, await read_json_body(request), empty=b"{}")
        return await resolve(request, transfer_id, "post", body)

    @post(
        "/v1/transfers/{transfer_id:str}/void",
        operation_class=documented(
            {201: TransferOut, 200: TransferOut}, body=VoidPendingIn, idempotency_key=True
        ),
        tags=["transfers"],
    )
    async def void_pending(
        request: Request[Any, Any, Any], transfer_id: FromPath[str]
    ) -> Response[bytes]:
        """Release a hold in full."""
        body = decode_body(decode_void, await read_json_body(request), empty=b"{}")
        return await resolve(request, transfer_id, "void", body)

    async def read(transfer_id: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        ns = namespace_of(request)
        # Another tenant's transfer of the same id is another id here: a plain miss.
        view = await store.get_transfer(ns.transfer(transfer_id))
        if view is not None:
            # A tenant sees the transfers touching its accounts (kept as a second line:
            # paycore's own ids, ``pm.`` and ``xs.``, are shared by every tenant).
            t = view.transfer
            accounts = await store.get_accounts([t.debit_account_id, t.credit_account_id])
            if not any(a.tenant == ns.tenant for a in accounts.values()):
                view = None
        if view is None:
            raise RequestError(ErrorCode.TRANSFER_NOT_FOUND, f"transfer {transfer_id!r} not found")
        out = transfer_out(ns.transfer_out(view.transfer), view.status)
        return Response(encode(out), media_type=_JSON)

    @get(
        "/v1/transfers/{transfer_id:str}",
        operation_class=documented({200: TransferOut}),
        tags=["transfers"],
    )
    async def read_transfer(
        request: Request[Any, Any, Any], transfer_id: FromPath[str]
    ) -> Response[bytes]:
        """A transfer with its current status (a hold may since be posted, voided, expired)."""
        return await read(transfer_id, request)

    # "batch" is a valid transfer id, but the static batch path wins the routing; without
    # this handler, reading a transfer named "batch" would be a 405.
    @get("/v1/transfers/batch", include_in_schema=False)
    async def read_transfer_named_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await read("batch", request)

    return [
        create_transfer,
        create_transfers,
        post_pending,
        void_pending,
        read_transfer,
        read_transfer_named_batch,
    ]
