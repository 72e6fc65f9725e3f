"""Processor outages and timeouts with real ``paycore acquirer-sim`` processes, through the
HTTP API of a node built from its settings (``build_payment_service``: HTTP connectors,
each behind its own breaker, bulkhead, timeout and retry, routed by the ``[routing]``
table), over a two-shard embedded ledger.

- An outage of one processor opens its breaker within the configured window (it fails
  at most a window's worth of calls, then is skipped), and the payments that another
  processor can make keep succeeding (above 99 %: in fact all of them).
- A processor that comes back is let in again through half-open probes: exactly the
  permitted number of probe calls, then the breaker closes and it gets traffic again.
- A processor that hangs leaves payments ``processing`` (never sent elsewhere); the
  resolver ends each as the processor's own record says, and nothing is charged twice:
  one authorization per payment at the processor, one capture's worth in the ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import ProcessorConfig, Settings
from paycore.ledger.model import AccountRequest
from paycore.ops.audit import audit_cluster
from paycore.payments.resilient import ResilientConnector
from paycore.payments.service import PaymentService, build_payment_service
from paycore.resilience import BreakerEvent, EventKind
from paycore.storage.base import CreateAccounts
from payments.fix_acquirer import Acquirer, AcquirerFactory
from payments.payment_support import payment_client

pytestmark = pytest.mark.slow

GOOD_CARDS = ("4242424242424242", "5555555555554444", "4000056655665556")
SELECTIVE_CARD = "4000000000003337"  # fails only where selective_card says so
TIMEOUT_CARD = "4000000000007775"  # done at once, every answer about it hangs
MERCHANTS = ("shop-1", "shop-2", "shop-3")
WORKERS = 8


def _payment(number: str, amount: int, merchant: str, capture: str = "automatic") -> Any:
    return {"amount": amount, "currency": "USD", "merchant_account_id": merchant,
            "capture": capture,
            "source": {"card": {"number": number, "exp_month": 12, "exp_year": 2030,
                                "cvc": "123"}}}  # fmt: skip


def _breaker(**fields: Any) -> dict[str, Any]:
    return {"failure_rate_threshold": 50.0, "slow_call_rate_threshold": 100.0,
            "window_type": "count_based", **fields}  # fmt: skip


def _resilience(breaker: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    return {"timeout": timeout, "breaker": breaker,
            "retry": {"attempts": 2, "wait_initial": 0.01, "wait_max": 0.05,
                      "wait_jitter": 0.01}}  # fmt: skip


@dataclass
class Paid:
    """One payment as the API answered it, with when it started and ended."""

    started: float
    ended: float
    number: str
    body: dict[str, Any]


@dataclass
class Node:
    store: ShardedStore
    service: PaymentService
    client: httpx.AsyncClient
    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str, BreakerEvent]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def transitions(self, processor: str) -> list[tuple[float, str, str, str]]:
        """(at, from, to, trigger) of ``processor``'s breaker."""
        return [
            (at, str(e.previous), str(e.state), str(e.trigger))
            for at, name, e in self.events
            if name == processor and e.kind is EventKind.TRANSITION
        ]

    def counted(self, processor: str, kind: EventKind, start: float, end: float) -> int:
        """Calls of ``kind`` (SUCCESS, FAILURE) the breaker counted in [start, end]."""
        return sum(
            1
            for at, name, e in self.events
            if name == processor and e.kind is kind and e.counted and start <= at <= end
        )

    async def pay(self, numbers: Sequence[str], *, capture: str = "automatic") -> list[Paid]:
        """One payment per card number, ``WORKERS`` at a time."""
        queue = list(enumerate(numbers))
        paid: list[Paid] = []

        async def worker() -> None:
            while queue:
                index, number = queue.pop()
                merchant = MERCHANTS[index % len(MERCHANTS)]
                started = self.now()
                response = await self.client.post(
                    "/v1/payments", json=_payment(number, 1000 + index, merchant, capture)
                )
                assert response.status_code == 201, response.text
                paid.append(Paid(started, self.now(), number, response.json()))

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        return paid


