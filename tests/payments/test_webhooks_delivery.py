"""Outgoing webhooks end to end: payment events leave the outbox signed, reach a real HTTP
receiver at least once per endpoint (retried on the schedule, given up after it), only
where an endpoint subscribed, and a deposed sender cannot record anything; both backends.

The receiver is a small asyncio HTTP/1.1 server on a free local port that checks every
request with the documented recipe (``verify_signature``) against the test's clock. The
store, the sender and the receiver share a ``ManualClock``, so a day of retries is a few
dozen passes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from backends import LedgerDatabase, StoreFactory
from paycore.cluster.topology import build_store
from paycore.config import Settings, WebhookEndpointConfig, load_settings
from paycore.errors import ErrorCode, FencedError
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.locks import LocalLockService
from paycore.payments.intents import CaptureMethod
from paycore.payments.service import (
    NewPayment,
    NewPayout,
    PaymentService,
    PaymentView,
    PayoutView,
    RefundView,
)
from paycore.payments.testing import ScriptedConnector
from paycore.payments.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    verify_signature,
)
from paycore.storage.base import AdvanceFence, CreateAccounts, CreateTransfers, Fence
from paycore.storage.payments import EventRow, PaymentWrite, PurgePaymentEvents
from paycore.storage.store import Store
from paycore.workers.supervisor import WorkerSupervisor
from paycore.workers.webhooks import WebhookWorker
from payments.payment_support import (
    CARD,
    NS,
    ManualClock,
    World,
    open_world,
    payment_of,
    setup_accounts,
    shard_of,
)

SECRET = "whsec_test_0123456789abcdef"
SCHEDULE = (2.0, 4.0, 8.0, 16.0)  # the day-long schedule, shrunk
STEP = 0.25  # seconds the clock moves between passes


# -- a real HTTP receiver ------------------------------------------------------------------


@dataclass
class Received:
    """One request the receiver got: when (the shared clock), what, and what it said."""

    at: int
    event_id: str | None
    body: bytes
    signed: bool
    status: int

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.body)
        return decoded


@dataclass
class Receiver:
    """An HTTP/1.1 server (keep-alive) that verifies each POST and answers ``answer(n)``,
    ``n`` being how many times this event id came before (0 the first time)."""

    clock: Callable[[], int]
    answer: Callable[[int], int] = lambda n: 200
    secret: str = SECRET
    got: list[Received] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set: answer only once it is set
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a request came
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    def of(self, event_id: str) -> list[Received]:
        return [r for r in self.got if r.event_id == event_id]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = await self._handle(headers, body)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    "Content-Length: 2\r\n\r\n{}".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, headers: dict[str, str], body: bytes) -> int:
        # The documented recipe: the raw body, the endpoint secret, the tolerance window.
        try:
            verify_signature(
                headers.get(SIGNATURE_HEADER.lower()), body, self.secret, now=self.clock() // NS
            )
            signed = True
        except SignatureError:
            signed = False
        event_id = headers.get(EVENT_ID_HEADER.lower())
        status = self.answer(len(self.of(event_id or ""))) if signed else 400
        self.got.append(Received(self.clock(), event_id, body, signed, status))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        return status


def fail_first(n: int, status: int = 500) -> Callable[[int], int]:
    """Answer ``status`` to an event's first ``n`` deliveries, then 200."""
    return lambda seen: status if seen < n else 200


# -- the world: a store with payments that wrote events --------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def world(make_store: StoreFactory, clock: ManualClock) -> AsyncIterator[World]:
    async with open_world(make_store(clock=clock), clock) as w:
        yield w


def endpoint(
    url: str, *events: str, secrets: Sequence[str] = (SECRET,), tenant: str = "default"
) -> WebhookEndpointConfig:
    return WebhookEndpointConfig(
        url=url, secrets=tuple(secrets), events=events or ("*",), tenant=tenant
    )


def sender(
    world: World, *endpoints: WebhookEndpointConfig, owner: str = "sender-a", **options: Any
) -> WebhookWorker:
    return WebhookWorker(
        shard_of(world),
        world.store.name,
        endpoints,
        schedule=options.pop("schedule", SCHEDULE),
        clock=world.clock,
        owner=owner,
        **options,
    )


def card_payment(amount: int, capture: str = "automatic") -> NewPayment:
    return NewPayment(amount, "USD", "m1", capture=CaptureMethod(capture), card=CARD)


