"""Payments end to end: the HTTP API over a two-shard embedded ledger, through two real
acquirer simulators (separate processes, over HTTP). A processor that fails falls back
to the other; a processor that times out leaves the payment processing until the
resolver finds it done, charged once; then the whole cluster audits clean."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountFlags, AccountRequest, TransferRequest
from paycore.ops.audit import audit_cluster
from paycore.payments.processors.http_connector import SimulatorConnector
from paycore.payments.service import PaymentService, resolve_processing
from paycore.storage.base import CreateAccounts, CreateTransfers
from payments.fix_acquirer import AcquirerFactory
from payments.payment_support import payment_client

pytestmark = pytest.mark.slow

TIMEOUT_CARD = "4000000000007775"  # done by the simulator, then its answer hangs
SELECTIVE_CARD = "4000000000003337"  # what each simulator does with it is configured
DECLINED_CARD = "4000000000000002"


def _card(number: str = "4242424242424242") -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _pay(amount: int, number: str = "4242424242424242", capture: str = "automatic") -> Any:
    return {"amount": amount, "currency": "USD", "merchant_account_id": "shop",
            "capture": capture, "source": {"card": _card(number)}}  # fmt: skip


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ShardedStore]:
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=2))
    await store.start()
    # The bank on the wallet's shard, so that funding it is not a saga (no relay runs here).
    bank = next(f"bank{i}" for i in range(999) if store.shard_for(f"bank{i}") == (
        store.shard_for("wallet")
    ))  # fmt: skip
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("shop", "USD"),
                AccountRequest(bank, "USD"),
                AccountRequest("wallet", "USD", flags=AccountFlags(no_overdraft=True)),
            )
        )
    )
    funded = await store.execute(
        CreateTransfers((TransferRequest("fund", bank, "wallet", amount=5000, currency="USD"),))
    )
    assert funded[0].ok
    assert not funded[0].in_flight
    yield store
    await store.stop()


async def test_card_payments_through_two_real_simulators(
    cluster: ShardedStore, acquirer: AcquirerFactory
) -> None:
    """Approve, fall back, decline, capture in parts, refund, pay out, and a timeout that
    the resolver settles by a status lookup: every answer right, nothing charged twice."""
    acquirer.start("e2e-a", "e2e-b")
    sim_a = acquirer("e2e-a", selective_card="error")
    sim_b = acquirer("e2e-b")
    connectors = {
        "e2e-a": SimulatorConnector("e2e-a", sim_a.url, timeout=0.5),
        "e2e-b": SimulatorConnector("e2e-b", sim_b.url, timeout=0.5),
    }
    service = PaymentService(cluster, connectors)
    try:
        async with payment_client(service) as c:
            ok = (await c.post("/v1/payments", json=_pay(1000))).json()
            assert (ok["status"], ok["processor"]) == ("succeeded", "e2e-a")

            moved = (await c.post("/v1/payments", json=_pay(700, SELECTIVE_CARD))).json()
            assert (moved["status"], moved["processor"]) == ("succeeded", "e2e-b")
            assert [a["outcome"] for a in moved["attempts"]] == ["failed", "approved"]

            declined = (await c.post("/v1/payments", json=_pay(300, DECLINED_CARD))).json()
            assert (declined["status"], declined["failure_code"]) == ("failed", "card_declined")
            assert declined["attempts"][0]["decline_code"] == "do_not_honor"

            held = (await c.post("/v1/payments", json=_pay(900, capture="manual"))).json()
            assert held["status"] == "requires_capture"
            pid = held["id"]
            part = (await c.post(f"/v1/payments/{pid}/capture", json={"amount": 400})).json()
            assert (part["status"], part["amount_captured"]) == ("requires_capture", 400)
            rest = (await c.post(f"/v1/payments/{pid}/capture")).json()
            assert (rest["status"], rest["amount_captured"]) == ("succeeded", 900)
            refund = (await c.post("/v1/refunds", json={"payment_id": pid, "amount": 250})).json()
            assert refund["status"] == "succeeded"

            payout = {"wallet_account_id": "wallet", "amount": 1200, "currency": "USD",
                      "destination": "GB00BANK0000000001"}  # fmt: skip
            paid = (await c.post("/v1/payouts", json=payout)).json()
            assert paid["status"] == "paid"

            hung = (await c.post("/v1/payments", json=_pay(555, TIMEOUT_CARD))).json()
            assert hung["status"] == "processing"
            (attempt,) = hung["attempts"]
            assert attempt["outcome"] == "ambiguous"
            report = await resolve_processing(cluster, connectors, older_than=0)
            assert report.resolved == [hung["id"]]
            settled = (await c.get(f"/v1/payments/{hung['id']}")).json()
            assert (settled["status"], settled["amount_captured"]) == ("succeeded", 555)
            assert (await resolve_processing(cluster, connectors, older_than=0)).resolved == []

        # The simulator took the timed-out payment once, and was never asked again.
        record = sim_a.operation(attempt["reference"])
        assert (record["status"], record["amount"]) == ("captured", 555)
        shop = (await cluster.get_accounts(["shop"]))["shop"]
        assert shop.balance == 1000 + 700 + 900 - 250 + 555
        wallet = (await cluster.get_accounts(["wallet"]))["wallet"]
        assert (wallet.balance, wallet.debits_pending) == (5000 - 1200, 0)
        audit = await audit_cluster(cluster.shards)
        assert audit.ok, audit.violations
    finally:
        for connector in connectors.values():
            await connector.aclose()
