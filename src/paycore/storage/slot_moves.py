"""What a move of slots writes on a shard (migration 0022; the protocol:
``paycore.cluster.slot_moves``).

* ``ImportMoved`` (target): accounts as they left the source (balances included), their
  metadata and balance history, their history as ``moved_transfers`` rows, the
  Idempotency-Key records and transfer-id bindings of the moving slots, the payments,
  refunds, payouts and attempts of its accounts; the target's
  clock is moved past the newest timestamp imported, so that what it writes for these
  accounts later comes after their history. The last part also records the new map,
  in the same transaction: from then on the target owns the slots. Every insert skips
  a row that exists, so a part may be imported again after a crash.
* ``RetireMoved`` (source): the accounts leave ``accounts`` for ``moved_accounts`` (their
  row as it left, for the source's audit: its transfers still name them); the payment
  rows that moved are deleted (every read finds them on the target).
* ``RecordMove`` (key shard): the move's row in ``slot_moves``, each step before it is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from paycore.storage.codec import ACCOUNT_COLUMNS
from paycore.storage.slot_fence import RecordSlotMap, apply_slot_map_command
from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "MOVED_OPENINGS",
    "MOVED_TRANSFER_COLUMNS",
    "PAYMENT_TABLES",
    "DropImported",
    "ImportMoved",
    "MoveRow",
    "RecordMove",
    "RetireMoved",
    "SlotMoveCommand",
    "apply_slot_move_command",
]

MOVED_TRANSFER_COLUMNS: Final = (
    "id, debit_account_id, credit_account_id, amount, currency, code, flags, pending_id, "
    "timeout_seconds, timestamp, metadata, status, resolved_by, source, chain_seq, chain_hash"
)
_BALANCE_COLUMNS: Final = (
    "account_id, timestamp, debits_pending, debits_posted, credits_pending, credits_posted"
)
_IDEMPOTENCY_COLUMNS: Final = "key, fingerprint, status, body, content_type, created_at, expires_at"


class ImportMoved(msgspec.Struct, frozen=True):
    """One part of a move's rows for the target (see the module docstring); result: the
    number of rows inserted. ``switch``: the map to record with the last part."""

    move_id: str
    accounts: tuple[tuple[Any, ...], ...] = ()  # ACCOUNT_COLUMNS
    metadata: tuple[tuple[str, str], ...] = ()  # (account id, JSON)
    balances: tuple[tuple[Any, ...], ...] = ()  # account_balances columns
    transfers: tuple[tuple[Any, ...], ...] = ()  # MOVED_TRANSFER_COLUMNS
    idempotency: tuple[tuple[Any, ...], ...] = ()  # idempotency columns
    bindings: tuple[tuple[str, str], ...] = ()  # (transfer id, shard holding it)
    # (account id, source, newest timestamp of its history and balance rows copied)
    moved_in: tuple[tuple[str, str, int], ...] = ()
    # Payment rows (``PAYMENT_TABLES``), every column in the table's order.
    payment_rows: tuple[tuple[str, tuple[tuple[Any, ...], ...]], ...] = ()
    newest_timestamp: int = 0
    switch: RecordSlotMap | None = None


class RetireMoved(msgspec.Struct, frozen=True):
    """Move ``ids`` from ``accounts`` (and their metadata) to ``moved_accounts``, and
    delete the payment rows that moved (``payments``: payment, refund and payout ids);
    result: how many accounts were named. Statements are pipelined, one per table."""

    move_id: str
    ids: tuple[str, ...]
    target: str
    payments: tuple[str, ...] = ()


class MoveRow(msgspec.Struct, frozen=True):
    """One ``slot_moves`` row."""

    id: str
    first_slot: int
    last_slot: int
    source: str
    target: str
    state: str
    detail: str = ""


class RecordMove(msgspec.Struct, frozen=True):
    """Insert or update a move's row; result: None."""

    row: MoveRow


class DropImported(msgspec.Struct, frozen=True):
    """Undo an aborted move's import on its target: delete these accounts (with their
    metadata, balance history and moved history), idempotency records and transfer-id
    bindings; result: None."""

    accounts: tuple[str, ...]
    keys: tuple[str, ...]
    bindings: tuple[str, ...]


SlotMoveCommand = ImportMoved | RetireMoved | RecordMove | DropImported

