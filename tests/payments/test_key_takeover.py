"""A capture's key taken over by a retry while its first request was only slow (found by
the chaos run: a node paused longer than the key's lock lease between claiming the key
and recording the capture; the retry on the other node resumed the claimed work). The
capture must happen once: the slow request, when it wakes up and finds the payment
moved, answers with the work its key did, and never plans a second capture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from paycore.api.idempotency import WriteExecutor
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.payments.processors.base import Operation
from paycore.payments.service import PaymentService
from paycore.payments.testing import ScriptedConnector
from payments.payment_support import ManualClock, card_json, payment_client, setup_accounts

KEY = "Idempotency-Key"


@dataclass
class Nodes:
    """Two API nodes whose key locks do not see each other (as when node A's lease ran
    out while it was paused); A stalls after claiming a key until ``go`` is set."""

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
async def two_nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
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

        async def pause_after_claim(command: Any) -> Any:
            result = await write(command)
            if command.key is not None and command.key.mode == "claim" and command.payment is None:
                claimed.set()
                await go.wait()  # node A paused between its claim and its first write
            return result

        node_a.context.write = pause_after_claim  # type: ignore[method-assign]
        writes = [WriteExecutor(store, retention_seconds=3600) for _ in range(2)]
        async with payment_client(node_a, writes[0]) as a, payment_client(node_b, writes[1]) as b:
            yield Nodes(a, b, node_b, acquirer, key, claimed, go)
    finally:
        await store.stop()


@pytest.mark.parametrize("operation", ["capture", "cancel"])
async def test_a_slow_request_whose_key_a_retry_took_over_does_not_act_twice(
    tmp_path: Path, operation: str
) -> None:
    """A claims the key and stalls before its first write; the retry on B resumes the
    claimed work and finishes it (200). When A goes on, it answers with that same work:
    one processor call, the amount once."""
    async with two_nodes(tmp_path) as nodes:
        payment_id = await nodes.manual_payment(1000)
        path = f"/v1/payments/{payment_id}/{operation}"
        body = {"amount": 400} if operation == "capture" else None
        first = await nodes.stalled(path, body)
        taken_over = await nodes.b.post(path, json=body, headers={KEY: nodes.key})
        nodes.go.set()
        slow = await first
        retry = await nodes.b.post(path, json=body, headers={KEY: nodes.key})
        called = Operation.CAPTURE if operation == "capture" else Operation.VOID
        assert nodes.acquirer.count(called) == 1
        done = (await nodes.service.get_payment(payment_id)).payment
    expected = ("requires_capture", 400) if operation == "capture" else ("canceled", 0)
    assert (done.status, done.amount_captured) == expected
    assert taken_over.status_code == slow.status_code == 200, (taken_over.text, slow.text)
    assert slow.json() == taken_over.json() == retry.json()


async def test_another_keys_capture_of_the_same_number_is_not_taken_for_the_claimed_one(
    tmp_path: Path,
) -> None:
    """A claims its key for attempt N and stalls; meanwhile another request (its own key)
    captures, as attempt N. A's claimed work was not done: A captures too (both amounts),
    and a retry of A's key answers with A's capture, not as if the other one were it."""
    async with two_nodes(tmp_path) as nodes:
        payment_id = await nodes.manual_payment(1000)
        path = f"/v1/payments/{payment_id}/capture"
        first = await nodes.stalled(path, {"amount": 400})
        other = await nodes.b.post(path, json={"amount": 300}, headers={KEY: "other"})
        nodes.go.set()
        slow = await first
        retry = await nodes.b.post(path, json={"amount": 400}, headers={KEY: nodes.key})
        assert nodes.acquirer.count(Operation.CAPTURE) == 2
    assert other.status_code == slow.status_code == retry.status_code == 200
    assert slow.json()["amount_captured"] == 700
    assert retry.json() == slow.json()
