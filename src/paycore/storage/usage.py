"""What a shard holds: its rows and bytes, for ``paycore shards status``; what waits on
it (sagas, payments, webhook and stream events), for ``/metrics``.

Counting rows scans the tables (a count is not kept): an operator's command, not a
request's path. The backlog reads only rows still waiting, through index seeks, so that
a scrape every few seconds costs little however long the ledger grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from paycore.storage.base import FINISHED_OUTBOX_STATES, Fetch, OutboxRow
from paycore.storage.codec import OUTBOX_COLUMNS

__all__ = [
    "EVENTS_BEHIND_CAP",
    "OPEN_OUTBOX_STATES",
    "OPEN_PAYMENT_STATUSES",
    "Oldest",
    "ShardBacklog",
    "ShardUsage",
    "StreamLag",
    "count_rows",
    "read_backlog",
    "read_open_sagas",
]


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


# Payment states that a payment leaves by itself or by a job; their rows are few, so the
# ``payments_by_status`` index counts them at once (the final ones are not counted here:
# that would read every payment ever made).
OPEN_PAYMENT_STATUSES: Final[tuple[str, ...]] = ("processing", "requires_capture")
# Saga states of an outbox row not finished yet (``paycore.cluster.settlement.SagaState``
# less ``FINISHED_OUTBOX_STATES``; a test keeps the two in step): named, so that the
# ``outbox_open`` index seeks them instead of reading the finished rows kept for retention.
OPEN_OUTBOX_STATES: Final[tuple[str, ...]] = (
    "held",
    "held_pending",
    "credited",
    "prepared",
    "rejected",
    "open",
    "resolving",
)
# Unpublished payment events are counted up to this many (a NATS down for hours must not
# make the scrape count them all).
EVENTS_BEHIND_CAP: Final = 10_000


class Oldest(msgspec.Struct, frozen=True):
    """How many rows wait in one state, and the time (ns) of the oldest (0: none)."""

    count: int = 0
    since: int = 0


class StreamLag(msgspec.Struct, frozen=True):
    """How far an event-stream log's publish cursor is behind its head: ``behind`` rows
    (payment events: at most ``EVENTS_BEHIND_CAP``), the oldest of them written at
    ``since`` (ns; 0 when caught up)."""

    log: str
    behind: int = 0
    since: int = 0


class ShardBacklog(msgspec.Struct, frozen=True):
    """What waits on a shard, read by ``/metrics`` (index seeks only, no table scan).

    ``now``: the store's clock (ns) when read, for the ages. ``sagas``: cross-shard
    transfers not finished here (by ``created_at``); ``payments``: per open status (by
    ``updated_at``); ``webhook_events``: payment events not yet delivered nor given up
    (by ``timestamp``); ``stream``: per event-stream log, when asked for.
    """

    now: int
    sagas: Oldest
    payments: dict[str, Oldest]
    webhook_events: Oldest
    stream: list[StreamLag] = msgspec.field(default_factory=list)


async def read_backlog(fetch: Fetch, now: int, *, stream: bool = False) -> ShardBacklog:
    """A shard's ``ShardBacklog`` through its read helper (``?`` params)."""
    marks = ", ".join("?" for _ in OPEN_OUTBOX_STATES)
    rows = await fetch(
        f"SELECT count(*), COALESCE(min(created_at), 0) FROM outbox WHERE state IN ({marks})",
        OPEN_OUTBOX_STATES,
    )
    sagas = Oldest(int(rows[0][0]), int(rows[0][1]))
    payments = {}
    for status in OPEN_PAYMENT_STATUSES:
        rows = await fetch(
            "SELECT count(*), COALESCE(min(updated_at), 0) FROM payments WHERE status = ?",
            (status,),
        )
        payments[status] = Oldest(int(rows[0][0]), int(rows[0][1]))
    rows = await fetch(
        "SELECT count(*), COALESCE(min(timestamp), 0) FROM payment_events "
        "WHERE delivered_at IS NULL AND failed_at IS NULL",
        (),
    )
    webhook_events = Oldest(int(rows[0][0]), int(rows[0][1]))
    lags = [await _ledger_lag(fetch), await _payments_lag(fetch)] if stream else []
    return ShardBacklog(now, sagas, payments, webhook_events, lags)


async def _cursor(fetch: Fetch, log: str) -> tuple[int, int]:
    rows = await fetch("SELECT seq, timestamp FROM event_stream_cursors WHERE log = ?", (log,))
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


async def _ledger_lag(fetch: Fetch) -> StreamLag:
    """Transfers chained after the cursor: the head's ``chain_seq`` less the cursor's."""
    seq, timestamp = await _cursor(fetch, "ledger")
    first = await fetch(
        "SELECT timestamp FROM transfers WHERE timestamp > ? AND chain_seq IS NOT NULL "
        "ORDER BY timestamp LIMIT 1",
        (timestamp,),
    )
    if not first:
        return StreamLag("ledger")
    head = await fetch(
        "SELECT chain_seq FROM transfers WHERE chain_seq IS NOT NULL "
        "ORDER BY timestamp DESC LIMIT 1",
        (),
    )
    return StreamLag("ledger", max(int(head[0][0]) - seq, 1), int(first[0][0]))


async def _payments_lag(fetch: Fetch) -> StreamLag:
    """Payment events after the cursor (test pings left out, as the stream does)."""
    _, timestamp = await _cursor(fetch, "payments")
    rows = await fetch(
        "SELECT count(*), COALESCE(min(timestamp), 0) FROM (SELECT timestamp FROM "
        "payment_events WHERE timestamp > ? AND type <> ? ORDER BY timestamp LIMIT ?) AS behind",
        (timestamp, "webhook_endpoint.test", EVENTS_BEHIND_CAP),  # as event_stream skips,
    )
    return StreamLag("payments", int(rows[0][0]), int(rows[0][1]))


async def read_open_sagas(
    fetch: Fetch, states: Sequence[str], *, created_before: int, limit: int
) -> list[OutboxRow]:
    """The outbox rows in ``states`` written before ``created_before`` (ns), oldest
    first, at most ``limit``: seeks of the ``outbox_open`` index, as the backlog's."""
    marks = ", ".join("?" for _ in states)
    rows = await fetch(
        f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state IN ({marks}) AND created_at < ? "
        "ORDER BY created_at, transfer_id LIMIT ?",
        (*states, created_before, limit),
    )
    return [OutboxRow(*row) for row in rows]
