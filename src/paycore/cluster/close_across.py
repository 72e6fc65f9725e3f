"""Closing an account whose remainder goes to, or whose debt is paid from, an account on
another shard.

On one shard a close with ``transfer_balance_to`` moves the balance and closes in one
transaction. Across shards the move is a saga (``paycore.cluster.settlement``), and the
close rides on the step that decides it, as TigerBeetle's closing pending transfers do.

A positive balance (A holds money; B takes it):

    step 1, on A's shard (ONE transaction): A closed + hold of A's whole balance to the
            clearing account + outbox row (``CloseAccount.remainder_hold``)
    step 2, on B's shard: the credit of B, as for any transfer
    step 3, on A's shard: post the hold (done: A closed, B credited), or void it if B
            refused the credit, which reopens A (``storage.apply``): the close did not
            happen, and the answer is B's refusal, as one shard would give it.

A debt (A owes; B pays it into A, then A closes):

    step 1, on B's shard: an ordinary cross-shard hold B -> clearing of the debt, B's
            limits checked there; refused, it leaves nothing behind (no refusal kept
            under its id: ``CreateTransfers.keep_refusals``), as one shard's close
    step 2, on A's shard (ONE transaction): the credit leg clearing -> A, and A closed
            (the row's ``OUTBOX_CLOSES_CREDIT`` bit, ``CreateTransfers.
            closes_credit_account``); refused for good unless A is open, has no holds
            and no chain in progress, and owes exactly the amount
    step 3, on B's shard: post B's hold (done), or void it if step 2 was refused: A
            changed since it was read, and the close is planned again from a fresh read
            (a few times at most, then 503), so the answer is one shard's for A as it
            stands now (already closed by another close, holds, another debt...).

The debt's transfer id is ``close_`` and 40 hex digits, like one shard's, but derived
from A, B and an attempt number (``debt_transfer_id``): an attempt voided in step 3 keeps
its id for good, and the next attempt takes the next number. Two closes of A at once
(B's or two payers') may both hold money; A's shard lets one step 2 close A, the
other's is refused (A closed), voided, and answers as one shard's repeated close.

Before step 1 the router reads A and B and answers what one shard would refuse (A
missing, closed, with holds or a chain; B missing, closed, of another currency) without
writing. The request drives steps 2 and 3 itself; if a fault stops it, the relay finishes
the saga and a retry of the close answers 503 (retryable) until it has.
"""

from __future__ import annotations

import hashlib
import logging

import msgspec

from paycore.cluster.routing import Router
from paycore.cluster.saga_plan import one_shard_refusal
from paycore.cluster.settlement import SagaState, hold_request, saga_info
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import Account, Transfer, TransferRequest, TransferStatus
from paycore.ledger.rules import AccountResult
from paycore.ledger.saga_history import is_closing_hold
from paycore.ledger.tenancy import id_prefix
from paycore.storage.apply import free_remainder, remainder_transfer
from paycore.storage.base import CloseAccount, CreateTransfers, OutboxRow, OutboxWrite

__all__ = ["close_across", "debt_transfer_id"]

log = logging.getLogger("paycore.cluster.router")
_E = ErrorCode
# How many times a close is planned again when the account changed under its saga.
_PLANS = 3
# Attempt ids of a debt's payment read at once (a voided attempt is rare).
_PROBE = 4


async def close_across(store: Router, command: CloseAccount) -> AccountResult:
    """Close ``command.account_id`` with its remainder to (or its debt paid from) an
    account on another shard."""
    for _ in range(_PLANS):
        answer = await _close_once(store, command)
        if answer is not None:
            return answer
    raise UnavailableError(
        f"account {command.account_id!r} changed while it was being closed; retry"
    )


