"""Webhook endpoints made over HTTP (migration 0017): rows of ``webhook_endpoints`` and
the commands that write them.

Like API keys, every endpoint lives on one shard (a cluster's first, the key shard)
and each command that names one carries the caller's tenant, checked in the writer's
transaction: another tenant's endpoint is an unknown one. No secret is stored: an
endpoint's signing secret is derived from the node's signing key, its id and
``secret_version`` (``paycore.payments.endpoint_secrets``); ``previous_secret_until``
(ns) keeps the previous version signing during a rotation's grace.

Endpoints of the config file (``[[webhooks]]``) are not here: they stay in the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from paycore.storage.base import Fetch

if TYPE_CHECKING:
    from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "CreateWebhookEndpoint",
    "DeleteWebhookEndpoint",
    "EndpointCommand",
    "RotateEndpointSecret",
    "WebhookEndpointReads",
    "WebhookEndpointRow",
    "apply_endpoint_command",
]


class WebhookEndpointRow(msgspec.Struct, frozen=True):
    """One ``webhook_endpoints`` row (field order = column order); times in ns (wall
    clock). ``events``: comma-separated patterns (``*``, ``payment.*``, an exact type)."""

    id: str
    tenant: str
    url: str
    events: str
    description: str | None
    secret_version: int
    previous_secret_until: int | None
    created_at: int

    def secret_versions(self, now: int) -> tuple[int, ...]:
        """The versions that sign at ``now``: the current one first."""
        if self.previous_secret_until is not None and self.previous_secret_until > now:
            return (self.secret_version, self.secret_version - 1)
        return (self.secret_version,)


_COLUMNS = tuple(f.name for f in msgspec.structs.fields(WebhookEndpointRow))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM webhook_endpoints"
_INSERT = (
    f"INSERT INTO webhook_endpoints ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)


class CreateWebhookEndpoint(msgspec.Struct, frozen=True):
    """Insert ``row``; result: the row."""

    row: WebhookEndpointRow


class DeleteWebhookEndpoint(msgspec.Struct, frozen=True):
    """Delete ``tenant``'s endpoint ``id``; result: the row deleted, or None."""

    tenant: str
    id: str


class RotateEndpointSecret(msgspec.Struct, frozen=True):
    """Give ``tenant``'s endpoint ``id`` a new secret version; the previous one signs
    too until ``previous_until`` (ns; ``now`` or earlier: not at all). Result: the row as
    it is now, or None. A previous version still in its grace is dropped: two
    versions sign at most."""

    tenant: str
    id: str
    previous_until: int


EndpointCommand = CreateWebhookEndpoint | DeleteWebhookEndpoint | RotateEndpointSecret


def _get(tx: LedgerTx, tenant: str, endpoint_id: str) -> WebhookEndpointRow | None:
    found = tx.run_sql(f"{_SELECT} WHERE id = ? AND tenant = ?", (endpoint_id, tenant))
    return WebhookEndpointRow(*found[0]) if found else None


def apply_endpoint_command(
    tx: LedgerTx, clock: GroupClock, command: EndpointCommand
) -> WebhookEndpointRow | None:
    """Run an endpoint command in the writer's transaction."""
    del clock  # endpoint times are wall-clock ones, given by the caller
    if isinstance(command, CreateWebhookEndpoint):
        tx.run_sql(_INSERT, msgspec.structs.astuple(command.row))
        return command.row
    row = _get(tx, command.tenant, command.id)
    if row is None:
        return None
    if isinstance(command, DeleteWebhookEndpoint):
        tx.run_sql("DELETE FROM webhook_endpoints WHERE id = ?", (row.id,))
        return row
    row = msgspec.structs.replace(
        row, secret_version=row.secret_version + 1, previous_secret_until=command.previous_until
    )
    tx.run_sql(
        "UPDATE webhook_endpoints SET secret_version = ?, previous_secret_until = ? WHERE id = ?",
        (row.secret_version, row.previous_secret_until, row.id),
    )
    return row


class WebhookEndpointReads:
    """Committed endpoint rows of one shard, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def get(self, tenant: str, endpoint_id: str) -> WebhookEndpointRow | None:
        rows = await self._fetch(f"{_SELECT} WHERE id = ? AND tenant = ?", (endpoint_id, tenant))
        return WebhookEndpointRow(*rows[0]) if rows else None

    async def of_tenant(
        self, tenant: str, *, after: str = "", limit: int = 100
    ) -> list[WebhookEndpointRow]:
        """``tenant``'s endpoints by id (ids sort by creation: see the routes), after
        the id ``after``."""
        rows = await self._fetch(
            f"{_SELECT} WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?", (tenant, after, limit)
        )
        return [WebhookEndpointRow(*r) for r in rows]

    async def all(self) -> list[WebhookEndpointRow]:
        """Every tenant's endpoints (for the senders)."""
        rows = await self._fetch(f"{_SELECT} ORDER BY id", ())
        return [WebhookEndpointRow(*r) for r in rows]
