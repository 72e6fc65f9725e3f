"""The double-entry rules, applied to an in-memory working set: no I/O.

A store loads the accounts and transfers a batch refers to into a ``WorkingSet``,
calls ``apply_transfers`` (once per request; a group commit calls it several times
on the same set), then writes what the set reports as changed, all in one
database transaction. The rules therefore see every earlier item of the batch,
exactly as TigerBeetle's ``create_transfers`` does.

Each item either fails before it changes anything, or succeeds; a ``linked``
chain is undone as a whole when one of its items fails. A refusal that depends on
state is kept under the item's id, so that the id answers it again
(``paycore.ledger.refusals``; the store writes ``new_refusals``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from paycore.errors import ErrorCode
from paycore.ledger.model import (
    PENDING_TRANSITIONS,
    SETTLEMENT_METADATA_KEY,
    SYSTEM_HOLD_PREFIX,
    SYSTEM_TENANT,
    Account,
    AccountRequest,
    BalanceRecord,
    PendingStatus,
    Transfer,
    TransferRequest,
    is_valid_id,
)
from paycore.ledger.refusals import KEPT_REFUSALS, Refusal, fingerprint, refusal_tenant
from paycore.ledger.saga_history import is_posted_saga_hold, leg_timestamp
from paycore.money import MAX_AMOUNT, is_currency, is_valid_amount

__all__ = [
    "MAX_CODE",
    "MAX_TIMEOUT_SECONDS",
    "AccountResult",
    "AccountState",
    "PendingState",
    "TransferResult",
    "WorkingSet",
    "check_account_request",
    "close_account",
    "new_account",
]

MAX_TIMEOUT_SECONDS = 2**31 - 1
MAX_CODE = 2**31 - 1
_E = ErrorCode


class TransferResult(msgspec.Struct, frozen=True):
    """Outcome of one transfer item: the transfer, or an error code with a detail."""

    id: str
    transfer: Transfer | None = None
    code: ErrorCode | None = None
    detail: str = ""
    exists: bool = False
    # A cross-shard transfer whose credit is still on its way (see cluster.settlement).
    in_flight: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None


class AccountResult(msgspec.Struct, frozen=True):
    """Outcome of one account creation or close."""

    id: str
    account: Account | None = None
    code: ErrorCode | None = None
    detail: str = ""
    exists: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None


class AccountState:
    """Mutable working copy of one account's counters during a batch."""

    __slots__ = (
        "account",
        "cp",
        "cpo",
        "dirty",
        "dp",
        "dpo",
        "history",
        "in_flight",
        "limit",
        "low",
        "reserved",
    )

    def __init__(self, account: Account) -> None:
        self.account = account
        # Set by the store: money prepared cross-shard chains need from this account.
        self.reserved = 0
        # The lowest headroom seen while a chain is tried (``WorkingSet.track_drawdown``).
        self.low: int | None = None
        self.dp = account.debits_pending
        self.dpo = account.debits_posted
        self.cp = account.credits_pending
        self.cpo = account.credits_posted
        self.limit = account.flags.debit_limit()
        self.history = account.flags.history
        # Set by the store for a ``history`` account, kept up to date here: what its
        # holds of posted transfers across shards hold (``ledger.saga_history``).
        self.in_flight = 0
        self.dirty = False

    def counters(self) -> tuple[int, int, int, int]:
        return (self.dp, self.dpo, self.cp, self.cpo)

    def restore(self, counters: tuple[int, int, int, int]) -> None:
        self.dp, self.dpo, self.cp, self.cpo = counters

    def headroom(self) -> int | None:
        """What a debit may still take (None: unlimited)."""
        if self.limit is None:
            return None
        return self.cpo + self.limit - self.dpo - self.dp

    def to_account(self) -> Account:
        return msgspec.structs.replace(
            self.account,
            debits_pending=self.dp,
            debits_posted=self.dpo,
            credits_pending=self.cp,
            credits_posted=self.cpo,
        )


class PendingState:
    """A pending transfer and its current status during a batch."""

    __slots__ = ("resolved_by", "status", "transfer")

    def __init__(
        self, transfer: Transfer, status: PendingStatus, resolved_by: str | None = None
    ) -> None:
        self.transfer = transfer
        self.status = status
        self.resolved_by = resolved_by

    def move_to(self, status: PendingStatus, resolved_by: str | None) -> None:
        if status not in PENDING_TRANSITIONS[self.status]:
            raise ValueError(f"illegal pending transition {self.status} -> {status}")
        self.status = status
        self.resolved_by = resolved_by


