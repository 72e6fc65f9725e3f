"""API keys in storage (migration 0010): rows of ``api_keys`` and the commands that write them.

A key's secret is never stored, only its SHA-256 (``secret_hash``, hex): the secret is
32 random bytes, so a fast hash is enough (nobody can guess their way to a preimage),
and what the table holds cannot be replayed as a key. What a key means (its format,
scopes, the check of a presented secret) is ``paycore.api.auth``'s business; storage
keeps the rows. In a cluster every key lives on one shard (the first one), chosen by
the API layer.

SQL is written once for both backends (``?`` placeholders, as ``paycore.storage.payments``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from paycore.storage.apply import GroupClock, LedgerTx

__all__ = [
    "ApiKeyReads",
    "ApiKeyRow",
    "CreateApiKey",
    "KeyCommand",
    "RevokeApiKey",
    "apply_key_command",
]


class ApiKeyRow(msgspec.Struct, frozen=True):
    """One ``api_keys`` row (field order = column order); timestamps in ns.

    ``scopes``: comma-separated. ``revoked_at``: from then on the key is refused (set in
    the future by a rotation's grace period). ``replaced_by``: the key that rotated it.
    """

    id: str
    tenant: str
    scopes: str
    secret_hash: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    replaced_by: str | None = None

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


KeyCommand = CreateApiKey | RevokeApiKey


def apply_key_command(tx: LedgerTx, clock: GroupClock, command: KeyCommand) -> ApiKeyRow | None:
    """Run a key command in the writer's transaction."""
    del clock  # key times are wall-clock ones, given by the caller
    if isinstance(command, CreateApiKey):
        tx.run_sql(_INSERT, msgspec.structs.astuple(command.row))
        return command.row
    found = tx.run_sql(f"{_SELECT} WHERE id = ?", (command.id,))
    if not found:
        return None
    row = ApiKeyRow(*found[0])
    at = command.at
    if row.revoked_at is None or row.revoked_at > at:
        row = msgspec.structs.replace(
            row, revoked_at=at, replaced_by=command.replaced_by or row.replaced_by
        )
        tx.run_sql(
            "UPDATE api_keys SET revoked_at = ?, replaced_by = ? WHERE id = ?",
            (row.revoked_at, row.replaced_by, row.id),
        )
    return row


Fetch = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


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