@asynccontextmanager
async def node(
    tmp_path: Path, processors: Sequence[ProcessorConfig], routing: dict[str, Any]
) -> AsyncIterator[Node]:
    """A node's payment service over a fresh two-shard ledger with three merchants."""
    settings = Settings(
        data_dir=str(tmp_path), embedded_shards=2, processors=tuple(processors), routing=routing
    )
    store = build_store(settings)
    await store.start()
    service = build_payment_service(store, settings)
    try:
        created = await store.execute(
            CreateAccounts(tuple(AccountRequest(m, "USD") for m in MERCHANTS))
        )
        assert all(r.ok for r in created), created
        async with payment_client(service) as client:
            world = Node(store, service, client)
            for name, connector in service.connectors.items():
                assert isinstance(connector, ResilientConnector)

                def listener(e: BreakerEvent, n: str = name) -> None:
                    world.events.append((world.now(), n, e))

                connector.breaker.add_listener(listener)
            yield world
    finally:
        await service.aclose()
        await store.stop()


def fresh(acquirer: AcquirerFactory, name: str, **behaviour: Any) -> Acquirer:
    """The simulator ``name`` with that behaviour, its records and counters cleared."""
    sim = acquirer(name, **behaviour)
    httpx.post(f"{sim}/admin/reset", timeout=5.0).raise_for_status()
    return sim


def success_rate(paid: Sequence[Paid]) -> float:
    ok = sum(1 for p in paid if p.body["status"] in ("succeeded", "requires_capture"))
    return 100.0 * ok / len(paid)


async def assert_charged_once(world: Node, sims: dict[str, Acquirer], paid: Sequence[Paid]) -> None:
    """Each payment: one authorization at the processors at most, holding exactly what the
    payment captured; the ledger credited each merchant exactly that; the audit is clean."""
    captured: dict[str, int] = dict.fromkeys(MERCHANTS, 0)
    books = httpx.AsyncClient(timeout=5.0)  # one client: each new one loads the CA bundle
    for p in paid:
        final = (await world.client.get(f"/v1/payments/{p.body['id']}")).json()
        records = [
            (await books.get(f"{sims[a['processor']]}/v1/operations/{a['reference']}")).json()
            for a in final["attempts"]
            if a["operation"] == "authorize"
        ]
        assert all("status" in r for r in records), records  # every processor answered
        taken = [r for r in records if r["status"] in ("authorized", "captured", "voided")]
        assert len(taken) == (0 if final["status"] == "failed" else 1), (final, records)
        assert sum(r.get("captured_amount", 0) for r in taken) == final["amount_captured"]
        captured[final["merchant_account_id"]] += final["amount_captured"]
    await books.aclose()
    accounts = await world.store.get_accounts(list(MERCHANTS))
    assert {m: accounts[m].balance for m in MERCHANTS} == captured
    audit = await audit_cluster(world.store.shards)
    assert audit.ok, audit.violations


