"""A deliberately plain, independent model of the ledger's documented semantics.

It keeps accounts, transfers and holds in dicts and applies requests the slow,
obvious way (a linked chain is undone by restoring a deep copy taken when the
chain opened), so that it shares no code and no cleverness with
``paycore.ledger.rules``. Tests drive the real ``WorkingSet`` or ``SQLiteStore`` and
this model with the same requests and compare every result and every counter.

What the model does not decide on its own is the timestamp a store gives a new
transfer; the test hands it over with ``stamp`` (it only matters for when a hold
expires: ``timestamp + timeout_seconds`` seconds).
"""

from __future__ import annotations

import copy
import string
from dataclasses import dataclass, field
from typing import Any

from paycore.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from paycore.storage.apply import remainder_transfer

__all__ = [
    "CURRENCIES",
    "KEPT",
    "MAX",
    "LedgerModel",
    "MAccount",
    "MHold",
    "MTransfer",
    "Outcome",
]

MAX = 2**63 - 1
MAX_TIMEOUT = 2**31 - 1
MAX_CODE = 2**31 - 1
NS = 1_000_000_000
CURRENCIES = frozenset({"USD", "EUR", "JPY", "GBP", "KWD", "CHF"})  # all the tests use
_ID_CHARS = frozenset(string.ascii_letters + string.digits + "_.:-")
# Refusals that depend on the ledger's state: kept under the transfer id for good, so the
# same id gets the same answer again (the contract: a retry never changes an answer).
KEPT = frozenset(
    {
        "account_not_found",
        "account_closed",
        "currency_mismatch",
        "insufficient_funds",
        "exceeds_credit_limit",
        "overflow",
        "pending_transfer_not_found",
        "pending_transfer_not_pending",
        "pending_transfer_already_posted",
        "pending_transfer_already_voided",
        "pending_transfer_expired",
        "amount_exceeds_pending_amount",
    }
)


def valid_id(value: object) -> bool:
    """1 to 64 characters, each a letter, a digit or one of ``_.:-``."""
    return isinstance(value, str) and 1 <= len(value) <= 64 and set(value) <= _ID_CHARS


