"""The payment flows' decisions, without a database: a row and a processor's answer (or
the ledger's refusal) give the next row, its transfers, its events and the answer."""

from __future__ import annotations

import json

import msgspec

from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.payments.accounts import psp_account_id, transfer_id
from paycore.payments.flows import holds, outcomes
from paycore.payments.flows.model import PaymentView, PayoutView, RefundView
from paycore.payments.flows.rows import NS, attempt, finished
from paycore.payments.intents import CancelReason, PendingOp
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.payments import AttemptRow, PaymentRow, PayoutRow, RefundRow

NOW = 1_000 * NS
SHARD = "s0"


def _payment(capture: str = "automatic", **changes: object) -> PaymentRow:
    row = PaymentRow(
        id="pay_1",
        merchant_account_id="m1",
        amount=1000,
        currency="USD",
        capture_method=capture,
        status="processing",
        source_type="card",
        processor="acq-a",
        pending_op=PendingOp.AUTHORIZE.value,
        pending_reference="pay_1.a1",
        pending_amount=1000,
        attempt_count=1,
    )
    return msgspec.structs.replace(row, **changes)


def _answer(outcome: Outcome, operation: Operation, reference: str) -> ProcessorResult:
    decline = "insufficient_funds" if outcome is Outcome.DECLINED else None
    error = "timeout" if outcome is Outcome.FAILED else None
    return ProcessorResult(
        outcome, "acq-a", operation, reference, processor_reference="psp-1",
        decline_code=decline, error=error,
    )  # fmt: skip


def _done(parent: str, operation: Operation, outcome: Outcome, seq: int = 1) -> AttemptRow:
    sent = attempt(parent, seq, operation, "acq-a", amount=1000, now=NOW)
    return finished(sent, _answer(outcome, operation, sent.reference), NOW)


def _events(step: outcomes.Step) -> list[tuple[str, str]]:
    return [(e.type, json.loads(e.payload)["status"]) for e in step.write.events]


def test_an_approved_automatic_authorization_succeeds_with_one_posted_transfer() -> None:
    """Automatic capture: succeeded, amount captured, psp -> merchant posted, one event."""
    row, done = _payment(), _done("pay_1", Operation.AUTHORIZE, Outcome.APPROVED)
    result = _answer(Outcome.APPROVED, Operation.AUTHORIZE, done.reference)
    step = outcomes.authorization(SHARD, row, (done,), result, NOW, authorization_seconds=60)
    new = step.write.payment
    assert new is not None
    assert (new.status, new.amount_captured, new.pending_op, new.version) == (
        "succeeded", 1000, None, 2,
    )  # fmt: skip
    (posted,) = step.write.transfers
    psp = psp_account_id(SHARD, "acq-a", "USD")
    assert (posted.id, posted.debit_account_id, posted.credit_account_id, posted.amount) == (
        transfer_id("pay_1", "c1"), psp, "m1", 1000,
    )  # fmt: skip
    assert not posted.flags.pending
    assert _events(step) == [("payment.succeeded", "succeeded")]
    assert step.answer == PaymentView(new, (done,), SHARD)


def test_an_approved_manual_authorization_holds_until_it_expires() -> None:
    """Manual capture: requires_capture with a pending hold that times out with it."""
    row, done = _payment("manual"), _done("pay_1", Operation.AUTHORIZE, Outcome.APPROVED)
    result = _answer(Outcome.APPROVED, Operation.AUTHORIZE, done.reference)
    step = outcomes.authorization(SHARD, row, (done,), result, NOW, authorization_seconds=60)
    new = step.write.payment
    assert new is not None
    (hold,) = step.write.transfers
    assert (new.status, new.hold_id, new.authorized_until) == (
        "requires_capture", hold.id, NOW + 60 * NS,
    )  # fmt: skip
    assert (hold.flags.pending, hold.timeout_seconds) == (True, 60)
    assert _events(step) == [("payment.requires_capture", "requires_capture")]


def test_a_declined_authorization_fails_and_moves_no_money() -> None:
    """Declined: failed with card_declined and the decline code; no transfer."""
    row, done = _payment(), _done("pay_1", Operation.AUTHORIZE, Outcome.DECLINED)
    result = _answer(Outcome.DECLINED, Operation.AUTHORIZE, done.reference)
    step = outcomes.authorization(SHARD, row, (done,), result, NOW, authorization_seconds=60)
    new = step.write.payment
    assert new is not None
    assert (new.status, new.failure_code, new.failure_detail) == (
        "failed", "card_declined", "insufficient_funds",
    )  # fmt: skip
    assert (step.write.transfers, step.write.ensure_accounts) == ((), ())
    assert _events(step) == [("payment.failed", "failed")]


def test_a_ledger_refusal_after_approval_records_a_give_back() -> None:
    """The money was taken but the ledger refused it: a void (manual) is recorded as the
    work in flight, the payment still processing, the refusal kept as its failure."""
    row, done = _payment("manual"), _done("pay_1", Operation.AUTHORIZE, Outcome.APPROVED)
    giving, give = outcomes.give_back(row, done, ErrorCode.ACCOUNT_CLOSED, "closed", NOW)
    assert (give.operation, give.seq, give.reference) == ("void", 2, "pay_1.v2")
    assert (giving.status, giving.pending_op, giving.pending_reference) == (
        "processing", "give_back", "pay_1.v2",
    )  # fmt: skip
    assert (giving.failure_code, giving.authorization_reference) == ("account_closed", "pay_1.a1")


