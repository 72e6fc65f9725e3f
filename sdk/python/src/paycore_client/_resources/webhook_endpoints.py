"""``client.webhook_endpoints``: where the tenant's events are sent (an ``admin`` key
is needed), a test event, and each endpoint's deliveries.

An endpoint's signing ``secret`` is shown once, in the answer that made it or gave it
a new one (``NewWebhookEndpoint.secret``): pass it to ``paycore_client.webhooks``.
"""

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
from paycore_client.models import (
    NewWebhookEndpoint,
    QueuedEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from paycore_client.params import (
    WebhookDeliveryListParams,
    WebhookEndpointCreateParams,
    WebhookEndpointListParams,
    WebhookSecretRotateParams,
)

__all__ = ["AsyncWebhookEndpoints", "WebhookEndpoints"]

_endpoint = decoder_for(WebhookEndpoint)
_new_endpoint = decoder_for(NewWebhookEndpoint)
_endpoints = decoder_for(PageBody[WebhookEndpoint])
_queued = decoder_for(QueuedEvent)
_deliveries = decoder_for(PageBody[WebhookDelivery])


def _create(
    params: WebhookEndpointCreateParams, idempotency_key: str | None
) -> Call[NewWebhookEndpoint]:
    return Call("POST", "/v1/webhook_endpoints", _new_endpoint, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _retrieve(endpoint_id: str) -> Call[WebhookEndpoint]:
    return Call("GET", path("v1", "webhook_endpoints", endpoint_id), _endpoint)


def _delete(endpoint_id: str) -> Call[WebhookEndpoint]:
    return Call("DELETE", path("v1", "webhook_endpoints", endpoint_id), _endpoint)


def _rotate_secret(
    endpoint_id: str, params: WebhookSecretRotateParams, idempotency_key: str | None
) -> Call[NewWebhookEndpoint]:
    return Call("POST", path("v1", "webhook_endpoints", endpoint_id, "rotate_secret"),
                _new_endpoint, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _send_test_event(endpoint_id: str, idempotency_key: str | None) -> Call[QueuedEvent]:
    return Call("POST", path("v1", "webhook_endpoints", endpoint_id, "test"), _queued,
                idempotency_key=idempotency_key)  # fmt: skip


def _redeliver(
    endpoint_id: str, delivery_id: str, idempotency_key: str | None
) -> Call[QueuedEvent]:
    route = path("v1", "webhook_endpoints", endpoint_id, "deliveries", delivery_id, "redeliver")
    return Call("POST", route, _queued, idempotency_key=idempotency_key)


def _list(params: WebhookEndpointListParams) -> tuple[ListCall[WebhookEndpoint], str | None]:
    return list_call("/v1/webhook_endpoints", _endpoints, params)


def _list_deliveries(
    endpoint_id: str, params: WebhookDeliveryListParams
) -> tuple[ListCall[WebhookDelivery], str | None]:
    route = path("v1", "webhook_endpoints", endpoint_id, "deliveries")
    return list_call(route, _deliveries, params)


class WebhookEndpoints:
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[WebhookEndpointCreateParams],
    ) -> NewWebhookEndpoint:
        """An endpoint that gets the tenant's events matching ``events`` (all by
        default), signed with ``secret``, which is in this answer only."""
        return self._sender.send(_create(params, idempotency_key))

    def retrieve(self, endpoint_id: str) -> WebhookEndpoint:
        return self._sender.send(_retrieve(endpoint_id))

    def list(self, **params: Unpack[WebhookEndpointListParams]) -> Page[WebhookEndpoint]:
        """The tenant's endpoints, oldest first; never a secret."""
        return page(self._sender, *_list(params))

    def delete(self, endpoint_id: str) -> WebhookEndpoint:
        """No event is sent to it any more. A retry of a delete the server did (its
        answer lost) is ``NotFoundError``, code ``webhook_endpoint_not_found``."""
        return self._sender.send(_delete(endpoint_id))

    def rotate_secret(
        self,
        endpoint_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[WebhookSecretRotateParams],
    ) -> NewWebhookEndpoint:
        """A new ``secret`` (in this answer only); events carry a signature by the old
        one too for ``grace_seconds``, so the receiver can switch without a gap."""
        return self._sender.send(_rotate_secret(endpoint_id, params, idempotency_key))

    def send_test_event(
        self, endpoint_id: str, *, idempotency_key: str | None = None
    ) -> QueuedEvent:
        """Queue a ``webhook_endpoint.test`` event for this endpoint alone, sent (signed,
        retried) like any event and listed in its deliveries."""
        return self._sender.send(_send_test_event(endpoint_id, idempotency_key))

    def list_deliveries(
        self, endpoint_id: str, **params: Unpack[WebhookDeliveryListParams]
    ) -> Page[WebhookDelivery]:
        """The endpoint's deliveries, latest change first, with status and attempts."""
        return page(self._sender, *_list_deliveries(endpoint_id, params))

    def redeliver(
        self, endpoint_id: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> QueuedEvent:
        """Send a delivered or failed event again (same id and body). One still being
        delivered is ``ConflictError``, code ``webhook_delivery_in_progress``."""
        return self._sender.send(_redeliver(endpoint_id, delivery_id, idempotency_key))


class AsyncWebhookEndpoints:
    """``WebhookEndpoints`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[WebhookEndpointCreateParams],
    ) -> NewWebhookEndpoint:
        return await self._sender.send(_create(params, idempotency_key))

    async def retrieve(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._sender.send(_retrieve(endpoint_id))

    async def list(self, **params: Unpack[WebhookEndpointListParams]) -> AsyncPage[WebhookEndpoint]:
        return await async_page(self._sender, *_list(params))

    async def delete(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._sender.send(_delete(endpoint_id))

    async def rotate_secret(
        self,
        endpoint_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[WebhookSecretRotateParams],
    ) -> NewWebhookEndpoint:
        return await self._sender.send(_rotate_secret(endpoint_id, params, idempotency_key))

    async def send_test_event(
        self, endpoint_id: str, *, idempotency_key: str | None = None
    ) -> QueuedEvent:
        return await self._sender.send(_send_test_event(endpoint_id, idempotency_key))

    async def list_deliveries(
        self, endpoint_id: str, **params: Unpack[WebhookDeliveryListParams]
    ) -> AsyncPage[WebhookDelivery]:
        return await async_page(self._sender, *_list_deliveries(endpoint_id, params))

    async def redeliver(
        self, endpoint_id: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> QueuedEvent:
        return await self._sender.send(_redeliver(endpoint_id, delivery_id, idempotency_key))
