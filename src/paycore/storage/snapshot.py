"""What a SQL shard's snapshot reads the same way on SQLite and PostgreSQL.

Both stores' snapshots (a ``ShardSnapshot``) read their chain, its head, the outbox, the
saga-history mark and the openings of moved-in accounts with the same SQL; this base
holds those reads once, over the I/O each backend gives it: ``conn`` (``execute`` and
``fetchone``, as both drivers offer), ``_stream`` (a query's rows, streamed) and
``rows`` (any read with ``?`` placeholders). What differs by dialect (the orderings of
accounts, pendings and balance history, the match of a saga's note) stays with each
backend's snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from paycore.storage.base import ChainRecord, OutboxRow
from paycore.storage.codec import OUTBOX_COLUMNS, T_COLUMNS, transfer_from_row
from paycore.storage.slot_moves import MOVED_OPENINGS

__all__ = ["SnapshotReads"]


def _digest(value: Any) -> bytes | None:
    # PostgreSQL hands a bytea as a memoryview; SQLite, bytes already.
    return None if value is None else bytes(value)


class SnapshotReads:
    """The dialect-free reads of a SQL shard's snapshot (see the module docstring)."""

    conn: Any
    now: int
    shard: str

    def __init__(self, conn: Any, now: int, shard: str) -> None:
        self.conn = conn  # inside one read transaction, the snapshot's
        self.now = now
        self.shard = shard

    def _stream(self, query: str) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def rows(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    @property
    def saga_history_since(self) -> int:
        """Up to this timestamp, a saga's steps were recorded as they were (schema 16)."""
        row = self.conn.execute(
            "SELECT value FROM shard_meta WHERE key = 'saga_history_since'"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def chain_records(self) -> Iterator[ChainRecord]:
        query = (
            f"SELECT {T_COLUMNS}, m.metadata, t.chain_seq, t.chain_hash FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id ORDER BY t.timestamp"
        )
        for row in self._stream(query):
            yield transfer_from_row(row, row[10]), row[11], _digest(row[12])

    def chain_head(self) -> tuple[int, bytes | None]:
        row = self.conn.execute(
            "SELECT value, digest FROM shard_meta WHERE key = 'chain_head'"
        ).fetchone()
        return (0, None) if row is None else (int(row[0]), _digest(row[1]))

    def moved_openings(self) -> dict[str, tuple[int, int, int]]:
        """Per moved-in account: (debits, credits) its moved history posted, newest time."""
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in self.rows(MOVED_OPENINGS)}

    def outbox(self) -> Iterator[OutboxRow]:
        for row in self._stream(f"SELECT {OUTBOX_COLUMNS} FROM outbox"):
            yield OutboxRow(*row)