def test_a_partial_capture_keeps_the_rest_on_a_new_hold() -> None:
    """Capturing 400 of 1000 posts the hold for 400 and holds the 600 left anew."""
    row = _payment(
        "manual", status="processing", pending_op="capture", pending_amount=400,
        amount_authorized=1000, hold_id="h-old", authorized_until=NOW + 10 * NS,
        attempt_count=2,
    )  # fmt: skip
    done = _done("pay_1", Operation.CAPTURE, Outcome.APPROVED, seq=2)
    step = outcomes.captured(SHARD, row, (done,), _answer(Outcome.APPROVED, *_ref(done)), NOW)
    assert isinstance(step, outcomes.Step)
    post, hold = step.write.transfers
    assert (post.pending_id, post.amount, post.flags.post_pending) == ("h-old", 400, True)
    assert (hold.amount, hold.timeout_seconds) == (600, 10)
    new = step.write.payment
    assert new is not None
    assert (new.status, new.amount_captured, new.hold_id) == ("requires_capture", 400, hold.id)
    assert _events(step) == [("payment.captured", "requires_capture")]


def test_a_declined_capture_is_answered_with_its_refusal() -> None:
    """A capture the processor declined moves nothing: the refusal is what is answered,
    and the payment goes back to capturable with the attempt recorded."""
    row = _payment("manual", pending_op="capture", pending_amount=400, hold_id="h")
    done = _done("pay_1", Operation.CAPTURE, Outcome.DECLINED, seq=2)
    refusal = outcomes.captured(SHARD, row, (done,), _answer(Outcome.DECLINED, *_ref(done)), NOW)
    assert isinstance(refusal, RequestError)
    assert refusal.code is ErrorCode.CAPTURE_DECLINED
    back = outcomes.back_to_capturable(SHARD, row, done, refusal, NOW)
    assert back.write.payment is not None
    assert (back.write.payment.status, back.write.attempts) == ("requires_capture", (done,))
    assert back.answer is refusal


def test_an_expired_authorization_is_canceled_by_expiring_its_hold() -> None:
    """Expiry ends the authorization: canceled, reason expired, the hold expired (not
    voided); with a part captured before, it succeeds instead."""
    row = _payment("manual", status="requires_capture", hold_id="h", pending_op=None)
    step = outcomes.released(SHARD, row, (), None, reason=CancelReason.EXPIRED, now=NOW)
    assert (step.write.transfers, step.write.expire_holds) == ((), ("h",))
    assert _events(step) == [("payment.canceled", "canceled")]
    part = msgspec.structs.replace(row, amount_captured=300)
    step = outcomes.released(SHARD, part, (), None, reason=CancelReason.EXPIRED, now=NOW)
    assert _events(step) == [("payment.succeeded", "succeeded")]


def test_refunds_and_payouts_post_their_hold_or_void_it() -> None:
    """Approved: the hold posts (refunded, paid); declined: it is voided (failed)."""
    refund = RefundRow(
        id="re_1", payment_id="pay_1", amount=300, currency="USD", status="pending",
        processor="acq-a", hold_id="re-h", attempt_count=1,
    )  # fmt: skip
    done = _done("re_1", Operation.REFUND, Outcome.APPROVED)
    step = holds.refunded(SHARD, refund, done, _answer(Outcome.APPROVED, *_ref(done)), NOW)
    assert isinstance(step.answer, RefundView)
    assert step.answer.refund.status == "succeeded"
    assert step.write.transfers[0].flags.post_pending
    assert step.write.refund_delta is not None
    assert (step.write.refund_delta.pending, step.write.refund_delta.refunded) == (-300, 300)
    payout = PayoutRow(
        id="po_1", wallet_account_id="w1", amount=300, currency="USD", destination="bank",
        status="processing", processor="acq-a", hold_id="po-h", attempt_count=1,
    )  # fmt: skip
    done = _done("po_1", Operation.PAYOUT, Outcome.DECLINED)
    step = holds.paid_out(SHARD, payout, (done,), _answer(Outcome.DECLINED, *_ref(done)), NOW)
    assert isinstance(step.answer, PayoutView)
    assert (step.answer.payout.status, step.answer.payout.failure_code) == (
        "failed", "payout_declined",
    )  # fmt: skip
    assert step.write.transfers[0].flags.void_pending


def test_an_ambiguous_answer_only_records_the_attempt() -> None:
    """AMBIGUOUS: the attempt is written, the work stays as it is and is the answer."""
    row, done = _payment(), _done("pay_1", Operation.AUTHORIZE, Outcome.AMBIGUOUS)
    view = PaymentView(row, (done,), SHARD)
    step = outcomes.unknown(view, done)
    assert (step.write.payment, step.write.attempts, step.answer) == (None, (done,), view)
    assert not isinstance(step.answer, PaycoreError)


def _ref(done: AttemptRow) -> tuple[Operation, str]:
    return Operation(done.operation), done.reference