async def make_events(world: World) -> list[EventRow]:
    """Two paid payments, one authorized only, a refund: four events of three types."""
    for amount in (100, 200):
        await world.service.create_payment(card_payment(amount))
    await world.service.create_payment(card_payment(300, "manual"))
    paid = (await world.service.create_payment(card_payment(400))).outcome
    assert isinstance(paid, PaymentView)
    refund = await world.service.refund(paid.payment.id, 50)
    assert isinstance(refund.outcome, RefundView)
    events = await world.service.reads(world.store.name).events()
    assert [e.type for e in events] == [
        "payment.succeeded",
        "payment.succeeded",
        "payment.requires_capture",
        "payment.succeeded",
        "refund.succeeded",
    ]
    return events


async def drive(worker: WebhookWorker, clock: ManualClock, seconds: float) -> None:
    """Run a pass every ``STEP`` seconds of the clock for ``seconds``."""
    for _ in range(int(seconds / STEP)):
        await worker.run_once()
        clock.advance(STEP)


async def stored_event(world: World, event_id: str) -> EventRow:
    found = await world.service.reads(world.store.name).event(event_id)
    assert found is not None
    return found


# -- delivery ----------------------------------------------------------------------------------


async def test_every_event_arrives_signed_at_least_once_with_retries_on_the_schedule(
    world: World, clock: ManualClock
) -> None:
    """A receiver that answers 500 to each event's first two deliveries gets every event,
    signed, with its id in the header and the body, no card number; each retry comes
    after the schedule's delay (+-10% jitter), never before."""
    events = await make_events(world)
    async with Receiver(clock, fail_first(2)) as receiver:
        worker = sender(world, endpoint(receiver.url))
        try:
            await drive(worker, clock, 10.0)
        finally:
            await worker.aclose()
    assert receiver.got
    assert all(r.signed for r in receiver.got)
    assert all(CARD.number not in r.body.decode() for r in receiver.got)
    for event in events:
        got = receiver.of(event.id)
        assert [r.status for r in got] == [500, 500, 200]
        assert {r.body for r in got} == {got[0].body}  # the same bytes on every attempt
        body = got[0].event
        assert (body["id"], body["type"], body["object"]) == (event.id, event.type, "event")
        assert body["data"]["object"] == msgspec.json.decode(event.payload)
        for n, (before, after) in enumerate(itertools.pairwise(got)):
            waited = (after.at - before.at) / NS
            assert SCHEDULE[n] * 0.9 <= waited <= SCHEDULE[n] * 1.1 + STEP, (n, waited)
        stored = await stored_event(world, event.id)
        assert stored.delivered_at is not None
        assert stored.failed_at is None
        assert stored.attempts == 3
    assert worker.delivered_total == len(events)
    assert worker.attempts_total == 3 * len(events)
    rows = await world.service.reads(world.store.name).webhook_deliveries([e.id for e in events])
    assert {(r.endpoint, r.status, r.outcome, r.attempts, r.last_status) for r in rows} == {
        (receiver.url, "delivered", "delivered", 3, 200)
    }
    # Delivered events are never sent again.
    await drive(worker, clock, 40.0)
    assert len(receiver.got) == 3 * len(events)


async def test_a_receiver_answering_410_is_given_up_after_the_schedule(
    world: World, clock: ManualClock
) -> None:
    """Refusals (4xx) are retried on the schedule like failures, then the event is given
    up: failed, never claimed again, its delivery recorded as rejected."""
    await world.service.create_payment(card_payment(100))
    (event,) = await world.service.reads(world.store.name).events()
    async with Receiver(clock, lambda _: 410) as receiver:
        worker = sender(world, endpoint(receiver.url))
        try:
            await drive(worker, clock, sum(SCHEDULE) * 1.1 + 2)
            assert worker.failed_total == 1
            clock.advance(365 * 24 * 3600)
            assert (await worker.run_once()).claimed == 0
        finally:
            await worker.aclose()
    assert [r.status for r in receiver.of(event.id)] == [410] * (len(SCHEDULE) + 1)
    stored = await stored_event(world, event.id)
    assert (stored.delivered_at, stored.attempts) == (None, len(SCHEDULE) + 1)
    assert stored.failed_at is not None
    (row,) = await world.service.reads(world.store.name).webhook_deliveries([event.id])
    assert (row.status, row.outcome, row.attempts, row.last_status, row.last_error) == (
        "failed",
        "rejected",
        len(SCHEDULE) + 1,
        410,
        "HTTP 410",
    )


