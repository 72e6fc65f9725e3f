"""The holds of posted cross-shard transfers in flight on ``history`` accounts (schema 16).

While such a hold is in flight its account's balance rows show it as posted
(``paycore.ledger.saga_history``); the table ``saga_holds_in_flight`` keeps which holds
and how much, so that a transaction that did not write the hold shows it the same way.
Only ``history`` accounts have rows: the others have no balance rows to show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from paycore.ledger.rules import WorkingSet

__all__ = ["load_saga_holds", "save_saga_holds"]

RunSql = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
_CHUNK = 500


def load_saga_holds(run_sql: RunSql, ws: WorkingSet, pending_ids: Iterable[str]) -> None:
    """Set what each ``history`` account of ``ws`` has in flight, and which of the holds
    the run resolves are in flight."""
    history = sorted(a for a, state in ws.accounts.items() if state.history)
    if not history:
        return
    for part in _chunks(history):
        marks = ", ".join("?" * len(part))
        for account_id, amount in run_sql(
            "SELECT account_id, SUM(amount) FROM saga_holds_in_flight "
            f"WHERE account_id IN ({marks}) GROUP BY account_id",
            part,
        ):
            ws.accounts[str(account_id)].in_flight = int(amount)
    named = sorted(i for i in pending_ids if i in ws.pendings)
    for part in _chunks(named):
        marks = ", ".join("?" * len(part))
        ws.saga_holds.update(
            str(row[0])
            for row in run_sql(
                f"SELECT hold_id FROM saga_holds_in_flight WHERE hold_id IN ({marks})", part
            )
        )
    ws.saga_holds_loaded = frozenset(ws.saga_holds)


def save_saga_holds(run_sql: RunSql, ws: WorkingSet) -> None:
    """Write what the run changed: holds sent and still in flight, loaded ones landed."""
    for hold_id in sorted(ws.saga_holds - ws.saga_holds_loaded):
        t = ws.transfers[hold_id]
        run_sql(
            "INSERT INTO saga_holds_in_flight (hold_id, account_id, amount) VALUES (?, ?, ?)",
            (t.id, t.debit_account_id, t.amount),
        )
    landed = sorted(ws.saga_holds_loaded - ws.saga_holds)
    for part in _chunks(landed):
        marks = ", ".join("?" * len(part))
        run_sql(f"DELETE FROM saga_holds_in_flight WHERE hold_id IN ({marks})", part)


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])
