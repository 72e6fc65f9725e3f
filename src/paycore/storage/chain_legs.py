"""A shard's side of a linked chain across shards: prepare, decide, finish.

``paycore.cluster.chains`` plans the chain over every shard and cuts it into legs, one
part per shard. Here, each part is one local transaction:

* ``PrepareChain`` (every participant but the coordinator): the legs are tried on the
  current state and, if all pass, kept with the money they need reserved per account
  (the deepest drawdown of its headroom along the legs) and the holds they resolve
  locked. Other transfers see reserved money as unavailable and locked holds as in
  flight, so nothing can make the legs fail later;
* ``DecideChain`` (the coordinator): its own legs applied and the decision recorded in
  the same transaction: the chain's commit point. A decision is never changed;
* ``FinishChain`` (each participant, after the decision): apply or drop the kept legs.

Reservations and locks are read by every transfer run (``load_chain_guards``), so they
hold against any writer on the shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from paycore.errors import ErrorCode, PaycoreError
from paycore.ledger.model import TransferRequest
from paycore.ledger.rules import TransferResult, WorkingSet
from paycore.storage.base import (
    ChainOutcome,
    ChainRefusals,
    CreateTransfers,
    DecideChain,
    FinishChain,
    KeepChainRefusals,
    OutboxWrite,
    PrepareChain,
    StaleChains,
)
from paycore.storage.codec import REFUSAL_COLUMNS, refusal_row

if TYPE_CHECKING:
    from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "ChainCommand",
    "RunLegs",
    "account_has_chain",
    "apply_chain_command",
    "load_chain_guards",
    "locked_holds",
]

ChainCommand = (
    PrepareChain | DecideChain | FinishChain | StaleChains | ChainRefusals | KeepChainRefusals
)
# Runs legs on the shard: (tx, clock, legs, write, guarded) -> (results, working set);
# with ``write``, the effects are written when (and only when) every leg passed; the
# ``guarded`` ids are refused if reserved here for another shard.
RunLegs = Callable[
    ["LedgerTx", "GroupClock", CreateTransfers, bool, Sequence[str]],
    tuple[list[TransferResult], WorkingSet],
]

PREPARED, COMMITTED, ABORTED, UNKNOWN = "prepared", "committed", "aborted", "unknown"
_CHUNK = 500


class _Part(msgspec.Struct, frozen=True):
    legs: tuple[TransferRequest, ...]
    outbox: tuple[OutboxWrite, ...] = ()


_encode = msgspec.json.Encoder().encode
_decode_part = msgspec.json.Decoder(_Part).decode
_decode_results = msgspec.json.Decoder(list[TransferResult]).decode


def apply_chain_command(tx: LedgerTx, clock: GroupClock, command: Any, run: RunLegs) -> Any:
    if isinstance(command, PrepareChain):
        return _prepare(tx, clock, command, run)
    if isinstance(command, DecideChain):
        return _decide(tx, clock, command, run)
    if isinstance(command, FinishChain):
        return _finish(tx, clock, command, run)
    if isinstance(command, ChainRefusals):
        return tx.refusals_by_ids(command.ids)
    if isinstance(command, KeepChainRefusals):
        for f in command.refusals:
            tx.run_sql(
                f"INSERT INTO transfer_refusals ({REFUSAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                refusal_row(f),
            )
        return None
    if isinstance(command, StaleChains):
        before = clock.now - int(command.older_than_seconds * 1_000_000_000)
        rows = tx.run_sql(
            "SELECT chain_id, coordinator FROM chains WHERE state = ? AND created_at <= ? "
            "ORDER BY created_at LIMIT ?",
            (PREPARED, before, command.limit),
        )
        return [(str(r[0]), str(r[1])) for r in rows]
    raise TypeError(f"unknown chain command {command!r}")


def _row(tx: LedgerTx, chain_id: str) -> tuple[str, bytes, bytes | None] | None:
    rows = tx.run_sql("SELECT state, legs, results FROM chains WHERE chain_id = ?", (chain_id,))
    if not rows:
        return None
    state, legs, results = rows[0]
    return str(state), bytes(legs), None if results is None else bytes(results)


def _insert(
    tx: LedgerTx,
    clock: GroupClock,
    chain_id: str,
    *,
    state: str,
    coordinator: str,
    participants: Sequence[str],
    part: _Part,
    results: Sequence[TransferResult] | None,
) -> None:
    tx.run_sql(
        "INSERT INTO chains (chain_id, state, coordinator, participants, legs, results, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            chain_id,
            state,
            coordinator,
            _encode(list(participants)).decode(),
            _encode(part),
            None if results is None else _encode(list(results)),
            clock.now,
            clock.now,
        ),
    )


def _set_state(
    tx: LedgerTx,
    clock: GroupClock,
    chain_id: str,
    state: str,
    results: Sequence[TransferResult] | None = None,
) -> None:
    tx.run_sql(
        "UPDATE chains SET state = ?, results = ?, updated_at = ? WHERE chain_id = ?",
        (state, None if results is None else _encode(list(results)), clock.now, chain_id),
    )


def _prepare(tx: LedgerTx, clock: GroupClock, c: PrepareChain, run: RunLegs) -> list[Any]:
    seen = _row(tx, c.chain_id)
    if seen is not None:  # a repeated prepare: the legs were kept (or dropped) before
        ok = seen[0] in (PREPARED, COMMITTED)
        return [
            TransferResult(id=leg.id) if ok else TransferResult(id=leg.id, code=_IN_FLIGHT)
            for leg in c.legs
        ]
    command = CreateTransfers(c.legs, c.outbox, settlement=True, tenant=c.tenant)
    results, ws = run(tx, clock, command, False, c.guarded)
    if not all(r.ok for r in results):
        return results
    part = _Part(c.legs, c.outbox)
    _insert(
        tx,
        clock,
        c.chain_id,
        state=PREPARED,
        coordinator=c.coordinator,
        participants=(),
        part=part,
        results=None,
    )
    need = ws.drawdown()
    if need:
        tx.run_sql(
            "INSERT INTO chain_reservations (chain_id, account_id, amount) VALUES "
            + ", ".join(["(?, ?, ?)"] * len(need)),
            [v for account, amount in sorted(need.items()) for v in (c.chain_id, account, amount)],
        )
    holds = sorted({leg.pending_id for leg in c.legs if leg.pending_id is not None})
    if holds:
        tx.run_sql(
            "INSERT INTO chain_locks (pending_id, chain_id) VALUES "
            + ", ".join(["(?, ?)"] * len(holds)),
            [v for hold in holds for v in (hold, c.chain_id)],
        )
    return results


_IN_FLIGHT = ErrorCode.TRANSFER_IN_FLIGHT


def _decide(tx: LedgerTx, clock: GroupClock, c: DecideChain, run: RunLegs) -> ChainOutcome:
    seen = _row(tx, c.chain_id)
    if seen is not None:  # decided before (by this request, or by a recovery)
        return ChainOutcome(seen[0], _decode_results(seen[2]) if seen[2] else [])
    results: list[TransferResult] | None = None
    state = ABORTED
    if c.commit:
        command = CreateTransfers(c.legs, c.outbox, settlement=True, tenant=c.tenant)
        results, _ = run(tx, clock, command, True, c.guarded)
        state = COMMITTED if all(r.ok for r in results) else ABORTED
    _insert(
        tx,
        clock,
        c.chain_id,
        state=state,
        coordinator="",
        participants=c.participants,
        part=_Part(c.legs, c.outbox),
        results=results,
    )
    return ChainOutcome(state, results or [])


def _finish(tx: LedgerTx, clock: GroupClock, c: FinishChain, run: RunLegs) -> ChainOutcome:
    seen = _row(tx, c.chain_id)
    if seen is None:
        return ChainOutcome(UNKNOWN)
    state, legs, stored = seen
    if state != PREPARED:
        return ChainOutcome(state, _decode_results(stored) if stored else [])
    tx.run_sql("DELETE FROM chain_reservations WHERE chain_id = ?", (c.chain_id,))
    tx.run_sql("DELETE FROM chain_locks WHERE chain_id = ?", (c.chain_id,))
    if not c.commit:
        _set_state(tx, clock, c.chain_id, ABORTED)
        return ChainOutcome(ABORTED)
    part = _decode_part(legs)
    # Unguarded: the prepare checked the ids, and their reservations are never undone.
    command = CreateTransfers(part.legs, part.outbox, settlement=True)
    results, _ = run(tx, clock, command, True, ())
    if not all(r.ok for r in results):
        # Reservations and locks made this impossible; if it happens anyway, nothing is
        # written (the transaction rolls back) and the recovery retries and logs it.
        failed = next(r for r in results if not r.ok)
        raise PaycoreError(
            ErrorCode.INTERNAL_ERROR,
            f"chain {c.chain_id}: a prepared leg failed on apply: {failed.code} {failed.detail}",
        )
    _set_state(tx, clock, c.chain_id, COMMITTED, results)
    return ChainOutcome(COMMITTED, results)


# -- what every transfer run reads -----------------------------------------------------------


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def load_chain_guards(tx: LedgerTx, ws: WorkingSet, pending_ids: Iterable[str]) -> None:
    """Set the working set's reserved amounts and locked holds from prepared chains."""
    accounts = sorted(ws.accounts)
    for part in _chunks(accounts):
        marks = ", ".join("?" * len(part))
        for account_id, amount in tx.run_sql(
            "SELECT account_id, SUM(amount) FROM chain_reservations "
            f"WHERE account_id IN ({marks}) GROUP BY account_id",
            part,
        ):
            ws.accounts[str(account_id)].reserved = int(amount)
    # Only holds the run found (an id that names none cannot be locked, and may hold
    # anything, a NUL included, that a query should not see).
    ws.locked_holds = locked_holds(tx, sorted({i for i in pending_ids if i in ws.pendings}))


def locked_holds(tx: LedgerTx, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that a prepared chain resolves."""
    found: set[str] = set()
    for part in _chunks(ids):
        marks = ", ".join("?" * len(part))
        found.update(
            str(r[0])
            for r in tx.run_sql(
                f"SELECT pending_id FROM chain_locks WHERE pending_id IN ({marks})", part
            )
        )
    return found


def account_has_chain(tx: LedgerTx, account_id: str) -> bool:
    """A prepared chain moves money of this account (it cannot be closed meanwhile)."""
    rows = tx.run_sql(
        "SELECT 1 FROM chain_reservations WHERE account_id = ? LIMIT 1", (account_id,)
    )
    return bool(rows)
