"""What was in flight when an answer was lost (AMBIGUOUS) or the process died stays
``processing``; the resolver asks the processor by reference and records the end, and
nothing is ever charged twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends import AnyStore, StoreFactory
from paycore.errors import FencedError, UnavailableError
from paycore.payments.accounts import psp_account_id
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.base import Operation
from paycore.payments.service import (
    NewPayment,
    NewPayout,
    PayoutView,
    RefundView,
    resolve_processing,
)
from paycore.payments.testing import Behaviour
from paycore.storage.base import AdvanceFence, Fence
from payments.payment_support import CARD, ManualClock, assert_ledger_clean, open_world, payment_of


def card_payment(amount: int = 1000, capture: str = "automatic") -> NewPayment:
    return NewPayment(amount, "USD", "m1", capture=CaptureMethod(capture), card=CARD)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(make_store: StoreFactory, clock: ManualClock) -> AnyStore:
    return make_store(clock=clock)


async def test_an_ambiguous_authorization_is_resolved_by_status_once(
    store: AnyStore, clock: ManualClock
) -> None:
    """Done at the processor, answer lost: processing; the resolver (only once the payment
    is old enough) finds it authorized and records it; one charge, one authorization."""
    async with open_world(store, clock) as w:
        acq = w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
        view = payment_of((await w.service.create_payment(card_payment(1000))).outcome)
        p = view.payment
        assert (p.status, p.pending_op) == ("processing", "authorize")
        assert [a.outcome for a in view.attempts] == ["ambiguous"]
        assert w.processor("acq-b").calls == []  # never sent elsewhere
        assert (await w.account("m1")).credits_posted == 0

        early = await resolve_processing(store, w.connectors, older_than=60, clock=clock)
        assert early.resolved == []
        assert acq.count(Operation.STATUS) == 0
        clock.advance(61)
        report = await resolve_processing(store, w.connectors, older_than=60, clock=clock)
        assert report.resolved == [p.id]
        done = (await w.service.get_payment(p.id)).payment
        assert (done.status, done.amount_captured) == ("succeeded", 1000)
        assert (await w.account("m1")).credits_posted == 1000
        assert acq.charged() == 1000
        assert acq.count(Operation.AUTHORIZE) == 1
        again = await resolve_processing(store, w.connectors, older_than=60, clock=clock)
        assert again.resolved == []
        kinds = [e.type for e in await w.service.reads(view.shard).events()]
        assert kinds == ["payment.succeeded"]
        await assert_ledger_clean(store)


async def test_a_lost_authorization_is_resolved_as_failed(
    store: AnyStore, clock: ManualClock
) -> None:
    """Never arrived (status not_found): failed, no money anywhere."""
    async with open_world(store, clock) as w:
        w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.LOST)
        p = payment_of((await w.service.create_payment(card_payment())).outcome).payment
        assert p.status == "processing"
        clock.advance(120)
        report = await resolve_processing(store, w.connectors, clock=clock)
        assert report.resolved == [p.id]
        done = (await w.service.get_payment(p.id)).payment
        assert (done.status, done.failure_code) == ("failed", "processor_unavailable")
        assert w.processor("acq-a").charged() == 0
        await assert_ledger_clean(store)


async def test_a_crash_after_the_call_is_resolved_without_a_second_charge(
    store: AnyStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processor approved, then the shard failed before the outcome was recorded:
    the request fails (503), the payment stays processing, the resolver records the
    approval; the processor is asked for the status, never to authorize again."""
    async with open_world(store, clock) as w:
        write = w.service.context.write
        writes = 0

        async def second_write_fails(command: Any) -> Any:
            nonlocal writes
            writes += 1
            if writes == 2:
                raise UnavailableError("shard down between the call and its record")
            return await write(command)

        monkeypatch.setattr(w.service.context, "write", second_write_fails)
        with pytest.raises(UnavailableError):
            await w.service.create_payment(card_payment(1000, "manual"))
        monkeypatch.undo()
        (p,) = await w.service.reads(w.store.name).payments_in("processing", 2**62, 10)
        clock.advance(120)
        await resolve_processing(store, w.connectors, clock=clock)
        done = (await w.service.get_payment(p.id)).payment
        assert (done.status, done.amount_authorized) == ("requires_capture", 1000)
        assert (await w.account("m1")).credits_pending == 1000
        assert w.processor("acq-a").count(Operation.AUTHORIZE) == 1
        await assert_ledger_clean(store)