async def _close_once(store: Router, command: CloseAccount) -> AccountResult | None:
    """One plan of the close: its answer, or None to plan it again (the account changed
    under it)."""
    account_id, to = command.account_id, command.transfer_balance_to
    assert to is not None
    source, target = store.shard_for(account_id), store.shard_for(to)
    found = await store.get_accounts([account_id, to])
    a = found.get(account_id)
    if a is not None and command.tenant is not None and a.tenant != command.tenant:
        a = None
    if a is None or a.balance == 0 or a.debits_pending or a.credits_pending:
        if a is not None and a.flags.closed:
            await _refuse_while_in_flight(store, a, to)
        # Nothing to move, or not closable: the account's shard answers as ever (with
        # no balance the target is not used). A balance that appeared since the read
        # refuses that close: planned again, to move it.
        plain = msgspec.structs.replace(command, transfer_balance_to=None)
        result: AccountResult = await store.shards[source].execute(plain)
        return None if result.code is _E.ACCOUNT_HAS_BALANCE else result
    if a.balance < 0:
        return await _pay_debt(store, command, a, found, remainder_transfer(a, to))
    # The first attempt's id unless an earlier close's hold (voided: A reopened) has it.
    stored: dict[str, Transfer] = {}
    attempt = 0
    while True:
        probe = [remainder_transfer(a, to, n).id for n in range(attempt, attempt + _PROBE)]
        found_now = await store.shards[source].get_transfers(probe)
        stored.update({i: v.transfer for i, v in found_now.items()})
        if any(i not in stored for i in probe):
            break
        attempt += _PROBE
    request = free_remainder(a, to, lambda ids: {i: stored[i] for i in ids if i in stored})
    refusal = one_shard_refusal(request, found, command.tenant, store.clock_ns())
    if refusal is not None and refusal.code is not None:
        detail = f"transfer_balance_to {to!r}: {refusal.detail or refusal.code.value}"
        return AccountResult(id=account_id, code=refusal.code, detail=detail)
    await store.ensure_clearing({(source, target, a.currency), (target, source, a.currency)})
    hold, row = hold_request(request, source, target, a.currency, closing=True)
    row = _leased(store, row)
    step1 = msgspec.structs.replace(command, remainder_hold=hold, remainder_row=row)
    closed: AccountResult = await store.shards[source].execute(step1)
    if closed.code is _E.ACCOUNT_HAS_BALANCE:
        return None  # it owes now: planned again, as a debt
    if not closed.ok or closed.exists:
        return closed
    views = await store.shards[source].get_transfers([hold.id])
    state, refused = await _drive(store, source, row, views[hold.id].transfer)
    if state is SagaState.COMPENSATED and refused is not None:
        code, why = refused
        return AccountResult(id=account_id, code=code, detail=f"transfer_balance_to {to!r}: {why}")
    if state is not SagaState.COMPLETED:
        _left_to_relay(store, source)
        raise _in_flight(account_id, to)
    now = await store.get_accounts([account_id])
    return AccountResult(id=account_id, account=now[account_id])


async def _pay_debt(
    store: Router,
    command: CloseAccount,
    a: Account,
    found: dict[str, Account],
    request: TransferRequest,
) -> AccountResult | None:
    """A's debt paid by ``to`` on another shard, then A closed (the module docstring)."""
    to = request.debit_account_id
    assert to is not None
    home, payer = store.shard_for(a.id), store.shard_for(to)
    # A's own refusals first, in one shard's order (a chain in progress, holds), without
    # a write: with a balance, a close naming no target is refused (a zero balance
    # reached since closes it, as one shard would with its target unused).
    alone = msgspec.structs.replace(command, transfer_balance_to=None)
    checked: AccountResult = await store.shards[home].execute(alone)
    if checked.code is not _E.ACCOUNT_HAS_BALANCE:
        return checked
    refusal = one_shard_refusal(request, found, command.tenant, store.clock_ns())
    if refusal is not None and refusal.code is not None:
        detail = f"transfer_balance_to {to!r}: {refusal.detail or refusal.code.value}"
        return AccountResult(id=a.id, code=refusal.code, detail=detail)
    transfer_id = await _free_attempt(store, a, to, payer)
    if transfer_id is None:
        return None  # an attempt was settled meanwhile: A reads closed now
    await store.ensure_clearing({(payer, home, a.currency), (home, payer, a.currency)})
    paying = msgspec.structs.replace(request, id=transfer_id)
    hold, row = hold_request(paying, payer, home, a.currency, closes_credit=True)
    row = _leased(store, row)
    step1 = CreateTransfers(
        (hold,), (OutboxWrite(0, row),), guard_ids=True, tenant=command.tenant, keep_refusals=False
    )
    (held,) = await store.shards[payer].execute(step1)
    if held.exists or held.code is _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS:
        # Another close of A took this attempt's id first: planned again, which finds it
        # (in flight: 503; settled: A closed) unless the id is bound to another shard.
        taken = await store.shards[payer].get_transfers([transfer_id])
        if held.exists or transfer_id in taken:
            return None
    if not held.ok or held.transfer is None:
        code = held.code or _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
        detail = f"transfer_balance_to {to!r}: {held.detail or code.value}"
        return AccountResult(id=a.id, code=code, detail=detail)
    state, refused = await _drive(store, payer, row, held.transfer)
    if state is SagaState.COMPLETED:
        now = await store.get_accounts([a.id])
        return AccountResult(id=a.id, account=now[a.id])
    if state is SagaState.COMPENSATED:
        # A changed between the read and step 2 (closed by another close, a hold, another
        # debt): B's hold is voided; planned again from a fresh read.
        log.info("close of %s: the debt's payment %s was refused: %s", a.id, hold.id, refused)
        return None
    _left_to_relay(store, payer)
    raise _in_flight(a.id, to)


