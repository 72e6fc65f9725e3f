"""Concurrent refunds never overshoot what a payment captured: the bound (refunds pending
included) is checked in the transaction that inserts the refund, on both backends."""

from __future__ import annotations

import asyncio

import pytest

from backends import AnyStore, StoreFactory
from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.payments.accounts import psp_account_id, transfer_id
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.base import Operation
from paycore.payments.service import NewPayment, RefundView, Reply
from paycore.storage.payments import PaymentWrite, PaymentWriteResult, RefundDelta, RefundRow
from payments.payment_support import CARD, ManualClock, assert_ledger_clean, open_world, payment_of

E = ErrorCode


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(make_store: StoreFactory, clock: ManualClock) -> AnyStore:
    return make_store(clock=clock)


def _refund_write(shard: str, payment_id: str, refund_id: str, amount: int) -> PaymentWrite:
    psp = psp_account_id(shard, "acq-a", "USD")
    hold = TransferRequest(
        id=transfer_id(refund_id, "h"),
        debit_account_id="m1",
        credit_account_id=psp,
        amount=amount,
        currency="USD",
        flags=TransferFlags(pending=True),
    )
    row = RefundRow(refund_id, payment_id, amount, "USD", "pending", "acq-a", hold.id)
    return PaymentWrite(
        shard=shard,
        refund=row,
        refund_delta=RefundDelta(payment_id, pending=amount),
        transfers=(hold,),
    )


async def test_two_refund_writes_racing_past_the_captured_amount_one_wins(
    store: AnyStore, clock: ManualClock
) -> None:
    """Two writes of 60 on a payment that captured 100, sent at once: exactly one is
    written; the other is refused with nothing of it stored (row, counters, hold)."""
    async with open_world(store, clock) as w:
        new = NewPayment(100, "USD", "m1", capture=CaptureMethod.AUTOMATIC, card=CARD)
        p = payment_of((await w.service.create_payment(new)).outcome)
        shard = p.shard
        results: list[PaymentWriteResult] = await asyncio.gather(
            store.execute(_refund_write(shard, p.payment.id, "re_one", 60)),
            store.execute(_refund_write(shard, p.payment.id, "re_two", 60)),
        )
        assert sorted(r.ok for r in results) == [False, True]
        (refused,) = [r for r in results if not r.ok]
        assert refused.code is E.REFUND_EXCEEDS_CAPTURED
        loser = "re_two" if results[0].ok else "re_one"
        reads = w.service.reads(shard)
        assert await reads.refund(loser) is None
        assert await store.get_transfer(transfer_id(loser, "h")) is None
        after = (await w.service.get_payment(p.payment.id)).payment
        assert (after.amount_refund_pending, after.amount_refunded) == (60, 0)
        assert (await w.account("m1")).debits_pending == 60
        await assert_ledger_clean(store)


async def test_many_concurrent_refunds_sum_to_at_most_the_captured_amount(
    store: AnyStore, clock: ManualClock
) -> None:
    """Ten refunds of 30 at once, the processor holding every call until all are in:
    three succeed (90 of 100), seven are refused 409; money and counters agree."""
    async with open_world(store, clock) as w:
        new = NewPayment(100, "USD", "m1", capture=CaptureMethod.AUTOMATIC, card=CARD)
        p = payment_of((await w.service.create_payment(new)).outcome).payment
        acq = w.processor("acq-a")
        acq.gate = asyncio.Event()

        async def refund() -> Reply | RequestError:
            try:
                return await w.service.refund(p.id, 30)
            except RequestError as exc:
                return exc

        tasks = [asyncio.create_task(refund()) for _ in range(10)]
        for _ in range(500):  # until every refund is either held at the gate or refused
            await asyncio.sleep(0.01)
            if sum(t.done() for t in tasks) == 7:
                break
        acq.gate.set()
        outcomes = await asyncio.gather(*tasks)
        refused = [o for o in outcomes if isinstance(o, RequestError)]
        done = [o.outcome for o in outcomes if isinstance(o, Reply)]
        assert len(done) == 3
        assert all(isinstance(v, RefundView) and v.refund.status == "succeeded" for v in done)
        assert len(refused) == 7
        assert {e.code for e in refused} == {E.REFUND_EXCEEDS_CAPTURED}
        after = (await w.service.get_payment(p.id)).payment
        assert (after.amount_refunded, after.amount_refund_pending) == (90, 0)
        assert (await w.account("m1")).balance == 10
        assert acq.charged() == 10
        await assert_ledger_clean(store)


async def test_a_stale_check_is_caught_in_the_transaction(
    store: AnyStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the service's own read is stale (it checked before another refund was
    written), the transaction inserting the refund refuses the overshoot."""
    async with open_world(store, clock) as w:
        new = NewPayment(100, "USD", "m1", capture=CaptureMethod.AUTOMATIC, card=CARD)
        p = payment_of((await w.service.create_payment(new)).outcome).payment
        stale = await w.service.get_payment(p.id)
        assert isinstance((await w.service.refund(p.id, 80)).outcome, RefundView)

        async def stale_read(payment_id: str) -> object:
            return stale

        monkeypatch.setattr(w.service.context, "get_payment", stale_read)
        with pytest.raises(RequestError) as raised:
            await w.service.refund(p.id, 80)
        assert raised.value.code is E.REFUND_EXCEEDS_CAPTURED
        monkeypatch.undo()
        after = (await w.service.get_payment(p.id)).payment
        assert (after.amount_refunded, after.amount_refund_pending) == (80, 0)
        assert w.processor("acq-a").count(Operation.REFUND) == 1
        await assert_ledger_clean(store)
