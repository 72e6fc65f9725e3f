"""The payment service over a real store (SQLite and PostgreSQL) and scripted processors:
every path moves exactly the money the chart of accounts says, with its state, in one
transaction, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from backends import AnyStore, StoreFactory
from paycore.cluster.topology import build_store
from paycore.config import Settings, load_settings
from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.ledger.model import AccountRequest, TransferRequest, TransferStatus
from paycore.payments.accounts import psp_account_id
from paycore.payments.cards import brand_of, check_card, luhn_valid, tokenize
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.base import CardDetails, Operation
from paycore.payments.resilient import ResilientConnector
from paycore.payments.routing import Router, load_routing
from paycore.payments.service import (
    NewPayment,
    NewPayout,
    PaymentService,
    PayoutView,
    RefundView,
    build_payment_service,
    expire_authorizations,
)
from paycore.payments.testing import Behaviour
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    Idempotency,
    StoredResponse,
)
from paycore.storage.payments import AckPaymentEvents, ClaimPaymentEvents
from payments.payment_support import (
    CARD,
    NS,
    ManualClock,
    World,
    assert_ledger_clean,
    open_world,
    payment_of,
)

E = ErrorCode
DAY = 24 * 3600


def card_payment(amount: int = 1000, capture: str = "automatic", **fields: object) -> NewPayment:
    return NewPayment(
        amount=amount,
        currency="USD",
        merchant_account_id="m1",
        capture=CaptureMethod(capture),
        card=CARD,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world_store(make_store: StoreFactory, clock: ManualClock) -> AnyStore:
    return make_store(clock=clock)


async def _events(world: World, shard: str) -> list[tuple[str, str]]:
    return [(e.type, e.object_id) for e in await world.service.reads(shard).events()]


# -- cards ---------------------------------------------------------------------------------


def test_luhn_and_brands() -> None:
    """Luhn accepts the test numbers and refuses a changed digit; brands by prefix."""
    assert luhn_valid("4242424242424242")
    assert not luhn_valid("4242424242424241")
    assert brand_of("4242424242424242") == "visa"
    assert brand_of("5555555555554444") == "mastercard"
    assert brand_of("378282246310005") == "amex"
    assert brand_of("9999999999999995") == "unknown"


@pytest.mark.parametrize(
    ("card", "code"),
    [
        (CardDetails("4242424242424241", 12, 2030, "123"), E.INVALID_CARD_NUMBER),
        (CardDetails("42424242424", 12, 2030, "123"), E.INVALID_CARD_NUMBER),  # 11 digits
        (CardDetails("4242 4242 4242 4242", 12, 2030, "123"), E.INVALID_CARD_NUMBER),
        (CardDetails("\uff14\uff12" * 7, 12, 2030, "123"), E.INVALID_CARD_NUMBER),
        (CardDetails("4242424242424242", 13, 2030, "123"), E.INVALID_EXPIRY_DATE),
        (CardDetails("4242424242424242", 0, 2030, "123"), E.INVALID_EXPIRY_DATE),
        (CardDetails("4242424242424242", 12, 30, "123"), E.INVALID_EXPIRY_DATE),
        (CardDetails("4242424242424242", 5, 2024, "123"), E.CARD_EXPIRED),
        (CardDetails("4242424242424242", 12, 2030, "12"), E.INVALID_CVC),
        (CardDetails("4242424242424242", 12, 2030, "12a"), E.INVALID_CVC),
    ],
)
def test_bad_cards_are_refused_with_their_code(card: CardDetails, code: ErrorCode) -> None:
    """Each way a card can be wrong has its own stable code, and no detail quotes it."""
    with pytest.raises(RequestError) as raised:
        check_card(card, today=date(2024, 6, 15))
    assert raised.value.code is code
    assert card.number not in raised.value.detail
    assert card.cvc not in raised.value.detail or len(card.cvc) < 3


def test_a_card_expires_after_its_month() -> None:
    """A card is good through the last day of its expiry month."""
    check_card(CardDetails("4242424242424242", 6, 2024, "123"), today=date(2024, 6, 30))
    with pytest.raises(RequestError):
        check_card(CardDetails("4242424242424242", 6, 2024, "123"), today=date(2024, 7, 1))


def test_tokenized_card_keeps_no_number() -> None:
    """A token holds brand, last four and expiry; the card prints masked."""
    token = tokenize(CARD)
    assert (token.brand, token.last4) == ("visa", "4242")
    assert CARD.number not in repr(token)
    assert CARD.number not in repr(CARD)
    assert CARD.cvc not in repr(CARD).replace("2030", "")


# -- card payments ------------------------------------------------------------------------


async def test_automatic_capture_moves_the_amount_to_the_merchant(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """An approved automatic payment: succeeded; psp -> merchant posted, in one go."""
    async with open_world(world_store, clock) as w:
        reply = await w.service.create_payment(card_payment(1000))
        view = payment_of(reply.outcome)
        p = view.payment
        assert p.status == "succeeded"
        assert (p.amount_captured, p.processor, p.card_last4) == (1000, "acq-a", "4242")
        assert [a.outcome for a in view.attempts] == ["approved"]
        psp = psp_account_id(view.shard, "acq-a", "USD")
        merchant, processor = await w.account("m1"), await w.account(psp)
        assert (merchant.credits_posted, merchant.credits_pending) == (1000, 0)
        assert processor.debits_posted == 1000
        assert w.processor("acq-a").charged() == 1000
        assert await _events(w, view.shard) == [("payment.succeeded", p.id)]
        stored = await w.service.get_payment(p.id)
        assert stored.payment == p
        assert stored.attempts == view.attempts
        await assert_ledger_clean(w.store)


async def test_manual_capture_in_parts_then_the_rest(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Authorize 1000 (held), capture 300 (rest held again), then the rest: succeeded."""
    async with open_world(world_store, clock) as w:
        view = payment_of((await w.service.create_payment(card_payment(1000, "manual"))).outcome)
        p = view.payment
        assert p.status == "requires_capture"
        assert p.hold_id is not None
        hold = await w.store.get_transfer(p.hold_id)
        assert hold is not None
        assert hold.status is TransferStatus.PENDING
        assert hold.transfer.timeout_seconds == 7 * DAY
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (1000, 0)

        first = payment_of((await w.service.capture(p.id, 300)).outcome).payment
        assert (first.status, first.amount_captured) == ("requires_capture", 300)
        assert first.hold_id not in (None, p.hold_id)
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (700, 300)

        last = payment_of((await w.service.capture(p.id)).outcome).payment
        assert (last.status, last.amount_captured, last.hold_id) == ("succeeded", 1000, None)
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (0, 1000)
        assert w.processor("acq-a").charged() == 1000
        kinds = [k for k, _ in await _events(w, view.shard)]
        assert kinds == [
            "payment.requires_capture",
            "payment.captured",
            "payment.captured",
            "payment.succeeded",
        ]
        await assert_ledger_clean(w.store)


