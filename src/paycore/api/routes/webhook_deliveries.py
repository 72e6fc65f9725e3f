"""``/v1/webhook_endpoints/{id}/test``, ``.../deliveries`` and
``.../deliveries/{delivery_id}/redeliver``: what an endpoint was sent, and sending to it.

A test event (``webhook_endpoint.test``) and a redelivery are queued on a shard's
outbox for that endpoint alone (``paycore.storage.deliveries``) and sent by the normal
sender (signed, retried on its schedule), within about a second, a few more for an
endpoint made moments ago (each sender reads the endpoints again every few seconds).
A delivery is one event to one endpoint: its id is the event's.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter

from paycore.api.auth import Scope, tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import WriteExecutor
from paycore.api.listing import DEFAULT_PAGE_SIZE, bad_cursor, check_limit
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.routes.webhook_endpoints import EndpointBook
from paycore.api.schemas import EmptyIn, decode_body, encode
from paycore.api.webhook_schemas import DeliveryPageOut, QueuedEventOut, delivery_out
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.storage.base import StoredResponse
from paycore.storage.deliveries import DeliveryView, EnqueueEvent, RedeliverEvent, Redelivery
from paycore.storage.payments import EventRow
from paycore.storage.store import Store

__all__ = ["TEST_EVENT_TYPE", "webhook_delivery_routes"]

TEST_EVENT_TYPE: Final = "webhook_endpoint.test"
_JSON = "application/json"
_ADMIN: dict[str, Any] = {"scope": Scope.ADMIN}
_TAGS = ["webhook endpoints"]


def _delivery_missing(endpoint_id: str, delivery_id: str) -> str:
    return f"webhook endpoint {endpoint_id!r} has no delivery {delivery_id!r}"


def _delivery_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    updated, sep, event_id = cursor.partition(".")
    if not (sep and 1 <= len(updated) <= 19 and updated.isascii() and updated.isdigit()):
        raise bad_cursor()
    return int(updated), event_id


def webhook_delivery_routes(
    store: Store, writes: WriteExecutor, settings: Settings
) -> list[HTTPRouteHandler]:
    """The handlers of an endpoint's test event and deliveries."""
    book = EndpointBook(store)
    own_endpoint = book.own_endpoint
    shards = book.shards
    home = book.home
    delivery_reads = book.delivery_reads
    decode_empty = msgspec.json.Decoder(EmptyIn)

    @post(
        "/v1/webhook_endpoints/{endpoint_id:str}/test",
        operation_class=documented({202: QueuedEventOut}, body=EmptyIn, idempotency_key=True),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def test_webhook_endpoint(
        request: Request[Any, Any, Any], endpoint_id: FromPath[str]
    ) -> Response[bytes]:
        """Queue a ``webhook_endpoint.test`` event for this endpoint alone (whatever
        its ``events``), sent by the normal sender: signed, retried on failure, listed
        in its deliveries."""
        body = decode_body(decode_empty, await read_json_body(request), empty=b"{}")
        row = await own_endpoint(tenant_of(request), endpoint_id)
        payload = {"id": row.id, "object": "webhook_endpoint", "url": row.url}
        event = EventRow(
            id=f"evt_{uuid.uuid4().hex}",
            type=TEST_EVENT_TYPE,
            object_id=row.id,
            payload=msgspec.json.encode(payload).decode(),
            created_at=time.time_ns(),
            tenant=row.tenant,
            only_endpoint=row.id,
        )

        def render(written: EventRow) -> StoredResponse:
            out = QueuedEventOut(event_id=written.id, endpoint_id=row.id, status="queued")
            return StoredResponse(202, encode(out), _JSON)

        return await writes.run(request, EnqueueEvent(home.name, event), render, body)

    @get(
        "/v1/webhook_endpoints/{endpoint_id:str}/deliveries",
        operation_class=documented({200: DeliveryPageOut}),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def list_webhook_deliveries(
        request: Request[Any, Any, Any],
        endpoint_id: FromPath[str],
        *,
        limit: Annotated[int, QueryParameter(ge=1)] = DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """The endpoint's deliveries (one per event it was sent), latest change first,
        with status, attempts and the last response code; kept as long as their
        events (``event_retention_hours``). An event not attempted yet has none."""
        check_limit(limit, settings)
        before = _delivery_cursor(cursor)
        row = await own_endpoint(tenant_of(request), endpoint_id)
        found: list[DeliveryView] = []
        for shard in shards.values():
            found += await delivery_reads(shard).of_endpoint(row.id, before=before, limit=limit + 1)
        found.sort(key=lambda v: (v.delivery.updated_at, v.delivery.event_id), reverse=True)
        page = found[:limit]
        last = page[-1].delivery if page else None
        out = DeliveryPageOut(
            data=[delivery_out(v) for v in page],
            next_cursor=f"{last.updated_at}.{last.event_id}"
            if last is not None and len(found) > limit
            else None,
        )
        return Response(encode(out), media_type=_JSON)

    @post(
        "/v1/webhook_endpoints/{endpoint_id:str}/deliveries/{delivery_id:str}/redeliver",
        operation_class=documented({202: QueuedEventOut}, body=EmptyIn, idempotency_key=True),
        tags=_TAGS,
        opt=_ADMIN,
    )
    async def redeliver_webhook_event(
        request: Request[Any, Any, Any], endpoint_id: FromPath[str], delivery_id: FromPath[str]
    ) -> Response[bytes]:
        """Send a delivered or failed event again, to this endpoint alone, with a new
        retry schedule (same event id and body: receivers deduplicate by id). An event
        still being delivered is 409 ``webhook_delivery_in_progress``."""
        body = decode_body(decode_empty, await read_json_body(request), empty=b"{}")
        row = await own_endpoint(tenant_of(request), endpoint_id)
        shard = None
        for name, candidate in shards.items():
            if await delivery_reads(candidate).get(row.id, delivery_id) is not None:
                shard = name
                break
        if shard is None:
            raise RequestError(
                ErrorCode.WEBHOOK_DELIVERY_NOT_FOUND, _delivery_missing(endpoint_id, delivery_id)
            )

        def render(outcome: Redelivery) -> StoredResponse:
            if outcome == "not_found":  # purged meanwhile
                return problem(
                    ErrorCode.WEBHOOK_DELIVERY_NOT_FOUND,
                    _delivery_missing(endpoint_id, delivery_id),
                )
            if outcome == "in_progress":
                return problem(
                    ErrorCode.WEBHOOK_DELIVERY_IN_PROGRESS,
                    f"event {delivery_id!r} is still being delivered; it is retried on its "
                    "schedule, and may be sent again once it is delivered or given up",
                )
            out = QueuedEventOut(event_id=delivery_id, endpoint_id=row.id, status="queued")
            return StoredResponse(202, encode(out), _JSON)

        return await writes.run(request, RedeliverEvent(shard, delivery_id, row.id), render, body)

    return [test_webhook_endpoint, list_webhook_deliveries, redeliver_webhook_event]
