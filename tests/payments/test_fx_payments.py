"""Card payments in another currency than the merchant account's, over HTTP on four
embedded shards: the processor works in the card's currency, the rate is locked when
the payment is made, each capture (partial ones too) and refund is booked at it as one
linked chain through the FX accounts, each currency sums to zero; bad input and refused
refunds change nothing; a payment in the merchant's currency shows no settlement."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.support import ManualClock, assert_problem
from backends import LedgerDatabase
from paycore.api import create_app
from paycore.api.console.owners import made_by
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import FxConfig, Settings
from paycore.errors import ErrorCode
from paycore.fx import StaticRates, liquidity_account_id, revenue_account_id
from paycore.ledger.model import AccountFlags, AccountRequest, TransferRequest
from paycore.ops.audit import audit_cluster
from paycore.payments.accounts import psp_account_id
from paycore.payments.flows import fx as fx_flow
from paycore.payments.processors.base import Operation
from paycore.payments.service import PaymentService
from paycore.payments.testing import Behaviour, ScriptedConnector
from paycore.reconciliation.service import drift
from paycore.storage.base import CloseAccount, CreateAccounts, CreateTransfers
from paycore_client import models
from payments.payment_support import (
    assert_ledger_clean,
    card_json,
    open_world,
    payment_client,
)

RATES = {"USD/EUR": "0.92", "USD/JPY": "151.5", "JPY/USD": "0.0066"}
E = ErrorCode


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    fx = FxConfig(rates=RATES, spreads={"USD/EUR": 50})
    return Settings(data_dir=str(tmp_path), auth="open", fx=fx, embedded_shards=4)


@pytest.fixture
def store(settings: Settings, clock: ManualClock) -> ShardedStore:
    built = build_store(settings, clock=clock)
    assert isinstance(built, ShardedStore)
    return built


@pytest.fixture
def acquirer() -> ScriptedConnector:
    return ScriptedConnector("acq-a")


@pytest.fixture
def merchant(store: ShardedStore) -> str:
    """A merchant id on a shard that neither FX account of USD or EUR is on."""
    fx_shards = {
        store.shard_for(f(c)) for c in ("USD", "EUR") for f in (liquidity_account_id,
                                                                 revenue_account_id)
    }  # fmt: skip
    assert len(fx_shards) < len(store.shards), "the FX accounts fill every shard"
    return next(f"m{n}" for n in itertools.count() if store.shard_for(f"m{n}") not in fx_shards)


@pytest.fixture
async def client(
    store: ShardedStore, settings: Settings, clock: ManualClock, acquirer: ScriptedConnector,
    merchant: str,
) -> AsyncIterator[AsyncTestClient[Any]]:  # fmt: skip
    service = PaymentService(store, {"acq-a": acquirer}, clock=clock)
    app = create_app(store, settings, start_workers=False, payments=service,
                     fx_rates=StaticRates(RATES), clock=clock)  # fmt: skip
    async with AsyncTestClient(app=app) as c:
        made = await store.execute(
            CreateAccounts(
                (
                    AccountRequest(merchant, "EUR", flags=AccountFlags(no_overdraft=True)),
                    AccountRequest("bank-eur", "EUR"),
                    AccountRequest("m-usd", "USD"),
                    AccountRequest("m-gbp", "GBP"),
                    AccountRequest("m-jpy", "JPY"),
                )
            )
        )
        assert all(r.ok for r in made), made
        yield c


def _pay(merchant: str, amount: int, currency: str = "USD", **more: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "merchant_account_id": merchant,
            "source": {"card": card_json()}, **more}  # fmt: skip


async def _ok(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def _nets(store: ShardedStore, *ids: str) -> dict[str, int]:
    found = await store.get_accounts(list(ids))
    return {i: found[i].credits_posted - found[i].debits_posted for i in ids}


async def _conserved(store: ShardedStore) -> None:
    report = await audit_cluster(store.shards)
    assert report.ok, report.violations
    for total in report.totals:
        assert total.net_posted == 0, total


async def test_a_card_payment_in_dollars_settles_in_euros_through_a_conversion(
    client: AsyncTestClient[Any], store: ShardedStore, acquirer: ScriptedConnector, merchant: str
) -> None:
    """100.00 USD charged on the card: the processor is asked for 100.00 USD, the EUR
    merchant gets 91.54 EUR (0.92 less 50 bps, rounded down), FX revenue 0.46 EUR; the
    processor's USD account, the liquidity accounts and the merchant across shards each
    move in their own currency, which sums to zero."""
    paid = await _ok(await client.post("/v1/payments", json=_pay(merchant, 100_00)))
    assert (paid["status"], paid["amount"], paid["currency"]) == ("succeeded", 100_00, "USD")
    assert paid["amount_captured"] == 100_00
    assert paid["settlement"] == {"currency": "EUR", "amount": 91_54, "rate": "0.9154",
                                  "mid_rate": "0.92"}  # fmt: skip
    assert [(op, ref) for op, ref in acquirer.calls if op is Operation.AUTHORIZE] == [
        (Operation.AUTHORIZE, f"{paid['id']}.a1")
    ]
    assert acquirer.charged() == 100_00
    psp = psp_account_id(store.shard_for(merchant), "acq-a", "USD")
    nets = await _nets(store, merchant, psp, liquidity_account_id("USD"),
                       liquidity_account_id("EUR"), revenue_account_id("EUR"))  # fmt: skip
    assert nets == {merchant: 91_54, psp: -100_00, liquidity_account_id("USD"): 100_00,
                    liquidity_account_id("EUR"): -92_00, revenue_account_id("EUR"): 46}  # fmt: skip
    read = await client.get(f"/v1/payments/{paid['id']}")
    assert (await _ok(read, 200))["settlement"] == paid["settlement"]
    sdk = msgspec.json.decode(read.content, type=models.Payment)  # the SDK reads it
    assert sdk.settlement == models.PaymentSettlement(
        currency="EUR", amount=91_54, rate="0.9154", mid_rate="0.92"
    )
    await _conserved(store)


async def test_a_payment_in_the_merchants_currency_shows_no_settlement(
    client: AsyncTestClient[Any], store: ShardedStore
) -> None:
    """With FX on, a USD card payment to a USD merchant answers as it always did: no
    ``settlement``, no FX account touched."""
    paid = await _ok(await client.post("/v1/payments", json=_pay("m-usd", 10_00)))
    assert "settlement" not in paid
    assert "settlement" not in (await _ok(await client.get(f"/v1/payments/{paid['id']}"), 200))
    assert await store.get_accounts([liquidity_account_id("USD")]) == {}


async def test_partial_captures_and_refunds_reuse_the_locked_rate(
    client: AsyncTestClient[Any], store: ShardedStore, clock: ManualClock, merchant: str
) -> None:
    """A manual payment books nothing until captured; 40.00 then 60.00 USD captured
    (later, whatever the rate source says by then) credit 36.61 and 54.92 EUR at the
    locked rate; a refund of 30.00 USD debits the merchant 27.47 EUR (rounded up);
    each currency sums to zero after every step."""
    body = _pay(merchant, 100_00, capture="manual")
    held = await _ok(await client.post("/v1/payments", json=body))
    assert held["status"] == "requires_capture"
    assert held["settlement"]["amount"] == 0
    assert (await _nets(store, merchant))[merchant] == 0
    clock.advance(3600)
    path = f"/v1/payments/{held['id']}/capture"
    first = await _ok(await client.post(path, json={"amount": 40_00}), 200)
    assert (first["status"], first["settlement"]["amount"]) == ("requires_capture", 36_61)
    await _conserved(store)
    rest = await _ok(await client.post(path, json={}), 200)
    assert (rest["status"], rest["amount_captured"]) == ("succeeded", 100_00)
    assert rest["settlement"]["amount"] == 36_61 + 54_92
    asked = {"payment_id": held["id"], "amount": 30_00}
    refund = await _ok(await client.post("/v1/refunds", json=asked))
    assert refund["status"] == "succeeded"
    assert refund["settlement"] == {"currency": "EUR", "amount": 27_47}
    assert (await _nets(store, merchant))[merchant] == 36_61 + 54_92 - 27_47
    read = await _ok(await client.get(f"/v1/payments/{held['id']}"), 200)
    assert read["amount_refunded"] == 30_00
    assert read["refunds"][0]["settlement"] == refund["settlement"]
    await _conserved(store)
    # The webhooks' events carry the settlement as the answers show it.
    shard = store.shards[store.shard_for(merchant)]
    bodies = [json.loads(e.payload) for e in await shard.payments.events(limit=100)]
    settled = {b["type"]: b["settlement"]["amount"] for b in bodies}
    assert settled == {"payment.requires_capture": 0, "payment.captured": 36_61 + 54_92,
                       "payment.succeeded": 36_61 + 54_92, "refund.succeeded": 27_47}  # fmt: skip
    # The processor's account moved in dollars as its report will: captures less refunds.
    [usd] = [d for d in await drift(store) if d.processor == "acq-a"]
    assert (usd.currency, usd.psp_balance, usd.drift) == ("USD", 100_00 - 30_00, 0)


async def test_a_canceled_authorization_books_nothing(
    client: AsyncTestClient[Any], store: ShardedStore, merchant: str
) -> None:
    """An authorization in another currency holds nothing in the ledger (the merchant's
    amount is known per capture): canceling it voids it at the processor only."""
    body = _pay(merchant, 10_00, capture="manual")
    held = await _ok(await client.post("/v1/payments", json=body))
    canceled = await _ok(await client.post(f"/v1/payments/{held['id']}/cancel", json={}), 200)
    assert (canceled["status"], canceled["settlement"]["amount"]) == ("canceled", 0)
    found = await store.get_accounts([merchant])
    assert (found[merchant].credits_pending, found[merchant].credits_posted) == (0, 0)


async def test_a_full_refund_leaves_the_merchant_nothing_from_rounding(
    client: AsyncTestClient[Any], store: ShardedStore, merchant: str
) -> None:
    """Refunding all of a payment debits the merchant at least what it was credited:
    rounding never leaves it (nor the card holder) with money it did not have."""
    await store.execute(CreateTransfers((TransferRequest("seed", "bank-eur", merchant, 1, "EUR"),)))
    paid = await _ok(await client.post("/v1/payments", json=_pay(merchant, 3)))
    assert paid["settlement"]["amount"] == 2  # 3 cents at 0.9154: 2.7462, rounded down
    refund = await _ok(await client.post("/v1/refunds", json={"payment_id": paid["id"]}))
    assert refund["settlement"]["amount"] == 3  # rounded up
    assert (await _nets(store, merchant))[merchant] == 1 + 2 - 3
    await _conserved(store)


async def test_a_refund_the_merchant_cannot_cover_fails_and_moves_nothing(
    client: AsyncTestClient[Any], store: ShardedStore, acquirer: ScriptedConnector, merchant: str
) -> None:
    """The merchant (no overdraft) spent its euros: the refund's held chain is refused,
    the refund fails with insufficient_funds, the processor is never asked, no balance
    moves and the payment may be refunded again later."""
    paid = await _ok(await client.post("/v1/payments", json=_pay(merchant, 10_00)))
    spent = TransferRequest("spend", merchant, "bank-eur", 9_15, "EUR")
    assert (await store.execute(CreateTransfers((spent,))))[0].ok
    before = await _nets(store, merchant, liquidity_account_id("USD"), liquidity_account_id("EUR"))
    refund = await _ok(await client.post("/v1/refunds", json={"payment_id": paid["id"]}))
    assert (refund["status"], refund["failure_code"]) == ("failed", "insufficient_funds")
    assert not [c for c in acquirer.calls if c[0] is Operation.REFUND]
    assert await _nets(store, *before) == before
    found = await store.get_accounts([merchant])
    assert found[merchant].debits_pending == 0
    read = await _ok(await client.get(f"/v1/payments/{paid['id']}"), 200)
    assert (read["amount_refunded"], read["amount_refund_pending"]) == (0, 0)
    await _conserved(store)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_pay("m-gbp", 10_00), E.FX_PAIR_UNSUPPORTED),
        (_pay("m-usd", 1, currency="JPY"), E.FX_AMOUNT_TOO_SMALL),
        (_pay("m-usd", 10_00, currency="XYZ"), E.INVALID_REQUEST),
    ],
)
async def test_a_payment_that_cannot_be_converted_is_refused_and_changes_nothing(
    client: AsyncTestClient[Any],
    store: ShardedStore,
    acquirer: ScriptedConnector,
    body: dict[str, Any],
    code: ErrorCode,
) -> None:
    """An unquoted pair, an amount worth less than a minor unit of the merchant's
    currency, an unknown currency: refused with their code before the processor is
    asked; no payment exists, no FX account is made."""
    assert_problem(await client.post("/v1/payments", json=body), code)
    assert acquirer.calls == []
    assert (await _ok(await client.get("/v1/payments"), 200))["data"] == []
    assert await store.get_accounts([liquidity_account_id("USD")]) == {}


async def test_a_capture_worth_nothing_in_the_merchants_currency_is_refused(
    client: AsyncTestClient[Any], store: ShardedStore, acquirer: ScriptedConnector, merchant: str
) -> None:
    """Capturing 1 cent (0.9154 of a euro cent) is fx_amount_too_small: the processor
    is not asked, the payment stays capturable, nothing moved."""
    held = await _ok(await client.post("/v1/payments",
                                       json=_pay(merchant, 10_00, capture="manual")))  # fmt: skip
    path = f"/v1/payments/{held['id']}/capture"
    assert_problem(await client.post(path, json={"amount": 1}), E.FX_AMOUNT_TOO_SMALL)
    assert not [c for c in acquirer.calls if c[0] is Operation.CAPTURE]
    read = await _ok(await client.get(f"/v1/payments/{held['id']}"), 200)
    assert (read["status"], read["amount_capturable"]) == ("requires_capture", 10_00)
    assert (await _nets(store, merchant))[merchant] == 0


async def test_a_lost_answer_is_settled_once_by_the_resolver(
    client: AsyncTestClient[Any], store: ShardedStore, acquirer: ScriptedConnector,
    clock: ManualClock, merchant: str,
) -> None:  # fmt: skip
    """The processor charged but its answer was lost: the payment stays processing with
    nothing booked; the resolver finds it captured and books the conversion once (a
    second pass changes nothing)."""
    acquirer.plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
    paid = await _ok(await client.post("/v1/payments", json=_pay(merchant, 20_00)))
    assert paid["status"] == "processing"
    assert (await _nets(store, merchant))[merchant] == 0
    service = PaymentService(store, {"acq-a": acquirer}, clock=clock)
    clock.advance(120)
    for _ in range(2):
        await service.resolve_processing(older_than=60, limit=100, shards=None)
    read = await _ok(await client.get(f"/v1/payments/{paid['id']}"), 200)
    assert read["status"] == "succeeded"
    assert read["settlement"]["amount"] == 18_30  # 2000 * 0.9154 = 1830.8
    assert (await _nets(store, merchant))[merchant] == 18_30
    await _conserved(store)


async def test_a_converted_payment_on_each_backend_replays_and_refunds(
    database: LedgerDatabase, clock: ManualClock
) -> None:
    """On one SQLite or PostgreSQL store: the payment's locked rate and settlement are
    kept (read back as answered), an Idempotency-Key replays the payment byte for byte
    with the conversion booked once, and a keyed refund replays too."""
    async with open_world(database.store(clock=clock), clock, "acq-a") as world:
        world.service.use_fx(StaticRates(RATES), FxConfig(rates=RATES, spreads={"USD/EUR": 50}))
        async with payment_client(world.service) as c:
            body = _pay("eur", 50_00)
            first = await c.post("/v1/payments", json=body, headers={"Idempotency-Key": "p1"})
            again = await c.post("/v1/payments", json=body, headers={"Idempotency-Key": "p1"})
            assert first.status_code == again.status_code == 201, first.text
            assert again.content == first.content
            paid = first.json()
            assert paid["settlement"]["amount"] == 45_77  # 5000 * 0.9154 = 4577
            read = await _ok(await c.get(f"/v1/payments/{paid['id']}"), 200)
            assert read["settlement"] == paid["settlement"]
            asked = {"payment_id": paid["id"], "amount": 10_00}
            refund = await c.post("/v1/refunds", json=asked, headers={"Idempotency-Key": "r1"})
            replay = await c.post("/v1/refunds", json=asked, headers={"Idempotency-Key": "r1"})
            assert replay.content == refund.content
            assert refund.json()["settlement"] == {"currency": "EUR", "amount": 9_16}
        eur = await world.account("eur")
        assert eur.credits_posted - eur.debits_posted == 45_77 - 9_16
        assert world.processor("acq-a").charged() == 50_00 - 10_00
        await assert_ledger_clean(world.store)


@pytest.mark.parametrize(
    ("transfer_id", "owner"),
    [
        ("fx.pay_0123.c1.buy", ("payment", "pay_0123")),
        ("fx.re_0123.h.sell", ("refund", "re_0123")),
        ("pm.pay_0123.h1", ("payment", "pay_0123")),
        ("fx.fxq_0123.sell", (None, None)),  # a conversion of a quote: a client's own
        ("t1", (None, None)),
    ],
)
def test_the_console_names_the_payment_or_refund_of_a_conversion_chain(
    transfer_id: str, owner: tuple[str | None, str | None]
) -> None:
    """A settlement chain's transfers are attributed to their payment or refund."""
    assert made_by(transfer_id) == owner


