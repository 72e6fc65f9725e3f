"""Card payments settled through a conversion: their ledger chains, booked apart from
the payment's own transaction.

A payment's rows live on its merchant's shard and are written there in one transaction
(``PaymentWrite``); the FX accounts live wherever their ids place them. So a chain
(``paycore.fx.settlement``) is booked on its own, as one linked chain across shards,
idempotent by its ids, next to the payment's transactions:

- a capture the processor made: its chain first, then the payment records it; a request
  that dies in between leaves the payment processing, and the resolver, asking the
  processor again, books the same chain (already there: no second effect) and records it;
- a refund: recorded first (pending), then its chain held, then the processor asked;
  its answer posts or voids the chain, then the refund records it (the resolver does the
  same for a refund left pending; a chain never held has nothing to void).
"""

from __future__ import annotations

from paycore.errors import ErrorCode
from paycore.fx.accounts import account_requests
from paycore.ledger.model import TransferRequest
from paycore.payments.accounts import psp_account_id
from paycore.payments.flows.context import Context
from paycore.payments.flows.rows import psp_request
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.payments import PaymentRow, PaymentWrite

__all__ = ["book"]

_E = ErrorCode


async def book(
    ctx: Context, shard: str, row: PaymentRow, items: tuple[TransferRequest, ...]
) -> tuple[ErrorCode, str] | None:
    """Book ``items`` (a chain of ``row``'s) as one: None when they are booked (now, or
    before: a retry), else the chain's refusal (nothing moved). The processor's account
    of the payment's shard and the FX accounts are created first when missing."""
    assert row.processor is not None
    assert row.settlement_currency is not None
    psp = psp_account_id(shard, row.processor, row.currency)
    if psp not in ctx.psp_accounts:
        request = psp_request(psp, row.currency)
        made = await ctx.write(PaymentWrite(shard=shard, ensure_accounts=request))
        if not made.ok:
            return made.code or _E.INTERNAL_ERROR, made.detail
        ctx.psp_accounts.add(psp)
    currencies = (row.currency, row.settlement_currency)
    if not ctx.fx_accounts.issuperset(currencies):
        await ctx.store.execute(CreateAccounts(account_requests(*currencies)))
        ctx.fx_accounts.update(currencies)
    results = await ctx.store.execute(CreateTransfers(items, internal=True))
    failed = [r for r in results if r.code is not None]
    if not failed:
        return None
    first = next((r for r in failed if r.code is not _E.LINKED_EVENT_FAILED), failed[0])
    assert first.code is not None
    return first.code, first.detail
