"""A refund of a card payment: a hold on the merchant's account, the processor's
refund, then the hold posted (refunded) or voided (failed)."""

from __future__ import annotations

import msgspec

from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.fx.settlement import refund_chain, settle_chain
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.payments.accounts import fx_chain_id, new_id, psp_account_id, transfer_id
from paycore.payments.flows import fx, holds
from paycore.payments.flows.context import log
from paycore.payments.flows.model import RefundView, Reply
from paycore.payments.flows.outcomes import (
    REQUEST_CODES,
    Step,
)
from paycore.payments.flows.rows import (
    attempt,
    check_refundable,
    finished,
    locked_rate,
    psp_request,
)
from paycore.payments.flows.work import UnitOfWork, Written
from paycore.payments.intents import RefundStatus, SourceType
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentRow, PaymentWrite, RefundDelta, RefundRow

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
    if row.settlement_currency is not None:
        return await _fx_refund(work, shard, row, first, resumed=resumed)
    hold = TransferRequest(
        id=transfer_id(refund_id, "h"),
        debit_account_id=row.merchant_account_id,
        credit_account_id=psp,
        amount=amount,
        currency=row.currency,
        flags=TransferFlags(pending=True),
        metadata={"payment": row.id, "refund": refund_id},
    )
    pending = _pending(work, row, first, hold.id, now)
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
    return await _send(work, shard, row, pending, first)


def _pending(
    work: UnitOfWork,
    row: PaymentRow,
    first: AttemptRow,
    hold_id: str,
    now: int,
    *,
    settlement_currency: str | None = None,
    settlement_amount: int = 0,
) -> RefundRow:
    """The refund of ``row`` that ``first`` starts: pending while ``hold_id`` holds the
    merchant's money (``settlement_*``: what a converted payment's refund debits the
    merchant in its own currency)."""
    return RefundRow(
        id=first.parent_id,
        payment_id=row.id,
        amount=first.amount,
        currency=row.currency,
        status=RefundStatus.PENDING.value,
        processor=row.processor,
        hold_id=hold_id,
        attempt_count=1,
        idempotency_key=None if work.keyed is None else work.keyed.key,
        created_at=now,
        updated_at=now,
        settlement_currency=settlement_currency,
        settlement_amount=settlement_amount,
    )


async def _send(
    work: UnitOfWork, shard: str, row: PaymentRow, pending: RefundRow, first: AttemptRow
) -> Reply:
    """Ask the processor to refund (the merchant's money is held), record its answer."""
    assert row.processor is not None
    authorization, amount = row.authorization_reference or "", pending.amount
    result = await work.ctx.call(
        row.processor,
        Operation.REFUND,
        first.reference,
        lambda c: c.refund(authorization, amount, first.reference),
    )
    return await record_refund(work, shard, pending, first, result)


async def _fx_refund(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    first: AttemptRow,
    *,
    resumed: bool,
) -> Reply:
    """A refund of a payment settled through a conversion: the refund recorded first,
    then its held chain (``paycore.fx.settlement``: the merchant buys ``amount`` back
    at the locked rate), which may live on other shards; the processor only once the
    merchant's money is held. Refused there, the refund fails and nothing moved."""
    ctx = work.ctx
    now = ctx.clock()
    refund_id, amount = first.parent_id, first.amount
    assert row.processor is not None
    psp = psp_account_id(shard, row.processor, row.currency)
    hold = fx_chain_id(refund_id, "h")
    chain = refund_chain(hold, locked_rate(row), psp, row.merchant_account_id, amount,
                         payment=row.id, refund=refund_id)  # fmt: skip
    pending = _pending(
        work,
        row,
        first,
        hold,
        now,
        settlement_currency=row.settlement_currency,
        settlement_amount=chain[0].amount or 0,
    )
    claim = await work.claim(
        resumed=resumed, kind="refund", object_id=refund_id, shard=shard, seq=0
    )
    write = PaymentWrite(
        shard=shard,
        refund=pending,
        refund_delta=RefundDelta(row.id, pending=amount),
        attempts=(first,),
    )
    started = await work.start(Step(write), claim)
    if started.state is Written.REFUSED:
        return await work.refuse(started.refusal())
    refusal = await fx.book(ctx, shard, row, chain)
    if refusal is not None:
        # The merchant's balance cannot cover it: the refund fails, nothing was sent.
        step = holds.fx_refund_refused(shard, pending, first, refusal[0], ctx.clock())
        return await work.finish(await work.commit(step), "refund", refund_id)
    now_stored = await ctx.reads(shard).refund(refund_id)
    if now_stored is None or now_stored.version != pending.version:
        # Ended meanwhile (this request stalled past the resolver's patience, which
        # found nothing held to void and failed it): release what was just held, and
        # never ask the processor for a refund recorded as failed.
        release = settle_chain(fx_chain_id(refund_id, "x"), hold, post=False,
                               payment=row.id, refund=refund_id)  # fmt: skip
        await fx.book(ctx, shard, row, release)
        return await work.current("refund", refund_id)
    return await _send(work, shard, row, pending, first)


async def record_refund(
    work: UnitOfWork, shard: str, refund: RefundRow, sent: AttemptRow, result: ProcessorResult
) -> Reply:
    now = work.ctx.clock()
    done = finished(sent, result, now)
    if result.outcome is Outcome.AMBIGUOUS:
        return await work.record_unknown(RefundView(refund, (done,), shard), done)
    step: Step | None = holds.refunded(shard, refund, done, result, now)
    if refund.settlement_currency is not None:
        assert step is not None
        step = await _settle_fx_hold(work, refund, step, post=result.outcome is Outcome.APPROVED)
    if step is None:
        return await work.current("refund", refund.id)
    written = await work.commit(step)
    complaint = "refund %s: recording the outcome refused: %s"
    return await work.finish(written, "refund", refund.id, complaint)


async def _settle_fx_hold(
    work: UnitOfWork, refund: RefundRow, step: Step, *, post: bool
) -> Step | None:
    """Post or void, as one, a refund's held chain before its outcome is recorded (the
    step then books nothing itself); None when the ledger refuses (logged, left pending
    for the resolver). A chain never held (its request died before) has nothing to void."""
    assert refund.hold_id is not None
    payment = await work.ctx.get_payment(refund.payment_id)
    chain_id = fx_chain_id(refund.id, "p" if post else "v")
    chain = settle_chain(chain_id, refund.hold_id, post=post,
                         payment=refund.payment_id, refund=refund.id)  # fmt: skip
    refusal = await fx.book(work.ctx, payment.shard, payment.payment, chain)
    if refusal is not None and not (not post and refusal[0] is _E.PENDING_TRANSFER_NOT_FOUND):
        log.error("refund %s: settling its conversion refused: %s", refund.id, refusal)
        return None
    return Step(msgspec.structs.replace(step.write, transfers=()), step.answer)