async def test_an_unreachable_endpoint_is_retried_then_given_up(
    world: World, clock: ManualClock
) -> None:
    """Nobody listening (connection refused) is a retryable failure, given up after the
    schedule with the network error recorded."""
    await world.service.create_payment(card_payment(100))
    (event,) = await world.service.reads(world.store.name).events()
    async with Receiver(clock) as gone:
        url = gone.url  # a port that was free a moment ago: refused once closed
    worker = sender(world, endpoint(url), schedule=(1.0,))
    try:
        await drive(worker, clock, 3.0)
    finally:
        await worker.aclose()
    (row,) = await world.service.reads(world.store.name).webhook_deliveries([event.id])
    assert (row.status, row.outcome, row.attempts, row.last_status) == ("failed", "retry", 2, None)
    assert row.last_error == "ConnectError"


async def test_events_are_filtered_per_endpoint_and_retried_only_where_missing(
    world: World, clock: ManualClock
) -> None:
    """Each endpoint gets the event types it subscribed to; when one of two endpoints fails,
    the retry goes to it alone: the other got the event once."""
    events = await make_events(world)
    async with (
        Receiver(clock) as payments,
        Receiver(clock, fail_first(1)) as refunds,
        Receiver(clock) as everything,
    ):
        worker = sender(
            world,
            endpoint(payments.url, "payment.succeeded", "payment.requires_capture"),
            endpoint(refunds.url, "refund.*"),
            endpoint(everything.url, "*"),
        )
        try:
            await drive(worker, clock, 5.0)
        finally:
            await worker.aclose()
    refund_ids = {e.id for e in events if e.type.startswith("refund.")}
    assert {r.event_id for r in payments.got} == {e.id for e in events} - refund_ids
    assert len(payments.got) == len(events) - 1
    assert [r.event_id for r in refunds.got] == [*refund_ids] * 2  # 500, then 200
    assert sorted(r.event_id or "" for r in everything.got) == sorted(e.id for e in events)
    for event in events:
        assert (await stored_event(world, event.id)).delivered_at is not None


async def test_during_a_secret_rotation_either_secret_verifies(
    world: World, clock: ManualClock
) -> None:
    """An endpoint with a new and an old secret signs with both: a receiver still on the
    old one verifies, as does one on the new."""
    await world.service.create_payment(card_payment(100))
    old, new = SECRET, "whsec_new_fedcba9876543210"
    async with Receiver(clock, secret=old) as on_old, Receiver(clock, secret=new) as on_new:
        worker = sender(
            world,
            endpoint(on_old.url, secrets=(new, old)),
            endpoint(on_new.url, secrets=(new, old)),
        )
        try:
            await worker.run_once()
        finally:
            await worker.aclose()
    assert [r.signed for r in on_old.got + on_new.got] == [True, True]


async def test_a_deposed_sender_cannot_ack_and_the_next_one_sends_again(
    world: World, clock: ManualClock
) -> None:
    """A sender whose leadership passed (a newer fencing token) has its ack refused: the
    event stays undelivered and the new leader sends it again, same id and same bytes."""
    await world.service.create_payment(card_payment(100))
    (event,) = await world.service.reads(world.store.name).events()
    name = f"leader:webhooks:{world.store.name}"
    old, new = Fence(name, 1), Fence(name, 2)
    await world.store.execute(AdvanceFence(old))
    async with Receiver(clock) as receiver:
        receiver.hold = asyncio.Event()
        deposed = sender(world, endpoint(receiver.url), owner="sender-old")
        leader = sender(world, endpoint(receiver.url), owner="sender-new")
        try:
            sending = asyncio.create_task(deposed.run_once(old))
            await receiver.arrived.wait()  # the POST is in flight: the leadership passes now
            await world.store.execute(AdvanceFence(new))
            receiver.hold.set()
            with pytest.raises(FencedError):
                await sending
            assert (await stored_event(world, event.id)).delivered_at is None
            with pytest.raises(FencedError):  # nor can it claim anything any more
                await deposed.run_once(old)
            assert (await leader.run_once(new)).claimed == 0  # leased to the old one...
            clock.advance(deposed.lease_seconds)
            assert (await leader.run_once(new)).delivered == [event.id]  # ...until it ends
        finally:
            await deposed.aclose()
            await leader.aclose()
    got = receiver.of(event.id)
    assert len(got) == 2
    assert got[0].body == got[1].body
    assert (await stored_event(world, event.id)).delivered_at is not None


