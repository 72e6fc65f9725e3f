"""A card payment's authorization: the processor's answer to the next row (a hold, a
posted transfer, or a failure), and the give-back when the ledger refused the money.
"""

from __future__ import annotations

from typing import Any

from paycore.errors import ErrorCode
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.payments.accounts import fx_chain_id, psp_account_id, transfer_id
from paycore.payments.flows.outcomes.step import Step, fx_capture, payment_step
from paycore.payments.flows.rows import CLEAR, NS, attempt, bump, move, psp_request
from paycore.payments.intents import CaptureMethod, PaymentStatus, PendingOp
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentRow

__all__ = ["authorization", "give_back", "given_back"]

_E = ErrorCode


def authorization(
    shard: str,
    row: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    result: ProcessorResult,
    now: int,
    *,
    authorization_seconds: int,
) -> Step:
    """An authorization's definite answer: a hold (manual capture) or a posted transfer
    (automatic), or the payment fails (declined, or no processor could take it)."""
    done = attempts[-1]
    status = PaymentStatus(row.status)
    psp = psp_account_id(shard, row.processor or "", row.currency)
    if result.outcome is not Outcome.APPROVED:
        declined = result.outcome is Outcome.DECLINED
        new = bump(
            row,
            now,
            status=status.to(PaymentStatus.FAILED).value,
            failure_code="card_declined" if declined else _E.PROCESSOR_UNAVAILABLE.value,
            failure_detail=result.decline_code if declined else result.error,
            **CLEAR,
        )
        return payment_step(shard, row, new, attempts, now=now, pairs=[("payment.failed", new)])
    common: dict[str, Any] = {
        "amount_authorized": row.amount,
        "processor_reference": result.processor_reference,
        "authorization_reference": done.reference,
    }
    if row.settlement_currency is not None:
        return _fx_authorization(
            shard,
            row,
            attempts,
            now,
            common=common,
            authorization_seconds=authorization_seconds,
        )
    if row.capture_method == CaptureMethod.MANUAL.value:
        transfer = TransferRequest(
            id=transfer_id(row.id, f"h{done.seq}"),
            debit_account_id=psp,
            credit_account_id=row.merchant_account_id,
            amount=row.amount,
            currency=row.currency,
            flags=TransferFlags(pending=True),
            timeout_seconds=authorization_seconds,
            metadata={"payment": row.id},
        )
        new = bump(
            row,
            now,
            status=status.to(PaymentStatus.REQUIRES_CAPTURE).value,
            hold_id=transfer.id,
            authorized_until=now + authorization_seconds * NS,
            **common,
            **CLEAR,
        )
        event = "payment.requires_capture"
    else:
        transfer = move(transfer_id(row.id, f"c{done.seq}"), psp, row, row.amount)
        new = bump(
            row,
            now,
            status=status.to(PaymentStatus.SUCCEEDED).value,
            amount_captured=row.amount,
            **common,
            **CLEAR,
        )
        event = "payment.succeeded"
    return payment_step(
        shard,
        row,
        new,
        attempts,
        now=now,
        pairs=[(event, new)],
        transfers=(transfer,),
        ensure_accounts=psp_request(psp, row.currency),
    )


def _fx_authorization(
    shard: str,
    row: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    now: int,
    *,
    common: dict[str, Any],
    authorization_seconds: int,
) -> Step:
    """An approved authorization of a payment settled through a conversion: captured
    at once, its chain settles the whole amount; else nothing is booked until a capture
    (the amount in the merchant's currency is known per capture)."""
    status = PaymentStatus(row.status)
    if row.capture_method == CaptureMethod.MANUAL.value:
        new = bump(
            row,
            now,
            status=status.to(PaymentStatus.REQUIRES_CAPTURE).value,
            authorized_until=now + authorization_seconds * NS,
            **common,
            **CLEAR,
        )
        return payment_step(shard, row, new, attempts, now=now,
                            pairs=[("payment.requires_capture", new)])  # fmt: skip
    chain_id = fx_chain_id(row.id, f"c{attempts[-1].seq}")
    chain, credited = fx_capture(row, chain_id, shard, row.amount)
    new = bump(
        row,
        now,
        status=status.to(PaymentStatus.SUCCEEDED).value,
        amount_captured=row.amount,
        settlement_amount=row.settlement_amount + credited,
        **common,
        **CLEAR,
    )
    step = payment_step(shard, row, new, attempts, now=now, pairs=[("payment.succeeded", new)])
    return Step(step.write, step.answer, chain)


def give_back(
    row: PaymentRow, done: AttemptRow, refusal: ErrorCode, detail: str, now: int
) -> tuple[PaymentRow, AttemptRow]:
    """The processor took the money but the ledger refused it: the payment stays
    processing with a give-back (a void, or a refund once captured) to send."""
    assert row.processor is not None
    seq = row.attempt_count + 1
    operation = (
        Operation.VOID if row.capture_method == CaptureMethod.MANUAL.value else Operation.REFUND
    )
    give = attempt(row.id, seq, operation, row.processor, amount=row.amount, now=now)
    giving = bump(
        row,
        now,
        pending_op=PendingOp.GIVE_BACK.value,
        pending_reference=give.reference,
        authorization_reference=done.reference,
        attempt_count=seq,
        failure_code=refusal.value,
        failure_detail=detail,
    )
    return giving, give


def given_back(
    shard: str,
    row: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    result: ProcessorResult,
    now: int,
) -> Step:
    """The give-back's answer: done, the payment fails (with the ledger's reason); not
    done, it stays processing for the resolver (the card is still charged)."""
    if result.outcome is Outcome.APPROVED:
        status = PaymentStatus(row.status).to(PaymentStatus.FAILED)
        new = bump(row, now, status=status.value, **CLEAR)
        return payment_step(shard, row, new, attempts, now=now, pairs=[("payment.failed", new)])
    return payment_step(shard, row, bump(row, now), attempts, now=now, pairs=[])
