"""Helpers of the reconciliation tests: a two-shard embedded store whose payments go
through an in-process acquirer simulator, so its settlement reports are the simulator's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest
from paycore.ops.audit import audit_cluster
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.base import CardDetails
from paycore.payments.processors.http_connector import SimulatorConnector
from paycore.payments.processors.simulator.app import Simulator
from paycore.payments.processors.simulator.config import SimulatorConfig
from paycore.payments.processors.simulator.settlement import SettlementAnomalies
from paycore.payments.processors.simulator.transport import SimulatorTransport
from paycore.payments.service import NewPayment, PaymentService, PaymentView
from paycore.storage.base import CreateAccounts
from paycore.storage.store import Store

__all__ = ["PROCESSOR", "Shop", "assert_ledger_clean", "balances", "open_shop"]

PROCESSOR = "sim-r"
CARD = CardDetails("4242424242424242", 12, 2040, "123")
MERCHANTS = ("shop-1", "shop-2", "shop-3", "shop-4")


@dataclass
class Shop:
    store: Store
    service: PaymentService
    simulator: Simulator
    settings: Settings

    @property
    def today(self) -> date:
        return datetime.now(UTC).date()

    async def pay(
        self,
        amount: int,
        merchant: str = MERCHANTS[0],
        currency: str = "USD",
        capture: CaptureMethod = CaptureMethod.AUTOMATIC,
    ) -> str:
        reply = await self.service.create_payment(
            NewPayment(amount, currency, merchant, capture, card=CARD)
        )
        view = reply.outcome
        assert isinstance(view, PaymentView), reply
        wanted = "succeeded" if capture is CaptureMethod.AUTOMATIC else "requires_capture"
        assert view.payment.status == wanted, reply
        return view.payment.id

    async def capture(self, payment_id: str, amount: int) -> None:
        reply = await self.service.capture(payment_id, amount)
        assert isinstance(reply.outcome, PaymentView), reply

    async def refund(self, payment_id: str, amount: int) -> None:
        reply = await self.service.refund(payment_id, amount)
        refund = getattr(reply.outcome, "refund", None)
        assert getattr(refund, "status", None) == "succeeded", reply

    def report(self, day: date, anomalies: SettlementAnomalies | None = None) -> str:
        return self.simulator.settlement(day, anomalies or SettlementAnomalies())


@asynccontextmanager
async def open_shop(tmp_path: Path, *, shards: int = 2) -> AsyncIterator[Shop]:
    settings = Settings(data_dir=str(tmp_path / "data"), embedded_shards=shards)
    store = build_store(settings)
    await store.start()
    try:
        made = await store.execute(
            CreateAccounts(
                (
                    *(AccountRequest(m, "USD") for m in MERCHANTS),
                    AccountRequest("shop-eur", "EUR"),
                )
            )
        )
        assert all(r.ok for r in made), made
        simulator = Simulator(PROCESSOR, SimulatorConfig())
        connector = SimulatorConnector(
            PROCESSOR, f"http://{PROCESSOR}", transport=SimulatorTransport(simulator)
        )
        service = PaymentService(store, {PROCESSOR: connector})
        try:
            yield Shop(store, service, simulator, settings)
        finally:
            await connector.aclose()
    finally:
        await store.stop()


async def balances(store: Store) -> dict[str, tuple[int, int]]:
    """(debits_posted, credits_posted) of every account."""
    out: dict[str, tuple[int, int]] = {}
    for shard in store.shard_stores.values():
        for row in await shard.reconciliation._fetch(
            "SELECT id, debits_posted, credits_posted FROM accounts", ()
        ):
            out[row[0]] = (int(row[1]), int(row[2]))
    return out


async def assert_ledger_clean(store: Store) -> None:
    """The audit finds nothing, and money is conserved per currency."""
    report = await audit_cluster(store.shard_stores)
    assert report.ok, report.violations
    for total in report.totals:
        assert total.net_posted == 0, total