async def test_a_crash_before_the_call_is_resolved_as_failed(
    store: AnyStore, clock: ManualClock
) -> None:
    """The process died with the call not made (the request cancelled while it waits):
    the attempt has no outcome; the processor never saw it; the resolver fails it."""
    async with open_world(store, clock) as w:
        acq = w.processor("acq-a")
        acq.gate = asyncio.Event()
        task = asyncio.create_task(w.service.create_payment(card_payment()))
        for _ in range(500):  # until tx1 committed and the call waits at the gate
            await asyncio.sleep(0.01)
            if await w.service.reads(w.store.name).payments_in("processing", 2**62, 10):
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        acq.gate = None
        (p,) = await w.service.reads(w.store.name).payments_in("processing", 2**62, 10)
        attempts = await w.service.reads(w.store.name).attempts(p.id)
        assert [a.outcome for a in attempts] == [None]
        clock.advance(120)
        assert (await resolve_processing(store, w.connectors, clock=clock)).resolved == [p.id]
        assert (await w.service.get_payment(p.id)).payment.status == "failed"
        assert acq.charged() == 0


async def test_an_automatic_payment_found_only_authorized_is_captured(
    store: AnyStore, clock: ManualClock
) -> None:
    """The processor kept the authorization but not the capture: the resolver captures it
    (by a derived reference, idempotent) and records the payment succeeded."""
    async with open_world(store, clock) as w:
        acq = w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
        p = payment_of((await w.service.create_payment(card_payment(900))).outcome).payment
        acq.book[p.pending_reference or ""].captured = 0  # only authorized over there
        clock.advance(120)
        await resolve_processing(store, w.connectors, clock=clock)
        assert (await w.service.get_payment(p.id)).payment.status == "succeeded"
        assert acq.charged() == 900
        await assert_ledger_clean(store)


async def test_ambiguous_capture_and_lost_capture(store: AnyStore, clock: ManualClock) -> None:
    """A capture whose answer was lost is found captured; one that never arrived goes
    back to requires_capture, and may be captured again."""
    async with open_world(store, clock) as w:
        acq = w.processor("acq-a")
        a = payment_of((await w.service.create_payment(card_payment(500, "manual"))).outcome)
        b = payment_of((await w.service.create_payment(card_payment(700, "manual"))).outcome)
        acq.plan(Operation.CAPTURE, Behaviour.AMBIGUOUS, Behaviour.LOST)
        ca = payment_of((await w.service.capture(a.payment.id, 200)).outcome)
        cb = payment_of((await w.service.capture(b.payment.id)).outcome)
        assert (ca.payment.status, cb.payment.status) == ("processing", "processing")
        clock.advance(120)
        report = await resolve_processing(store, w.connectors, clock=clock)
        assert sorted(report.resolved) == sorted([a.payment.id, b.payment.id])
        ra = (await w.service.get_payment(a.payment.id)).payment
        rb = (await w.service.get_payment(b.payment.id)).payment
        assert (ra.status, ra.amount_captured) == ("requires_capture", 200)
        assert (rb.status, rb.amount_captured) == ("requires_capture", 0)
        assert acq.charged() == 200
        assert (await w.account("m1")).credits_posted == 200
        again = payment_of((await w.service.capture(b.payment.id)).outcome).payment
        assert (again.status, again.amount_captured) == ("succeeded", 700)
        await assert_ledger_clean(store)