async def test_a_final_partial_capture_releases_the_rest(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """``final``: capture 400 of 1000 and release 600 at once."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000, "manual"))).outcome)
        done = payment_of((await w.service.capture(p.payment.id, 400, final=True)).outcome)
        assert (done.payment.status, done.payment.amount_captured) == ("succeeded", 400)
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (0, 400)
        await assert_ledger_clean(w.store)


async def test_capture_over_the_capturable_is_refused_and_changes_nothing(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """More than the authorization still holds: 409, no processor call, no change."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000, "manual"))).outcome)
        await w.service.capture(p.payment.id, 600)
        before = await w.service.get_payment(p.payment.id)
        with pytest.raises(RequestError) as raised:
            await w.service.capture(p.payment.id, 401)
        assert raised.value.code is E.AMOUNT_EXCEEDS_CAPTURABLE
        assert await w.service.get_payment(p.payment.id) == before
        assert w.processor("acq-a").count(Operation.CAPTURE) == 1


async def test_cancel_voids_the_hold(world_store: AnyStore, clock: ManualClock) -> None:
    """Cancel an authorization: the processor voids it, the hold is voided, canceled."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000, "manual"))).outcome)
        done = payment_of((await w.service.cancel(p.payment.id)).outcome).payment
        assert (done.status, done.cancel_reason, done.hold_id) == ("canceled", "requested", None)
        assert p.payment.hold_id is not None
        hold = await w.store.get_transfer(p.payment.hold_id)
        assert hold is not None
        assert hold.status is TransferStatus.VOIDED
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (0, 0)
        assert w.processor("acq-a").count(Operation.VOID) == 1
        with pytest.raises(RequestError) as raised:
            await w.service.capture(p.payment.id)
        assert raised.value.code is E.PAYMENT_UNEXPECTED_STATE
        await assert_ledger_clean(w.store)


async def test_cancel_after_a_partial_capture_succeeds_with_that_part(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Captured 250, then canceled: succeeded for 250, the rest released."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000, "manual"))).outcome)
        await w.service.capture(p.payment.id, 250)
        done = payment_of((await w.service.cancel(p.payment.id)).outcome).payment
        assert (done.status, done.amount_captured) == ("succeeded", 250)
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (0, 250)
        await assert_ledger_clean(w.store)


async def test_a_declined_card_fails_without_fallback_or_money(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """DECLINED is final: failed with the decline code, the next processor never asked."""
    async with open_world(world_store, clock) as w:
        w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.DECLINE)
        view = payment_of((await w.service.create_payment(card_payment())).outcome)
        p = view.payment
        assert (p.status, p.failure_code, p.failure_detail) == (
            "failed",
            "card_declined",
            "do_not_honor",
        )
        assert w.processor("acq-b").calls == []
        assert (await w.account("m1")).credits_posted == 0
        assert await _events(w, view.shard) == [("payment.failed", p.id)]
        await assert_ledger_clean(w.store)


async def test_a_failed_processor_falls_back_with_a_new_reference(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """FAILED: the next processor gets a new attempt and reference; the routing is kept."""
    async with open_world(world_store, clock) as w:
        w.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.FAIL)
        view = payment_of((await w.service.create_payment(card_payment(700))).outcome)
        assert (view.payment.status, view.payment.processor) == ("succeeded", "acq-b")
        first, second = view.attempts
        assert (first.processor, first.outcome) == ("acq-a", "failed")
        assert (second.processor, second.outcome) == ("acq-b", "approved")
        assert first.reference != second.reference
        routing = msgspec.json.decode(second.routing or "{}")
        assert routing["candidates"] == ["acq-a", "acq-b"]
        assert routing["position"] == 1
        psp_b = psp_account_id(view.shard, "acq-b", "USD")
        assert (await w.account(psp_b)).debits_posted == 700
        stored = await w.service.get_payment(view.payment.id)
        assert [a.outcome for a in stored.attempts] == ["failed", "approved"]
        await assert_ledger_clean(w.store)


async def test_every_processor_failing_fails_the_payment(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """No processor could take it: failed ``processor_unavailable``, nothing moved."""
    async with open_world(world_store, clock) as w:
        for c in w.connectors.values():
            c.plan(Operation.AUTHORIZE, Behaviour.FAIL)
        p = payment_of((await w.service.create_payment(card_payment())).outcome).payment
        assert (p.status, p.failure_code) == ("failed", "processor_unavailable")
        assert p.attempt_count == 2
        await assert_ledger_clean(w.store)


async def test_refusals_before_any_work_change_nothing(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Unknown or closed merchant, wrong currency, bad card: a stable code, no row."""
    async with open_world(world_store, clock) as w:
        for new, code in [
            (NewPayment(1, "USD", "ghost", card=CARD), E.ACCOUNT_NOT_FOUND),
            (NewPayment(1, "EUR", "m1", card=CARD), E.CURRENCY_MISMATCH),
            (
                NewPayment(1, "USD", "m1", card=CardDetails("4242424242424241", 1, 2030, "1")),
                E.INVALID_CARD_NUMBER,
            ),
            (NewPayment(1, "USD", "m1", wallet_account_id="m1"), E.ACCOUNTS_MUST_BE_DIFFERENT),
            (NewPayment(1, "USD", "m1", wallet_account_id="eur"), E.CURRENCY_MISMATCH),
        ]:
            with pytest.raises(PaycoreError) as raised:
                await w.service.create_payment(new)
            assert raised.value.code is code
        assert w.processor("acq-a").calls == []
        assert await w.service.reads(w.store.name).payments_in("processing", 2**62, 10) == []
        assert await w.service.reads(w.store.name).events() == []


async def test_no_processor_configured_is_unavailable(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """With no processor to route to: 503 ``processor_unavailable``, nothing written."""
    async with open_world(world_store, clock, "acq-a") as w:
        w.service.connectors.clear()
        with pytest.raises(PaycoreError) as raised:
            await w.service.create_payment(card_payment())
        assert raised.value.code is E.PROCESSOR_UNAVAILABLE
        assert raised.value.retryable


async def test_a_declined_capture_leaves_the_authorization(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """The processor declines a capture: 402 ``capture_declined``, still requires_capture."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(500, "manual"))).outcome)
        w.processor("acq-a").plan(Operation.CAPTURE, Behaviour.DECLINE)
        reply = await w.service.capture(p.payment.id)
        assert isinstance(reply.outcome, RequestError)
        assert reply.outcome.code is E.CAPTURE_DECLINED
        again = await w.service.get_payment(p.payment.id)
        assert (again.payment.status, again.payment.amount_captured) == ("requires_capture", 0)
        assert [a.outcome for a in again.attempts] == ["approved", "declined"]
        done = payment_of((await w.service.capture(p.payment.id)).outcome)
        assert done.payment.status == "succeeded"
        await assert_ledger_clean(w.store)


# -- refunds --------------------------------------------------------------------------------


async def test_refunds_in_parts_up_to_the_captured_amount(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Refund 300 then 700 of 1000; one more unit is refused; merchant back to zero."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000))).outcome).payment
        first = (await w.service.refund(p.id, 300)).outcome
        assert isinstance(first, RefundView)
        assert first.refund.status == "succeeded"
        rest = (await w.service.refund(p.id)).outcome
        assert isinstance(rest, RefundView)
        assert rest.refund.amount == 700
        with pytest.raises(RequestError) as raised:
            await w.service.refund(p.id, 1)
        assert raised.value.code is E.REFUND_EXCEEDS_CAPTURED
        after = (await w.service.get_payment(p.id)).payment
        assert (after.amount_refunded, after.amount_refund_pending) == (1000, 0)
        merchant = await w.account("m1")
        assert merchant.balance == 0
        assert w.processor("acq-a").charged() == 0
        await assert_ledger_clean(w.store)


async def test_a_declined_refund_gives_the_amount_back(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Refund declined: failed, its hold voided, the amount refundable again."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000))).outcome).payment
        w.processor("acq-a").plan(Operation.REFUND, Behaviour.DECLINE)
        failed = (await w.service.refund(p.id, 1000)).outcome
        assert isinstance(failed, RefundView)
        assert (failed.refund.status, failed.refund.failure_code) == ("failed", "refund_declined")
        after = (await w.service.get_payment(p.id)).payment
        assert (after.amount_refunded, after.amount_refund_pending) == (0, 0)
        merchant = await w.account("m1")
        assert (merchant.debits_pending, merchant.balance) == (0, 1000)
        again = (await w.service.refund(p.id, 1000)).outcome
        assert isinstance(again, RefundView)
        assert again.refund.status == "succeeded"
        await assert_ledger_clean(w.store)


async def test_a_refund_only_of_what_was_captured(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """An authorization not captured yet has nothing to refund."""
    async with open_world(world_store, clock) as w:
        p = payment_of((await w.service.create_payment(card_payment(1000, "manual"))).outcome)
        with pytest.raises(RequestError) as raised:
            await w.service.refund(p.payment.id, 1)
        assert raised.value.code is E.REFUND_EXCEEDS_CAPTURED
        with pytest.raises(RequestError) as missing:
            await w.service.refund("pay_nope", 1)
        assert missing.value.code is E.PAYMENT_NOT_FOUND


# -- payouts ---------------------------------------------------------------------------------


async def test_a_payout_takes_the_money_out_of_the_wallet(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Payout 4000 of 10000: paid, the wallet debited, the processor's account credited."""
    async with open_world(world_store, clock) as w:
        reply = await w.service.payout(NewPayout("w1", 4000, "USD", "GB00BANK0000000001"))
        view = reply.outcome
        assert isinstance(view, PayoutView)
        assert (view.payout.status, view.payout.processor) == ("paid", "acq-a")
        wallet = await w.account("w1")
        assert (wallet.balance, wallet.debits_pending) == (6000, 0)
        psp = await w.account(psp_account_id(view.shard, "acq-a", "USD"))
        assert psp.credits_posted == 4000
        assert w.processor("acq-a").paid_out() == 4000
        await assert_ledger_clean(w.store)


async def test_a_payout_beyond_the_wallet_fails_without_a_call(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """No overdraft: the payout is recorded failed (insufficient_funds), never sent."""
    async with open_world(world_store, clock) as w:
        view = (await w.service.payout(NewPayout("w1", 10_001, "USD", "GB00BANK000001"))).outcome
        assert isinstance(view, PayoutView)
        assert (view.payout.status, view.payout.failure_code) == ("failed", "insufficient_funds")
        assert w.processor("acq-a").calls == []
        assert (await w.account("w1")).balance == 10_000
        await assert_ledger_clean(w.store)


async def test_a_payout_falls_back_and_moves_its_hold(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """The first processor fails: the hold moves to the second's account, then is paid."""
    async with open_world(world_store, clock) as w:
        w.processor("acq-a").plan(Operation.PAYOUT, Behaviour.FAIL)
        view = (await w.service.payout(NewPayout("w1", 2500, "USD", "GB00BANK000001"))).outcome
        assert isinstance(view, PayoutView)
        assert (view.payout.status, view.payout.processor) == ("paid", "acq-b")
        assert [a.outcome for a in view.attempts] == ["failed", "approved"]
        psp_a = await w.account(psp_account_id(view.shard, "acq-a", "USD"))
        psp_b = await w.account(psp_account_id(view.shard, "acq-b", "USD"))
        assert (psp_a.credits_posted, psp_a.credits_pending) == (0, 0)
        assert psp_b.credits_posted == 2500
        await assert_ledger_clean(w.store)


async def test_a_declined_payout_releases_the_wallet(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Declined: failed with the code, the wallet's hold voided."""
    async with open_world(world_store, clock) as w:
        w.processor("acq-a").plan(Operation.PAYOUT, Behaviour.DECLINE)
        view = (await w.service.payout(NewPayout("w1", 2500, "USD", "GB00BANK000001"))).outcome
        assert isinstance(view, PayoutView)
        assert (view.payout.status, view.payout.decline_code) == ("failed", "do_not_honor")
        wallet = await w.account("w1")
        assert (wallet.balance, wallet.debits_pending) == (10_000, 0)
        await assert_ledger_clean(w.store)


# -- wallets ---------------------------------------------------------------------------------


async def test_wallet_payment_and_top_up(world_store: AnyStore, clock: ManualClock) -> None:
    """A wallet pays a merchant (no processor), and a card tops a wallet up."""
    async with open_world(world_store, clock) as w:
        paid = payment_of(
            (
                await w.service.create_payment(NewPayment(600, "USD", "m1", wallet_account_id="w1"))
            ).outcome
        )
        assert (paid.payment.status, paid.payment.processor) == ("succeeded", None)
        assert (await w.account("w1")).balance == 9400
        assert (await w.account("m1")).balance == 600
        topped = payment_of(
            (await w.service.create_payment(NewPayment(50, "USD", "w1", card=CARD))).outcome
        )
        assert topped.payment.status == "succeeded"
        assert (await w.account("w1")).balance == 9450
        poor = payment_of(
            (
                await w.service.create_payment(NewPayment(1, "USD", "m1", wallet_account_id="poor"))
            ).outcome
        )
        assert (poor.payment.status, poor.payment.failure_code) == ("failed", "insufficient_funds")
        assert w.processor("acq-a").count(Operation.AUTHORIZE) == 1
        await assert_ledger_clean(w.store)


# -- expiry ----------------------------------------------------------------------------------


async def test_an_authorization_expires_into_canceled(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """After its validity, an uncaptured authorization is canceled (expired), its hold
    expired by the ledger; a partly captured one succeeds with what it captured."""
    async with open_world(world_store, clock) as w:
        untouched = payment_of(
            (await w.service.create_payment(card_payment(1000, "manual"))).outcome
        )
        partial = payment_of((await w.service.create_payment(card_payment(800, "manual"))).outcome)
        await w.service.capture(partial.payment.id, 300)
        clock.advance(7 * DAY - 10)
        assert await expire_authorizations(w.store, clock=clock) == []
        clock.advance(20)
        with pytest.raises(RequestError) as raised:
            await w.service.capture(untouched.payment.id)
        assert raised.value.code is E.AUTHORIZATION_EXPIRED
        ended = await expire_authorizations(w.store, clock=clock)
        assert sorted(ended) == sorted([untouched.payment.id, partial.payment.id])
        a = (await w.service.get_payment(untouched.payment.id)).payment
        b = (await w.service.get_payment(partial.payment.id)).payment
        assert (a.status, a.cancel_reason) == ("canceled", "expired")
        assert (b.status, b.amount_captured, b.cancel_reason) == ("succeeded", 300, "expired")
        merchant = await w.account("m1")
        assert (merchant.credits_pending, merchant.credits_posted) == (0, 300)
        assert untouched.payment.hold_id is not None
        hold = await w.store.get_transfer(untouched.payment.hold_id)
        assert hold is not None
        assert hold.status is TransferStatus.EXPIRED
        assert await expire_authorizations(w.store, clock=clock) == []
        await assert_ledger_clean(w.store)


# -- events --------------------------------------------------------------------------------


async def test_events_are_claimed_leased_and_acknowledged(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """Events come out oldest first, each leased to one claimer; a delivered one is done, a
    retried one comes back after its delay; no payload holds the card number."""
    async with open_world(world_store, clock) as w:
        for amount in (100, 200, 300):
            await w.service.create_payment(card_payment(amount))
        shard = w.store.name
        events = await w.service.reads(shard).events()
        assert [e.type for e in events] == ["payment.succeeded"] * 3
        assert all(CARD.number not in e.payload for e in events)
        assert [msgspec.json.decode(e.payload)["amount"] for e in events] == [100, 200, 300]
        claimed = await w.store.execute(ClaimPaymentEvents(shard, "sender-1", 30, limit=2))
        assert [e.id for e in claimed] == [e.id for e in events[:2]]
        assert all(e.attempts == 1 for e in claimed)
        other = await w.store.execute(ClaimPaymentEvents(shard, "sender-2", 30))
        assert [e.id for e in other] == [events[2].id]
        await w.store.execute(
            AckPaymentEvents(
                shard, delivered=(claimed[0].id,), retry=((claimed[1].id, clock.now + 5 * NS),)
            )
        )
        assert await w.store.execute(ClaimPaymentEvents(shard, "sender-3", 30)) == []
        clock.advance(31)
        again = await w.store.execute(ClaimPaymentEvents(shard, "sender-3", 30))
        assert [(e.id, e.attempts) for e in again] == [(claimed[1].id, 2), (events[2].id, 2)]


# -- what payments reserve -------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 2])
async def test_clients_cannot_touch_processor_accounts_or_payment_ids(
    tmp_path: Path, shards: int
) -> None:
    """Through the router (one shard or several), accounts ``psp:...`` and transfer ids
    ``pm....`` are refused to clients, the rest of a batch going through."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=shards))
    await store.start()
    try:
        psp = psp_account_id("shard-0", "acq-a", "USD")
        made = await store.execute(
            CreateAccounts((AccountRequest(psp, "USD"), AccountRequest("x1", "USD")))
        )
        assert [r.code for r in made] == [E.INVALID_REQUEST, None]
        await store.execute(CreateAccounts((AccountRequest("x2", "USD"),)))
        moved = await store.execute(
            CreateTransfers(
                (
                    TransferRequest("t1", psp, "x1", amount=5, currency="USD"),
                    TransferRequest("pm.pay_x.h1", "x1", "x2", amount=5, currency="USD"),
                    TransferRequest("t3", "x2", "x1", amount=5, currency="USD"),
                )
            )
        )
        assert [r.code for r in moved] == [E.INVALID_REQUEST, E.INVALID_REQUEST, None]
        closed = await store.execute(CloseAccount(psp))
        assert closed.code is E.INVALID_REQUEST
        keyed = Idempotency("k", "f", lambda results: StoredResponse(200, repr(
            [r.code for r in results]).encode()))  # fmt: skip
        answer, _ = await store.execute_idempotent(
            CreateTransfers((TransferRequest("t4", "x2", psp, amount=1, currency="USD"),)), keyed
        )
        assert answer.body == b"[<ErrorCode.INVALID_REQUEST: 'invalid_request'>]"
        assert store.shard_for(psp) == "shard-0"
        assert store.shard_for(psp_account_id("shard-1", "acq-a", "USD")) == (
            "shard-1" if shards == 2 else store.shard_map.shard_for("psp:shard-1:acq-a:USD")
        )
    finally:
        await store.stop()


async def test_the_configured_router_orders_the_processors(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """With ``paycore.payments.routing.Router`` (a [routing] table), payments go where it
    says, fall back in its order, and each attempt keeps the rule and strategy."""
    async with open_world(world_store, clock) as w:
        config = load_routing(
            {"default": {"strategy": "priority", "processors": ["acq-b", "acq-a"]}},
            known=w.connectors,
        )
        router = Router(config, registry=CollectorRegistry())
        w.service = PaymentService(w.store, w.connectors, router, clock=clock)
        first = payment_of((await w.service.create_payment(card_payment(100))).outcome)
        assert first.payment.processor == "acq-b"
        w.processor("acq-b").plan(Operation.AUTHORIZE, Behaviour.FAIL)
        second = payment_of((await w.service.create_payment(card_payment(100))).outcome)
        assert [a.processor for a in second.attempts] == ["acq-b", "acq-a"]
        routing = msgspec.json.decode(second.attempts[1].routing or "{}")
        assert (routing["rule"], routing["strategy"], routing["position"]) == (
            "default",
            "priority",
            1,
        )
        assert router.stats.success("acq-b") == (1, 2)


async def test_a_node_builds_its_service_from_the_config_file(tmp_path: Path) -> None:
    """``[[processors]]`` and ``[routing]`` of the TOML file give resilient HTTP connectors
    and the configured router; without ``[routing]`` they are tried in listed order."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        '[[processors]]\nname = "acq-a"\nurl = "http://127.0.0.1:9"\ntimeout_seconds = 2\n'
        "[processors.resilience]\ntimeout = 1.5\n\n"
        '[[processors]]\nname = "acq-b"\nurl = "http://127.0.0.1:9"\n\n'
        '[routing.default]\nstrategy = "priority"\nprocessors = ["acq-b", "acq-a"]\n'
    )
    settings = load_settings(config, env={})
    assert [p.name for p in settings.processors] == ["acq-a", "acq-b"]
    store = build_store(msgspec.structs.replace(settings, data_dir=str(tmp_path)))
    service = build_payment_service(store, settings)
    try:
        assert all(isinstance(c, ResilientConnector) for c in service.connectors.values())
        assert service.connectors["acq-a"].config.timeout == 1.5  # type: ignore[attr-defined]
        assert service.router.route(currency="USD").candidates == ("acq-b", "acq-a")
        plain = build_payment_service(store, msgspec.structs.replace(settings, routing={}))
        assert plain.router.route(currency="USD").candidates == ("acq-a", "acq-b")
        await plain.aclose()
        none = build_payment_service(store, Settings(embedded_processors=False))
        assert none.router.route().candidates == ()
        embedded = build_payment_service(store, Settings())  # the embedded default
        assert embedded.router.route(currency="USD").candidates == ("sim-a", "sim-b")
        await embedded.aclose()
    finally:
        await service.aclose()


async def test_an_approval_the_ledger_refuses_is_given_back(
    world_store: AnyStore, clock: ManualClock
) -> None:
    """The merchant's account closes while the processor authorizes: the authorization is
    voided at the processor (or refunded, when captured) and the payment fails."""
    async with open_world(world_store, clock) as w:
        acq = w.processor("acq-a")
        for capture in ("manual", "automatic"):
            await w.store.execute(CreateAccounts((AccountRequest(f"shop-{capture}", "USD"),)))
            acq.gate = asyncio.Event()
            new = NewPayment(400, "USD", f"shop-{capture}", CaptureMethod(capture), card=CARD)
            task = asyncio.create_task(w.service.create_payment(new))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if await w.service.reads(w.store.name).payments_in("processing", 2**62, 10):
                    break
            closed = await w.store.execute(CloseAccount(f"shop-{capture}"))
            assert closed.ok
            acq.gate.set()
            p = payment_of((await task).outcome).payment
            assert (p.status, p.failure_code) == ("failed", "account_closed")
        assert acq.count(Operation.VOID) == 1
        assert acq.count(Operation.REFUND) == 1
        assert acq.charged() == 0
        await assert_ledger_clean(w.store)