def debt_transfer_id(account: Account, to: str, attempt: int) -> str:
    """The id of attempt ``attempt`` (0, 1, ...) at paying ``account``'s debt from ``to``
    on another shard: ``close_`` and 40 hex digits, in the account's tenant's namespace as
    one shard's (``remainder_transfer``), derived from the account, the payer (two payers
    on two shards never share an id) and the attempt (a voided attempt keeps its id)."""
    seed = f"{account.tenant}\x00{account.id}\x00debt\x00{to}\x00{attempt}".encode()
    return id_prefix(account.tenant) + "close_" + hashlib.sha256(seed).hexdigest()[:40]


async def _free_attempt(store: Router, a: Account, to: str, payer: str) -> str | None:
    """The id of the next attempt at paying ``a``'s debt from ``to``: the first that no
    transfer holds (a voided attempt, or a client's transfer, is passed over). Raises 503
    while an attempt is in flight; None when one was posted (A closed since the read)."""
    first = 0
    while True:
        ids = [debt_transfer_id(a, to, n) for n in range(first, first + _PROBE)]
        views = await store.shards[payer].get_transfers(ids)
        for transfer_id in ids:
            view = views.get(transfer_id)
            if view is None:
                return transfer_id
            info = saga_info(view.transfer.metadata) or {}
            if info.get("role") != "hold" or view.status is TransferStatus.VOIDED:
                continue
            if view.status is TransferStatus.PENDING:
                raise _in_flight(a.id, to)
            return None
        first += _PROBE


def _leased(store: Router, row: OutboxRow) -> OutboxRow:
    """The row leased to this request, which runs steps 2 and 3 itself (if it does)."""
    if not store.drive_sagas:
        return row
    lease = store.clock_ns() + int(store.drive_lease_seconds * 1_000_000_000)
    return msgspec.structs.replace(row, claimed_by=store.owner, claimed_until=lease)


async def _drive(
    store: Router, source: str, row: OutboxRow, written: Transfer
) -> tuple[SagaState | None, tuple[ErrorCode, str] | None]:
    """Steps 2 and 3 of the saga step 1 wrote as ``written``: the state reached (None:
    left to the relay) and step 2's refusal, if any."""
    row = msgspec.structs.replace(
        row, amount=written.amount, currency=written.currency, created_at=written.timestamp
    )
    try:
        reached = await store.driver.settle(source, [row]) if store.drive_sagas else {}
    except Exception as exc:  # noqa: BLE001 - the relay finishes it
        log.warning("close: the saga of %s is left to the relay: %s", row.transfer_id, exc)
        reached = {}
    return reached.get(row.transfer_id), store.driver.refusals.pop(row.transfer_id, None)


def _left_to_relay(store: Router, source: str) -> None:
    for listener in store.saga_listeners:
        listener(source)


async def _refuse_while_in_flight(store: Router, closed: Account, to: str) -> None:
    """A retry of a close whose remainder (or debt) is still on its way answers 503 until
    the saga is settled (then the plain close answers the closed account). A debt's saga
    closed A in step 2 with its credit leg, the last transfer of A: its payer's hold may
    still be in flight."""
    ids = [remainder_transfer(closed, to).id]
    page = await store.shards[store.shard_for(closed.id)].account_transfers(
        closed.id, limit=1, descending=True
    )
    last = page.data[0].transfer if page.data else None
    # A closed account's last transfer is what closed it: a debt's credit leg, or the
    # hold of its remainder (of a later attempt than the first, when one was refused).
    if last is not None and (
        (saga_info(last.metadata) or {}).get("closes") or is_closing_hold(last)
    ):
        ids.append(last.id)
    views = await store.get_transfers(ids)
    if any(v.status is TransferStatus.IN_FLIGHT for v in views.values()):
        raise _in_flight(closed.id, to)


def _in_flight(account_id: str, to: str) -> UnavailableError:
    return UnavailableError(
        f"account {account_id!r} is closed and its balance is on its way to {to!r}; "
        "retry to see the outcome"
    )