async def test_an_outage_opens_the_breaker_within_its_window_and_payments_succeed_elsewhere(
    tmp_path: Path, acquirer: AcquirerFactory
) -> None:
    """out-a (weight 3 of 5) goes down: it fails at most a window of calls, its breaker
    opens, and every payment a live processor can make succeeds; the selective card,
    refused by out-b, is made by out-c."""
    acquirer.start("out-a", "out-b", "out-c")
    sims = {
        "out-a": fresh(acquirer, "out-a", latency={"kind": "fixed", "ms": 2}),
        "out-b": fresh(
            acquirer, "out-b", latency={"kind": "fixed", "ms": 5}, selective_card="error"
        ),
        "out-c": fresh(acquirer, "out-c", latency={"kind": "fixed", "ms": 8}),
    }
    window = 10
    watched = _resilience(_breaker(window_size=window, minimum_calls=window, wait_in_open=30.0))
    # out-b fails the selective card (twice: one retry), a tenth of what it gets: a wide
    # window keeps that from ever adding up to an open breaker in this test.
    steady = _resilience(_breaker(window_size=50, minimum_calls=50))
    processors = [
        ProcessorConfig(n, s.url, timeout_seconds=2.0,
                        resilience=watched if n == "out-a" else steady)
        for n, s in sims.items()
    ]  # fmt: skip
    routing = {"seed": 7, "default": {"strategy": "weighted_round_robin", "processors": [
        {"name": "out-a", "weight": 3}, {"name": "out-b", "weight": 1},
        {"name": "out-c", "weight": 1}]}}  # fmt: skip
    cards = [GOOD_CARDS[i % 3] if i % 10 else SELECTIVE_CARD for i in range(1, 121)]
    async with node(tmp_path, processors, routing) as world:
        before = await world.pay(cards[:40])
        assert success_rate(before) == 100.0
        assert sum(p.body["processor"] == "out-a" for p in before) >= 15  # its share: 3/5

        down = world.now()
        sims["out-a"].configure(down=True)
        during = await world.pay(cards)
        ended = world.now()

        opened = [t for t in world.transitions("out-a") if t[2] == "open"]
        assert len(opened) == 1, world.transitions("out-a")  # no half-open in 30 s
        at, previous, _, trigger = opened[0]
        assert (previous, trigger) == ("closed", "rate_exceeded")
        # Within the window: it opened on at most a window of failed calls, in well under
        # a second (the calls of a handful of payments).
        failed = world.counted("out-a", EventKind.FAILURE, down, at)
        assert window // 2 <= failed <= window, failed
        assert at - down < 1.0, at - down
        # Then it was skipped: what reached it while down is that window plus the calls in
        # flight when it opened (each payment's attempt tries twice).
        assert sims["out-a"].stats()["faults"]["down"] <= window + 2 * WORKERS
        after_open = [p for p in during if p.started > at]
        assert after_open
        assert all(p.body["processor"] != "out-a" for p in after_open)
        assert all(a["processor"] != "out-a" for p in after_open for a in p.body["attempts"])

        # Cards that a live processor accepts kept succeeding: above 99 % (all, here).
        assert success_rate(during) == 100.0
        fell_back = [p for p in during if len(p.body["attempts"]) > 1]
        assert fell_back, "the outage cost no payment a fallback"
        for p in during:
            if p.number == SELECTIVE_CARD:  # out-a down, out-b refuses it: out-c made it
                assert p.body["processor"] == "out-c", p.body["attempts"]
        states = {n: c.snapshot().state.value for n, c in world.service.connectors.items()
                  if isinstance(c, ResilientConnector)}  # fmt: skip
        assert states == {"out-a": "open", "out-b": "closed", "out-c": "closed"}
        assert ended - down < 15.0
        sims["out-a"].configure(down=False)  # to read its records
        await assert_charged_once(world, sims, before + during)


async def test_a_processor_that_comes_back_closes_its_breaker_through_half_open_probes(
    tmp_path: Path, acquirer: AcquirerFactory
) -> None:
    """out-a starts down: its breaker opens, its half-open probes fail while it stays
    down; once it is back, the next half-open round lets exactly the permitted probes
    through, they pass, the breaker closes and out-a gets its share again."""
    acquirer.start("out-a", "out-b")
    sims = {
        "out-a": fresh(acquirer, "out-a", latency={"kind": "fixed", "ms": 2}, down=True),
        "out-b": fresh(acquirer, "out-b", latency={"kind": "fixed", "ms": 4}),
    }
    wait, probes = 0.4, 3
    resilience = _resilience(_breaker(window_size=10, minimum_calls=5, wait_in_open=wait,
                                      permitted_calls_in_half_open=probes))  # fmt: skip
    processors = [ProcessorConfig(n, s.url, timeout_seconds=2.0, resilience=resilience)
                  for n, s in sims.items()]  # fmt: skip
    routing = {"seed": 3, "default": {"strategy": "round_robin", "processors": ["out-a", "out-b"]}}
    async with node(tmp_path, processors, routing) as world:
        paid = await world.pay(GOOD_CARDS * 10)
        while not any(t[3] == "probes_failed" for t in world.transitions("out-a")):
            paid += await world.pay(GOOD_CARDS * 4)  # down: its probes fail, open again
            assert world.now() < 10.0, world.transitions("out-a")
        assert success_rate(paid) == 100.0
        assert all(p.body["processor"] == "out-b" for p in paid)

        up = world.now()
        sims["out-a"].configure(down=False)
        while not any(t[2] == "closed" for t in world.transitions("out-a")):
            paid += await world.pay(GOOD_CARDS * 4)
            assert world.now() - up < 10 * wait, world.transitions("out-a")
        closed_at, previous, _, trigger = world.transitions("out-a")[-1]
        assert (previous, trigger) == ("half_open", "probes_passed")
        # It came back through one half-open round, which began at most one open period
        # after the recovery and let exactly the permitted probes through.
        half_open_at = world.transitions("out-a")[-2][0]
        assert world.transitions("out-a")[-2][1:] == ("open", "half_open", "wait_elapsed")
        assert closed_at - up <= wait + 1.0
        assert world.counted("out-a", EventKind.SUCCESS, half_open_at, closed_at) == probes
        assert world.counted("out-a", EventKind.FAILURE, half_open_at, closed_at) == 0

        after = await world.pay(GOOD_CARDS * 10)
        assert success_rate(paid + after) == 100.0
        served = [p.body["processor"] for p in after]
        assert served.count("out-a") >= len(after) // 3  # round robin again: about half
        kinds = [(t[1], t[2]) for t in world.transitions("out-a")]
        assert kinds[0] == ("closed", "open")
        assert kinds[-2:] == [("open", "half_open"), ("half_open", "closed")]
        await assert_charged_once(world, sims, paid + after)