async def test_a_refund_the_resolver_failed_while_its_request_stalled_is_not_sent(
    client: AsyncTestClient[Any],
    store: ShardedStore,
    *,
    acquirer: ScriptedConnector,
    clock: ManualClock,
    merchant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refund request stalls between recording the refund and holding the merchant's
    money, long enough for the resolver to find nothing at the processor and fail it:
    the request then releases its hold and never asks the processor to refund."""
    paid = await _ok(await client.post("/v1/payments", json=_pay(merchant, 10_00)))
    resolver = PaymentService(store, {"acq-a": acquirer}, clock=clock)
    real = fx_flow.book

    async def stalled(ctx: Any, shard: str, row: Any, items: Any) -> Any:
        if items[0].id.endswith(".h.buy"):  # the refund's hold: the request stalls here
            clock.advance(120)
            report = await resolver.resolve_processing(older_than=60, limit=100, shards=None)
            assert len(report.resolved) == 1, report
        return await real(ctx, shard, row, items)

    monkeypatch.setattr(fx_flow, "book", stalled)
    asked = {"payment_id": paid["id"], "amount": 5_00}  # 4.58 EUR of the merchant's 9.15
    refund = await _ok(await client.post("/v1/refunds", json=asked))
    assert refund["status"] == "failed"
    assert not [c for c in acquirer.calls if c[0] is Operation.REFUND]
    assert acquirer.charged() == 10_00
    found = await store.get_accounts([merchant])
    assert (found[merchant].debits_pending, found[merchant].debits_posted) == (0, 0)
    await _conserved(store)


async def test_a_charge_the_conversion_refuses_is_given_back(
    client: AsyncTestClient[Any],
    store: ShardedStore,
    acquirer: ScriptedConnector,
    merchant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The merchant's account closes while the card is being charged: the conversion's
    chain is refused (account_closed), the charge is refunded at the processor, the
    payment fails with that reason and no currency moved."""
    authorize = acquirer.authorize

    async def closing(request: Any) -> Any:
        closed = await store.execute(CloseAccount(merchant))
        assert closed.ok, closed
        return await authorize(request)

    monkeypatch.setattr(acquirer, "authorize", closing)
    paid = await _ok(await client.post("/v1/payments", json=_pay(merchant, 10_00)))
    assert (paid["status"], paid["failure_code"]) == ("failed", "account_closed")
    assert acquirer.charged() == 0
    assert [op for op, _ in acquirer.calls if op is Operation.REFUND] == [Operation.REFUND]
    nets = await _nets(store, merchant, liquidity_account_id("USD"), liquidity_account_id("EUR"))
    assert set(nets.values()) == {0}
    await _conserved(store)