async def test_an_ambiguous_void_is_resolved_as_canceled(
    store: AnyStore, clock: ManualClock
) -> None:
    """A void whose answer was lost: the processor says voided; canceled, hold released."""
    async with open_world(store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(500, "manual"))).outcome)
        w.processor("acq-a").plan(Operation.VOID, Behaviour.AMBIGUOUS)
        assert payment_of((await w.service.cancel(p.payment.id)).outcome).payment.status == (
            "processing"
        )
        clock.advance(120)
        await resolve_processing(store, w.connectors, clock=clock)
        done = (await w.service.get_payment(p.payment.id)).payment
        assert (done.status, done.cancel_reason) == ("canceled", "requested")
        assert (await w.account("m1")).credits_pending == 0
        await assert_ledger_clean(store)


async def test_ambiguous_refund_and_payout_are_resolved(
    store: AnyStore, clock: ManualClock
) -> None:
    """A refund and a payout whose answers were lost end as the processor says."""
    async with open_world(store, clock) as w:
        acq = w.processor("acq-a")
        p = payment_of((await w.service.create_payment(card_payment(1000))).outcome).payment
        acq.plan(Operation.REFUND, Behaviour.AMBIGUOUS)
        acq.plan(Operation.PAYOUT, Behaviour.LOST)
        refund = (await w.service.refund(p.id, 400)).outcome
        payout = (await w.service.payout(NewPayout("w1", 3000, "USD", "GB00BANK000001"))).outcome
        assert isinstance(refund, RefundView)
        assert isinstance(payout, PayoutView)
        assert (refund.refund.status, payout.payout.status) == ("pending", "processing")
        held = (await w.service.get_payment(p.id)).payment
        assert held.amount_refund_pending == 400
        clock.advance(120)
        report = await resolve_processing(store, w.connectors, clock=clock)
        assert sorted(report.resolved) == sorted([refund.refund.id, payout.payout.id])
        r = await w.service.get_refund(refund.refund.id)
        o = await w.service.get_payout(payout.payout.id)
        assert r.refund.status == "succeeded"
        assert (o.payout.status, o.payout.failure_code) == ("failed", "processor_unavailable")
        after = (await w.service.get_payment(p.id)).payment
        assert (after.amount_refunded, after.amount_refund_pending) == (400, 0)
        assert acq.charged() == 600
        wallet = await w.account("w1")
        assert (wallet.balance, wallet.debits_pending) == (10_000, 0)
        psp = await w.account(psp_account_id(w.store.name, "acq-a", "USD"))
        assert psp.balance == -600
        await assert_ledger_clean(store)


async def test_a_status_lookup_that_fails_leaves_it_for_later(
    store: AnyStore, clock: ManualClock
) -> None:
    """The processor cannot answer the lookup: the payment stays processing until it can."""
    async with open_world(store, clock) as w:
        acq = w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
        p = payment_of((await w.service.create_payment(card_payment())).outcome).payment
        acq.plan(Operation.STATUS, Behaviour.FAIL)
        clock.advance(120)
        report = await resolve_processing(store, w.connectors, clock=clock)
        assert (report.resolved, report.still_open) == ([], [p.id])
        assert (await w.service.get_payment(p.id)).payment.status == "processing"
        report = await resolve_processing(store, w.connectors, clock=clock)
        assert report.resolved == [p.id]


async def test_a_deposed_resolver_writes_nothing(store: AnyStore, clock: ManualClock) -> None:
    """A resolver whose fencing token is older than the newest seen is refused."""
    async with open_world(store, clock) as w:
        w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
        p = payment_of((await w.service.create_payment(card_payment())).outcome).payment
        await store.execute(AdvanceFence(Fence("leader:payments:shard-0", 7)))
        clock.advance(120)
        with pytest.raises(FencedError):
            await resolve_processing(
                store, w.connectors, clock=clock, fence=Fence("leader:payments:shard-0", 6)
            )
        assert (await w.service.get_payment(p.id)).payment.status == "processing"
        report = await resolve_processing(
            store, w.connectors, clock=clock, fence=Fence("leader:payments:shard-0", 7)
        )
        assert report.resolved == [p.id]
