"""The event stream's side of a shard (migration 0018): reading its two logs in order,
and the publish cursor of each.

No event is copied for the stream: the shard's own logs, written in the transaction of
each change, are the outbox (``paycore.events.publisher`` publishes them):

    ledger     ``transfers``: append-only, each row with its ``chain_seq`` (1, 2, ... in
               timestamp order, ``paycore.storage.chain``); read by timestamp, its key
    payments   ``payment_events``: one row per payment, refund or payout change, ordered
               by its unique ``timestamp`` (webhook test events are not changes: left out)

``event_stream_cursors`` keeps, per log, the last position NATS acknowledged. It only
moves forward (``AdvanceStreamCursor``), fenced by the publisher's leadership like every
job's write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import msgspec

from paycore.ledger.model import Transfer
from paycore.storage.base import Fence, Fetch
from paycore.storage.codec import T_COLUMNS, transfer_from_row
from paycore.storage.payments import EVENT_COLUMNS, EventRow

if TYPE_CHECKING:
    from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "LOGS",
    "AdvanceStreamCursor",
    "EventStreamReads",
    "StreamCursor",
    "TransferRecord",
    "apply_stream_command",
]

Log = Literal["ledger", "payments"]
LOGS: Final[tuple[Log, ...]] = ("ledger", "payments")
# What the webhook test endpoint enqueues (``paycore.api.routes.webhook_deliveries``): a
# ping for one endpoint, not a change of anything.
_NOT_A_CHANGE: Final = "webhook_endpoint.test"


class StreamCursor(msgspec.Struct, frozen=True):
    """Where a log's publishing stands: ``seq`` (a chain_seq, or a payment event's
    timestamp) is the last position acknowledged; ``timestamp`` that row's timestamp."""

    log: str
    seq: int = 0
    timestamp: int = 0


class AdvanceStreamCursor(msgspec.Struct, frozen=True):
    """Move ``log``'s cursor on ``shard`` to ``seq``/``timestamp`` if that is forward
    (a late or repeated call changes nothing); result: the cursor as it now stands."""

    shard: str
    log: str
    seq: int
    timestamp: int
    fence: Fence | None = None


class TransferRecord(msgspec.Struct, frozen=True):
    """A transfer of the ledger log: its chain position and its debit account's tenant."""

    seq: int
    transfer: Transfer
    tenant: str


StreamCommand = AdvanceStreamCursor


def apply_stream_command(tx: LedgerTx, clock: GroupClock, command: StreamCommand) -> StreamCursor:
    """Run a stream command in the writer's transaction."""
    if command.log not in LOGS:
        raise ValueError(f"unknown event log {command.log!r}")
    found = tx.run_sql(
        "SELECT seq, timestamp FROM event_stream_cursors WHERE log = ?", (command.log,)
    )
    if found and found[0][0] >= command.seq:
        return StreamCursor(command.log, found[0][0], found[0][1])
    if found:
        tx.run_sql(
            "UPDATE event_stream_cursors SET seq = ?, timestamp = ?, updated_at = ? WHERE log = ?",
            (command.seq, command.timestamp, clock.now, command.log),
        )
    else:
        tx.run_sql(
            "INSERT INTO event_stream_cursors (log, seq, timestamp, updated_at) "
            "VALUES (?, ?, ?, ?)",
            (command.log, command.seq, command.timestamp, clock.now),
        )
    return StreamCursor(command.log, command.seq, command.timestamp)


_E_COLUMNS = ", ".join(EVENT_COLUMNS)


class EventStreamReads:
    """One shard's committed logs and cursors, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def cursor(self, log: str) -> StreamCursor:
        """``log``'s cursor; at the start (0) before anything was published."""
        rows = await self._fetch(
            "SELECT seq, timestamp FROM event_stream_cursors WHERE log = ?", (log,)
        )
        return StreamCursor(log, rows[0][0], rows[0][1]) if rows else StreamCursor(log)

    async def transfers_after(self, timestamp: int, limit: int) -> list[TransferRecord]:
        """The chained transfers written after ``timestamp``, oldest first (a row without
        a chain position is never chained: the audit reports it, the stream skips it)."""
        rows = await self._fetch(
            f"SELECT {T_COLUMNS}, m.metadata, t.chain_seq, COALESCE(a.tenant, 'default') "
            "FROM transfers t LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN accounts a ON a.id = t.debit_account_id "
            "WHERE t.timestamp > ? AND t.chain_seq IS NOT NULL ORDER BY t.timestamp LIMIT ?",
            (timestamp, limit),
        )
        return [TransferRecord(r[11], transfer_from_row(r[:10], r[10]), r[12]) for r in rows]

    async def payment_events_after(self, timestamp: int, limit: int) -> list[EventRow]:
        """The payment events written after ``timestamp``, oldest first (test pings left
        out)."""
        rows = await self._fetch(
            f"SELECT {_E_COLUMNS} FROM payment_events WHERE timestamp > ? AND type <> ? "
            "ORDER BY timestamp LIMIT ?",
            (timestamp, _NOT_A_CHANGE, limit),
        )
        return [EventRow(*r) for r in rows]
