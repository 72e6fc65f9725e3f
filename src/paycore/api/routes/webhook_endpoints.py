"""``/v1/webhook_endpoints``: an admin key manages its tenant's webhook endpoints.

Create (the signing secret shown once), list, read, delete, and rotate the secret (the
old one keeps signing beside the new one for a grace). Endpoints made here live in the database (the
key shard, ``paycore.storage.webhook_endpoints``) beside those of the config file,
which keep working as before and are not shown here. Another tenant's endpoint, or
its deliveries, are answered exactly as missing ones.

The test event, the delivery log and redelivery are ``webhook_deliveries``' routes.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter

from paycore.api.auth import Scope, tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import WriteExecutor
from paycore.api.listing import DEFAULT_PAGE_SIZE, bad_cursor, check_limit
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.schemas import decode_body, encode
from paycore.api.shown_once import run_shown_once
from paycore.api.webhook_schemas import (
    NewWebhookEndpointOut,
    RotateSecretIn,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointPageOut,
    new_endpoint_out,
    webhook_endpoint_out,
)
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.payments.endpoint_secrets import endpoint_secret
from paycore.storage.base import StoredResponse
from paycore.storage.deliveries import (
    DeliveryReads,
)
from paycore.storage.store import ShardStore, Store
from paycore.storage.webhook_endpoints import (
    CreateWebhookEndpoint,
    DeleteWebhookEndpoint,
    RotateEndpointSecret,
    WebhookEndpointReads,
    WebhookEndpointRow,
)

__all__ = [
    "ENDPOINT_ID",
    "EndpointBook",
    "bad_request",
    "endpoint_missing",
    "new_endpoint_id",
    "webhook_endpoint_routes",
]

_JSON = "application/json"
_ADMIN: dict[str, Any] = {"scope": Scope.ADMIN}
_TAGS = ["webhook endpoints"]
ENDPOINT_ID = re.compile(r"we_[0-9a-f]{24}")
_NS = 1_000_000_000


def new_endpoint_id() -> str:
    """``we_`` and 24 hex digits: the creation time first, so ids sort by creation."""
    return f"we_{time.time_ns():016x}{secrets.token_hex(4)}"


def endpoint_missing(endpoint_id: str) -> RequestError:
    return RequestError(
        ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND, f"webhook endpoint {endpoint_id!r} not found"
    )


def bad_request(detail: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, detail)


class EndpointBook:
    """Where a store keeps its webhook endpoints (the key shard) and deliveries (each
    shard), and the tenant-checked lookup of one endpoint."""

    def __init__(self, store: Store) -> None:
        self.shards = store.shard_stores
        self.home = store.key_store

    def endpoint_reads(self) -> WebhookEndpointReads:
        return self.home.webhook_endpoints

    @staticmethod
    def delivery_reads(shard: ShardStore) -> DeliveryReads:
        return shard.deliveries

    async def own_endpoint(self, tenant: str, endpoint_id: str) -> WebhookEndpointRow:
        """``tenant``'s endpoint ``endpoint_id``; another tenant's is a missing one."""
        row = None
        if ENDPOINT_ID.fullmatch(endpoint_id):
            row = await self.endpoint_reads().get(tenant, endpoint_id)
        if row is None:
            raise endpoint_missing(endpoint_id)
        return row


def webhook_endpoint_routes(
    store: Store, writes: WriteExecutor, settings: Settings, signing_key: Callable[[], bytes]
) -> list[HTTPRouteHandler]:
    """The webhook endpoint handlers. ``signing_key``: the key secrets are derived from
    (``paycore.payments.endpoint_secrets.signing_key``), asked when one is shown."""
    book = EndpointBook(store)
    decode_create = msgspec.json.Decoder(WebhookEndpointIn)
    decode_rotate = msgspec.json.Decoder(RotateSecretIn)
    own_endpoint = book.own_endpoint
    endpoint_reads = book.endpoint_reads

    def shown(row: WebhookEndpointRow, secret: str | None, status: int) -> StoredResponse:
        return StoredResponse(status, encode(new_endpoint_out(row, time.time_ns(), secret)), _JSON)

    @post(
        "/v1/webhook_endpoints",
        operation_class=documented(
            {201: NewWebhookEndpointOut}, body=WebhookEndpointIn, idempotency_key=True
        ),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def create_webhook_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Make an endpoint that gets the tenant's events of the types in ``events``,
        signed (``Paycore-Signature``) with ``secret``, shown in this answer only."""
        body = decode_body(decode_create, await read_json_body(request))
        row = WebhookEndpointRow(
            id=new_endpoint_id(),
            tenant=tenant_of(request),
            url=body.url,
            events=",".join(body.events),
            description=body.description,
            secret_version=1,
            previous_secret_until=None,
            created_at=time.time_ns(),
        )
        secret = endpoint_secret(signing_key(), row.id, row.secret_version)

        def render(result: WebhookEndpointRow, secret: str | None) -> StoredResponse:
            return shown(result, secret, 201)

        return await run_shown_once(
            writes, request, CreateWebhookEndpoint(row), body, render=render, secret=secret
        )

    @get(
        "/v1/webhook_endpoints",
        operation_class=documented({200: WebhookEndpointPageOut}),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def list_webhook_endpoints(
        request: Request[Any, Any, Any],
        *,
        limit: Annotated[int, QueryParameter(ge=1)] = DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """The tenant's endpoints made over HTTP, oldest first; never a secret."""
        check_limit(limit, settings)
        if cursor is not None and not ENDPOINT_ID.fullmatch(cursor):
            raise bad_cursor()
        rows = await endpoint_reads().of_tenant(
            tenant_of(request), after=cursor or "", limit=limit + 1
        )
        now = time.time_ns()
        page = WebhookEndpointPageOut(
            data=[webhook_endpoint_out(row, now) for row in rows[:limit]],
            next_cursor=rows[limit - 1].id if len(rows) > limit else None,
        )
        return Response(encode(page), media_type=_JSON)

    @get(
        "/v1/webhook_endpoints/{endpoint_id:str}",
        operation_class=documented({200: WebhookEndpointOut}),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def read_webhook_endpoint(
        request: Request[Any, Any, Any], endpoint_id: FromPath[str]
    ) -> Response[bytes]:
        """One of the tenant's endpoints, without its secret."""
        row = await own_endpoint(tenant_of(request), endpoint_id)
        return Response(encode(webhook_endpoint_out(row, time.time_ns())), media_type=_JSON)

    @delete(
        "/v1/webhook_endpoints/{endpoint_id:str}",
        operation_class=documented({200: WebhookEndpointOut}),
        tags=_TAGS,
        opt=_ADMIN,
        status_code=200,
    )
    async def delete_webhook_endpoint(
        request: Request[Any, Any, Any], endpoint_id: FromPath[str]
    ) -> Response[bytes]:
        """Delete an endpoint: no event is sent to it any more (each sender within a
        few seconds); its delivery log is purged with the events."""
        if not ENDPOINT_ID.fullmatch(endpoint_id):
            raise endpoint_missing(endpoint_id)
        row = await writes.store.execute(DeleteWebhookEndpoint(tenant_of(request), endpoint_id))
        if row is None:
            raise endpoint_missing(endpoint_id)
        return Response(encode(webhook_endpoint_out(row, time.time_ns())), media_type=_JSON)

    @post(
        "/v1/webhook_endpoints/{endpoint_id:str}/rotate_secret",
        operation_class=documented(
            {200: NewWebhookEndpointOut}, body=RotateSecretIn, idempotency_key=True
        ),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def rotate_webhook_secret(
        request: Request[Any, Any, Any], endpoint_id: FromPath[str]
    ) -> Response[bytes]:
        """Give the endpoint a new secret, shown in this answer only; for
        ``grace_seconds`` events carry a signature by the old secret too (two ``v1``
        in ``Paycore-Signature``), so the receiver can switch without losing any."""
        body = decode_body(decode_rotate, await read_json_body(request), empty=b"{}")
        old = await own_endpoint(tenant_of(request), endpoint_id)
        until = time.time_ns() + body.grace_seconds * _NS
        command = RotateEndpointSecret(old.tenant, old.id, until)
        secret = endpoint_secret(signing_key(), old.id, old.secret_version + 1)

        def render(result: WebhookEndpointRow | None, secret: str | None) -> StoredResponse:
            if result is None:  # deleted meanwhile
                return problem(
                    ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND,
                    f"webhook endpoint {endpoint_id!r} not found",
                )
            # A retry that raced another rotation shows the secret of the version made.
            if secret is not None and result.secret_version != old.secret_version + 1:
                secret = endpoint_secret(signing_key(), result.id, result.secret_version)
            return shown(result, secret, 200)

        return await run_shown_once(writes, request, command, body, render=render, secret=secret)

    return [
        create_webhook_endpoint,
        list_webhook_endpoints,
        read_webhook_endpoint,
        delete_webhook_endpoint,
        rotate_webhook_secret,
    ]
