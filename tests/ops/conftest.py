"""Fixtures of the ops tests: a ledger with every kind of history, a clocked store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backends import AnyStore, StoreFactory
from clocks import ManualClock
from ops.support import NS, LedgerBuilder, post, transfer, void

Clock = ManualClock  # the ops tests' name for it


@pytest.fixture
def ledger() -> LedgerBuilder:
    """Funding, two no-overdraft wallets (one with history), a credit-limited account and a
    history merchant, with plain transfers, balancing, and holds posted in full and in
    part, voided, expired, and one still pending."""
    b = LedgerBuilder()
    b.open("bank")
    b.open("alice", no_overdraft=True, history=True)
    b.open("bob", no_overdraft=True)
    b.open("carol", credit_limit=500)
    b.open("shop", no_overdraft=True, history=True)
    b.open("eur-bank", "EUR")
    b.open("eur-wallet", "EUR", no_overdraft=True)
    b.ok(
        transfer("fund-a", "bank", "alice", 10_000),
        transfer("fund-b", "bank", "bob", 5_000),
        transfer("fund-e", "eur-bank", "eur-wallet", 700),
        transfer("pay-1", "alice", "shop", 1_200),
        transfer("p2p-1", "bob", "alice", 300),
        transfer("credit-1", "carol", "shop", 400),
        transfer("h-full", "alice", "shop", 1_000, pending=True, timeout_seconds=3600),
        transfer("h-part", "bob", "shop", 800, pending=True, timeout_seconds=3600),
        transfer("h-void", "alice", "shop", 500, pending=True),
        transfer("h-exp", "alice", "shop", 2_000, pending=True, timeout_seconds=5),
        transfer("h-open", "bob", "shop", 100, pending=True, timeout_seconds=600),
    )
    b.now += NS
    b.ok(post("post-full", "h-full"), post("post-part", "h-part", 300), void("void-1", "h-void"))
    b.now += 10 * NS
    assert b.expire_due() == ["h-exp"]
    b.now += NS
    b.ok(
        transfer("sweep", "alice", "bank", 10**9, balancing=True),
        transfer("eur-pay", "eur-wallet", "eur-bank", 200),
    )
    return b


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(make_store: StoreFactory, clock: Clock) -> AsyncIterator[AnyStore]:
    """A started store of the test's backend on a fresh database, on the test's clock."""
    store = make_store(clock=clock)
    await store.start()
    yield store
    await store.stop()
