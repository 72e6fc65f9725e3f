"""Wire formats of ``/v1/webhook_endpoints``: strict request Structs in, response
Structs out. An endpoint's signing secret is in the answers that made it (creation, a
rotation) only (``paycore.api.shown_once``)."""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from paycore.api.schemas import rfc3339
from paycore.storage.deliveries import DeliveryView
from paycore.storage.webhook_endpoints import WebhookEndpointRow

__all__ = [
    "MAX_SECRET_GRACE_SECONDS",
    "DeliveryOut",
    "DeliveryPageOut",
    "NewWebhookEndpointOut",
    "QueuedEventOut",
    "RotateSecretIn",
    "WebhookEndpointIn",
    "WebhookEndpointOut",
    "WebhookEndpointPageOut",
    "delivery_out",
    "new_endpoint_out",
    "webhook_endpoint_out",
]

MAX_SECRET_GRACE_SECONDS: Final = 7 * 86400
EventPattern = Annotated[
    str,
    Meta(
        pattern=r"^(\*|[a-z_]{1,40}\.(\*|[a-z_]{1,40}))$",
        description="'*' (every event), 'kind.*' or an exact type such as 'refund.succeeded'",
    ),
]


class _Input(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error."""


class _Output(msgspec.Struct, frozen=True):
    """Base of response bodies; every field is always present (null when unset)."""


class WebhookEndpointIn(_Input, frozen=True):
    """Body of ``POST /v1/webhook_endpoints``: where to POST the tenant's events (an
    http or https URL), which ones (default every one), and a description."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    events: Annotated[list[EventPattern], Meta(min_length=1, max_length=20)] = msgspec.field(
        default_factory=lambda: ["*"]
    )
    description: Annotated[str, Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("url must not hold credentials: the signature authenticates")
        if len(set(self.events)) != len(self.events):
            raise ValueError("events must not repeat a pattern")


class RotateSecretIn(_Input, frozen=True):
    """Body of ``POST /v1/webhook_endpoints/{id}/rotate_secret`` (absent: ``{}``): how
    long the old secret keeps signing beside the new one (0, the default: not at all)."""

    grace_seconds: Annotated[int, Meta(ge=0, le=MAX_SECRET_GRACE_SECONDS)] = 0


class WebhookEndpointOut(_Output, frozen=True):
    """A webhook endpoint, without its secret. ``previous_secret_until``: while set
    (and in the future), events carry a second ``v1`` signature, by the old secret."""

    id: str
    object: Literal["webhook_endpoint"]
    url: str
    events: list[str]
    description: str | None
    created_at: str
    previous_secret_until: str | None


class NewWebhookEndpointOut(WebhookEndpointOut, frozen=True):
    """An endpoint just made or given a new secret: ``secret`` (verify
    ``Paycore-Signature`` with it) is in this answer only; ``null`` in a replay."""

    secret: str | None


class WebhookEndpointPageOut(_Output, frozen=True):
    """A page of the tenant's endpoints, oldest first; ``next_cursor`` null on the last."""

    data: list[WebhookEndpointOut]
    next_cursor: str | None


class QueuedEventOut(_Output, frozen=True):
    """An event queued for one endpoint; the sender POSTs it within a few seconds."""

    event_id: str
    endpoint_id: str
    status: Literal["queued"]


class DeliveryOut(_Output, frozen=True):
    """What an endpoint made of one event. ``id``: the event's id (a delivery is one
    event to one endpoint). ``status``: pending (retried later), delivered or failed
    (given up); ``last_response_code``: the last attempt's HTTP status (null: no
    answer, see ``last_error``). ``event_type`` is null once the event was purged."""

    id: str
    event_type: str | None
    status: str
    outcome: str | None
    attempts: int
    last_response_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str


class DeliveryPageOut(_Output, frozen=True):
    """An endpoint's deliveries, latest change first; ``next_cursor`` null on the last."""

    data: list[DeliveryOut]
    next_cursor: str | None


def _time(ns: int | None, now: int) -> str | None:
    return None if ns is None or ns <= now else rfc3339(ns)


def webhook_endpoint_out(row: WebhookEndpointRow, now: int) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=row.id,
        object="webhook_endpoint",
        url=row.url,
        events=row.events.split(","),
        description=row.description,
        created_at=rfc3339(row.created_at),
        previous_secret_until=_time(row.previous_secret_until, now),
    )


def new_endpoint_out(
    row: WebhookEndpointRow, now: int, secret: str | None
) -> NewWebhookEndpointOut:
    shown = webhook_endpoint_out(row, now)
    return NewWebhookEndpointOut(**msgspec.structs.asdict(shown), secret=secret)


def delivery_out(view: DeliveryView) -> DeliveryOut:
    d = view.delivery
    return DeliveryOut(
        id=d.event_id,
        event_type=view.event_type,
        status=d.status,
        outcome=d.outcome,
        attempts=d.attempts,
        last_response_code=d.last_status,
        last_error=d.last_error,
        created_at=rfc3339(d.created_at),
        updated_at=rfc3339(d.updated_at),
    )
