"""A refund of a card payment: a hold on the merchant's account, the processor's
refund, then the hold posted (refunded) or voided (failed)."""

from __future__ import annotations

from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.payments.accounts import new_id, psp_account_id, transfer_id
from paycore.payments.flows import holds
from paycore.payments.flows.model import RefundView, Reply
from paycore.payments.flows.outcomes import (
    REQUEST_CODES,
    Step,
    unknown,
)
from paycore.payments.flows.rows import (
    attempt,
    check_refundable,
    finished,
    psp_request,
)
from paycore.payments.flows.work import UnitOfWork, Written
from paycore.payments.intents import RefundStatus, SourceType
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentWrite, RefundDelta, RefundRow

__all__ = [
    "record_refund",
    "refund",
]

_E = ErrorCode


async def refund(work: UnitOfWork, payment_id: str, amount: int | None) -> Reply:
    """Give back ``amount`` (default: all that is left) of what a card payment
    captured; partial and several refunds never exceed it, pending ones included."""
    ctx = work.ctx
    seen = await work.replay_or_resume()
    if isinstance(seen, Reply):
        return seen
    refund_id = seen.id if seen is not None else new_id("re")
    resumed = seen is not None
    try:
        view = await ctx.get_payment(payment_id)
        row = view.payment
        if row.source_type != SourceType.CARD.value:
            raise RequestError(
                _E.PAYMENT_UNEXPECTED_STATE,
                "a wallet payment is refunded with a transfer back (POST /v1/transfers)",
            )
        amount = check_refundable(row, amount)
    except PaycoreError as exc:
        return await work.refuse(exc, resumed=resumed)
    shard = view.shard
    now = ctx.clock()
    assert row.processor is not None
    psp = psp_account_id(shard, row.processor, row.currency)
    first = attempt(refund_id, 1, Operation.REFUND, row.processor, amount=amount, now=now)
    hold = TransferRequest(
        id=transfer_id(refund_id, "h"),
        debit_account_id=row.merchant_account_id,
        credit_account_id=psp,
        amount=amount,
        currency=row.currency,
        flags=TransferFlags(pending=True),
        metadata={"payment": row.id, "refund": refund_id},
    )
    pending = RefundRow(
        id=refund_id,
        payment_id=row.id,
        amount=amount,
        currency=row.currency,
        status=RefundStatus.PENDING.value,
        processor=row.processor,
        hold_id=hold.id,
        attempt_count=1,
        idempotency_key=None if work.keyed is None else work.keyed.key,
        created_at=now,
        updated_at=now,
    )
    claim = await work.claim(
        resumed=resumed, kind="refund", object_id=refund_id, shard=shard, seq=0
    )
    write = PaymentWrite(
        shard=shard,
        refund=pending,
        refund_delta=RefundDelta(row.id, pending=amount),
        transfers=(hold,),
        ensure_accounts=psp_request(psp, row.currency),
        attempts=(first,),
    )
    started = await work.start(Step(write), claim)
    if started.state is Written.REFUSED:
        code = started.code
        if code in (_E.REFUND_EXCEEDS_CAPTURED, _E.PAYMENT_NOT_FOUND) or code in REQUEST_CODES:
            return await work.refuse(started.refusal())
        # The merchant's balance cannot cover it: the refund exists, failed.
        return await work.record_refused(holds.refund_refused(shard, pending, code, now), claim)
    authorization = row.authorization_reference or ""
    result = await ctx.call(
        row.processor,
        Operation.REFUND,
        first.reference,
        lambda c: c.refund(authorization, amount, first.reference),
    )
    return await record_refund(work, shard, pending, first, result)


async def record_refund(
    work: UnitOfWork, shard: str, refund: RefundRow, sent: AttemptRow, result: ProcessorResult
) -> Reply:
    now = work.ctx.clock()
    done = finished(sent, result, now)
    if result.outcome is Outcome.AMBIGUOUS:
        return (await work.commit(unknown(RefundView(refund, (done,), shard), done))).reply
    written = await work.commit(holds.refunded(shard, refund, done, result, now))
    complaint = "refund %s: recording the outcome refused: %s"
    return await work.finish(written, "refund", refund.id, complaint)
