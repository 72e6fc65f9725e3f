"""What keeps a payment's money right when a client or a processor does the unexpected:
the payments' own ledger holds cannot be posted or voided by a client, processor accounts
cannot pay, a give-back is recorded before it is tried, a failed processor call is
retried rather than replayed, a retried payment replays its first answer, one
Idempotency-Key is one capture across nodes, amounts are bounded, and payments a
processor cannot answer for do not starve the others. Each test began as a review
finding (issue 4). Embedded SQLite, the real API app (``create_app``) over a
``ShardedStore`` where what matters is what a client can reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from paycore.api.app import create_app
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.errors import RequestError
from paycore.ledger.model import AccountRequest
from paycore.locks import open_lock_service
from paycore.locks.testing import RedisServer
from paycore.payments.accounts import psp_account_id
from paycore.payments.processors.base import Operation
from paycore.payments.service import NewPayment, PaymentService, resolve_processing
from paycore.payments.testing import Behaviour, ScriptedConnector
from paycore.storage.base import CloseAccount, CreateAccounts
from payments.payment_support import (
    CARD,
    KEY,
    ManualClock,
    card_json,
    open_world,
    payment_client,
    payment_of,
    setup_accounts,
    two_nodes,
)

BANK_ACCOUNT = "GB00BANK0000000001"


def pay(amount: int = 1000, capture: str = "automatic", **source: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "USD",
        "merchant_account_id": "m1",
        "capture": capture,
        "source": source or {"card": card_json()},
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@dataclass
class App:
    client: AsyncTestClient[Any]
    store: ShardedStore
    service: PaymentService
    connectors: dict[str, ScriptedConnector]

    async def balance(self, account_id: str) -> int:
        found = (await self.store.get_accounts([account_id]))[account_id]
        return found.balance

    async def available(self, account_id: str) -> int:
        found = (await self.store.get_accounts([account_id]))[account_id]
        return found.available


@pytest.fixture
async def app(tmp_path: Path, clock: ManualClock) -> AsyncIterator[App]:
    """The whole API (ledger, transfers and payment routes) over one embedded shard, as
    ``paycore serve`` runs it, with scripted processors ``acq-a`` and ``acq-b``."""
    settings = Settings(data_dir=str(tmp_path), embedded_shards=1, auth="open")
    store = build_store(settings, clock=clock)
    assert isinstance(store, ShardedStore)
    connectors = {n: ScriptedConnector(n) for n in ("acq-a", "acq-b")}
    service = PaymentService(store, connectors, clock=clock)
    api = create_app(store, settings, start_workers=False, payments=service)
    async with AsyncTestClient(app=api) as client:
        await setup_accounts(store)
        yield App(client, store, service, connectors)


async def _created(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


# -- CRITICAL: a client resolves the payments' own ledger holds through /v1/transfers ---------


async def test_a_client_cannot_void_a_payouts_hold_and_be_paid_out_twice(
    app: App, clock: ManualClock
) -> None:
    """A payout whose answer was lost (done at the processor) holds the wallet's money as
    ``pm.<po>.h1``. The client voids that hold with ``POST /v1/transfers/{id}/void`` (the
    router refuses ``pm.`` ids only as a transfer's OWN id, never as a ``pending_id``),
    gets its balance back and pays it out again: a 10,000 no-overdraft wallet pays out
    20,000, and the first payout can never be recorded (its hold is voided)."""
    acq = app.connectors["acq-a"].plan(Operation.PAYOUT, Behaviour.AMBIGUOUS)
    body = {"wallet_account_id": "w1", "amount": 10_000, "currency": "USD",
            "destination": BANK_ACCOUNT}  # fmt: skip
    first = await _created(await app.client.post("/v1/payouts", json=body))
    assert first["status"] == "processing"
    assert await app.available("w1") == 0
    await app.client.post(f"/v1/transfers/pm.{first['id']}.h1/void")
    second = await _created(await app.client.post("/v1/payouts", json=body))
    clock.advance(120)
    await resolve_processing(app.store, app.connectors, clock=clock)
    assert acq.paid_out() <= 10_000, (acq.paid_out(), second["status"])


async def test_a_client_cannot_post_an_authorizations_hold_to_keep_uncharged_money(
    app: App,
) -> None:
    """A manual-capture authorization holds ``psp -> merchant`` as ``pm.<pay>.h1``. A batch
    item ``post_pending`` of that id is accepted: the merchant is credited 1,000 that no
    capture ever took from the card; the payment is then canceled (voided at the
    processor), the ledger cannot void the posted hold, and the payment stays
    ``processing`` for ever while the merchant keeps the money."""
    held = await _created(await app.client.post("/v1/payments", json=pay(1000, "manual")))
    hold = f"pm.{held['id']}.h1"
    batch = {"transfers": [{"id": "grab", "pending_id": hold, "post_pending": True}]}
    await app.client.post("/v1/transfers/batch", json=batch)
    await app.client.post(f"/v1/payments/{held['id']}/cancel")
    acq = app.connectors["acq-a"]
    assert acq.charged() == 0
    assert await app.balance("m1") == acq.charged(), "merchant credited without a capture"


# -- CRITICAL: psp: (system) accounts accepted as a payment's source or a payout's wallet ---


async def test_a_payout_cannot_take_a_processor_account_as_its_wallet(app: App) -> None:
    """``psp:`` accounts have no limits; ``POST /v1/payouts`` takes one as the wallet (only
    existence, currency and closed are checked), holds it to the first processor's
    ``psp`` account, and the processor pays 1,000,000 to the client's bank account."""
    app.connectors["acq-a"].plan(Operation.AUTHORIZE, Behaviour.FAIL)  # the card goes to acq-b
    made = await _created(await app.client.post("/v1/payments", json=pay(100)))
    assert made["processor"] == "acq-b"
    victim = psp_account_id(app.store.name, "acq-b", "USD")
    body = {"wallet_account_id": victim, "amount": 1_000_000, "currency": "USD",
            "destination": BANK_ACCOUNT}  # fmt: skip
    response = await app.client.post("/v1/payouts", json=body)
    assert app.connectors["acq-a"].paid_out() == 0, response.text
    assert response.status_code == 422, response.text


async def test_a_wallet_payment_cannot_come_from_a_processor_account(app: App) -> None:
    """The same hole for payments: ``source: {wallet_account_id: "psp:..."}`` moves
    500,000 from the processor's account to the client's merchant account, posted."""
    await _created(await app.client.post("/v1/payments", json=pay(100)))
    psp = psp_account_id(app.store.name, "acq-a", "USD")
    response = await app.client.post("/v1/payments", json=pay(500_000, wallet_account_id=psp))
    assert await app.balance("m1") == 100, response.text
    assert response.status_code == 422, response.text


# -- HIGH: a give-back that fails is forgotten: the card stays charged -------------------------


async def test_a_failed_give_back_is_recorded_and_retried_until_the_card_is_refunded(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Review finding (fixed): the merchant's account closes while the authorization is
    at the processor; tx2 is refused, so the charge must be given back. That refund used
    to be only awaited, never recorded: when it FAILED (5xx before work) the payment said
    ``failed`` and nothing ever gave the 1,000 back. Now the give-back is recorded first;
    the payment stays ``processing`` until the resolver has it done, then fails."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=1), clock=clock)
    async with open_world(store, clock, "acq-a") as w:
        acq = w.processor("acq-a")
        acq.plan(Operation.REFUND, Behaviour.FAIL)
        acq.gate = asyncio.Event()
        task = asyncio.create_task(
            w.service.create_payment(NewPayment(1000, "USD", "m1", card=CARD))
        )
        for _ in range(500):  # until tx1 committed and the call waits at the gate
            await asyncio.sleep(0.01)
            if await w.service.reads(store.name).payments_in("processing", 2**62, 1):
                break
        closed = await store.execute(CloseAccount("m1"))
        assert closed.ok, closed
        acq.gate.set()
        view = payment_of((await task).outcome)
        assert view.payment.status == "processing"  # the give-back failed: not done yet
        assert acq.charged() == 1000
        clock.advance(3600)
        await resolve_processing(store, w.connectors, clock=clock)
        assert acq.charged() == 0, "the card was charged and the payment says failed"
        after = (await w.service.get_payment(view.payment.id)).payment
        assert (after.status, after.failure_code) == ("failed", "account_closed")


# -- MEDIUM: Idempotency-Key replays ------------------------------------------------------------


async def test_a_capture_that_met_a_failed_processor_is_retried_not_replayed(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Contract: 503s are not kept, so a retry with the same key may succeed. A capture
    whose processor call FAILED answers 503 ``processor_unavailable`` but
    ``_record_capture`` stores it under the key (``_answer``, mode save): every retry
    replays the 503 (``Idempotent-Replayed: true``) and never captures."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=1), clock=clock)
    async with open_world(store, clock, "acq-a") as w, payment_client(w.service) as c:
        held = await _created(await c.post("/v1/payments", json=pay(1000, "manual")))
        w.processor("acq-a").plan(Operation.CAPTURE, Behaviour.FAIL)
        path = f"/v1/payments/{held['id']}/capture"
        first = await c.post(path, json={}, headers={KEY: "cap-1"})
        assert first.status_code == 503, first.text
        retry = await c.post(path, json={}, headers={KEY: "cap-1"})
        assert "idempotent-replayed" not in retry.headers
        assert retry.status_code == 200, retry.text
        assert retry.json()["status"] == "succeeded"


async def test_a_retry_after_the_card_expired_replays_the_first_answer(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Review finding (fixed): ``create_payment`` checked the card (``card_expired``
    against today) BEFORE looking the key up, so a payment made on the card's last valid
    day and retried with the same key two days later (next month) answered 422
    ``card_expired`` instead of the stored 201: the client was told it was not charged."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=1), clock=clock)
    # ManualClock starts on 2023-11-14: the card is good until the end of 11/2023.
    body = pay(700, card=card_json(exp_month=11, exp_year=2023))
    async with open_world(store, clock, "acq-a") as w, payment_client(w.service) as c:
        clock.advance(16 * 24 * 3600)  # 2023-11-30: the card's last valid day
        first = await c.post("/v1/payments", json=body, headers={KEY: "k-exp"})
        assert first.status_code == 201, first.text
        clock.advance(2 * 24 * 3600)  # 2023-12-02, within the key's 72 h
        again = await c.post("/v1/payments", json=body, headers={KEY: "k-exp"})
        assert (again.status_code, again.content) == (201, first.content)


async def test_one_capture_key_on_two_nodes_keeps_the_answer_of_the_capture(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Review finding (fixed: payment keys now share the ledger routes' cluster-wide key
    lock, so the twin on node B gets 409 in_use instead of resuming). Two API nodes (two
    services, each with its own ``KeysInFlight``), the key's home on the other shard than
    the payment. Node A claimed the key (a pointer, seq N, written alone on the key's
    shard) and, before its tx1 landed, node B got the retry: it took A for dead and
    RESUMED, captured (200); A's tx1 then lost the compare-and-set and ``_refuse``
    settled the key with 409 ``payment_unexpected_state``: every later retry replayed
    that 409 although the capture happened."""
    locks = [open_lock_service(redis_server.url) for _ in range(2)]
    for service in locks:
        await service.open()
    try:
        async with two_nodes(tmp_path, locks=locks) as nodes:
            payment_id = await nodes.manual_payment(1000)
            path = f"/v1/payments/{payment_id}/capture"
            first = await nodes.stalled(path, {})
            twin = await nodes.b.post(path, json={}, headers={KEY: nodes.key})
            nodes.go.set()
            answer_a = await first
            retry = await nodes.b.post(path, json={}, headers={KEY: nodes.key})
            assert nodes.acquirer.count(Operation.CAPTURE) == 1
            done = (await nodes.service.get_payment(payment_id)).payment
    finally:
        for service in locks:
            await service.aclose()
    assert (done.status, done.amount_captured) == ("succeeded", 1000)
    answers = [(r.status_code, r.json().get("code")) for r in (answer_a, twin, retry)]
    assert answers[1] == (409, "idempotency_key_in_use"), answers
    assert answer_a.status_code == retry.status_code == 200, answers


async def test_one_huge_payment_does_not_break_every_later_payment(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Review finding (fixed): payments took any amount up to 2**63-1. One approved
    automatic payment of 2**63-1 posted that much from the shared ``psp:...:acq-a:USD``
    account; from then on every card payment through acq-a on the shard was charged,
    refused by the ledger (``overflow``), given back and answered ``failed``."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=1), clock=clock)
    async with open_world(store, clock, "acq-a") as w:
        await store.execute(CreateAccounts((AccountRequest("m2", "USD"),)))
        huge = NewPayment(2**63 - 1, "USD", "m1", card=CARD)
        with pytest.raises(RequestError, match="amount must be in"):
            await w.service.create_payment(huge)  # refused before any processor call
        small = NewPayment(5, "USD", "m2", card=CARD)
        view = payment_of((await w.service.create_payment(small)).outcome)
        assert (view.payment.status, view.payment.failure_code) == ("succeeded", None)


async def test_payments_a_processor_cannot_answer_for_do_not_starve_the_others(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Review finding (fixed by keyset paging): ``resolve_processing`` read the ``limit``
    oldest processing rows of a shard and stopped. While acq-a could not answer status
    lookups (down), its ambiguous payments stayed first in line for ever; once there were
    ``limit`` of them, the acq-b payment behind them was never looked at."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=1), clock=clock)
    async with open_world(store, clock) as w:
        acq_a, acq_b = w.processor("acq-a"), w.processor("acq-b")
        for _ in range(3):
            acq_a.plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
            await w.service.create_payment(NewPayment(100, "USD", "m1", card=CARD))
            clock.advance(1)
        acq_a.plan(Operation.AUTHORIZE, Behaviour.FAIL)
        acq_b.plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
        late = payment_of(
            (await w.service.create_payment(NewPayment(7, "USD", "m1", card=CARD))).outcome
        )
        assert (late.payment.processor, late.payment.status) == ("acq-b", "processing")
        clock.advance(120)
        for _ in range(3):  # three passes, acq-a down all along
            acq_a.plan(Operation.STATUS, *[Behaviour.FAIL] * 3)
            await resolve_processing(store, w.connectors, clock=clock, limit=3)
        assert (await w.service.get_payment(late.payment.id)).payment.status == "succeeded"
