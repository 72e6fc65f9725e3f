"""A wallet payment: one transaction when the wallet and the merchant share a shard;
else the payment waits (processing) for its cross-shard transfer's saga."""

from __future__ import annotations

import asyncio
import time

import msgspec

from paycore.ledger.model import TransferRequest, TransferStatus
from paycore.payments.accounts import transfer_id
from paycore.payments.flows.model import NewPayment, PaymentView, Reply
from paycore.payments.flows.outcomes import (
    REQUEST_CODES,
    Step,
    wallet_refused,
    wallet_transferred,
)
from paycore.payments.flows.rows import (
    events,
)
from paycore.payments.flows.work import UnitOfWork, Written
from paycore.payments.intents import CaptureMethod, PaymentStatus, PendingOp, SourceType
from paycore.storage.base import CreateTransfers
from paycore.storage.payments import AccountCheck, PaymentRow, PaymentWrite

__all__ = [
    "run_wallet_transfer",
    "wallet_move",
    "wallet_payment",
]


async def wallet_payment(
    work: UnitOfWork, new: NewPayment, payment_id: str, resumed: bool
) -> Reply:
    ctx = work.ctx
    wallet = new.wallet_account_id
    assert wallet is not None
    shard = ctx.shard_of(new.merchant_account_id)
    now = ctx.clock()
    move = TransferRequest(
        id=transfer_id(payment_id, "w"),
        debit_account_id=wallet,
        credit_account_id=new.merchant_account_id,
        amount=new.amount,
        currency=new.currency,
        metadata={"payment": payment_id},
    )
    base = PaymentRow(
        id=payment_id,
        merchant_account_id=new.merchant_account_id,
        amount=new.amount,
        currency=new.currency,
        capture_method=CaptureMethod.AUTOMATIC.value,
        status=PaymentStatus.PROCESSING.value,
        source_type=SourceType.WALLET.value,
        source_account_id=wallet,
        amount_authorized=new.amount,
        idempotency_key=None if work.keyed is None else work.keyed.key,
        created_at=now,
        updated_at=now,
    )
    checks = (
        AccountCheck(new.merchant_account_id, new.currency),
        AccountCheck(wallet, new.currency),
    )
    claim = await work.claim(
        resumed=resumed, kind="payment", object_id=payment_id, shard=shard, seq=0
    )
    if ctx.shard_of(wallet) == shard:
        # Both accounts here: the payment and its transfer in one transaction.
        paid = msgspec.structs.replace(
            base, status=PaymentStatus.SUCCEEDED.value, amount_captured=new.amount
        )
        write = PaymentWrite(
            shard=shard,
            payment=paid,
            accounts=checks,
            transfers=(move,),
            events=events([("payment.succeeded", paid)], now),
        )
        # The key lives here (a claim) or nowhere: one record, the answer.
        written = await work.start(Step(write, PaymentView(paid, (), shard)), claim)
        if written.state is Written.DONE:
            return written.reply
        if written.code in REQUEST_CODES:
            return await work.refuse(written.refusal())
        return await work.record_refused(
            wallet_refused(shard, base, written.code, written.detail, now), claim
        )
    # Across shards: the payment waits (processing) for the transfer's saga.
    row = msgspec.structs.replace(
        base, pending_op=PendingOp.TRANSFER.value, pending_reference=move.id
    )
    write = PaymentWrite(shard=shard, payment=row, accounts=checks[:1])
    started = await work.start(Step(write), claim)
    if started.state is Written.REFUSED:
        return await work.refuse(started.refusal())
    return await run_wallet_transfer(work, shard, row, move)


def wallet_move(row: PaymentRow) -> TransferRequest:
    assert row.source_account_id is not None
    assert row.pending_reference is not None
    return TransferRequest(
        id=row.pending_reference,
        debit_account_id=row.source_account_id,
        credit_account_id=row.merchant_account_id,
        amount=row.amount,
        currency=row.currency,
        metadata={"payment": row.id},
    )


async def run_wallet_transfer(
    work: UnitOfWork, shard: str, row: PaymentRow, move: TransferRequest, *, wait: bool = True
) -> Reply:
    """Submit (again: it is idempotent by id) a wallet payment's cross-shard transfer,
    wait a little for its saga, and record the end if it came."""
    ctx = work.ctx
    results = await ctx.store.execute(CreateTransfers((move,), internal=True))
    result = results[0]
    state: TransferStatus | None = None
    if result.ok and not result.in_flight:
        state = TransferStatus.POSTED
    elif result.ok:
        deadline = time.monotonic() + (ctx.saga_wait_seconds if wait else 0.0)
        while True:
            seen = await ctx.store.get_transfer(move.id)
            state = None if seen is None else seen.status
            if state is not TransferStatus.IN_FLIGHT or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
    step = wallet_transferred(shard, row, state, result, ctx.clock())
    if state is TransferStatus.IN_FLIGHT:
        if work.keyed is None:
            return Reply(step.answer)
        return (await work.commit(step)).reply
    return await work.finish(await work.commit(step), "payment", row.id)
