"""Webhook deliveries seen from one endpoint (migration 0017): its recent deliveries,
a test event for it alone, and one event sent to it again.

``webhook_deliveries`` rows (one per event and endpoint, written by the sender's acks,
``paycore.storage.payments``) live on the event's shard; an endpoint made over HTTP is
named there by its id (a config file's endpoint by its URL). An event whose
``only_endpoint`` is set goes to that endpoint alone (``paycore.workers.webhooks``):
a test event, or an event redelivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from paycore.storage.base import Fetch
from paycore.storage.payments import DELIVERY_COLUMNS, EVENT_COLUMNS, EventRow, WebhookDeliveryRow

if TYPE_CHECKING:
    from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "DeliveryReads",
    "DeliveryView",
    "EnqueueEvent",
    "FailingDelivery",
    "RedeliverEvent",
    "Redelivery",
    "apply_delivery_command",
]


class EnqueueEvent(msgspec.Struct, frozen=True):
    """Write ``event`` on ``shard`` as given (its tenant and ``only_endpoint`` included;
    the store sets its timestamp); result: the event as written."""

    shard: str
    event: EventRow


class RedeliverEvent(msgspec.Struct, frozen=True):
    """Send event ``event_id`` again, to ``endpoint`` alone, with a new retry schedule;
    result ``Redelivery``: ``queued``; ``not_found`` when the endpoint has no delivery of
    it; ``in_progress`` when the event is still being delivered (to any endpoint)."""

    shard: str
    event_id: str
    endpoint: str


Redelivery = Literal["queued", "not_found", "in_progress"]
DeliveryCommand = EnqueueEvent | RedeliverEvent


def apply_delivery_command(
    tx: LedgerTx, clock: GroupClock, command: DeliveryCommand
) -> EventRow | Redelivery:
    """Run a delivery command in the writer's transaction."""
    if isinstance(command, EnqueueEvent):
        event = msgspec.structs.replace(command.event, timestamp=clock.next_timestamp())
        tx.run_sql(
            f"INSERT INTO payment_events ({', '.join(EVENT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
            msgspec.structs.astuple(event),
        )
        return event
    found = tx.run_sql(
        "SELECT e.delivered_at, e.failed_at FROM webhook_deliveries d "
        "JOIN payment_events e ON e.id = d.event_id WHERE d.event_id = ? AND d.endpoint = ?",
        (command.event_id, command.endpoint),
    )
    if not found:
        return "not_found"
    delivered_at, failed_at = found[0]
    if delivered_at is None and failed_at is None:
        return "in_progress"
    tx.run_sql(
        "UPDATE payment_events SET delivered_at = NULL, failed_at = NULL, claimed_by = NULL, "
        "claimed_until = ?, attempts = 0, only_endpoint = ? WHERE id = ?",
        (clock.now, command.endpoint, command.event_id),
    )
    tx.run_sql(
        "UPDATE webhook_deliveries SET status = 'pending', updated_at = ? "
        "WHERE event_id = ? AND endpoint = ?",
        (clock.now, command.event_id, command.endpoint),
    )
    return "queued"


class DeliveryView(msgspec.Struct, frozen=True):
    """A delivery row with its event's type (None once the event was purged)."""

    delivery: WebhookDeliveryRow
    event_type: str | None


class FailingDelivery(msgspec.Struct, frozen=True):
    """A delivery given up or being retried, with its event's type and, while it is
    retried, when the sender may try again (the event's ``claimed_until``, ns)."""

    delivery: WebhookDeliveryRow
    event_type: str
    next_retry_at: int | None


_D_COLUMNS = ", ".join(f"d.{c}" for c in DELIVERY_COLUMNS)


class DeliveryReads:
    """One shard's committed delivery rows, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def of_endpoint(
        self, endpoint: str, *, before: tuple[int, str] | None = None, limit: int = 100
    ) -> list[DeliveryView]:
        """``endpoint``'s deliveries, latest change first, from before ``before``
        (updated_at, event id)."""
        until, last_id = before if before is not None else (2**63 - 1, "")
        rows = await self._fetch(
            f"SELECT {_D_COLUMNS}, e.type FROM webhook_deliveries d "
            "LEFT JOIN payment_events e ON e.id = d.event_id WHERE d.endpoint = ? "
            "AND (d.updated_at < ? OR (d.updated_at = ? AND d.event_id < ?)) "
            "ORDER BY d.updated_at DESC, d.event_id DESC LIMIT ?",
            (endpoint, until, until, last_id, limit),
        )
        width = len(DELIVERY_COLUMNS)
        return [DeliveryView(WebhookDeliveryRow(*r[:width]), r[width]) for r in rows]

    async def get(self, endpoint: str, event_id: str) -> DeliveryView | None:
        """``endpoint``'s delivery of event ``event_id``, if this shard has it."""
        rows = await self._fetch(
            f"SELECT {_D_COLUMNS}, e.type FROM webhook_deliveries d "
            "LEFT JOIN payment_events e ON e.id = d.event_id "
            "WHERE d.endpoint = ? AND d.event_id = ?",
            (endpoint, event_id),
        )
        width = len(DELIVERY_COLUMNS)
        return DeliveryView(WebhookDeliveryRow(*rows[0][:width]), rows[0][width]) if rows else None

    async def failing(
        self, tenant: str, *, before: tuple[int, str, str] | None = None, limit: int = 100
    ) -> list[FailingDelivery]:
        """``tenant``'s deliveries that failed for good or are being retried (attempted,
        not delivered), latest change first, from before ``before`` (updated_at, event
        id, endpoint). No index serves the status: the rows read are bounded by the
        events' retention (``event_retention_hours``)."""
        until, last_id, last_endpoint = before if before is not None else (2**63 - 1, "", "")
        rows = await self._fetch(
            f"SELECT {_D_COLUMNS}, e.type, e.claimed_until FROM webhook_deliveries d "
            "JOIN payment_events e ON e.id = d.event_id WHERE e.tenant = ? "
            "AND (d.status = 'failed' OR (d.status = 'pending' AND d.attempts > 0)) "
            "AND (d.updated_at < ? OR (d.updated_at = ? AND (d.event_id < ? "
            "OR (d.event_id = ? AND d.endpoint < ?)))) "
            "ORDER BY d.updated_at DESC, d.event_id DESC, d.endpoint DESC LIMIT ?",
            (tenant, until, until, last_id, last_id, last_endpoint, limit),
        )
        width = len(DELIVERY_COLUMNS)
        out = []
        for r in rows:
            delivery = WebhookDeliveryRow(*r[:width])
            retry = int(r[width + 1]) if delivery.status == "pending" else None
            out.append(FailingDelivery(delivery, str(r[width]), retry))
        return out