async def test_an_event_that_cannot_be_sent_is_given_up_without_blocking_the_others(
    world: World, clock: ManualClock, database: LedgerDatabase
) -> None:
    """A stored payload that is not JSON (never written so by paycore) is given up at
    once; the events around it are delivered."""
    await world.service.create_payment(card_payment(100))
    database.query(
        "INSERT INTO payment_events (id, type, object_id, payload, created_at, timestamp) "
        "VALUES ('evt_bad', 'payment.succeeded', 'pay_x', '{not json', 1, 1)"
    )
    await world.service.create_payment(card_payment(200))
    async with Receiver(clock) as receiver:
        worker = sender(world, endpoint(receiver.url))
        try:
            report = await worker.run_once()
        finally:
            await worker.aclose()
    assert report.failed == ["evt_bad"]
    assert len(report.delivered) == 2
    assert len(receiver.got) == 2
    assert (await stored_event(world, "evt_bad")).failed_at is not None


# -- tenants: an endpoint gets its own tenant's events, never another's ---------------------


TENANTS = ("acme", "globex")
FAR = 2**62  # a purge horizon past every event


async def tenant_accounts(store: Store, tenant: str, merchant: str, wallet: str) -> None:
    """A merchant account and a wallet funded by the bank, both of ``tenant``."""
    made = await store.execute(
        CreateAccounts(
            (
                AccountRequest(merchant, "USD", tenant=tenant),
                AccountRequest(wallet, "USD", tenant=tenant),
            )
        )
    )
    assert all(r.ok for r in made), made
    funds = TransferRequest(f"fund-{wallet}", "bank", wallet, amount=5_000, currency="USD")
    funded = await store.execute(CreateTransfers((funds,)))
    assert funded[0].ok, funded


async def tenant_business(
    service: PaymentService, tenant: str, merchant: str, wallet: str, *, wallet_payment: bool
) -> set[str]:
    """What ``tenant`` does: a card payment refunded in part, a manual one canceled, a
    payout (and a wallet payment); the ids of the objects, whose events are its own."""
    new = NewPayment(400, "USD", merchant, card=CARD, tenant=tenant)
    paid = payment_of((await service.create_payment(new)).outcome)
    refund = (await service.refund(paid.payment.id, 50)).outcome
    assert isinstance(refund, RefundView)
    manual = NewPayment(300, "USD", merchant, CaptureMethod.MANUAL, card=CARD, tenant=tenant)
    held = payment_of((await service.create_payment(manual)).outcome)
    await service.cancel(held.payment.id)
    payout = (await service.payout(NewPayout(wallet, 100, "USD", "GB00BANK01", tenant))).outcome
    assert isinstance(payout, PayoutView)
    ids = {paid.payment.id, refund.refund.id, held.payment.id, payout.payout.id}
    if wallet_payment:
        by_wallet = NewPayment(200, "USD", merchant, wallet_account_id=wallet, tenant=tenant)
        ids.add(payment_of((await service.create_payment(by_wallet)).outcome).payment.id)
    return ids


async def all_events(service: PaymentService) -> list[EventRow]:
    return [e for shard in service.shards for e in await service.reads(shard).events(limit=1000)]


def assert_each_tenant_got_its_own(
    events: Sequence[EventRow], owned: dict[str, set[str]], receivers: dict[str, Receiver]
) -> None:
    """Each tenant's receiver got exactly the events of its tenant's objects, each once,
    signed, and nothing of another tenant; every event is stamped with its owner."""
    for tenant, receiver in receivers.items():
        mine = {e.id for e in events if e.object_id in owned[tenant]}
        got = [r.event_id for r in receiver.got]
        assert mine
        # Each once: they answered 200 (a request without an event id has None: key=str
        # sorts it among the ids, and it equals none of them).
        assert sorted(got, key=str) == sorted(mine), tenant
        assert all(r.signed for r in receiver.got)
        assert {r.event["data"]["object"]["id"] for r in receiver.got} == owned[tenant]
    kinds = {e.type for e in events}
    assert {"payment.succeeded", "payment.canceled", "refund.succeeded", "payout.paid"} <= kinds
    owner = {oid: tenant for tenant, ids in owned.items() for oid in ids}
    assert {e.id: e.tenant for e in events} == {e.id: owner[e.object_id] for e in events}


