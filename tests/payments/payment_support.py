"""Helpers of the payment-intent tests: a started store with a merchant and a funded
wallet, a service over scripted processors, a Litestar app serving the payment routes,
and the ledger checks every test ends with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar
from litestar.middleware import DefineMiddleware

from api.support import NS, ManualClock
from paycore.api.auth import AuthMiddleware
from paycore.api.problems import EXCEPTION_HANDLERS
from paycore.api.routes.payments import payment_routes
from paycore.config import Settings
from paycore.ledger.model import Account, AccountFlags, AccountRequest, TransferRequest
from paycore.ops.audit import audit_store
from paycore.payments.processors.base import CardDetails
from paycore.payments.service import PaymentService, PaymentView
from paycore.payments.testing import ScriptedConnector
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.store import Store

__all__ = [
    "CARD",
    "NS",
    "ManualClock",
    "account",
    "assert_ledger_clean",
    "open_world",
    "payment_app",
    "payment_client",
    "payment_of",
]

CARD = CardDetails("4242424242424242", 12, 2030, "123")
MERCHANT = "m1"
WALLET = "w1"
BANK = "bank"


async def setup_accounts(store: Store, *, wallet_funds: int = 10_000) -> None:
    """``bank`` (no limits), merchant ``m1``, wallet ``w1`` (no overdraft) funded by the bank,
    and ``eur`` (a EUR account), all USD unless said."""
    results = await store.execute(
        CreateAccounts(
            (
                AccountRequest(BANK, "USD"),
                AccountRequest(MERCHANT, "USD"),
                AccountRequest(WALLET, "USD", flags=AccountFlags(no_overdraft=True)),
                AccountRequest("poor", "USD", flags=AccountFlags(no_overdraft=True)),
                AccountRequest("eur", "EUR"),
            )
        )
    )
    assert all(r.ok for r in results), results
    funded = await store.execute(
        CreateTransfers(
            (
                TransferRequest(
                    "fund-w1",
                    debit_account_id=BANK,
                    credit_account_id=WALLET,
                    amount=wallet_funds,
                    currency="USD",
                ),
            )
        )
    )
    assert funded[0].ok, funded


class World:
    """A started store with the accounts above, a service over scripted processors."""

    def __init__(
        self, store: Store, clock: ManualClock, connectors: Sequence[ScriptedConnector]
    ) -> None:
        self.store = store
        self.clock = clock
        self.connectors = {c.name: c for c in connectors}
        self.service = PaymentService(store, self.connectors, clock=clock)

    def processor(self, name: str) -> ScriptedConnector:
        return self.connectors[name]

    async def account(self, account_id: str) -> Account:
        return await account(self.store, account_id)


@asynccontextmanager
async def open_world(
    store: Store, clock: ManualClock, *names: str, **service: Any
) -> AsyncIterator[World]:
    """Start ``store``, open the accounts, and give a ``World`` with processors ``names``
    (default: ``acq-a``, ``acq-b``); the store is stopped afterwards."""
    await store.start()
    try:
        await setup_accounts(store)
        world = World(store, clock, [ScriptedConnector(n) for n in names or ("acq-a", "acq-b")])
        if service:
            world.service = PaymentService(store, world.connectors, clock=clock, **service)
        yield world
    finally:
        await store.stop()


async def account(store: Store, account_id: str) -> Account:
    found = (await store.get_accounts([account_id])).get(account_id)
    assert found is not None, account_id
    return found


def payment_of(outcome: object) -> PaymentView:
    assert isinstance(outcome, PaymentView), outcome
    return outcome


async def assert_ledger_clean(store: Store) -> None:
    """The audit finds nothing, and money is conserved per currency."""
    report = await audit_store(store)
    assert report.violations == [], report.violations
    for total in report.totals:
        assert total.net_posted == 0, total


def payment_app(
    service: PaymentService, settings: Settings | None = None, writes: Any = None
) -> Litestar:
    """A Litestar app serving only the payment routes (the store is started by the test);
    ``writes``: a ``WriteExecutor`` whose cluster-wide key lock the routes share."""
    return Litestar(
        route_handlers=payment_routes(
            service, settings or Settings(data_dir="unused"), writes=writes
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        # Open mode: every request acts for tenant "default" (as create_app's auth = "open").
        middleware=[DefineMiddleware(AuthMiddleware, keys=None)],
        logging_config=None,
    )


@asynccontextmanager
async def payment_client(
    service: PaymentService, writes: Any = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``payment_app`` in this event loop (the store's): no portal thread."""
    transport = httpx.ASGITransport(app=payment_app(service, writes=writes))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def card_json(number: str = CARD.number, **fields: Any) -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123", **fields}