class _Rejected(Exception):
    """Raised inside an item's checks to return its code; never escapes this module."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail


class WorkingSet:
    """Accounts, transfers and holds that a batch touches, plus what it changed.

    ``transfers`` holds the stored transfers the batch names (for ``exists`` checks
    and pending lookups) and every transfer the batch creates; ``refusals`` the refusals
    kept under the batch's ids (``paycore.ledger.refusals``), by (tenant, id), and those
    the batch adds, which ``new_refusals`` lists for the store to write.
    """

    def __init__(
        self,
        accounts: Iterable[Account],
        transfers: Iterable[Transfer],
        pendings: Iterable[tuple[Transfer, PendingStatus, str | None]],
        *,
        now: int,
        last_timestamp: int,
        refusals: Iterable[Refusal] = (),
    ) -> None:
        self.accounts: dict[str, AccountState] = {a.id: AccountState(a) for a in accounts}
        self.transfers: dict[str, Transfer] = {t.id: t for t in transfers}
        self.pendings: dict[str, PendingState] = {
            t.id: PendingState(t, s, r) for t, s, r in pendings
        }
        self.now = now
        self.last_timestamp = last_timestamp
        self.created: list[Transfer] = []
        self.history: list[BalanceRecord] = []
        self.changed_pendings: dict[str, PendingState] = {}
        self.refusals: dict[tuple[str, str], Refusal] = {(f.tenant, f.id): f for f in refusals}
        self.new_refusals: list[Refusal] = []
        self._settlement = False
        # The tenant the current command acts for (None: paycore itself, no check).
        self._tenant: str | None = None
        # Ids bound to transfers stored on other shards (id -> shard); set per command by
        # the store from its reservations, so an id is never used twice in a cluster.
        self.foreign_ids: Mapping[str, str] = {}
        # Refusals decided elsewhere with both accounts in view (the cluster router's,
        # for a cross-shard transfer): the item's position in the next
        # ``apply_transfers`` -> (code, detail), answered (and kept) here.
        self.decided: Mapping[int, tuple[ErrorCode, str]] = {}
        self._decided_item: tuple[ErrorCode, str] | None = None
        # Clients' cross-shard holds (loaded) whose legs both exist: only those may be
        # posted or voided by a client (set by the store from the outbox).
        self.settled_holds: set[str] = set()
        # Holds a prepared cross-shard chain resolves: nobody else may meanwhile.
        self.locked_holds: set[str] = set()
        # Holds of posted transfers across shards, on ``history`` accounts, in flight
        # (``ledger.saga_history``): the store's among those loaded, and the new ones.
        self.saga_holds: set[str] = set()
        self.saga_holds_loaded: frozenset[str] = frozenset()  # as the store had them
        self._drawdown = False
        # Undo log of the open linked chain; None outside a chain.
        self._undo: _Undo | None = None

    # -- public ---------------------------------------------------------------

    def apply_transfers(
        self,
        requests: Sequence[TransferRequest],
        *,
        settlement: bool = False,
        tenant: str | None = None,
        chains: bool = True,
    ) -> list[TransferResult]:
        """Apply one request's items in order; linked chains succeed or fail as one.

        ``chains`` false: the items are one shard's legs of a chain across shards
        (``paycore.cluster.chains``), all or nothing by that protocol; their ``linked``
        flags are kept as the client sent them but do not group them here.

        ``settlement`` is set only by paycore's own workflows (the cross-shard settlement,
        payments): they alone may post or void a saga's hold (one marked with
        ``SETTLEMENT_METADATA_KEY``) or a payment's (id prefix ``SYSTEM_HOLD_PREFIX``).

        ``tenant``: the API caller's tenant. Then an account of another tenant is
        answered exactly as a missing one (``account_not_found``), a hold between them
        as a missing hold, and a transfer id taken by another tenant as a conflict
        without its data; paycore's own accounts (``SYSTEM_TENANT``) pass, clients
        cannot name them anyway (the router refuses their ids). None: paycore itself.
        """
        self._settlement = settlement
        self._tenant = tenant
        results: list[TransferResult] = []
        chain_start: int | None = None
        chain_failed = False
        for index, request in enumerate(requests):
            linked = request.flags.linked and chains
            if chain_start is None and linked:
                chain_start = index
                chain_failed = False
                self._undo = _Undo(self)
            if chain_start is not None and chain_failed:
                results.append(_fail(request.id, _E.LINKED_EVENT_FAILED))
            else:
                self._decided_item = self.decided.get(index)
                result = self._apply_one(request)
                self._decided_item = None
                results.append(result)
                if chain_start is not None and not result.ok:
                    chain_failed = True
            if chain_start is not None and not linked:  # this item closes the chain
                if chain_failed:
                    self._fail_chain(results, chain_start, _E.LINKED_EVENT_FAILED)
                self._undo = None
                chain_start = None
        if chain_start is not None:  # batch ended with the chain still open
            self._fail_chain(results, chain_start, _E.LINKED_EVENT_CHAIN_OPEN, all_items=True)
            self._undo = None
        return results

    def expire_due(self) -> list[PendingState]:
        """Release every loaded hold whose timeout has passed; returns those expired."""
        expired = []
        for state in self.pendings.values():
            at = state.transfer.expires_at
            if state.status is PendingStatus.PENDING and at is not None and at <= self.now:
                t = state.transfer
                debit, credit = (
                    self.accounts[t.debit_account_id],
                    self.accounts[t.credit_account_id],
                )
                debit.dp -= t.amount
                credit.cp -= t.amount
                state.move_to(PendingStatus.EXPIRED, None)
                self.changed_pendings[t.id] = state
                self._touched(debit, credit, self._next_timestamp())
                expired.append(state)
        return expired

    def track_drawdown(self) -> None:
        """Record, per account touched from now on, the lowest headroom reached: what a
        chain being prepared needs of each account's money (``drawdown``)."""
        self._drawdown = True
        for state in self.accounts.values():
            state.low = state.headroom()

    def drawdown(self) -> dict[str, int]:
        """Per account touched since ``track_drawdown``: how far its headroom went below
        where it started (0 for one only credited, or without a limit)."""
        found: dict[str, int] = {}
        for state in self.accounts.values():
            if state.dirty:
                start = state.account.flags.debit_limit()
                first = (
                    None
                    if start is None
                    else state.account.credits_posted
                    + start
                    - state.account.debits_posted
                    - state.account.debits_pending
                )
                low = state.low
                found[state.account.id] = 0 if first is None or low is None else max(0, first - low)
        return found

    def dirty_accounts(self) -> list[AccountState]:
        return [a for a in self.accounts.values() if a.dirty]

    # -- one item ---------------------------------------------------------------

    def _apply_one(self, request: TransferRequest) -> TransferResult:
        try:
            return self._apply_checked(request)
        except _Rejected as rejected:
            return _fail(request.id, rejected.code, rejected.detail)

    def _apply_checked(self, r: TransferRequest) -> TransferResult:
        if not is_valid_id(r.id):
            raise _Rejected(
                _E.INVALID_REQUEST,
                "id must be 1-64 characters: letters, digits, '_', '.', ':', '-'",
            )
        flags = r.flags
        if flags.pending + flags.post_pending + flags.void_pending > 1:
            raise _Rejected(
                _E.INVALID_REQUEST, "pending, post_pending and void_pending exclude each other"
            )
        if r.amount is not None and not is_valid_amount(r.amount):
            raise _Rejected(_E.INVALID_REQUEST, "amount must be an integer in 1..2^63-1")
        if type(r.code) is not int or not 0 <= r.code <= MAX_CODE:
            raise _Rejected(_E.INVALID_REQUEST, "code must be an integer in 0..2^31-1")
        if r.pending_id is not None and not is_valid_id(r.pending_id):
            # No transfer can carry such an id, so none can be found under it.
            raise _Rejected(_E.PENDING_TRANSFER_NOT_FOUND, "pending_id is not a valid transfer id")
        if type(r.timeout_seconds) is not int or not 0 <= r.timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise _Rejected(_E.INVALID_REQUEST, "timeout_seconds must be in 0..2^31-1")
        # The id is an idempotency key: this tenant's kept refusal answers first (before a
        # transfer another tenant may have stored under the id since).
        refused = self.refusals.get((refusal_tenant(self._tenant), r.id)) if self.refusals else None
        if refused is not None:
            return self._refused_before(r, refused)
        existing = self.transfers.get(r.id)
        if existing is not None:
            return self._exists(r, existing)
        elsewhere = self.foreign_ids.get(r.id)
        if elsewhere is not None:
            raise _Rejected(
                _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
                f"transfer id {r.id!r} is taken by a transfer stored on shard {elsewhere!r}",
            )
        try:
            if self._decided_item is not None:
                raise _Rejected(*self._decided_item)
            if flags.post_pending or flags.void_pending:
                return self._resolve_pending(r)
            return self._create(r)
        except _Rejected as rejected:
            if rejected.code in KEPT_REFUSALS and not self._settlement:
                self._keep_refusal(r, rejected)
            raise

    def _create(self, r: TransferRequest) -> TransferResult:
        if r.debit_account_id is None or r.credit_account_id is None:
            raise _Rejected(
                _E.INVALID_REQUEST, "debit_account_id and credit_account_id are required"
            )
        if r.amount is None:
            raise _Rejected(_E.INVALID_REQUEST, "amount is required")
        if r.pending_id is not None:
            raise _Rejected(_E.INVALID_REQUEST, "pending_id is only for post_pending/void_pending")
        if r.timeout_seconds and not r.flags.pending:
            raise _Rejected(_E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER)
        if r.debit_account_id == r.credit_account_id:
            raise _Rejected(_E.ACCOUNTS_MUST_BE_DIFFERENT)
        debit = self._account(r.debit_account_id, "debit")
        credit = self._account(r.credit_account_id, "credit")
        currency = debit.account.currency
        if credit.account.currency != currency:
            raise _Rejected(
                _E.CURRENCY_MISMATCH,
                f"debit account is {currency}, credit account is {credit.account.currency}",
            )
        if r.currency is not None and r.currency != currency:
            raise _Rejected(
                _E.CURRENCY_MISMATCH, f"transfer is {r.currency}, accounts are {currency}"
            )
        if debit.account.flags.closed:
            raise _Rejected(_E.ACCOUNT_CLOSED, f"debit account {debit.account.id!r} is closed")
        if credit.account.flags.closed:
            raise _Rejected(_E.ACCOUNT_CLOSED, f"credit account {credit.account.id!r} is closed")
        amount = r.amount
        limit = debit.limit
        if limit is not None:
            # Money a prepared cross-shard chain needs is as unavailable as a hold.
            headroom = debit.cpo + limit - debit.dpo - debit.dp - debit.reserved
            if r.flags.balancing:
                amount = min(amount, headroom)
            if amount > headroom or amount <= 0:
                code = _E.INSUFFICIENT_FUNDS if limit == 0 else _E.EXCEEDS_CREDIT_LIMIT
                raise _Rejected(code, f"available {headroom}, requested {r.amount}")
        # Pending and posted together stay within 2^63-1 (TigerBeetle's overflows_debits
        # and overflows_credits): a posted transfer across shards is held first, so a
        # rule on the posted counters alone would answer differently there.
        if debit.dp + debit.dpo + amount > MAX_AMOUNT:
            raise _Rejected(_E.OVERFLOW, "debit account's counters would overflow")
        if credit.cp + credit.cpo + amount > MAX_AMOUNT:
            raise _Rejected(_E.OVERFLOW, "credit account's counters would overflow")
        # -- every check passed: mutate
        self._snapshot(debit, credit)
        ts = self._next_timestamp(r)
        transfer = Transfer(
            id=r.id,
            debit_account_id=r.debit_account_id,
            credit_account_id=r.credit_account_id,
            amount=amount,
            currency=currency,
            code=r.code,
            flags=r.flags,
            pending_id=None,
            timeout_seconds=r.timeout_seconds,
            metadata=r.metadata,
            timestamp=ts,
        )
        if r.flags.pending:
            debit.dp += amount
            credit.cp += amount
            state = PendingState(transfer, PendingStatus.PENDING)
            self.pendings[r.id] = state
            self._record_pending(state, new=True)
        else:
            debit.dpo += amount
            credit.cpo += amount
        if debit.history:  # only a history account counts its holds in flight
            self._saga_hold_sent(debit, transfer)
        self._record_transfer(transfer)
        self._touched(debit, credit, ts)
        return TransferResult(id=r.id, transfer=transfer)

    def _resolve_pending(self, r: TransferRequest) -> TransferResult:
        if r.pending_id is None:
            raise _Rejected(_E.INVALID_REQUEST, "pending_id is required to post or void")
        if r.timeout_seconds:
            raise _Rejected(_E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER)
        target = self.transfers.get(r.pending_id)
        if target is None or not self._owns(target):
            raise _Rejected(_E.PENDING_TRANSFER_NOT_FOUND, f"no transfer {r.pending_id!r}")
        state = self.pendings.get(r.pending_id)
        if not target.flags.pending or state is None:
            raise _Rejected(_E.PENDING_TRANSFER_NOT_PENDING, f"{r.pending_id!r} is not a hold")
        if not self._settlement and r.pending_id.startswith(SYSTEM_HOLD_PREFIX):
            # A payment's hold moves with the payment's state, in one transaction; a
            # client posting or voiding it would pay out twice or keep uncharged money.
            raise _Rejected(
                _E.INVALID_REQUEST,
                f"{r.pending_id!r} is held by a payment, refund or payout: use the payments API",
            )
        self._check_saga_hold(r, target, state)
        for field, given, held in (
            ("debit_account_id", r.debit_account_id, target.debit_account_id),
            ("credit_account_id", r.credit_account_id, target.credit_account_id),
        ):
            if given is not None and given != held:
                raise _Rejected(_E.INVALID_REQUEST, f"{field} differs from the pending transfer")
        if r.currency is not None and r.currency != target.currency:
            raise _Rejected(_E.CURRENCY_MISMATCH, f"pending transfer is {target.currency}")
        status = state.status
        if status is PendingStatus.POSTED:
            raise _Rejected(_E.PENDING_TRANSFER_ALREADY_POSTED, f"posted by {state.resolved_by!r}")
        if status is PendingStatus.VOIDED:
            raise _Rejected(_E.PENDING_TRANSFER_ALREADY_VOIDED, f"voided by {state.resolved_by!r}")
        expires_at = target.expires_at
        posting = r.flags.post_pending
        # The settlement may still void a hold whose timeout passed before it expired (a
        # cross-shard hold whose credit was refused): releasing is what expiry would do.
        late_void = self._settlement and not posting and status is PendingStatus.PENDING
        if status is PendingStatus.EXPIRED or (
            expires_at is not None and expires_at <= self.now and not late_void
        ):
            raise _Rejected(_E.PENDING_TRANSFER_EXPIRED)
        amount = target.amount if r.amount is None else r.amount
        if amount > target.amount:
            raise _Rejected(
                _E.AMOUNT_EXCEEDS_PENDING_AMOUNT, f"pending {target.amount}, requested {amount}"
            )
        if not posting and amount != target.amount:
            raise _Rejected(_E.INVALID_REQUEST, "a void releases the whole pending amount")
        debit = self.accounts[target.debit_account_id]
        credit = self.accounts[target.credit_account_id]
        if posting and (debit.dpo + amount > MAX_AMOUNT or credit.cpo + amount > MAX_AMOUNT):
            raise _Rejected(_E.OVERFLOW, "posted counters would overflow")
        # -- mutate
        self._snapshot(debit, credit)
        self._snapshot_pending(state)
        ts = self._next_timestamp(r)
        debit.dp -= target.amount
        credit.cp -= target.amount
        if posting:
            debit.dpo += amount
            credit.cpo += amount
        landed = self._saga_hold_landed(debit, target)
        state.move_to(PendingStatus.POSTED if posting else PendingStatus.VOIDED, r.id)
        self._record_pending(state, new=False)
        transfer = Transfer(
            id=r.id,
            debit_account_id=target.debit_account_id,
            credit_account_id=target.credit_account_id,
            amount=amount,
            currency=target.currency,
            code=r.code or target.code,
            flags=r.flags,
            pending_id=r.pending_id,
            timeout_seconds=0,
            metadata=r.metadata,
            timestamp=ts,
        )
        self._record_transfer(transfer)
        # The step posting a saga's hold in flight changes nothing as shown: no row.
        self._touched(debit, credit, ts, debit_row=not (landed and posting))
        return TransferResult(id=r.id, transfer=transfer)

    def _check_saga_hold(self, r: TransferRequest, target: Transfer, state: PendingState) -> None:
        """Who may post or void a hold that a cross-shard saga or chain is working on."""
        if target.id in self.locked_holds:
            raise _Rejected(
                _E.TRANSFER_IN_FLIGHT,
                f"hold {target.id!r} is being resolved by a linked chain across shards; "
                "retry shortly",
            )
        note = None if target.metadata is None else target.metadata.get(SETTLEMENT_METADATA_KEY)
        if self._settlement or note is None:
            return
        # Enforced here, on the shard, not only by the router: a client voiding a
        # transfer's saga hold would leave the money credited on the other shard as
        # well. A client's own hold across shards is posted and voided here, on its
        # source (the store then has the target follow), once both its legs exist.
        client_hold = isinstance(note, dict) and note.get("role") == "hold" and note.get("pending")
        if not client_hold:
            raise _Rejected(
                _E.PENDING_TRANSFER_NOT_PENDING,
                f"{r.pending_id!r} is a cross-shard transfer in settlement, not a hold",
            )
        if state.status is PendingStatus.PENDING and target.id not in self.settled_holds:
            raise _Rejected(
                _E.TRANSFER_IN_FLIGHT,
                f"hold {target.id!r} is still being set up on the credit account's "
                "shard; retry shortly",
            )

    def _exists(self, r: TransferRequest, t: Transfer) -> TransferResult:
        if not self._owns(t):  # the id is taken, by another tenant: say nothing more
            return _fail(r.id, _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS)
        same = (
            r.flags == t.flags
            and r.code in (0, t.code)
            and r.pending_id == t.pending_id
            and r.timeout_seconds == t.timeout_seconds
            and r.metadata == t.metadata
            and r.debit_account_id in (None, t.debit_account_id)
            and r.credit_account_id in (None, t.credit_account_id)
            and r.currency in (None, t.currency)
            and (
                r.amount is None
                or r.amount == t.amount
                or (t.flags.balancing and r.amount >= t.amount)
            )
        )
        if not same:
            return _fail(r.id, _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS)
        return TransferResult(id=r.id, transfer=t, exists=True)

    def _refused_before(self, r: TransferRequest, refused: Refusal) -> TransferResult:
        if fingerprint(r) != refused.fingerprint:
            return _fail(
                r.id,
                _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
                f"transfer {r.id!r} was refused ({refused.code}) with other fields",
            )
        return _fail(r.id, refused.code, refused.detail)

    def _keep_refusal(self, r: TransferRequest, rejected: _Rejected) -> None:
        digest = fingerprint(r)
        if digest is None:
            return
        refusal = Refusal(
            r.id, refusal_tenant(self._tenant), digest, rejected.code, rejected.detail, self.now
        )
        self.refusals[(refusal.tenant, refusal.id)] = refusal
        self.new_refusals.append(refusal)

    # -- helpers ----------------------------------------------------------------

    def _visible(self, account_id: str) -> bool:
        """The current command's tenant may use this (loaded) account."""
        if self._tenant is None:
            return True
        state = self.accounts.get(account_id)
        return state is not None and state.account.tenant in (self._tenant, SYSTEM_TENANT)

    def _owns(self, t: Transfer) -> bool:
        """The current command's tenant may see ``t``: it owns one of its accounts (a
        client's transfer joins two of its accounts, a payment's one and paycore's)."""
        if self._tenant is None:
            return True
        return any(
            (state := self.accounts.get(a)) is not None and state.account.tenant == self._tenant
            for a in (t.debit_account_id, t.credit_account_id)
        )

    def _account(self, account_id: str, side: str) -> AccountState:
        state = self.accounts.get(account_id)
        if state is None or not self._visible(account_id):
            raise _Rejected(_E.ACCOUNT_NOT_FOUND, f"{side} account {account_id!r} not found")
        return state

    def _next_timestamp(self, r: TransferRequest | None = None) -> int:
        """``now``, or just after the last timestamp given; a saga's credit leg takes its
        transfer's (earlier) timestamp when nothing later was written here (see
        ``paycore.ledger.saga_history``)."""
        ts = self.now
        # Only a saga's leg carries metadata with a timestamp: a client's plain transfer
        # (the hot path) pays no lookup.
        if r is not None and r.metadata is not None and (shown := leg_timestamp(r)) is not None:
            ts = min(ts, shown)
        if ts <= self.last_timestamp:
            ts = self.last_timestamp + 1
        self.last_timestamp = ts
        return ts

    def _saga_hold_sent(self, debit: AccountState, transfer: Transfer) -> None:
        """Count a new hold of a posted transfer across shards as in flight."""
        if debit.history and is_posted_saga_hold(transfer):
            debit.in_flight += transfer.amount
            self.saga_holds.add(transfer.id)

    def _saga_hold_landed(self, debit: AccountState, hold: Transfer) -> bool:
        """Count a hold in flight as resolved; False if it was none (or is older)."""
        if hold.id not in self.saga_holds:
            return False
        debit.in_flight -= hold.amount
        self.saga_holds.discard(hold.id)
        return True

    def _touched(
        self, debit: AccountState, credit: AccountState, ts: int, *, debit_row: bool = True
    ) -> None:
        debit.dirty = credit.dirty = True
        if self._drawdown:
            for state in (debit, credit):
                room = state.headroom()
                if room is not None and (state.low is None or room < state.low):
                    state.low = room
        for state in (debit, credit) if debit_row else (credit,):
            if state.history:
                # Holds of posted transfers in flight show as posted (ledger.saga_history).
                shift = state.in_flight
                self.history.append(
                    BalanceRecord(
                        state.account.id,
                        ts,
                        state.dp - shift,
                        state.dpo + shift,
                        state.cp,
                        state.cpo,
                    )
                )

    def _record_transfer(self, transfer: Transfer) -> None:
        self.transfers[transfer.id] = transfer
        self.created.append(transfer)

    def _record_pending(self, state: PendingState, *, new: bool) -> None:
        pending_id = state.transfer.id
        if self._undo is not None:
            if new:
                self._undo.new_pendings.append(pending_id)
            self._undo.changed.append((pending_id, self.changed_pendings.get(pending_id)))
        self.changed_pendings[pending_id] = state

    def _snapshot(self, *states: AccountState) -> None:
        if self._undo is not None:
            for s in states:
                self._undo.accounts.setdefault(s.account.id, (s, s.counters(), s.in_flight))

    def _snapshot_pending(self, state: PendingState) -> None:
        if self._undo is not None:
            self._undo.pendings.setdefault(
                state.transfer.id, (state, state.status, state.resolved_by)
            )

    def _fail_chain(
        self, results: list[TransferResult], start: int, code: ErrorCode, *, all_items: bool = False
    ) -> None:
        """Undo a failed chain and mark its successful items (or all) with ``code``.

        The refusal of the item that failed is kept, unless the batch ended inside the
        chain (``all_items``): malformed input, of which nothing is kept."""
        assert self._undo is not None
        self._undo.rollback(keep_refusals=not all_items)
        for i in range(start, len(results)):
            if all_items or results[i].ok:
                results[i] = _fail(results[i].id, code)