async def test_each_endpoint_gets_only_its_tenants_events(world: World, clock: ManualClock) -> None:
    """Two tenants, each with an endpoint: each receives every event of its payments,
    refunds, payouts and wallet payments, and none of the other's; an event of a tenant
    without an endpoint (``default`` here) is delivered to nobody, holds up nothing, and
    is purged with the rest."""
    owned: dict[str, set[str]] = {}
    for tenant in TENANTS:
        await tenant_accounts(world.store, tenant, f"{tenant}-m", f"{tenant}-w")
    for tenant in TENANTS:  # interleaved on the one shard
        owned[tenant] = await tenant_business(
            world.service, tenant, f"{tenant}-m", f"{tenant}-w", wallet_payment=True
        )
    stray = payment_of((await world.service.create_payment(card_payment(100))).outcome)
    owned["default"] = {stray.payment.id}
    events = await all_events(world.service)
    async with Receiver(clock) as acme, Receiver(clock) as globex:
        worker = sender(
            world,
            endpoint(acme.url, tenant="acme"),
            endpoint(globex.url, tenant="globex"),
        )
        try:
            await drive(worker, clock, 2.0)
        finally:
            await worker.aclose()
    assert_each_tenant_got_its_own(events, owned, {"acme": acme, "globex": globex})
    assert worker.delivered_total == len(events)
    (unsent,) = [e for e in events if e.object_id == stray.payment.id]
    assert (await stored_event(world, unsent.id)).delivered_at is not None
    reads = world.service.reads(world.store.name)
    assert await reads.webhook_deliveries([unsent.id]) == []
    assert await world.store.execute(PurgePaymentEvents(FAR)) == len(events)


async def test_tenants_events_on_several_shards_reach_only_their_endpoints(
    tmp_path: Path, clock: ManualClock
) -> None:
    """On two shards, each tenant's merchant on one and wallet on the other: payments and
    refunds write their events on the merchant's shard, payouts on the wallet's, each
    stamped with its tenant there; each shard's sender sends them to their tenant's
    endpoint only."""
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=2), clock=clock)

    def on(shard: str, prefix: str) -> str:
        return next(
            f"{prefix}{n}" for n in itertools.count() if store.shard_for(f"{prefix}{n}") == shard
        )

    async with open_world(store, clock) as world:
        places = {"acme": ("shard-0", "shard-1"), "globex": ("shard-1", "shard-0")}
        owned: dict[str, set[str]] = {}
        for tenant, (merchant_shard, wallet_shard) in places.items():
            merchant, wallet = on(merchant_shard, f"{tenant}-m"), on(wallet_shard, f"{tenant}-w")
            await tenant_accounts(store, tenant, merchant, wallet)
            owned[tenant] = await tenant_business(
                world.service, tenant, merchant, wallet, wallet_payment=False
            )
        events = await all_events(world.service)
        for shard in store.shards:  # each shard holds events of both tenants
            tenants = {e.tenant for e in await world.service.reads(shard).events()}
            assert tenants == set(TENANTS), shard
        async with Receiver(clock) as acme, Receiver(clock) as globex:
            endpoints = (endpoint(acme.url, tenant="acme"), endpoint(globex.url, tenant="globex"))
            workers = [
                WebhookWorker(shard_store, name, endpoints, clock=clock, owner=f"s-{name}")
                for name, shard_store in store.shards.items()
            ]
            try:
                for worker in workers:
                    await worker.run_once()
            finally:
                for worker in workers:
                    await worker.aclose()
        assert_each_tenant_got_its_own(events, owned, {"acme": acme, "globex": globex})