def _is_amount(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX


@dataclass
class MAccount:
    id: str
    currency: str
    code: int
    no_overdraft: bool
    credit_limit: int | None
    history: bool
    metadata: dict[str, Any] | None
    closed: bool = False
    dp: int = 0  # debits pending
    dpo: int = 0  # debits posted
    cp: int = 0  # credits pending
    cpo: int = 0  # credits posted

    def floor(self) -> int | None:
        """How far below zero the posted balance minus holds may go; None: no limit."""
        if self.no_overdraft:
            return 0
        return self.credit_limit

    def counters(self) -> tuple[int, int, int, int]:
        return (self.dp, self.dpo, self.cp, self.cpo)


@dataclass
class MTransfer:
    id: str
    debit: str
    credit: str
    amount: int
    currency: str
    code: int
    flags: TransferFlags
    pending_id: str | None
    timeout: int
    metadata: dict[str, Any] | None
    timestamp: int | None = None  # handed over by the test once the store chose it


@dataclass
class MHold:
    status: str = "pending"  # pending -> posted | voided | expired
    resolved_by: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What the model expects for one item: ``code`` None means success."""

    id: str
    code: str | None = None
    exists: bool = False
    transfer: MTransfer | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


class _Reject(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


@dataclass
class LedgerModel:
    accounts: dict[str, MAccount] = field(default_factory=dict)
    transfers: dict[str, MTransfer] = field(default_factory=dict)
    holds: dict[str, MHold] = field(default_factory=dict)
    # account id -> the counters after every change, in order (history accounts only)
    history: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    # Idempotency-Key -> (fingerprint, stored body, expires_at ns)
    idempotency: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)
    # transfer id -> (the request refused, its code), for the KEPT codes; a failed chain
    # keeps them, a chain left open (malformed input) does not
    refusals: dict[str, tuple[TransferRequest, str]] = field(default_factory=dict)

    # -- accounts -------------------------------------------------------------------

    def create_accounts(self, requests: list[AccountRequest]) -> list[Outcome]:
        return [self._create_account(r) for r in requests]

    def _create_account(self, r: AccountRequest) -> Outcome:
        f = r.flags
        limit_ok = f.credit_limit is None or (
            not f.no_overdraft and type(f.credit_limit) is int and 0 <= f.credit_limit <= MAX
        )
        if (
            not valid_id(r.id)
            or r.currency not in CURRENCIES
            or f.closed  # accounts are born open
            or not limit_ok
            or not (type(r.code) is int and 0 <= r.code <= MAX_CODE)
        ):
            return Outcome(r.id, "invalid_request")
        existing = self.accounts.get(r.id)
        if existing is not None:
            same = (
                existing.currency == r.currency
                and existing.code == r.code
                and existing.no_overdraft == f.no_overdraft
                and existing.credit_limit == f.credit_limit
                and existing.history == f.history
                and existing.metadata == r.metadata
            )
            if not same:
                return Outcome(r.id, "account_exists_with_different_fields")
            return Outcome(r.id, exists=True)
        self.accounts[r.id] = MAccount(
            r.id, r.currency, r.code, f.no_overdraft, f.credit_limit, f.history, r.metadata
        )
        if f.history:
            self.history[r.id] = []
        return Outcome(r.id)

    def close_account(self, account_id: str, to: str | None = None, now: int = 0) -> Outcome:
        """A balance refuses the close, unless ``to`` takes it (or pays the debt) by a
        transfer in the same step: that transfer's refusal refuses the close."""
        account = self.accounts.get(account_id)
        if account is None:
            return Outcome(account_id, "account_not_found")
        if account.closed:
            return Outcome(account_id, exists=True)
        if account.dp or account.cp:
            return Outcome(account_id, "account_has_pending_transfers")
        if account.cpo != account.dpo:
            if to is None:
                return Outcome(account_id, "account_has_balance")
            counters = Account(
                account_id, account.currency, 0, AccountFlags(), None, 0,
                debits_posted=account.dpo, credits_posted=account.cpo,
            )  # fmt: skip
            refusals = dict(self.refusals)
            (moved,) = self.apply_batch([remainder_transfer(counters, to)], now)
            if not moved.ok:  # the close keeps no refusal under the remainder's id
                self.refusals = refusals
                return Outcome(account_id, moved.code)
        account.closed = True
        return Outcome(account_id)

    # -- transfers --------------------------------------------------------------------

    def apply_batch(self, requests: list[TransferRequest], now: int) -> list[Outcome]:
        """Apply items in order; a linked chain (items flagged linked, closed by the
        first item not flagged) succeeds as a whole or leaves no trace."""
        results: list[Outcome] = []
        chain: list[int] | None = None
        saved: tuple[Any, ...] | None = None
        refusals_before: dict[str, tuple[TransferRequest, str]] = {}
        failed = False
        for index, r in enumerate(requests):
            if chain is None and r.flags.linked:
                chain, saved, failed = [], self._save(), False
                refusals_before = dict(self.refusals)
            if chain is None:
                results.append(self._one(r, now))
                continue
            chain.append(index)
            if failed:
                results.append(Outcome(r.id, "linked_event_failed"))
            else:
                outcome = self._one(r, now)
                results.append(outcome)
                failed = not outcome.ok
            if not r.flags.linked:  # this item closes the chain
                if failed:
                    assert saved is not None
                    self._restore(saved)
                    for j in chain:
                        if results[j].ok:
                            results[j] = Outcome(results[j].id, "linked_event_failed")
                chain = None
        if chain is not None:  # the batch ended inside a chain: none of it counts
            assert saved is not None
            self._restore(saved)
            self.refusals = refusals_before
            for j in chain:
                results[j] = Outcome(results[j].id, "linked_event_chain_open")
        return results

    def stamp(self, transfer_id: str, timestamp: int) -> None:
        """Record the timestamp the store gave a transfer the model created."""
        self.transfers[transfer_id].timestamp = timestamp

    def expires_at(self, hold_id: str) -> int | None:
        t = self.transfers[hold_id]
        if t.timeout == 0 or t.timestamp is None:
            return None
        return t.timestamp + t.timeout * NS

    def expire(self, now: int) -> set[str]:
        """Release every pending hold whose timeout has passed at ``now``."""
        expired = set()
        # In the store's order: by deadline, ties by id (the order of balance history).
        due = sorted(
            (at, hold_id) for hold_id in self.holds if (at := self.expires_at(hold_id)) is not None
        )
        for _, hold_id in due:
            hold = self.holds[hold_id]
            at = self.expires_at(hold_id)
            if hold.status == "pending" and at is not None and at <= now:
                t = self.transfers[hold_id]
                debit, credit = self.accounts[t.debit], self.accounts[t.credit]
                debit.dp -= t.amount
                credit.cp -= t.amount
                hold.status = "expired"
                self._touched(debit, credit)
                expired.add(hold_id)
        return expired

    def status(self, transfer_id: str) -> str:
        """What a read shows: a hold's status, else posted (voided for a void)."""
        if transfer_id in self.holds:
            return self.holds[transfer_id].status
        return "voided" if self.transfers[transfer_id].flags.void_pending else "posted"

    # -- idempotency ------------------------------------------------------------------

    def idempotency_lookup(self, key: str, fingerprint: str, now: int) -> str | bytes | None:
        """None: run the command; bytes: replay them; "reused": refuse."""
        seen = self.idempotency.get(key)
        if seen is None or seen[2] <= now:
            return None
        if seen[0] != fingerprint:
            return "reused"
        return seen[1]

    def idempotency_store(
        self, key: str, fingerprint: str, body: bytes, now: int, retention_s: int
    ) -> None:
        self.idempotency[key] = (fingerprint, body, now + retention_s * NS)

    def purge(self, now: int) -> int:
        old = [k for k, (_, _, expires_at) in self.idempotency.items() if expires_at <= now]
        for k in old:
            del self.idempotency[k]
        return len(old)

    # -- one item ---------------------------------------------------------------------

    def _one(self, r: TransferRequest, now: int) -> Outcome:
        try:
            return self._checked(r, now)
        except _Reject as rejected:
            return Outcome(r.id, rejected.code)

    def _checked(self, r: TransferRequest, now: int) -> Outcome:
        f = r.flags
        if not valid_id(r.id):
            raise _Reject("invalid_request")
        if [f.pending, f.post_pending, f.void_pending].count(True) > 1:
            raise _Reject("invalid_request")
        if r.amount is not None and not _is_amount(r.amount):
            raise _Reject("invalid_request")
        if not (type(r.code) is int and 0 <= r.code <= MAX_CODE):
            raise _Reject("invalid_request")
        if r.pending_id is not None and not valid_id(r.pending_id):
            raise _Reject("pending_transfer_not_found")  # no transfer can have that id
        if type(r.timeout_seconds) is not int or not 0 <= r.timeout_seconds <= MAX_TIMEOUT:
            raise _Reject("invalid_request")
        if r.id in self.refusals:
            first, code = self.refusals[r.id]
            if not self._same_request(r, first):
                raise _Reject("transfer_exists_with_different_fields")
            raise _Reject(code)
        if r.id in self.transfers:
            return self._same(r, self.transfers[r.id])
        try:
            if f.post_pending or f.void_pending:
                return self._resolve(r, now)
            return self._create(r)
        except _Reject as rejected:
            if rejected.code in KEPT:
                self.refusals[r.id] = (r, rejected.code)
            raise

    def _create(self, r: TransferRequest) -> Outcome:
        if r.debit_account_id is None or r.credit_account_id is None or r.amount is None:
            raise _Reject("invalid_request")
        if r.pending_id is not None:
            raise _Reject("invalid_request")
        if r.timeout_seconds and not r.flags.pending:
            raise _Reject("timeout_reserved_for_pending_transfer")
        if r.debit_account_id == r.credit_account_id:
            raise _Reject("accounts_must_be_different")
        debit = self.accounts.get(r.debit_account_id)
        credit = self.accounts.get(r.credit_account_id)
        if debit is None or credit is None:
            raise _Reject("account_not_found")
        if credit.currency != debit.currency or r.currency not in (None, debit.currency):
            raise _Reject("currency_mismatch")
        if debit.closed or credit.closed:
            raise _Reject("account_closed")
        amount = r.amount
        floor = debit.floor()
        if floor is not None:
            # What may still be debited: posted credits plus the limit, minus posted
            # debits and outgoing holds. A balancing transfer takes at most that.
            room = debit.cpo + floor - debit.dpo - debit.dp
            if r.flags.balancing:
                amount = min(amount, room)
            if amount <= 0 or amount > room:
                # A zero floor (no_overdraft, or a credit limit of 0) means "insufficient
                # funds"; a positive credit limit is "exceeds credit limit".
                raise _Reject("insufficient_funds" if floor == 0 else "exceeds_credit_limit")
        if debit.dp + debit.dpo + amount > MAX or credit.cp + credit.cpo + amount > MAX:
            raise _Reject("overflow")
        transfer = MTransfer(
            r.id,
            debit.id,
            credit.id,
            amount,
            debit.currency,
            r.code,
            r.flags,
            None,
            r.timeout_seconds,
            r.metadata,
        )
        if r.flags.pending:
            debit.dp += amount
            credit.cp += amount
            self.holds[r.id] = MHold()
        else:
            debit.dpo += amount
            credit.cpo += amount
        self.transfers[r.id] = transfer
        self._touched(debit, credit)
        return Outcome(r.id, transfer=transfer)

    def _resolve(self, r: TransferRequest, now: int) -> Outcome:
        if r.pending_id is None:
            raise _Reject("invalid_request")
        if r.timeout_seconds:
            raise _Reject("timeout_reserved_for_pending_transfer")
        target = self.transfers.get(r.pending_id)
        if target is None:
            raise _Reject("pending_transfer_not_found")
        hold = self.holds.get(r.pending_id)
        if hold is None:
            raise _Reject("pending_transfer_not_pending")
        if r.debit_account_id not in (None, target.debit):
            raise _Reject("invalid_request")
        if r.credit_account_id not in (None, target.credit):
            raise _Reject("invalid_request")
        if r.currency not in (None, target.currency):
            raise _Reject("currency_mismatch")
        if hold.status == "posted":
            raise _Reject("pending_transfer_already_posted")
        if hold.status == "voided":
            raise _Reject("pending_transfer_already_voided")
        expires_at = self.expires_at(target.id)
        if hold.status == "expired" or (expires_at is not None and expires_at <= now):
            raise _Reject("pending_transfer_expired")
        amount = target.amount if r.amount is None else r.amount
        if amount > target.amount:
            raise _Reject("amount_exceeds_pending_amount")
        posting = r.flags.post_pending
        if not posting and amount != target.amount:
            raise _Reject("invalid_request")
        debit, credit = self.accounts[target.debit], self.accounts[target.credit]
        if posting and (debit.dpo + amount > MAX or credit.cpo + amount > MAX):
            raise _Reject("overflow")
        debit.dp -= target.amount
        credit.cp -= target.amount
        if posting:
            debit.dpo += amount
            credit.cpo += amount
        hold.status = "posted" if posting else "voided"
        hold.resolved_by = r.id
        transfer = MTransfer(
            r.id,
            target.debit,
            target.credit,
            amount,
            target.currency,
            r.code or target.code,
            r.flags,
            target.id,
            0,
            r.metadata,
        )
        self.transfers[r.id] = transfer
        self._touched(debit, credit)
        return Outcome(r.id, transfer=transfer)

    def _same(self, r: TransferRequest, t: MTransfer) -> Outcome:
        """A retry matches when every field it gives equals the stored transfer's."""
        amount_matches = (
            r.amount is None
            or r.amount == t.amount
            # a balancing transfer may have moved less than was asked for
            or (t.flags.balancing and r.amount >= t.amount)
        )
        same = (
            r.flags == t.flags
            and r.code in (0, t.code)
            and r.pending_id == t.pending_id
            and r.timeout_seconds == t.timeout
            and r.metadata == t.metadata
            and r.debit_account_id in (None, t.debit)
            and r.credit_account_id in (None, t.credit)
            and r.currency in (None, t.currency)
            and amount_matches
        )
        if not same:
            raise _Reject("transfer_exists_with_different_fields")
        return Outcome(r.id, exists=True, transfer=t)

    @staticmethod
    def _same_request(r: TransferRequest, first: TransferRequest) -> bool:
        """A retry of a refused id matches when it gives exactly the same fields."""
        fields = (
            "debit_account_id", "credit_account_id", "amount", "currency", "code", "flags",
            "pending_id", "timeout_seconds", "metadata",
        )  # fmt: skip
        return all(getattr(r, name) == getattr(first, name) for name in fields)

    # -- helpers ----------------------------------------------------------------------

    def _touched(self, *accounts: MAccount) -> None:
        for account in accounts:
            if account.history:
                self.history[account.id].append(account.counters())

    def _save(self) -> tuple[Any, ...]:
        return copy.deepcopy((self.accounts, self.transfers, self.holds, self.history))

    def _restore(self, saved: tuple[Any, ...]) -> None:
        self.accounts, self.transfers, self.holds, self.history = saved