class _Undo:
    """What a linked chain changed, so that a failure can restore the working set."""

    def __init__(self, ws: WorkingSet) -> None:
        self.ws = ws
        self.created_len = len(ws.created)
        self.refusals_len = len(ws.new_refusals)
        self.history_len = len(ws.history)
        self.last_timestamp = ws.last_timestamp
        self.accounts: dict[str, tuple[AccountState, tuple[int, int, int, int], int]] = {}
        self.saga_holds = set(ws.saga_holds)
        self.pendings: dict[str, tuple[PendingState, PendingStatus, str | None]] = {}
        self.new_pendings: list[str] = []
        self.changed: list[tuple[str, PendingState | None]] = []

    def rollback(self, *, keep_refusals: bool) -> None:
        ws = self.ws
        if not keep_refusals:
            for refusal in ws.new_refusals[self.refusals_len :]:
                del ws.refusals[(refusal.tenant, refusal.id)]
            del ws.new_refusals[self.refusals_len :]
        for state, counters, in_flight in self.accounts.values():
            state.restore(counters)
            state.in_flight = in_flight
        ws.saga_holds = set(self.saga_holds)
        for hold, status, resolved_by in self.pendings.values():
            hold.status, hold.resolved_by = status, resolved_by
        for pending_id in self.new_pendings:
            ws.pendings.pop(pending_id, None)
        for transfer in ws.created[self.created_len :]:
            ws.transfers.pop(transfer.id, None)
        del ws.created[self.created_len :]
        del ws.history[self.history_len :]
        for pending_id, before in reversed(self.changed):
            if before is None:
                ws.changed_pendings.pop(pending_id, None)
            else:
                ws.changed_pendings[pending_id] = before
        # Timestamps stay consumed: they only need to be unique and increasing.