async def test_the_store_stamps_an_event_with_its_owners_tenant_never_the_callers(
    world: World,
) -> None:
    """The writer sets an event's tenant from the account owning its object, whatever
    the write says; an event with no owner on the shard is refused, nothing written."""
    await tenant_accounts(world.store, "acme", "acme-m", "acme-w")
    new = NewPayment(100, "USD", "acme-m", card=CARD, tenant="acme")
    paid = payment_of((await world.service.create_payment(new)).outcome)
    shard = world.store.name
    lying = EventRow("evt_lie", "payment.succeeded", paid.payment.id, "{}", 1, tenant="globex")
    assert (await world.store.execute(PaymentWrite(shard, events=(lying,)))).ok
    assert (await stored_event(world, "evt_lie")).tenant == "acme"
    orphan = EventRow("evt_orphan", "refund.succeeded", "re_nowhere", "{}", 1)
    refused = await world.store.execute(PaymentWrite(shard, events=(lying, orphan)))
    assert (refused.ok, refused.code) == (False, ErrorCode.INTERNAL_ERROR)
    assert await world.service.reads(shard).event("evt_orphan") is None


async def test_the_migration_attributes_the_events_written_before_it(
    make_store: StoreFactory, database: LedgerDatabase, clock: ManualClock
) -> None:
    """Migration 0011 gives events already in the outbox their owner's tenant (tenants
    came with 0010), and ``default`` to one whose object cannot be found."""
    async with open_world(make_store(clock=clock), clock) as world:
        owned: dict[str, set[str]] = {}
        for tenant in TENANTS:
            await tenant_accounts(world.store, tenant, f"{tenant}-m", f"{tenant}-w")
            owned[tenant] = await tenant_business(
                world.service, tenant, f"{tenant}-m", f"{tenant}-w", wallet_payment=True
            )
    # Back to schema v10, with an event of an object that is gone.
    database.query("ALTER TABLE payment_events DROP COLUMN tenant")
    database.query("DELETE FROM schema_migrations WHERE version = 11")
    database.query(
        "INSERT INTO payment_events (id, type, object_id, payload, created_at, timestamp) "
        "VALUES ('evt_gone', 'payout.paid', 'po_gone', '{}', 1, 1)"
    )
    store = make_store(clock=clock)
    await store.start()
    try:
        service = PaymentService(store, {}, clock=clock)
        events = await all_events(service)
    finally:
        await store.stop()
    owner = {oid: tenant for tenant, ids in owned.items() for oid in ids}
    assert {e.id: e.tenant for e in events} == {
        e.id: owner.get(e.object_id, "default") for e in events
    }
    assert {e.tenant for e in events} == {*TENANTS, "default"}


# -- the supervisor's job ---------------------------------------------------------------------


async def test_the_supervisor_runs_a_webhooks_job_per_shard(tmp_path: Path) -> None:
    """With ``[[webhooks]]`` configured, each shard gets a ``leader:webhooks:<shard>`` job
    that sends its events (real clock, default schedule): every event arrives, signed, and
    the supervisor counts each delivered (what ``/metrics`` exports)."""
    async with Receiver(time.time_ns) as receiver:
        settings = Settings(
            data_dir=str(tmp_path),
            embedded_shards=2,
            leader_ttl_seconds=0.5,
            maintenance_interval_seconds=0.2,
            webhooks=(endpoint(receiver.url),),
        )
        store = build_store(settings)
        await store.start()
        node = WorkerSupervisor(store, settings, LocalLockService())
        try:
            await setup_accounts(store)
            service = PaymentService(store, {"acq": ScriptedConnector("acq")})
            for amount in (100, 200, 300):
                await service.create_payment(card_payment(amount))
            await node.start()
            for _ in range(500):
                delivered = sum(t["delivered"] for t in node.webhook_totals().values())
                if len(receiver.got) >= 3 and delivered >= 3:
                    break
                await asyncio.sleep(0.02)
            jobs = {(j["job"], j["shard"]) for j in node.status()["jobs"] if j["leader"]}
            totals = node.webhook_totals()
        finally:
            await node.stop()
            await store.stop()
    assert {("webhooks", shard) for shard in store.shards} <= jobs
    assert len(receiver.got) == 3
    # What /metrics exports as paycore_webhook_events_total / _requests_total.
    assert set(totals) == set(store.shards)
    assert sum(t["delivered"] for t in totals.values()) == 3
    assert sum(t["requests"] for t in totals.values()) == 3
    assert sum(t["retried"] + t["failed"] for t in totals.values()) == 0
    assert all(r.signed and r.status == 200 for r in receiver.got)
    assert {r.event["data"]["object"]["amount"] for r in receiver.got} == {100, 200, 300}