async def test_timeouts_leave_payments_processing_until_the_resolver_ends_them_charged_once(
    tmp_path: Path, acquirer: AcquirerFactory
) -> None:
    """out-t hangs on 40 % of calls (half of them done before the hang), and always for
    the timeout card. Each hung payment answers processing with one ambiguous attempt,
    never sent to out-u; the resolver (once they are old enough) ends each as out-t's
    record says: captured -> succeeded, authorized -> requires_capture (then captured),
    not found -> failed. One authorization each, one capture's worth in the ledger."""
    acquirer.start("out-t", "out-u")
    sims = {
        "out-t": fresh(
            acquirer,
            "out-t",
            latency={"kind": "fixed", "ms": 1},
            timeout_rate=0.4,
            timeout_done_ratio=0.5,
            hang_seconds=1.5,
        ),
        "out-u": fresh(acquirer, "out-u"),
    }
    never_opens = _breaker(window_size=1000, minimum_calls=1000)
    processors = [ProcessorConfig(n, s.url, timeout_seconds=2.0,
                                  resilience=_resilience(never_opens, timeout=0.3))
                  for n, s in sims.items()]  # fmt: skip
    routing = {"default": {"strategy": "priority", "processors": ["out-t", "out-u"]}}
    async with node(tmp_path, processors, routing) as world:
        auto = await world.pay([*(GOOD_CARDS * 8), TIMEOUT_CARD])
        manual = await world.pay(GOOD_CARDS * 4, capture="manual")
        paid = auto + manual
        hung = [p for p in paid if p.body["status"] == "processing"]
        assert len(hung) >= 3, [p.body["status"] for p in paid]
        assert any(p.number == TIMEOUT_CARD for p in hung)
        for p in paid:
            (attempt,) = p.body["attempts"]  # never retried, never sent elsewhere
            assert attempt["processor"] == "out-t"
            if p in hung:
                assert attempt["outcome"] == "ambiguous"
                assert p.body["amount_captured"] == 0
        assert sims["out-u"].stats()["records"] == 0
        # Once each at most: a hung call may time out before its request reached out-t
        # (a stalled loop under load); the resolver then finds it not_found -> failed.
        authorizations = sims["out-t"].stats()["requests"]["authorize"]
        assert len(paid) - len(hung) <= authorizations <= len(paid)

        too_young = await world.service.resolve_processing(older_than=60.0)
        assert too_young.resolved == []
        sims["out-t"].configure(timeout_rate=0.0)  # its status lookups answer again
        report = await world.service.resolve_processing(older_than=0.0)
        assert sorted(report.resolved) == sorted(p.body["id"] for p in hung), report
        again = await world.service.resolve_processing(older_than=0.0)
        assert (again.resolved, again.still_open, again.failures) == ([], [], 0)

        expected = {"captured": "succeeded", "authorized": "requires_capture",
                    "not_found": "failed"}  # fmt: skip
        seen = set()
        for p in hung:
            reference = p.body["attempts"][0]["reference"]
            record = sims["out-t"].operation(reference)
            final = (await world.client.get(f"/v1/payments/{p.body['id']}")).json()
            assert final["status"] == expected[record["status"]], (record, final)
            assert final["amount_captured"] == record.get("captured_amount", 0)
            seen.add(record["status"])
            if final["status"] == "requires_capture":  # the resolver found it authorized
                captured = await world.client.post(f"/v1/payments/{p.body['id']}/capture")
                assert captured.json()["status"] == "succeeded", captured.text
        assert "captured" in seen  # the timeout card, at least
        stats = sims["out-t"].stats()
        assert stats["requests"]["authorize"] == authorizations  # the resolver only asked
        assert stats["requests"]["status"] >= len(hung)
        await assert_charged_once(world, sims, paid)
