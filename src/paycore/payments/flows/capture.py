"""Capture and cancel of an authorization: the same start (the payment processing, a
new attempt, the key claimed), a call, then the outcome; a cancel ends in ``release``,
which also ends expired authorizations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from paycore.errors import ErrorCode, PaycoreError, RequestError, key_in_use
from paycore.payments.flows import fx, outcomes
from paycore.payments.flows.context import log
from paycore.payments.flows.model import PaymentView, Reply
from paycore.payments.flows.outcomes import (
    Step,
)
from paycore.payments.flows.rows import (
    attempt,
    bump,
    finished_last,
    locked_rate,
)
from paycore.payments.flows.work import UnitOfWork, Written
from paycore.payments.intents import CancelReason, PaymentStatus, PendingOp
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentRow, PaymentWrite

__all__ = [
    "Plan",
    "cancel",
    "capture",
    "record_capture",
    "record_void",
    "release",
]

_E = ErrorCode
# What a capture or a cancel plans for a payment at ``now``: the attempt's amount and
# the payment's further in-flight fields (or a refusal, raised).
Plan = Callable[[PaymentRow, int], tuple[int, dict[str, Any]]]


async def capture(work: UnitOfWork, payment_id: str, amount: int | None, *, final: bool) -> Reply:
    """Capture ``amount`` (default: all that is left) of an authorization; ``final``
    releases what is left after it. Several partial captures may follow each other."""

    def plan(row: PaymentRow, now: int) -> tuple[int, dict[str, Any]]:
        capturable = row.amount_authorized - row.amount_captured
        wanted = capturable if amount is None else amount
        if wanted > capturable:
            raise RequestError(
                _E.AMOUNT_EXCEEDS_CAPTURABLE,
                f"{capturable} may still be captured, {wanted} asked",
            )
        if row.authorized_until is not None and now >= row.authorized_until:
            raise RequestError(_E.AUTHORIZATION_EXPIRED, "capture it before it expires")
        if row.settlement_currency is not None:
            locked_rate(row).captured(wanted)  # fx_amount_too_small before the processor
        return wanted, {
            "pending_amount": wanted,
            "pending_final": int(final or wanted == capturable),
        }

    begun = await _begin(work, payment_id, Operation.CAPTURE, PendingOp.CAPTURE, plan)
    if isinstance(begun, Reply):
        return begun
    view, row, current = begun
    assert row.processor is not None
    authorization, wanted = row.authorization_reference or "", row.pending_amount
    result = await work.ctx.call(
        row.processor,
        Operation.CAPTURE,
        current.reference,
        lambda c: c.capture(authorization, wanted, current.reference),
    )
    return await record_capture(work, view.shard, row, [*view.attempts, current], result)


async def cancel(work: UnitOfWork, payment_id: str) -> Reply:
    """Release what an authorization holds (void at the processor, then the hold)."""
    begun = await _begin(work, payment_id, Operation.VOID, PendingOp.VOID, lambda row, now: (0, {}))
    if isinstance(begun, Reply):
        return begun
    view, row, current = begun
    assert row.processor is not None
    authorization = row.authorization_reference or ""
    result = await work.ctx.call(
        row.processor, Operation.VOID, current.reference, lambda c: c.void(authorization)
    )
    return await record_void(work, view.shard, row, [*view.attempts, current], result)


async def _begin(
    work: UnitOfWork, payment_id: str, operation: Operation, pending: PendingOp, plan: Plan
) -> Reply | tuple[PaymentView, PaymentRow, AttemptRow]:
    """Start a capture or a cancel: the payment processing with its new attempt and the
    key claimed (retried when another write moved the payment meanwhile), or the reply
    (a replay, or a refusal)."""
    ctx = work.ctx
    seen = await work.replay_or_resume()
    if isinstance(seen, Reply):
        return seen
    resumed = seen is not None
    claimed = False
    for _ in range(ctx.conflict_retries):
        try:
            view = await ctx.get_payment(payment_id)
            row = view.payment
            PaymentStatus(row.status).to(PaymentStatus.PROCESSING)
            now = ctx.clock()
            amount, changes = plan(row, now)
        except PaycoreError as exc:
            return await work.refuse(exc, resumed=resumed or claimed)
        seq = row.attempt_count + 1
        claim = await work.claim(
            resumed=resumed or claimed, kind="payment", object_id=row.id, shard=view.shard, seq=seq
        )
        claimed = claimed or claim is None
        assert row.processor is not None
        current = attempt(
            row.id, seq, operation, row.processor, amount=amount, now=now, key=work.attempt_key()
        )
        started = bump(
            row,
            now,
            status=PaymentStatus.PROCESSING.value,
            pending_op=pending.value,
            pending_reference=current.reference,
            attempt_count=seq,
            **changes,
        )
        write = PaymentWrite(
            shard=view.shard, payment=started, payment_version=row.version, attempts=(current,)
        )
        written = await work.commit(Step(write), claim=claim)
        if written.state is Written.TAKEN:
            raise key_in_use()
        if written.state is Written.DONE:
            return view, started, current
        if resumed or claimed:
            # The payment moved meanwhile. If a retry under this key took the claimed work
            # over (this request was slow, not dead), that work is the one to answer with:
            # planning another attempt here would capture twice for one request.
            again = await work.replay_or_resume()
            if isinstance(again, Reply):
                return again
    raise key_in_use()


async def record_capture(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    attempts: list[AttemptRow],
    result: ProcessorResult,
) -> Reply:
    now = work.ctx.clock()
    done, all_attempts = finished_last(attempts, result, now)
    if result.outcome is Outcome.AMBIGUOUS:
        return await work.record_unknown(PaymentView(row, all_attempts, shard), done)
    step = outcomes.captured(shard, row, all_attempts, result, now)
    if isinstance(step, PaycoreError):
        return await _back_to_capturable(work, shard, row, done, step)
    if step.settlement is not None:
        # Settled through a conversion: its chain first. The processor captured: a
        # refusal (the merchant's account closed since) leaves the payment processing,
        # logged, for the resolver to book again.
        refusal = await fx.book(work.ctx, shard, row, step.settlement)
        if refusal is not None:
            log.error("payment %s: capture approved, the conversion refused: %s", row.id, refusal)
            return await work.current("payment", row.id)
    written = await work.commit(step)
    if written.code is _E.PENDING_TRANSFER_EXPIRED:
        written = await work.commit(outcomes.captured_after_expiry(step, row, now))
    complaint = "payment %s: capture approved, ledger refused: %s"
    return await work.finish(written, "payment", row.id, complaint)


async def _back_to_capturable(
    work: UnitOfWork, shard: str, row: PaymentRow, done: AttemptRow, refusal: PaycoreError
) -> Reply:
    """A capture or cancel the processor did not do: the payment is capturable again,
    the attempt recorded, ``refusal`` answered (a retryable one leaves the key free)."""
    step = outcomes.back_to_capturable(shard, row, done, refusal, work.ctx.clock())
    written = await work.commit(step)
    if written.state is not Written.DONE:
        return await work.current("payment", row.id)
    if refusal.retryable:
        await work.free_key(shard)
    return written.reply


async def record_void(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    attempts: list[AttemptRow],
    result: ProcessorResult,
) -> Reply:
    now = work.ctx.clock()
    done, all_attempts = finished_last(attempts, result, now)
    if result.outcome is Outcome.AMBIGUOUS:
        return await work.record_unknown(PaymentView(row, all_attempts, shard), done)
    if result.outcome is Outcome.FAILED:
        refusal = PaycoreError(_E.PROCESSOR_UNAVAILABLE, result.error or "")
        return await _back_to_capturable(work, shard, row, done, refusal)
    # APPROVED, or DECLINED: the processor has nothing left to void (voided or
    # expired on its side already); either way the hold is released here.
    return await release(work, shard, row, all_attempts, done, reason=CancelReason.REQUESTED)


async def release(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    done: AttemptRow | None,
    *,
    reason: CancelReason,
) -> Reply:
    """End an authorization: void (or expire) its hold; canceled, or succeeded when
    a part was captured before."""
    step = outcomes.released(shard, row, attempts, done, reason=reason, now=work.ctx.clock())
    written = await work.commit(step)
    if written.code is _E.PENDING_TRANSFER_EXPIRED and step.write.transfers:
        written = await work.commit(outcomes.released_after_expiry(step, row))
    complaint = "payment %s: releasing the hold refused: %s"
    return await work.finish(written, "payment", row.id, complaint)
