"""Helpers for the store tests: a hand-driven clock and an auditor of committed state."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from clocks import NS, ManualClock
from paycore.ledger.model import Account, BalanceRecord, PendingStatus, Transfer
from paycore.money import MAX_AMOUNT
from paycore.storage.base import LedgerSnapshot

__all__ = ["NS", "LedgerState", "ManualClock", "audit", "read_state"]


@dataclass(frozen=True)
class LedgerState:
    """Everything one snapshot of a shard holds, read in one transaction."""

    accounts: dict[str, Account]
    transfers: list[Transfer]  # in timestamp order
    pendings: dict[str, tuple[PendingStatus, str | None]]
    history: list[BalanceRecord]  # in timestamp order


def read_state(snapshot: LedgerSnapshot) -> LedgerState:
    """Reader for ``store.with_snapshot``: materialize the whole shard."""
    return LedgerState(
        accounts={a.id: a for a in snapshot.accounts()},
        transfers=list(snapshot.transfers()),
        pendings={i: (s, r) for i, s, r in snapshot.pendings()},
        history=list(snapshot.balance_history()),
    )


def audit(state: LedgerState) -> list[str]:
    """Every promise a committed state must keep; returns the broken ones (empty if none).

    Money is conserved per currency, holds balance, limits hold, every transfer is
    well formed, every hold's status agrees with the transfers that resolved it, and
    each account's counters equal a replay of the transfer history.
    """
    problems: list[str] = []
    accounts = state.accounts
    posted: dict[str, int] = defaultdict(int)
    pending: dict[str, int] = defaultdict(int)
    for a in accounts.values():
        posted[a.currency] += a.credits_posted - a.debits_posted
        pending[a.currency] += a.credits_pending - a.debits_pending
        counters = (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        if not all(0 <= c <= MAX_AMOUNT for c in counters):
            problems.append(f"{a.id}: counter out of range {counters}")
        limit = a.flags.debit_limit()
        if limit is not None and a.debits_posted + a.debits_pending > a.credits_posted + limit:
            problems.append(f"{a.id}: below its limit {limit}: {counters}")
    problems += [f"{c}: posted balances sum to {s}" for c, s in posted.items() if s]
    problems += [f"{c}: pending balances sum to {s}" for c, s in pending.items() if s]

    replay = {i: [0, 0, 0, 0] for i in accounts}  # dp, dpo, cp, cpo
    by_id: dict[str, Transfer] = {}
    resolvers: dict[str, list[Transfer]] = defaultdict(list)
    last = -1
    for t in state.transfers:
        if t.timestamp <= last:
            problems.append(f"{t.id}: timestamp {t.timestamp} not after {last}")
        last = t.timestamp
        by_id[t.id] = t
        debit, credit = accounts.get(t.debit_account_id), accounts.get(t.credit_account_id)
        if debit is None or credit is None:
            problems.append(f"{t.id}: names a missing account")
            continue
        if not (t.amount > 0 and debit.id != credit.id):
            problems.append(f"{t.id}: malformed")
        if not debit.currency == credit.currency == t.currency:
            problems.append(f"{t.id}: currencies differ")
        d, c = replay[debit.id], replay[credit.id]
        if t.flags.pending:
            d[0] += t.amount
            c[2] += t.amount
        elif t.flags.post_pending or t.flags.void_pending:
            hold = by_id.get(t.pending_id or "")
            if hold is None or not hold.flags.pending:
                problems.append(f"{t.id}: resolves {t.pending_id!r}, not an earlier hold")
                continue
            resolvers[hold.id].append(t)
            d[0] -= hold.amount
            c[2] -= hold.amount
            if t.flags.post_pending:
                d[1] += t.amount
                c[3] += t.amount
        else:
            d[1] += t.amount
            c[3] += t.amount
    for hold_id, (status, resolved_by) in state.pendings.items():
        hold = by_id.get(hold_id)
        if hold is None:
            problems.append(f"pending row {hold_id!r} without its transfer")
            continue
        done = resolvers.get(hold_id, [])
        if status is PendingStatus.EXPIRED:
            replay[hold.debit_account_id][0] -= hold.amount
            replay[hold.credit_account_id][2] -= hold.amount
        # posted and voided holds have exactly one resolver, named in resolved_by;
        # pending and expired ones have none
        resolved = status in (PendingStatus.POSTED, PendingStatus.VOIDED)
        if [t.id for t in done] != ([resolved_by] if resolved else []):
            problems.append(f"hold {hold_id}: {status} by {resolved_by}, resolvers {done}")
        elif done and done[0].flags.post_pending != (status is PendingStatus.POSTED):
            problems.append(f"hold {hold_id}: {status} but resolved by {done[0].flags}")
    holds = {t.id for t in state.transfers if t.flags.pending}
    if holds != set(state.pendings):
        problems.append(f"holds without status rows: {holds ^ set(state.pendings)}")
    for account_id, (dp, dpo, cp, cpo) in replay.items():
        a = accounts[account_id]
        stored = (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        if stored != (dp, dpo, cp, cpo):
            problems.append(f"{account_id}: counters {stored}, history replays {dp, dpo, cp, cpo}")
    return problems
