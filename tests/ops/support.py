"""A ledger built with the pure rules, and a snapshot of it that tests can doctor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from paycore.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    BalanceRecord,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferRequest,
)
from paycore.ledger.rules import PendingState, TransferResult, WorkingSet, new_account

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


@dataclass
class FakeSnapshot:
    """A ``LedgerSnapshot`` over plain lists; every field may be edited by a test."""

    now: int
    accounts_: list[Account]
    transfers_: list[Transfer]
    pendings_: list[tuple[str, PendingStatus, str | None]]
    history_: list[BalanceRecord]

    def accounts(self) -> Iterator[Account]:
        return iter(self.accounts_)

    def transfers(self) -> Iterator[Transfer]:
        return iter(sorted(self.transfers_, key=lambda t: t.timestamp))

    def pendings(self) -> Iterator[tuple[str, PendingStatus, str | None]]:
        return iter(self.pendings_)

    def balance_history(self) -> Iterator[BalanceRecord]:
        return iter(sorted(self.history_, key=lambda r: r.timestamp))

    def account(self, account_id: str) -> Account:
        return next(a for a in self.accounts_ if a.id == account_id)

    def edit_account(self, account_id: str, **changes: int) -> None:
        self.accounts_ = [
            msgspec.structs.replace(a, **changes) if a.id == account_id else a
            for a in self.accounts_
        ]

    def transfer(self, transfer_id: str) -> Transfer:
        return next(t for t in self.transfers_ if t.id == transfer_id)


@dataclass
class LedgerBuilder:
    """Applies requests with ``WorkingSet`` exactly as a store would, without a store."""

    now: int = T0
    last_timestamp: int = 0
    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    pendings: dict[str, PendingState] = field(default_factory=dict)
    history: list[BalanceRecord] = field(default_factory=list)

    def open(self, account_id: str, currency: str = "USD", **flags: bool | int) -> None:
        self.last_timestamp = max(self.now, self.last_timestamp + 1)
        request = AccountRequest(account_id, currency, flags=AccountFlags(**flags))  # type: ignore[arg-type]
        result = new_account(request, None, self.last_timestamp)
        assert result.account is not None, result
        self.accounts[account_id] = result.account

    def _working_set(self) -> WorkingSet:
        return WorkingSet(
            self.accounts.values(),
            self.transfers,
            [(p.transfer, p.status, p.resolved_by) for p in self.pendings.values()],
            now=self.now,
            last_timestamp=self.last_timestamp,
        )

    def _absorb(self, ws: WorkingSet) -> None:
        for state in ws.dirty_accounts():
            self.accounts[state.account.id] = state.to_account()
        self.transfers.extend(ws.created)
        self.pendings.update(ws.pendings)
        self.history.extend(ws.history)
        self.last_timestamp = ws.last_timestamp

    def apply(self, *requests: TransferRequest) -> list[TransferResult]:
        ws = self._working_set()
        results = ws.apply_transfers(requests)
        self._absorb(ws)
        return results

    def ok(self, *requests: TransferRequest) -> None:
        results = self.apply(*requests)
        assert all(r.ok for r in results), results

    def expire_due(self) -> list[str]:
        ws = self._working_set()
        expired = ws.expire_due()
        self._absorb(ws)
        return [s.transfer.id for s in expired]

    def snapshot(self, now: int | None = None) -> FakeSnapshot:
        return FakeSnapshot(
            now=self.now if now is None else now,
            accounts_=list(self.accounts.values()),
            transfers_=list(self.transfers),
            pendings_=[(i, p.status, p.resolved_by) for i, p in self.pendings.items()],
            history_=list(self.history),
        )


def transfer(tid: str, debit: str, credit: str, amount: int, **kwargs: object) -> TransferRequest:
    """A plain transfer request (``pending=True`` and ``timeout_seconds`` for a hold)."""
    pending = bool(kwargs.pop("pending", False))
    balancing = bool(kwargs.pop("balancing", False))
    return TransferRequest(
        tid,
        debit,
        credit,
        amount,
        flags=TransferFlags(pending=pending, balancing=balancing),
        **kwargs,  # type: ignore[arg-type]
    )


def post(tid: str, hold_id: str, amount: int | None = None) -> TransferRequest:
    return TransferRequest(
        tid, amount=amount, flags=TransferFlags(post_pending=True), pending_id=hold_id
    )


def void(tid: str, hold_id: str) -> TransferRequest:
    return TransferRequest(tid, flags=TransferFlags(void_pending=True), pending_id=hold_id)
