"""Pure decisions of the payment flows: a row and a processor's answer (or the ledger's
refusal) to the next row, its transfers and its events, as one ``Step`` to commit.

Nothing here reads or writes a store or calls a processor; ``now`` is given, and the only
thing drawn is a new event's id (``rows`` builds the parts). The flows (``card``,
``wallet``, ``capture``, ``refund``, ``payout``, ``resolver``) commit what they return.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.fx.settlement import capture_chain
from paycore.ledger.model import (
    TransferFlags,
    TransferRequest,
    TransferStatus,
)
from paycore.ledger.rules import TransferResult
from paycore.payments.accounts import fx_chain_id, psp_account_id, transfer_id
from paycore.payments.flows.model import (
    PaymentView,
    ReplyOutcome,
    View,
)
from paycore.payments.flows.rows import (
    CLEAR,
    NS,
    attempt,
    bump,
    events,
    locked_rate,
    move,
    psp_request,
    settle,
)
from paycore.payments.intents import (
    CancelReason,
    CaptureMethod,
    PaymentStatus,
    PendingOp,
)
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import (
    AttemptRow,
    PaymentRow,
    PaymentWrite,
)

__all__ = [
    "REQUEST_CODES",
    "Step",
    "authorization",
    "back_to_capturable",
    "captured",
    "captured_after_expiry",
    "give_back",
    "given_back",
    "released",
    "released_after_expiry",
    "unknown",
    "wallet_refused",
    "wallet_transferred",
]

_E = ErrorCode
# What the ledger may refuse about the request itself (answered as a problem, nothing
# kept) rather than about money (a failed payment): see ``paycore.payments.service``.
REQUEST_CODES: Final = frozenset(
    {
        _E.ACCOUNT_NOT_FOUND,
        _E.ACCOUNT_CLOSED,
        _E.CURRENCY_MISMATCH,
        _E.ACCOUNTS_MUST_BE_DIFFERENT,
    }
)


@dataclass(frozen=True, slots=True)
class Step:
    """One transaction of payment work, and what the request is answered with once it
    commits (``answer``; None: this write answers nothing yet). The unit of work adds
    the Idempotency-Key record and the fence (``paycore.payments.flows.work``)."""

    write: PaymentWrite
    answer: ReplyOutcome | None = None
    # A payment settled through a conversion: the chain to book (``flows.fx``) before
    # ``write``, which cannot (the FX accounts live on any shard).
    settlement: tuple[TransferRequest, ...] | None = None


# -- outcomes --------------------------------------------------------------------------------


def unknown(view: View, done: AttemptRow) -> Step:
    """An AMBIGUOUS answer: the attempt is recorded, the work stays in flight."""
    return Step(PaymentWrite(shard=view.shard, attempts=(done,)), view)


def _payment(
    shard: str,
    row: PaymentRow,
    new: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    *,
    now: int,
    pairs: Sequence[tuple[str, PaymentRow]],
    transfers: tuple[TransferRequest, ...] = (),
    **write: Any,
) -> Step:
    """The step that replaces ``row`` by ``new`` (``attempts[-1]`` just finished)."""
    return Step(
        PaymentWrite(
            shard=shard,
            payment=new,
            payment_version=row.version,
            attempts=attempts[-1:],
            transfers=transfers,
            events=events(pairs, now),
            **write,
        ),
        PaymentView(new, attempts, shard),
    )


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
        return _payment(shard, row, new, attempts, now=now, pairs=[("payment.failed", new)])
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
    return _payment(
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
        return _payment(shard, row, new, attempts, now=now,
                        pairs=[("payment.requires_capture", new)])  # fmt: skip
    chain_id = fx_chain_id(row.id, f"c{attempts[-1].seq}")
    chain, credited = _fx_capture(row, chain_id, shard, row.amount)
    new = bump(
        row,
        now,
        status=status.to(PaymentStatus.SUCCEEDED).value,
        amount_captured=row.amount,
        settlement_amount=row.settlement_amount + credited,
        **common,
        **CLEAR,
    )
    step = _payment(shard, row, new, attempts, now=now, pairs=[("payment.succeeded", new)])
    return Step(step.write, step.answer, chain)


def _fx_capture(
    row: PaymentRow, chain_id: str, shard: str, amount: int
) -> tuple[tuple[TransferRequest, ...], int]:
    """The chain settling a capture of ``amount`` of ``row``, and what it credits."""
    psp = psp_account_id(shard, row.processor or "", row.currency)
    chain = capture_chain(
        chain_id, locked_rate(row), psp, row.merchant_account_id, amount, payment=row.id
    )
    return chain, chain[1].amount or 0


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
        return _payment(shard, row, new, attempts, now=now, pairs=[("payment.failed", new)])
    return _payment(shard, row, bump(row, now), attempts, now=now, pairs=[])


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
    return _payment(shard, row, new, attempts, now=now, pairs=pairs, transfers=tuple(transfers))


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
    chain, credited = _fx_capture(row, chain_id, shard, amount)
    new, pairs = _after_capture(
        row, now, amount, keep=keep, settlement_amount=row.settlement_amount + credited
    )
    step = _payment(shard, row, new, attempts, now=now, pairs=pairs)
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


def wallet_transferred(
    shard: str,
    row: PaymentRow,
    state: TransferStatus | None,
    result: TransferResult,
    now: int,
) -> Step:
    """A wallet payment's cross-shard transfer: posted, still in flight (the answer is
    the payment as it is), or refused or voided (the payment fails)."""
    status = PaymentStatus(row.status)
    if state is TransferStatus.IN_FLIGHT:
        return Step(PaymentWrite(shard=shard), PaymentView(row, (), shard))
    if state is TransferStatus.POSTED:
        new = bump(
            row,
            now,
            status=status.to(PaymentStatus.SUCCEEDED).value,
            amount_captured=row.amount,
            **CLEAR,
        )
        event = "payment.succeeded"
    else:
        code = result.code.value if result.code is not None else "transfer_refused"
        new = bump(
            row,
            now,
            status=status.to(PaymentStatus.FAILED).value,
            failure_code=code,
            failure_detail=result.detail or "the cross-shard transfer was voided",
            **CLEAR,
        )
        event = "payment.failed"
    write = PaymentWrite(
        shard=shard, payment=new, payment_version=row.version, events=events([(event, new)], now)
    )
    return Step(write, PaymentView(new, (), shard))


def wallet_refused(shard: str, base: PaymentRow, refusal: ErrorCode, detail: str, now: int) -> Step:
    """The ledger refused a same-shard wallet payment's money: it exists, failed."""
    failed = msgspec.structs.replace(
        base, status=PaymentStatus.FAILED.value, failure_code=refusal.value, failure_detail=detail
    )
    write = PaymentWrite(
        shard=shard, payment=failed, events=events([("payment.failed", failed)], now)
    )
    return Step(write, PaymentView(failed, (), shard))
