"""Closing an account whose remainder goes to an account on another shard.

On one shard a close with ``transfer_balance_to`` moves the balance and closes in one
transaction. Across shards the move is a saga (``paycore.cluster.settlement``), and the
close rides on its step 1, as TigerBeetle's closing pending transfers do:

    step 1, on A's shard (ONE transaction): A closed + hold of A's whole balance to the
            clearing account + outbox row (``CloseAccount.remainder_hold``)
    step 2, on B's shard: the credit of B, as for any transfer
    step 3, on A's shard: post the hold (done: A closed, B credited), or void it if B
            refused the credit, which reopens A (``storage.apply``): the close did not
            happen, and the answer is B's refusal, as one shard would give it.

Before step 1 the router reads A and B and answers what one shard would refuse (B
missing, closed, of another currency) without writing. The request drives steps 2 and
3 itself; if a fault stops it, the relay finishes the saga and a retry of the close
answers 503 (retryable) until it has. A debt (a negative balance) is paid by B across
shards only through an ordinary transfer first: ``cross_shard_close_unsupported``.
"""

from __future__ import annotations

import logging

import msgspec

from paycore.cluster.routing import Router
from paycore.cluster.saga_plan import one_shard_refusal
from paycore.cluster.settlement import SagaState, hold_request
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import Account, TransferStatus
from paycore.ledger.rules import AccountResult
from paycore.storage.apply import remainder_transfer
from paycore.storage.base import CloseAccount

__all__ = ["close_across"]

log = logging.getLogger("paycore.cluster.router")
_E = ErrorCode


async def close_across(store: Router, command: CloseAccount) -> AccountResult:
    """Close ``command.account_id`` with its remainder to an account on another shard."""
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
        # no balance the target is not used; one that appeared since is refused there).
        plain = msgspec.structs.replace(command, transfer_balance_to=None)
        result: AccountResult = await store.shards[source].execute(plain)
        return result
    if a.balance < 0:
        return AccountResult(
            id=account_id,
            code=_E.CROSS_SHARD_CLOSE_UNSUPPORTED,
            detail=f"account {account_id!r} owes {-a.balance} {a.currency} and "
            f"{to!r} lives on another shard: pay the debt with a transfer, then close",
        )
    request = remainder_transfer(a, to)
    refusal = one_shard_refusal(request, found, command.tenant, store.clock_ns())
    if refusal is not None and refusal.code is not None:
        detail = f"transfer_balance_to {to!r}: {refusal.detail or refusal.code.value}"
        return AccountResult(id=account_id, code=refusal.code, detail=detail)
    await store.ensure_clearing({(source, target, a.currency), (target, source, a.currency)})
    hold, row = hold_request(request, source, target, a.currency, closing=True)
    if store.drive_sagas:  # leased to this request, which runs steps 2 and 3 itself
        lease = store.clock_ns() + int(store.drive_lease_seconds * 1_000_000_000)
        row = msgspec.structs.replace(row, claimed_by=store.owner, claimed_until=lease)
    step1 = msgspec.structs.replace(command, remainder_hold=hold, remainder_row=row)
    closed: AccountResult = await store.shards[source].execute(step1)
    if not closed.ok or closed.exists:
        return closed
    views = await store.shards[source].get_transfers([hold.id])
    written = views[hold.id].transfer
    row = msgspec.structs.replace(
        row, amount=written.amount, currency=written.currency, created_at=written.timestamp
    )
    try:
        reached = await store.driver.settle(source, [row]) if store.drive_sagas else {}
    except Exception as exc:  # noqa: BLE001 - the relay finishes it
        log.warning("close of %s: the remainder's saga is left to the relay: %s", account_id, exc)
        reached = {}
    state = reached.get(hold.id)
    refused = store.driver.refusals.pop(hold.id, None)
    if state is SagaState.COMPENSATED and refused is not None:
        code, why = refused
        return AccountResult(id=account_id, code=code, detail=f"transfer_balance_to {to!r}: {why}")
    if state is not SagaState.COMPLETED:
        for listener in store.saga_listeners:
            listener(source)
        raise _in_flight(account_id, to)
    now = await store.get_accounts([account_id])
    return AccountResult(id=account_id, account=now[account_id])


async def _refuse_while_in_flight(store: Router, closed: Account, to: str) -> None:
    """A retry of a close whose remainder is still on its way answers 503 until the saga
    is settled (then the plain close answers the closed account)."""
    hold_id = remainder_transfer(closed, to).id
    view = (await store.get_transfers([hold_id])).get(hold_id)
    if view is not None and view.status is TransferStatus.IN_FLIGHT:
        raise _in_flight(closed.id, to)


def _in_flight(account_id: str, to: str) -> UnavailableError:
    return UnavailableError(
        f"account {account_id!r} is closed and its balance is on its way to {to!r}; "
        "retry to see the outcome"
    )
