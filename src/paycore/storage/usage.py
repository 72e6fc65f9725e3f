"""What a shard holds: its rows and bytes, for ``paycore shards status``.

Counting rows scans the tables (a count is not kept): an operator's command, not a
request's path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from paycore.storage.base import FINISHED_OUTBOX_STATES

__all__ = ["ShardUsage", "count_rows"]

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


class ShardUsage(msgspec.Struct, frozen=True):
    """A shard's accounts, transfer rows (saga legs included), cross-shard transfers not
    yet finished there, and its size on disk (SQLite: the file and its WAL;
    PostgreSQL: the database)."""

    accounts: int
    transfers: int
    open_sagas: int
    bytes: int


async def count_rows(fetch: Fetch) -> tuple[int, int, int]:
    """(accounts, transfers, open sagas) through a store's read helper (``?`` params)."""
    marks = ", ".join("?" for _ in FINISHED_OUTBOX_STATES)
    rows = await fetch(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transfers), "
        f"(SELECT count(*) FROM outbox WHERE state NOT IN ({marks}))",
        FINISHED_OUTBOX_STATES,
    )
    accounts, transfers, open_sagas = rows[0]
    return int(accounts), int(transfers), int(open_sagas)