# Per moved-in account, what its moved history posted (its opening on this shard) and
# the newest timestamp of that history. Holds in it are resolved (a move waits for
# them), so only plain transfers and posts count: flags 1 pending, 4 void.
MOVED_OPENINGS: Final = (
    "SELECT i.account_id, COALESCE(SUM(h.dpo), 0), COALESCE(SUM(h.cpo), 0), MAX(i.until) "
    "FROM moved_in i LEFT JOIN ("
    "SELECT debit_account_id AS account, amount AS dpo, 0 AS cpo, flags FROM moved_transfers "
    "UNION ALL SELECT credit_account_id, 0, amount, flags FROM moved_transfers"
    ") h ON h.account = i.account_id AND (h.flags & 5) = 0 "
    "GROUP BY i.account_id"
)
# The payment rows that live with an account (on its shard) and move with it: a payment
# with its merchant, a payout with its wallet, refunds and attempts with their parent.
# Their events already queued for webhooks stay on the source and are delivered there.
PAYMENT_TABLES: Final = ("payments", "refunds", "payouts", "payment_attempts")
_PAYMENT_KEYS: Final = {
    "payments": "id",
    "refunds": "id",
    "payouts": "id",
    "payment_attempts": "parent_id",
}
_DROP_ACCOUNT: Final = (
    "DELETE FROM accounts WHERE id = ?",
    "DELETE FROM account_metadata WHERE id = ?",
    "DELETE FROM account_balances WHERE account_id = ?",
    "DELETE FROM moved_transfers WHERE debit_account_id = ? OR credit_account_id = ?",
    "DELETE FROM moved_in WHERE account_id = ?",
)
_INSERT_SKIP: Final = "INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def _insert(tx: LedgerTx, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> int:
    marks = ", ".join("?" * len(columns.split(",")))
    query = _INSERT_SKIP.format(table=table, columns=columns, marks=marks)
    if rows:
        tx.run_many(query, rows)
    return len(rows)


def apply_slot_move_command(tx: LedgerTx, clock: GroupClock, command: SlotMoveCommand) -> Any:
    if isinstance(command, ImportMoved):
        return _import(tx, clock, command)
    if isinstance(command, RetireMoved):
        return _retire(tx, clock, command)
    if isinstance(command, DropImported):
        for account_id in command.accounts:
            for query in _DROP_ACCOUNT:
                tx.run_sql(query, (account_id,) * query.count("?"))
        tx.run_many("DELETE FROM idempotency WHERE key = ?", [(k,) for k in command.keys])
        tx.run_many("DELETE FROM transfer_ids WHERE id = ?", [(i,) for i in command.bindings])
        return None
    row = command.row
    tx.run_sql(
        "INSERT INTO slot_moves (id, first_slot, last_slot, source, target, state, detail, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
        "SET state = excluded.state, detail = excluded.detail, updated_at = excluded.updated_at",
        (*msgspec.structs.astuple(row), clock.now, clock.now),
    )
    return None


def _import(tx: LedgerTx, clock: GroupClock, c: ImportMoved) -> int:
    # An account moving back where it lived before lives here again.
    tx.run_many("DELETE FROM moved_accounts WHERE id = ?", [(a[0],) for a in c.accounts])
    tx.run_many(
        "INSERT INTO moved_in (account_id, source, until) VALUES (?, ?, ?) ON CONFLICT "
        "(account_id) DO UPDATE SET source = excluded.source, until = excluded.until",
        c.moved_in,
    )
    n = _insert(tx, "accounts", ACCOUNT_COLUMNS, c.accounts)
    n += _insert(tx, "account_metadata", "id, metadata", c.metadata)
    n += _insert(tx, "account_balances", _BALANCE_COLUMNS, c.balances)
    n += _insert(tx, "moved_transfers", MOVED_TRANSFER_COLUMNS, c.transfers)
    n += _insert(tx, "idempotency", _IDEMPOTENCY_COLUMNS, c.idempotency)
    n += _insert(
        tx, "transfer_ids", "id, shard, reserved_at", [(i, s, clock.now) for i, s in c.bindings]
    )
    for table, rows in c.payment_rows:
        if table not in PAYMENT_TABLES or not rows:
            continue
        marks = ", ".join("?" * len(rows[0]))
        tx.run_many(f"INSERT INTO {table} VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
        n += len(rows)
    clock.last_timestamp = max(clock.last_timestamp, c.newest_timestamp)
    if c.switch is not None:
        apply_slot_map_command(tx, clock.now, c.switch)
    return n


def _retire(tx: LedgerTx, clock: GroupClock, c: RetireMoved) -> int:
    ids = [(account_id,) for account_id in c.ids]
    tx.run_many(
        f"INSERT INTO moved_accounts ({ACCOUNT_COLUMNS}, target, move_id, moved_at) "
        f"SELECT {ACCOUNT_COLUMNS}, ?, ?, ? FROM accounts WHERE id = ? ON CONFLICT DO NOTHING",
        [(c.target, c.move_id, clock.now, account_id) for account_id in c.ids],
    )
    tx.run_many("DELETE FROM accounts WHERE id = ?", ids)
    tx.run_many("DELETE FROM account_metadata WHERE id = ?", ids)
    for table, key in _PAYMENT_KEYS.items():
        tx.run_many(f"DELETE FROM {table} WHERE {key} = ?", [(i,) for i in c.payments])
    return len(ids)
