"""FX quotes in storage (migration 0019): rows of ``fx_quotes`` and the command that
writes one.

Like API keys, every quote lives on one shard (a cluster's first, the key shard), so
every API node finds it and it outlives a restart; a read names the caller's tenant,
and another tenant's quote is a missing one. A quote is written once and never
changed: whether it was used is told by its conversion's transfers (``paycore.fx``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from paycore.storage.base import Fetch, tenant_rows

__all__ = ["CreateFxQuote", "FxQuoteCommand", "FxQuoteReads", "FxQuoteRow", "apply_fx_command"]


class FxQuoteRow(msgspec.Struct, frozen=True):
    """One ``fx_quotes`` row (field order = column order). Amounts in minor units;
    ``rate`` (the customer's) and ``mid_rate`` as exact decimal text; times in ns."""

    id: str
    tenant: str
    sell_currency: str
    buy_currency: str
    sell_amount: int
    buy_amount: int
    spread_amount: int
    rate: str
    mid_rate: str
    created_at: int
    expires_at: int


_COLUMNS = tuple(f.name for f in msgspec.structs.fields(FxQuoteRow))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM fx_quotes"
_INSERT = f"INSERT INTO fx_quotes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


class CreateFxQuote(msgspec.Struct, frozen=True):
    """Insert ``row``; result: the row."""

    row: FxQuoteRow


FxQuoteCommand = CreateFxQuote


class _Sql(Protocol):
    def run_sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


def apply_fx_command(tx: _Sql, command: FxQuoteCommand) -> FxQuoteRow:
    """Run an FX command in the writer's transaction."""
    tx.run_sql(_INSERT, msgspec.structs.astuple(command.row))
    return command.row


class FxQuoteReads:
    """Committed quotes of one shard, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def get(self, tenant: str, quote_id: str) -> FxQuoteRow | None:
        rows = await self._fetch(f"{_SELECT} WHERE id = ? AND tenant = ?", (quote_id, tenant))
        return FxQuoteRow(*rows[0]) if rows else None

    async def of_tenant(
        self, tenant: str, *, after: tuple[int, str] | None = None, limit: int = 100
    ) -> list[FxQuoteRow]:
        """``tenant``'s quotes by (created_at, id), after the key ``after``."""
        rows = await tenant_rows(self._fetch, _SELECT, tenant, after, limit)
        return [FxQuoteRow(*r) for r in rows]
