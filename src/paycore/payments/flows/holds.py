"""Pure decisions of the refund and payout flows: the hold they started with (on the
merchant's account, on the wallet) posted once the processor did it, else voided; or the
work failed at once when the ledger refused the hold. As ``outcomes``, for payments."""

from __future__ import annotations

import msgspec

from paycore.errors import ErrorCode
from paycore.payments.accounts import transfer_id
from paycore.payments.flows.model import PayoutView, RefundView
from paycore.payments.flows.outcomes import Step
from paycore.payments.flows.rows import bump, events, settle
from paycore.payments.intents import PayoutStatus, RefundStatus
from paycore.payments.processors.base import Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentWrite, PayoutRow, RefundDelta, RefundRow

__all__ = [
    "fx_refund_refused",
    "paid_out",
    "payout_refused",
    "refund_refused",
    "refunded",
]

_E = ErrorCode


def refunded(
    shard: str, refund: RefundRow, done: AttemptRow, result: ProcessorResult, now: int
) -> Step:
    """A refund's definite answer: its hold on the merchant posted, or voided (failed)."""
    status = RefundStatus(refund.status)
    assert refund.hold_id is not None
    ids = {"payment": refund.payment_id, "refund": refund.id}
    if result.outcome is Outcome.APPROVED:
        new = bump(
            refund,
            now,
            status=status.to(RefundStatus.SUCCEEDED).value,
            processor_reference=result.processor_reference,
        )
        delta = RefundDelta(refund.payment_id, pending=-refund.amount, refunded=refund.amount)
        transfer = settle(transfer_id(refund.id, "p"), refund.hold_id, post=True, **ids)
        event = "refund.succeeded"
    else:
        declined = result.outcome is Outcome.DECLINED
        new = bump(
            refund,
            now,
            status=status.to(RefundStatus.FAILED).value,
            failure_code="refund_declined" if declined else _E.PROCESSOR_UNAVAILABLE.value,
            decline_code=result.decline_code,
        )
        delta = RefundDelta(refund.payment_id, pending=-refund.amount)
        transfer = settle(transfer_id(refund.id, "v"), refund.hold_id, post=False, **ids)
        event = "refund.failed"
    write = PaymentWrite(
        shard=shard,
        refund=new,
        refund_version=refund.version,
        refund_delta=delta,
        attempts=(done,),
        transfers=(transfer,),
        events=events([(event, new)], now),
    )
    return Step(write, RefundView(new, (done,), shard))


def refund_refused(shard: str, refund: RefundRow, refusal: ErrorCode, now: int) -> Step:
    """The merchant's balance cannot cover a refund: it exists, failed."""
    failed = msgspec.structs.replace(
        refund, status=RefundStatus.FAILED.value, hold_id=None, failure_code=refusal.value
    )
    write = PaymentWrite(
        shard=shard, refund=failed, events=events([("refund.failed", failed)], now)
    )
    return Step(write, RefundView(failed, (), shard))


def fx_refund_refused(
    shard: str, refund: RefundRow, sent: AttemptRow, refusal: ErrorCode, now: int
) -> Step:
    """A refund settled through a conversion whose chain the ledger refused (the
    merchant cannot cover it): recorded already, it fails; its attempt was never sent."""
    failed = bump(
        refund,
        now,
        status=RefundStatus(refund.status).to(RefundStatus.FAILED).value,
        hold_id=None,
        failure_code=refusal.value,
    )
    never = msgspec.structs.replace(
        sent, outcome=Outcome.FAILED.value, error=f"not sent: {refusal.value}", updated_at=now
    )
    write = PaymentWrite(
        shard=shard,
        refund=failed,
        refund_version=refund.version,
        refund_delta=RefundDelta(refund.payment_id, pending=-refund.amount),
        attempts=(never,),
        events=events([("refund.failed", failed)], now),
    )
    return Step(write, RefundView(failed, (never,), shard))


def paid_out(
    shard: str,
    row: PayoutRow,
    attempts: tuple[AttemptRow, ...],
    result: ProcessorResult,
    now: int,
) -> Step:
    """A payout's definite answer: its hold on the wallet posted (paid), or voided."""
    done = attempts[-1]
    status = PayoutStatus(row.status)
    assert row.hold_id is not None
    if result.outcome is Outcome.APPROVED:
        new = bump(
            row,
            now,
            status=status.to(PayoutStatus.PAID).value,
            processor_reference=result.processor_reference,
        )
        transfer = settle(
            transfer_id(row.id, f"p{done.seq}"), row.hold_id, post=True, payout=row.id
        )
        event = "payout.paid"
    else:
        declined = result.outcome is Outcome.DECLINED
        new = bump(
            row,
            now,
            status=status.to(PayoutStatus.FAILED).value,
            failure_code="payout_declined" if declined else _E.PROCESSOR_UNAVAILABLE.value,
            decline_code=result.decline_code,
            failure_detail=result.error,
        )
        transfer = settle(
            transfer_id(row.id, f"v{done.seq}"), row.hold_id, post=False, payout=row.id
        )
        event = "payout.failed"
    write = PaymentWrite(
        shard=shard,
        payout=new,
        payout_version=row.version,
        attempts=(done,),
        transfers=(transfer,),
        events=events([(event, new)], now),
    )
    return Step(write, PayoutView(new, attempts, shard))


def payout_refused(shard: str, row: PayoutRow, refusal: ErrorCode, detail: str, now: int) -> Step:
    """The wallet cannot cover a payout (limits, holds included): it exists, failed."""
    failed = msgspec.structs.replace(
        row,
        status=PayoutStatus.FAILED.value,
        hold_id=None,
        failure_code=refusal.value,
        failure_detail=detail,
        processor=None,
        attempt_count=0,
    )
    write = PaymentWrite(
        shard=shard, payout=failed, events=events([("payout.failed", failed)], now)
    )
    return Step(write, PayoutView(failed, (), shard))