async def test_without_any_endpoint_the_events_wait_in_the_outbox(tmp_path: Path) -> None:
    """With no endpoint configured the sender job still runs (endpoints may be made over
    HTTP at any time), but claims nothing while none exists: the events wait."""
    settings = Settings(data_dir=str(tmp_path), embedded_shards=1)
    store = build_store(settings)
    await store.start()
    try:
        node = WorkerSupervisor(store, settings, LocalLockService())
        assert [r.job for r in node.runners].count("webhooks") == 1
        await setup_accounts(store)
        service = PaymentService(store, {"acq": ScriptedConnector("acq")})
        await service.create_payment(card_payment(100))
        (worker,) = node.webhooks.values()
        assert (await worker.run_once()).claimed == 0
        reads = worker.reads
        assert [e.attempts for e in await reads.events()] == [0]
        await node.stop()
    finally:
        await store.stop()
    assert not (tmp_path / "webhook-signing-key").exists()  # made only for an endpoint


# -- configuration ------------------------------------------------------------------------------


def test_endpoints_load_from_the_config_file(tmp_path: Path) -> None:
    """``[[webhooks]]`` tables become endpoints, with their defaults."""
    path = tmp_path / "paycore.toml"
    path.write_text(
        '[[webhooks]]\nurl = "https://hooks.example.com/paycore"\n'
        f'secrets = ["{SECRET}"]\n'
        '[[webhooks]]\nurl = "http://10.0.0.7:8080/in"\n'
        f'secrets = ["{SECRET}", "whsec_old_0123456789"]\nevents = ["refund.*"]\n'
        'timeout_seconds = 2.5\ntenant = "acme"\n'
    )
    path.chmod(0o600)  # it holds secrets: any wider is refused
    first, second = load_settings(path, env={}).webhooks
    assert (first.events, first.timeout_seconds, first.tenant) == (("*",), 5.0, "default")
    assert (second.secrets[1], second.events, second.timeout_seconds, second.tenant) == (
        "whsec_old_0123456789",
        ("refund.*",),
        2.5,
        "acme",
    )


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"url": "ftp://example.com/x"}, "http"),
        ({"url": "https:///nohost"}, "http"),
        ({"url": "example.com/hooks"}, "http"),
        ({"secrets": []}, "at least one secret"),
        ({"secrets": ["short"]}, "16 characters"),
        ({"secrets": [SECRET, "x" * 15]}, "16 characters"),
        ({"events": ["Payment.Succeeded"]}, "events"),
        ({"events": []}, "events"),
        ({"events": ["payment"]}, "events"),
        ({"timeout_seconds": 0}, "timeout"),
        ({"timeout_seconds": float("inf")}, "timeout"),
        ({"retries": 3}, "unknown field"),
        ({"tenant": ""}, "tenant"),  # the system tenant: never a client's
        ({"tenant": "acme corp"}, "tenant"),
        ({"tenant": "acme:eu"}, "tenant"),
        ({"tenant": "x" * 65}, "tenant"),
        ({"tenant": 7}, "str"),
    ],
)
def test_bad_endpoints_are_refused(fields: dict[str, Any], why: str) -> None:
    """A URL that is not http(s), a missing or short secret, a bad event filter or timeout
    is a configuration error naming the problem."""
    table = {"url": "https://hooks.example.com/x", "secrets": [SECRET], **fields}
    with pytest.raises(msgspec.ValidationError, match=why):
        msgspec.convert({"webhooks": [table]}, Settings)


def test_two_endpoints_with_one_url_are_refused(tmp_path: Path) -> None:
    """An endpoint's URL names its delivery records: two tables may not share one."""
    settings = Settings(data_dir=str(tmp_path))
    store = build_store(settings)
    same = endpoint("https://hooks.example.com/x")
    with pytest.raises(ValueError, match="same url"):
        WebhookWorker(next(iter(store.shards.values())), "shard-0", (same, same))


async def test_the_store_keeps_nothing_it_was_not_asked_to(world: World) -> None:
    """A fresh store has no delivery records and no given-up events (the migration's
    defaults)."""
    await world.service.create_payment(card_payment(100))
    (event,) = await world.service.reads(world.store.name).events()
    assert (event.failed_at, event.attempts) == (None, 0)
    assert await world.service.reads(world.store.name).webhook_deliveries([event.id]) == []
