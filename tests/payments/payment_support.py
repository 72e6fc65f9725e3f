"""Helpers of the payment-intent tests: a started store with a merchant and a funded
wallet, a service over scripted processors, a Litestar app serving the payment routes,
and the ledger checks every test ends with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar
from litestar.middleware import DefineMiddleware

from api.support import NS, ManualClock, asgi_transport
from paycore.api.auth import AuthMiddleware
from paycore.api.idempotency import WriteExecutor
from paycore.api.problems import EXCEPTION_HANDLERS
from paycore.api.routes.payments import payment_routes
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import Account, AccountFlags, AccountRequest, TransferRequest
from paycore.locks.base import LockService
from paycore.ops.audit import audit_store
from paycore.payments.processors.base import CardDetails
from paycore.payments.service import PaymentService, PaymentView
from paycore.payments.testing import ScriptedConnector
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.payments import PaymentWrite, PaymentWriteResult
from paycore.storage.postgres import PostgresStore
from paycore.storage.sqlite import SQLiteStore
from paycore.storage.store import ShardStore, Store

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
    "shard_of",
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


def shard_of(world: World) -> ShardStore:
    """The world's store as the one shard it is when it came from ``make_store`` (what a
    worker that reads a shard's own tables, such as the event publisher, is given)."""
    assert isinstance(world.store, SQLiteStore | PostgresStore), world.store
    return world.store


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
    transport = asgi_transport(payment_app(service, writes=writes))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def card_json(number: str = CARD.number, **fields: Any) -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123", **fields}


KEY = "Idempotency-Key"


@dataclass
class Nodes:
    """Two API nodes; A stalls after claiming an Idempotency-Key until ``go`` is set (a
    node paused between its claim and its first write)."""

    a: httpx.AsyncClient
    b: httpx.AsyncClient
    service: PaymentService
    acquirer: ScriptedConnector
    key: str  # a key whose own shard is not the payment's (its claim is a write alone)
    claimed: asyncio.Event
    go: asyncio.Event

    async def manual_payment(self, amount: int) -> str:
        body = {
            "amount": amount,
            "currency": "USD",
            "merchant_account_id": "m1",
            "capture": "manual",
            "source": {"card": card_json()},
        }
        answer = await self.b.post("/v1/payments", json=body)
        assert answer.status_code == 201, answer.text
        payment_id: str = answer.json()["id"]
        return payment_id

    async def stalled(self, path: str, body: Any) -> asyncio.Task[httpx.Response]:
        """A's request, once it has claimed the key and stalled."""
        first = asyncio.create_task(self.a.post(path, json=body, headers={KEY: self.key}))
        await asyncio.wait_for(self.claimed.wait(), 5)
        return first


@asynccontextmanager
async def two_nodes(
    tmp_path: Path, *, locks: Sequence[LockService | None] = (None, None)
) -> AsyncIterator[Nodes]:
    """Two payment services on one 2-shard embedded store, each behind its own key
    executor (``locks``: their key-lock services; by default each its own, in-process)."""
    clock = ManualClock()
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=2), clock=clock)
    assert isinstance(store, ShardedStore)
    await store.start()
    try:
        await setup_accounts(store)
        acquirer = ScriptedConnector("acq-a")
        node_a = PaymentService(store, {"acq-a": acquirer}, clock=clock)
        node_b = PaymentService(store, {"acq-a": acquirer}, clock=clock)
        work = store.shard_for("m1")
        key = next(f"k{i}" for i in range(999) if store.shard_for(f"default:k{i}") != work)
        claimed, go = asyncio.Event(), asyncio.Event()
        write = node_a.context.write

        async def pause_after_claim(command: PaymentWrite) -> PaymentWriteResult:
            result = await write(command)
            if command.key is not None and command.key.mode == "claim" and command.payment is None:
                claimed.set()
                await go.wait()  # node A paused between its claim and its first write
            return result

        # A method patched on one instance: mypy checks it as an assignment to the class.
        node_a.context.write = pause_after_claim  # type: ignore[method-assign, assignment]
        writes = [WriteExecutor(store, retention_seconds=3600, locks=lk) for lk in locks]
        async with payment_client(node_a, writes[0]) as a, payment_client(node_b, writes[1]) as b:
            yield Nodes(a, b, node_b, acquirer, key, claimed, go)
    finally:
        await store.stop()