def _fail(transfer_id: str, code: ErrorCode, detail: str = "") -> TransferResult:
    return TransferResult(id=transfer_id, code=code, detail=detail)


# -- accounts -------------------------------------------------------------------


def check_account_request(r: AccountRequest) -> tuple[ErrorCode, str] | None:
    """Validate an account creation request; None when acceptable."""
    if not is_valid_id(r.id):
        return _E.INVALID_REQUEST, "id must be 1-64 characters: letters, digits, '_', '.', ':', '-'"
    if not is_currency(r.currency):
        return _E.INVALID_REQUEST, f"unknown ISO 4217 currency {r.currency!r}"
    f = r.flags
    if f.closed:
        return _E.INVALID_REQUEST, "an account cannot be created closed"
    if f.credit_limit is not None:
        if f.no_overdraft:
            return _E.INVALID_REQUEST, "no_overdraft and credit_limit exclude each other"
        if type(f.credit_limit) is not int or not 0 <= f.credit_limit <= MAX_AMOUNT:
            return _E.INVALID_REQUEST, "credit_limit must be an integer in 0..2^63-1"
    if type(r.code) is not int or not 0 <= r.code <= MAX_CODE:
        return _E.INVALID_REQUEST, "code must be an integer in 0..2^31-1"
    return None


