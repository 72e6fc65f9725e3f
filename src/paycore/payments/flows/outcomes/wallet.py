"""A wallet payment: its cross-shard transfer's end, or the ledger's refusal, to the row."""

from __future__ import annotations

import msgspec

from paycore.errors import ErrorCode
from paycore.ledger.model import TransferStatus
from paycore.ledger.rules import TransferResult
from paycore.payments.flows.model import PaymentView
from paycore.payments.flows.outcomes.step import Step
from paycore.payments.flows.rows import CLEAR, bump, events
from paycore.payments.intents import PaymentStatus
from paycore.storage.payments import PaymentRow, PaymentWrite

__all__ = ["wallet_refused", "wallet_transferred"]


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
