"""The parts the flows build from: rows bumped, attempts started and finished, transfers
and events; and the checks of a request. Pure, as ``outcomes`` is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from paycore.errors import ErrorCode, RequestError
from paycore.fx.settlement import LockedRate
from paycore.ledger.model import SYSTEM_TENANT, AccountRequest, TransferFlags, TransferRequest
from paycore.payments.accounts import new_id
from paycore.payments.flows.model import (
    MAX_PAYMENT_AMOUNT,
    PaymentView,
    RefundView,
    RouteLike,
    View,
)
from paycore.payments.intents import PaymentStatus, PayoutStatus, RefundStatus
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, EventRow, PaymentRow, PayoutRow, RefundRow

__all__ = [
    "CLEAR",
    "NS",
    "attempt",
    "bump",
    "check_amount",
    "check_refundable",
    "events",
    "fallback",
    "finished",
    "finished_last",
    "in_progress",
    "locked_rate",
    "move",
    "payload",
    "psp_request",
    "routed",
    "settle",
    "status_result",
]

NS: Final = 1_000_000_000
_E = ErrorCode
# What a row's in-flight fields go back to once its work ended.
CLEAR: Final[dict[str, Any]] = {
    "pending_op": None,
    "pending_reference": None,
    "pending_amount": 0,
    "pending_final": 0,
}
_json = msgspec.json.Encoder()


def bump(row: Any, now: int, **changes: Any) -> Any:
    """``row`` with ``changes``, its next version, stamped ``now``."""
    return msgspec.structs.replace(row, version=row.version + 1, updated_at=now, **changes)


def attempt(
    parent_id: str,
    seq: int,
    operation: Operation,
    processor: str,
    *,
    amount: int,
    now: int,
    key: str | None = None,
) -> AttemptRow:
    letter = {
        Operation.AUTHORIZE: "a",
        Operation.CAPTURE: "c",
        Operation.VOID: "v",
        Operation.REFUND: "r",
        Operation.PAYOUT: "o",
    }[operation]
    return AttemptRow(
        parent_id=parent_id,
        seq=seq,
        operation=operation.value,
        processor=processor,
        reference=f"{parent_id}.{letter}{seq}",
        amount=amount,
        created_at=now,
        updated_at=now,
        idempotency_key=key,
    )


def routed(
    attempt: AttemptRow, route: RouteLike, candidates: Sequence[str], index: int
) -> AttemptRow:
    """``attempt`` with the routing decision it was made under, as JSON."""
    decision = {
        "rule": route.rule,
        "strategy": str(route.strategy),
        "candidates": list(candidates),
        "position": index,
        "reason": "first choice" if index == 0 else "fallback after a failure",
    }
    return msgspec.structs.replace(attempt, routing=_json.encode(decision).decode())


def fallback(
    row: PaymentRow | PayoutRow,
    operation: Operation,
    *,
    route: RouteLike,
    candidates: Sequence[str],
    index: int,
    now: int,
) -> AttemptRow:
    """The next attempt of ``row`` (its ``seq`` one past the row's count), at the
    ``index``-th candidate of ``route``, after the one before it failed."""
    name = candidates[index]
    following = attempt(row.id, row.attempt_count + 1, operation, name, amount=row.amount, now=now)
    return routed(following, route, candidates, index)


def finished(attempt: AttemptRow, result: ProcessorResult, now: int) -> AttemptRow:
    return msgspec.structs.replace(
        attempt,
        outcome=result.outcome.value,
        decline_code=result.decline_code,
        error=result.error,
        processor_reference=result.processor_reference,
        latency_ms=round(result.latency_ms, 3),
        updated_at=now,
    )


def finished_last(
    attempts: Sequence[AttemptRow], result: ProcessorResult, now: int
) -> tuple[AttemptRow, tuple[AttemptRow, ...]]:
    """The last of ``attempts`` ended with ``result``: it, and the attempts with it ended."""
    done = finished(attempts[-1], result, now)
    return done, (*attempts[:-1], done)


def move(transfer: str, psp: str, row: PaymentRow, amount: int) -> TransferRequest:
    """A posted transfer psp -> merchant (money the processor collected for us)."""
    return TransferRequest(
        id=transfer,
        debit_account_id=psp,
        credit_account_id=row.merchant_account_id,
        amount=amount,
        currency=row.currency,
        metadata={"payment": row.id},
    )


def settle(transfer: str, hold_id: str, *, post: bool, **metadata: str) -> TransferRequest:
    """Post (``post``) or void a pending transfer ``hold_id``."""
    flags = TransferFlags(post_pending=True) if post else TransferFlags(void_pending=True)
    return TransferRequest(id=transfer, flags=flags, pending_id=hold_id, metadata=metadata)


def locked_rate(row: PaymentRow) -> LockedRate:
    """The rates a payment settled through a conversion locked at its authorization."""
    assert row.settlement_currency is not None
    assert row.fx_rate is not None
    assert row.fx_mid_rate is not None
    return LockedRate(row.currency, row.settlement_currency, row.fx_rate, row.fx_mid_rate)


def psp_request(account_id: str, currency: str) -> tuple[AccountRequest, ...]:
    return (AccountRequest(account_id, currency, metadata={"role": "psp"}, tenant=SYSTEM_TENANT),)


def events(pairs: Sequence[tuple[str, Any]], now: int) -> tuple[EventRow, ...]:
    return tuple(
        EventRow(
            id=new_id("evt"),
            type=kind,
            object_id=row.id,
            payload=_json.encode(payload(kind, row)).decode(),
            created_at=now,
        )
        for kind, row in pairs
    )


def payload(kind: str, row: Any) -> dict[str, Any]:
    """An event's body: the object's public fields, never card data beyond brand/last4;
    a payment or refund settled through a conversion adds its ``settlement`` (as its
    answers show it), one in the merchant's currency is as it always was."""
    body = _payload(kind, row)
    if isinstance(row, PaymentRow) and row.settlement_currency is not None:
        body["settlement"] = {
            "currency": row.settlement_currency,
            "amount": row.settlement_amount,
            "rate": row.fx_rate,
            "mid_rate": row.fx_mid_rate,
        }
    if isinstance(row, RefundRow) and row.settlement_currency is not None:
        body["settlement"] = {"currency": row.settlement_currency, "amount": row.settlement_amount}
    return body


def _payload(kind: str, row: Any) -> dict[str, Any]:
    if isinstance(row, PaymentRow):
        return {
            "type": kind,
            "object": "payment",
            "id": row.id,
            "status": row.status,
            "amount": row.amount,
            "currency": row.currency,
            "merchant_account_id": row.merchant_account_id,
            "amount_captured": row.amount_captured,
            "processor": row.processor,
            "card": None
            if row.card_last4 is None
            else {"brand": row.card_brand, "last4": row.card_last4},
            "failure_code": row.failure_code,
            "cancellation_reason": row.cancel_reason,
        }
    if isinstance(row, RefundRow):
        return {
            "type": kind,
            "object": "refund",
            "id": row.id,
            "payment_id": row.payment_id,
            "status": row.status,
            "amount": row.amount,
            "currency": row.currency,
            "failure_code": row.failure_code,
        }
    assert isinstance(row, PayoutRow)
    return {
        "type": kind,
        "object": "payout",
        "id": row.id,
        "status": row.status,
        "wallet_account_id": row.wallet_account_id,
        "amount": row.amount,
        "currency": row.currency,
        "failure_code": row.failure_code,
    }


# -- checks ----------------------------------------------------------------------------------


def check_amount(amount: int) -> None:
    if not 1 <= amount <= MAX_PAYMENT_AMOUNT:
        raise RequestError(
            _E.INVALID_REQUEST, f"amount must be in 1..{MAX_PAYMENT_AMOUNT:,} minor units"
        )


def check_refundable(row: PaymentRow, amount: int | None) -> int:
    """The amount to refund (all that is left when None), if it may be refunded."""
    left = row.amount_captured - row.amount_refunded - row.amount_refund_pending
    if amount is None:
        amount = left
    if amount > left or amount < 1:
        raise RequestError(
            _E.REFUND_EXCEEDS_CAPTURED,
            f"captured {row.amount_captured}, refunded or being refunded "
            f"{row.amount_refunded + row.amount_refund_pending}: at most {left} more",
        )
    return amount


def in_progress(view: View) -> bool:
    if isinstance(view, PaymentView):
        return view.payment.status == PaymentStatus.PROCESSING.value
    if isinstance(view, RefundView):
        return view.refund.status == RefundStatus.PENDING.value
    return view.payout.status == PayoutStatus.PROCESSING.value


def status_result(attempt: AttemptRow, state: str, *, approved: frozenset[str]) -> ProcessorResult:
    """A status lookup's answer as the outcome of the call it looked up: ``approved``
    states mean done, ``declined`` declined, anything else (failed, not_found, ...) that
    the processor never did it."""
    if state in approved:
        outcome = Outcome.APPROVED
    elif state == "declined":
        outcome = Outcome.DECLINED
    else:
        outcome = Outcome.FAILED
    return ProcessorResult(
        outcome=outcome,
        processor=attempt.processor,
        operation=Operation(attempt.operation),
        reference=attempt.reference,
        error=None if outcome is not Outcome.FAILED else f"status {state}",
        status=state,
    )
