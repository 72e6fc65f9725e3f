"""A payment's capture and cancel: the processor's answer to the next row (the hold posted
or voided, or the payment capturable again), and the hold that expired meanwhile.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.payments.accounts import fx_chain_id, psp_account_id, transfer_id
from paycore.payments.flows.model import PaymentView
from paycore.payments.flows.outcomes.step import Step, fx_capture, payment_step
from paycore.payments.flows.rows import CLEAR, NS, bump, events, move, settle
from paycore.payments.intents import CancelReason, PaymentStatus
from paycore.payments.processors.base import Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentRow, PaymentWrite

__all__ = [
    "back_to_capturable",
    "captured",
    "captured_after_expiry",
    "released",
    "released_after_expiry",
]

_E = ErrorCode


def captured(
    shard: str,
    row: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    result: ProcessorResult,
    now: int,
) -> Step | PaycoreError:
    """A capture's definite answer: the hold posted for the amount (a new hold for what
    is left unless final), or the refusal to answer when the processor did not do it."""
    if result.outcome is not Outcome.APPROVED:
        if result.outcome is Outcome.DECLINED:
            return RequestError(_E.CAPTURE_DECLINED, result.decline_code or result.error or "")
        return PaycoreError(_E.PROCESSOR_UNAVAILABLE, result.error or "")
    done = attempts[-1]
    amount = row.pending_amount
    psp = psp_account_id(shard, row.processor or "", row.currency)
    left = row.amount_authorized - row.amount_captured - amount
    keep = left > 0 and not row.pending_final
    if row.settlement_currency is not None:
        return _fx_captured(shard, row, attempts, now, keep=keep)
    assert row.hold_id is not None
    post = TransferRequest(
        id=transfer_id(row.id, f"p{done.seq}"),
        amount=amount,
        flags=TransferFlags(post_pending=True),
        pending_id=row.hold_id,
        metadata={"payment": row.id},
    )
    transfers: list[TransferRequest] = [post]
    hold_id = None
    if keep:
        until = row.authorized_until or now
        hold = TransferRequest(
            id=transfer_id(row.id, f"h{done.seq}"),
            debit_account_id=psp,
            credit_account_id=row.merchant_account_id,
            amount=left,
            currency=row.currency,
            flags=TransferFlags(pending=True),
            timeout_seconds=max(1, math.ceil((until - now) / NS)),
            metadata={"payment": row.id},
        )
        transfers.append(hold)
        hold_id = hold.id
    new, pairs = _after_capture(row, now, amount, keep=keep, hold_id=hold_id)
    return payment_step(shard, row, new, attempts, now=now, pairs=pairs, transfers=tuple(transfers))


def _after_capture(
    row: PaymentRow, now: int, amount: int, *, keep: bool, **fields: Any
) -> tuple[PaymentRow, list[tuple[str, PaymentRow]]]:
    """The payment once ``amount`` more is captured (``fields`` changed too), still
    capturable if ``keep``; its events: captured, and succeeded when final."""
    target = PaymentStatus.REQUIRES_CAPTURE if keep else PaymentStatus.SUCCEEDED
    new = bump(
        row,
        now,
        status=PaymentStatus(row.status).to(target).value,
        amount_captured=row.amount_captured + amount,
        **fields,
        **CLEAR,
    )
    pairs = [("payment.captured", new)]
    if target is PaymentStatus.SUCCEEDED:
        pairs.append(("payment.succeeded", new))
    return new, pairs


def _fx_captured(
    shard: str, row: PaymentRow, attempts: tuple[AttemptRow, ...], now: int, *, keep: bool
) -> Step:
    """A capture of a payment settled through a conversion: its chain at the locked
    rate (no hold to post: none was made), the rest capturable unless final."""
    amount = row.pending_amount
    chain_id = fx_chain_id(row.id, f"p{attempts[-1].seq}")
    chain, credited = fx_capture(row, chain_id, shard, amount)
    new, pairs = _after_capture(
        row, now, amount, keep=keep, settlement_amount=row.settlement_amount + credited
    )
    step = payment_step(shard, row, new, attempts, now=now, pairs=pairs)
    return Step(step.write, step.answer, chain)


def captured_after_expiry(step: Step, row: PaymentRow, now: int) -> Step:
    """The processor captured as the hold ran out: the money moves all the same, from
    the processor's account, and nothing more may be captured."""
    shard, done = step.write.shard, step.write.attempts[0]
    assert isinstance(step.answer, PaymentView)
    amount = row.pending_amount
    psp = psp_account_id(shard, row.processor or "", row.currency)
    new = bump(
        row,
        now,
        status=PaymentStatus(row.status).to(PaymentStatus.SUCCEEDED).value,
        amount_captured=row.amount_captured + amount,
        hold_id=None,
        **CLEAR,
    )
    write = msgspec.structs.replace(
        step.write,
        payment=new,
        transfers=(move(transfer_id(row.id, f"c{done.seq}"), psp, row, amount),),
        expire_holds=(row.hold_id,),
        events=events([("payment.captured", new), ("payment.succeeded", new)], now),
    )
    return Step(write, PaymentView(new, step.answer.attempts, shard))


def back_to_capturable(
    shard: str, row: PaymentRow, done: AttemptRow, refusal: PaycoreError, now: int
) -> Step:
    """A capture or cancel the processor did not do: the payment is capturable again,
    the attempt recorded, ``refusal`` answered."""
    status = PaymentStatus(row.status).to(PaymentStatus.REQUIRES_CAPTURE)
    back = bump(row, now, status=status.value, **CLEAR)
    write = PaymentWrite(shard=shard, payment=back, payment_version=row.version, attempts=(done,))
    return Step(write, refusal)


def released(
    shard: str,
    row: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    done: AttemptRow | None,
    *,
    reason: CancelReason,
    now: int,
) -> Step:
    """An authorization ends: its hold voided (or expired); canceled, or succeeded when
    a part was captured before."""
    status = PaymentStatus(row.status)
    target = PaymentStatus.SUCCEEDED if row.amount_captured > 0 else PaymentStatus.CANCELED
    new = bump(
        row,
        now,
        status=status.to(target).value,
        hold_id=None,
        cancel_reason=reason.value,
        **CLEAR,
    )
    event = "payment.succeeded" if target is PaymentStatus.SUCCEEDED else "payment.canceled"
    transfers: tuple[TransferRequest, ...] = ()
    expire: tuple[str, ...] = ()
    if row.hold_id is not None:
        if reason is CancelReason.EXPIRED:
            expire = (row.hold_id,)
        else:
            seq = done.seq if done is not None else row.attempt_count
            transfers = (
                settle(transfer_id(row.id, f"v{seq}"), row.hold_id, post=False, payment=row.id),
            )
    write = PaymentWrite(
        shard=shard,
        payment=new,
        payment_version=row.version,
        attempts=() if done is None else (done,),
        transfers=transfers,
        expire_holds=expire,
        events=events([(event, new)], now),
    )
    return Step(write, PaymentView(new, attempts, shard))


def released_after_expiry(step: Step, row: PaymentRow) -> Step:
    """The hold to void expired meanwhile: expire it instead."""
    write = msgspec.structs.replace(step.write, transfers=(), expire_holds=(row.hold_id or "",))
    return Step(write, step.answer)