def new_account(r: AccountRequest, existing: Account | None, timestamp: int) -> AccountResult:
    """Create an account, or report that it exists (same or different fields).

    An id taken by another tenant is a conflict like any other, without its data (ids
    are one namespace: the id is known to exist, nothing else)."""
    problem = check_account_request(r)
    if problem is not None:
        return AccountResult(id=r.id, code=problem[0], detail=problem[1])
    if existing is not None:
        same = (
            existing.tenant == r.tenant
            and existing.currency == r.currency
            and existing.code == r.code
            and msgspec.structs.replace(existing.flags, closed=False) == r.flags
            and existing.metadata == r.metadata
        )
        if not same:
            return AccountResult(id=r.id, code=_E.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS)
        return AccountResult(id=r.id, account=existing, exists=True)
    account = Account(
        id=r.id,
        currency=r.currency,
        code=r.code,
        flags=r.flags,
        metadata=r.metadata,
        timestamp=timestamp,
        tenant=r.tenant,
    )
    return AccountResult(id=r.id, account=account)


def close_account(
    account: Account | None, account_id: str, tenant: str | None = None
) -> AccountResult:
    """Close an account with no holds and a zero posted balance (a balance left in a
    closed account could never be moved); closing a closed account returns it unchanged.

    ``tenant``: the caller's; another tenant's account is answered as a missing one."""
    if account is None or (tenant is not None and account.tenant != tenant):
        return AccountResult(id=account_id, code=_E.ACCOUNT_NOT_FOUND)
    if account.flags.closed:
        return AccountResult(id=account_id, account=account, exists=True)
    if account.debits_pending or account.credits_pending:
        return AccountResult(
            id=account_id,
            code=_E.ACCOUNT_HAS_PENDING_TRANSFERS,
            detail=f"pending debits {account.debits_pending}, credits {account.credits_pending}",
        )
    if balance := account.balance:  # closed, it could never move again
        held = f"holds {balance}" if balance > 0 else f"owes {-balance}"
        return AccountResult(
            id=account_id,
            code=_E.ACCOUNT_HAS_BALANCE,
            detail=f"account {account_id!r} {held} {account.currency}: name an account "
            "in transfer_balance_to to take it, or move it first",
        )
    flags = msgspec.structs.replace(account.flags, closed=True)
    return AccountResult(id=account_id, account=msgspec.structs.replace(account, flags=flags))
