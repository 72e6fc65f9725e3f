"""API keys in storage (migrations 0010, 0017): rows of ``api_keys`` and the commands that
write them.

A key's secret is never stored, only its SHA-256 (``secret_hash``, hex): the secret is
32 random bytes, so a fast hash is enough (nobody can guess their way to a preimage),
and what the table holds cannot be replayed as a key. What a key means (its format,
scopes, the check of a presented secret) is ``paycore.api.auth``'s business; storage
keeps the rows. In a cluster every key lives on one shard (the first one), chosen by
the API layer.

The commands the admin API runs (``RevokeTenantApiKey``, ``RotateApiKey``) carry the
caller's tenant and check it in the writer's transaction: a key of another tenant is
answered as an unknown one, and the check cannot race the change it guards.

SQL is written once for both backends (``?`` placeholders, as ``paycore.storage.payments``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from paycore.storage.base import Fetch, tenant_rows

if TYPE_CHECKING:
    from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "ApiKeyReads",
    "ApiKeyRow",
    "CreateApiKey",
    "KeyChange",
    "KeyCommand",
    "RevokeApiKey",
    "RevokeTenantApiKey",
    "RotateApiKey",
    "apply_key_command",
]


class ApiKeyRow(msgspec.Struct, frozen=True):
    """One ``api_keys`` row (field order = column order); timestamps in ns.

    ``scopes``: comma-separated. ``revoked_at``: from then on the key is refused (set in
    the future by a rotation's grace period). ``replaced_by``: the key that rotated it.
    ``name``: what its owner calls it (migration 0017), never a secret.
    """

    id: str
    tenant: str
    scopes: str
    secret_hash: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    replaced_by: str | None = None
    name: str | None = None

    def active(self, now: int) -> bool:
        """Whether the key is accepted at ``now`` (ns)."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or self.expires_at > now


_COLUMNS = tuple(f.name for f in msgspec.structs.fields(ApiKeyRow))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM api_keys"
_INSERT = f"INSERT INTO api_keys ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


class CreateApiKey(msgspec.Struct, frozen=True):
    """Insert ``row``; result: the row. Times are the caller's wall clock (ns), the
    one keys are checked against, not the shard's ledger clock."""

    row: ApiKeyRow


class RevokeApiKey(msgspec.Struct, frozen=True):
    """Revoke a key from ``at`` (wall clock, ns; a revocation already due sooner stays);
    result: the row as it is now, or None for an unknown id."""

    id: str
    at: int
    replaced_by: str | None = None


class RevokeTenantApiKey(msgspec.Struct, frozen=True):
    """Revoke ``tenant``'s key ``id`` at ``at`` (wall clock, ns), unless it is the last
    key of the tenant with the admin scope that is active at ``at`` (the tenant could
    no longer manage its keys over HTTP): result ``KeyChange``."""

    tenant: str
    id: str
    at: int


class RotateApiKey(msgspec.Struct, frozen=True):
    """Insert ``new`` (same tenant and scopes as key ``id``) and revoke key ``id`` from
    ``revoke_at``, in one transaction; refused (``KeyChange.old`` None) when key ``id`` is
    unknown, of another tenant than ``new``'s, or no longer active at ``now``."""

    id: str
    new: ApiKeyRow
    revoke_at: int
    now: int


class KeyChange(msgspec.Struct, frozen=True):
    """What ``RevokeTenantApiKey`` or ``RotateApiKey`` did. ``old``: the key named, as it
    is now (None: no such key for this tenant; nothing changed). ``new``: the key a
    rotation made. ``last_admin``: refused, the key is its tenant's last admin key."""

    old: ApiKeyRow | None
    new: ApiKeyRow | None = None
    last_admin: bool = False


KeyCommand = CreateApiKey | RevokeApiKey | RevokeTenantApiKey | RotateApiKey


def _revoke(tx: LedgerTx, row: ApiKeyRow, at: int, replaced_by: str | None) -> ApiKeyRow:
    """``row`` revoked from ``at``; a revocation already due sooner stays."""
    if row.revoked_at is None or row.revoked_at > at:
        row = msgspec.structs.replace(
            row, revoked_at=at, replaced_by=replaced_by or row.replaced_by
        )
        tx.run_sql(
            "UPDATE api_keys SET revoked_at = ?, replaced_by = ? WHERE id = ?",
            (row.revoked_at, row.replaced_by, row.id),
        )
    return row


def _get(tx: LedgerTx, key_id: str, tenant: str | None = None) -> ApiKeyRow | None:
    found = tx.run_sql(f"{_SELECT} WHERE id = ?", (key_id,))
    row = ApiKeyRow(*found[0]) if found else None
    if row is None or (tenant is not None and row.tenant != tenant):
        return None
    return row


def _is_last_admin(tx: LedgerTx, row: ApiKeyRow, at: int) -> bool:
    if "admin" not in row.scopes.split(",") or not row.active(at):
        return False
    others = tx.run_sql(f"{_SELECT} WHERE tenant = ? AND id <> ?", (row.tenant, row.id))
    return not any(
        "admin" in other.scopes.split(",") and other.active(at)
        for other in (ApiKeyRow(*r) for r in others)
    )


def apply_key_command(
    tx: LedgerTx, clock: GroupClock, command: KeyCommand
) -> ApiKeyRow | KeyChange | None:
    """Run a key command in the writer's transaction."""
    del clock  # key times are wall-clock ones, given by the caller
    if isinstance(command, CreateApiKey):
        tx.run_sql(_INSERT, msgspec.structs.astuple(command.row))
        return command.row
    if isinstance(command, RevokeTenantApiKey):
        row = _get(tx, command.id, command.tenant)
        if row is None:
            return KeyChange(None)
        if _is_last_admin(tx, row, command.at):
            return KeyChange(row, last_admin=True)
        return KeyChange(_revoke(tx, row, command.at, None))
    if isinstance(command, RotateApiKey):
        row = _get(tx, command.id, command.new.tenant)
        if row is None or (row.revoked_at is not None and row.revoked_at <= command.now):
            return KeyChange(None)
        tx.run_sql(_INSERT, msgspec.structs.astuple(command.new))
        return KeyChange(_revoke(tx, row, command.revoke_at, command.new.id), command.new)
    found = _get(tx, command.id)
    return None if found is None else _revoke(tx, found, command.at, command.replaced_by)


class ApiKeyReads:
    """Committed key rows of one shard, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def get(self, key_id: str) -> ApiKeyRow | None:
        rows = await self._fetch(f"{_SELECT} WHERE id = ?", (key_id,))
        return ApiKeyRow(*rows[0]) if rows else None

    async def all(self) -> list[ApiKeyRow]:
        rows = await self._fetch(f"{_SELECT} ORDER BY created_at, id", ())
        return [ApiKeyRow(*r) for r in rows]

    async def of_tenant(
        self, tenant: str, *, after: tuple[int, str] | None = None, limit: int = 100
    ) -> list[ApiKeyRow]:
        """``tenant``'s keys by (created_at, id), from after the key ``after`` names."""
        rows = await tenant_rows(self._fetch, _SELECT, tenant, after, limit)
        return [ApiKeyRow(*r) for r in rows]
