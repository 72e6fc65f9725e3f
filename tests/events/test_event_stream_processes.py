"""The event stream end to end with real processes and real kills: ``paycore serve`` on
two embedded shards with ``[events]`` publishes while a client makes transfers (some
across shards), holds, payments and refunds over HTTP; the serve process is SIGKILLed
right after a large batch was acknowledged (the publisher is behind) and started again;
``nats-server`` is SIGKILLed while changes keep coming and started again. A durable
JetStream consumer with explicit acks reads all the while and de-duplicates by event id;
at the end it has every change of both shards' logs exactly once, each account's
transfers in the order the ledger wrote them and each payment's events in theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from fix_nats import NatsServer
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.events.json_schema import validate_event
from paycore.events.schema import Event, payment_event, transfer_event
from paycore.storage.event_stream import EventStreamReads
from sdk.support import create_key, free_port, paycore_command, wait_until_up

pytestmark = pytest.mark.slow

STREAM = "PAYCORE"
SHARDS = 2
WALLETS = [f"w{n}" for n in range(8)]
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@dataclass
class Serve:
    """``paycore serve`` as a process of its own, which the test may SIGKILL and start
    again on the same port and data directory."""

    data_dir: Path
    config: Path
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                paycore_command("serve", "--config", str(self.config), "--data-dir",
                                str(self.data_dir), "--port", str(self.port)),
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        wait_until_up(self.url, self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, the publisher dies wherever it is."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def serve(tmp_path: Path, nats_server: NatsServer) -> Iterator[Serve]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PAYCORE_EMBEDDED_SHARDS": str(SHARDS)}
    config = tmp_path / "paycore.toml"
    # Publish soon after each change; retry fast while NATS is away.
    config.write_text(
        f'embedded_shards = {SHARDS}\n\n[events]\nnats_url = "{nats_server.url}"\n'
        "interval_seconds = 0.05\npublish_timeout_seconds = 1.0\nretry_max_seconds = 0.5\n"
    )
    served = Serve(tmp_path / "data", config, free_port(), env, tmp_path / "serve.log")
    try:
        yield served
    finally:
        served.stop()


@dataclass
class Consumer:
    """A downstream system: a durable pull consumer with explicit acks, one message in
    flight at a time (``max_ack_pending=1``: a message lost with a dying server is sent
    again before any later one, so arrival order is stream order), that keeps the first
    copy of each event id and acks every copy."""

    url: str
    arrived: list[dict[str, Any]] = field(default_factory=list)  # every copy, in order
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # first copies, in order
    errors: int = 0  # connection errors and failed fetches (NATS away)

    async def run(self, stop: asyncio.Event) -> None:
        async def count(exc: Exception) -> None:  # quietly: NATS is away on purpose
            del exc
            self.errors += 1

        nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, error_cb=count
        )
        try:
            sub = None
            while not stop.is_set():
                try:
                    if sub is None:
                        sub = await self._subscribe(nc)
                    msgs = await sub.fetch(1, timeout=0.5)
                except (TimeoutError, nats.errors.Error, OSError) as exc:
                    if not isinstance(exc, nats.errors.TimeoutError):
                        self.errors += 1
                        sub = None  # made again (bound to the durable) once NATS answers
                        await asyncio.sleep(0.1)
                    continue
                for msg in msgs:
                    validate_event(msg.data)  # as docs/events.schema.json says
                    event = json.loads(msg.data)
                    self.arrived.append(event)
                    self.kept.setdefault(event["id"], event)
                    with contextlib.suppress(nats.errors.Error, TimeoutError):
                        await msg.ack_sync(timeout=1)  # a lost ack: the copy comes again
        finally:
            await nc.close()

    @staticmethod
    async def _subscribe(nc: NATS) -> Any:
        js = nc.jetstream()
        await js.stream_info(STREAM)  # made by the publisher: not there yet -> retried
        config = ConsumerConfig(
            durable_name="downstream", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, max_ack_pending=1, ack_wait=2,
        )  # fmt: skip
        return await js.pull_subscribe("paycore.>", durable="downstream", stream=STREAM,
                                       config=config)  # fmt: skip


@dataclass
class Client:
    """What a merchant's system does over HTTP, each request retried with its own id or
    ``Idempotency-Key`` until answered (the server may be down between two tries)."""

    url: str
    key: str
    rng: random.Random = field(default_factory=lambda: random.Random(19))
    acked: list[str] = field(default_factory=list)  # transfer ids answered 2xx

    async def post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": key}
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            while True:
                try:
                    r = await http.post(path, json=body, headers=headers)
                    if r.status_code < 500:
                        assert r.status_code in (200, 201), r.text
                        out: dict[str, Any] = r.json()
                        return out
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{path} never answered"
                await asyncio.sleep(0.1)

    async def accounts(self) -> None:
        for account in [*WALLETS, "shop"]:
            await self.post("/v1/accounts", {"id": account, "currency": "EUR"}, f"a-{account}")

    async def batch(self, tag: str, size: int) -> None:
        """``size`` transfers between random wallets (about half cross shards)."""
        items: list[dict[str, Any]] = []
        for n in range(size):
            debit, credit = self.rng.sample(WALLETS, 2)
            items.append({"id": f"{tag}-{n}", "debit_account_id": debit,
                          "credit_account_id": credit, "amount": self.rng.randint(1, 900),
                          "currency": "EUR"})  # fmt: skip
        out = await self.post("/v1/transfers/batch", {"transfers": items}, f"b-{tag}")
        assert all("error" not in r for r in out["results"]), out
        self.acked += [item["id"] for item in items]

    async def round(self, tag: str, size: int = 60) -> None:
        """A batch, a hold captured in part, a hold voided, a card payment refunded."""
        await self.batch(tag, size)
        debit, credit = self.rng.sample(WALLETS, 2)
        for hold in ("h1", "h2"):
            await self.post("/v1/transfers", {"id": f"{tag}-{hold}", "debit_account_id": debit,
                                              "credit_account_id": credit, "amount": 300,
                                              "currency": "EUR", "pending": True},
                            f"{tag}-{hold}")  # fmt: skip
        await self.post(f"/v1/transfers/{tag}-h1/post", {"amount": 120}, f"{tag}-h1-post")
        await self.post(f"/v1/transfers/{tag}-h2/void", {}, f"{tag}-h2-void")
        payment = {"amount": 2500, "currency": "EUR", "merchant_account_id": "shop"}
        paid = await self.post("/v1/payments", {**payment, "source": {"card": CARD}}, f"{tag}-pay")
        await self.post("/v1/refunds", {"payment_id": paid["id"], "amount": 700}, f"{tag}-refund")


async def lag(url: str) -> float:
    """The events of every shard's logs not yet acknowledged by NATS (``/metrics``)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    samples = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "paycore_event_stream_lag_events"
    ]
    assert len(samples) == 2 * SHARDS, text  # ledger and payments of each shard
    return float(sum(samples))


async def until(condition: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"not met in {seconds} s: {what}"
        await asyncio.sleep(0.05)


async def logged_events(data_dir: Path) -> dict[str, list[Event]]:
    """Per shard, every event its logs hold, in log order (ledger, then payments)."""
    store = build_store(Settings(data_dir=str(data_dir), embedded_shards=SHARDS))
    await store.start()
    try:
        out = {}
        for name, shard in store.shard_stores.items():
            reads = getattr(shard, "event_stream", None)
            assert isinstance(reads, EventStreamReads)
            ledger = [transfer_event(name, r) for r in await reads.transfers_after(0, 100_000)]
            payments = await reads.payment_events_after(0, 100_000)
            out[name] = ledger + [payment_event(name, r) for r in payments]
        return out
    finally:
        await store.stop()


@contextlib.asynccontextmanager
async def consuming(consumer: Consumer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_killed_serve_and_a_killed_nats_lose_and_double_no_change_for_a_consumer(
    serve: Serve, nats_server: NatsServer
) -> None:
    """Through a SIGKILLed publisher (``paycore serve``) and a SIGKILLed NATS, each while
    events were still unpublished, a de-duplicating durable consumer ends with every
    logged change once, byte for byte, each account's and each payment's in order."""
    key = create_key(serve.data_dir, serve.env, "read,write")
    serve.start()
    client = Client(serve.url, key)
    consumer = Consumer(nats_server.url)
    async with consuming(consumer):
        await client.accounts()
        for r in range(3):
            await client.round(f"r{r}")
        # A large batch; SIGKILL once its events are being published (one JetStream
        # round trip each): the publisher dies in the middle of a batch, its cursor
        # unmoved, with part of the batch stored by NATS.
        await until(lambda: _caught_up(serve.url), "the publishers caught up")
        before = await stream_count(nats_server.url)
        await client.batch("big", 600)
        await until(lambda: _more(nats_server.url, before + 100), "the batch being published")
        serve.kill()
        at_kill = await stream_count(nats_server.url)
        assert at_kill < before + 600, "the publisher had published everything: not mid-stream"
        big = {tid for tid in client.acked if tid.startswith("big-")}

        serve.start()  # its publisher starts from the cursor the dead one left
        await client.round("r3")
        await until(lambda: _has(consumer, "r3-0"), "events after the restart")
        rounds = asyncio.create_task(_rounds(client, range(4, 9)))  # changes keep coming
        await until(lambda: _has(consumer, "r4-0"), "events of round 4")
        nats_server.stop()  # SIGKILL
        await client.round("down")  # acknowledged while no event can be published
        await until(lambda: _behind(serve.url), "the publishers behind")
        await asyncio.sleep(1.0)  # their publishes fail, then retry with backoff
        nats_server.start()  # same port and store: the stream and the consumer survive
        await rounds
        made_while_down = {tid for tid in client.acked if tid.startswith("down-")}
        await client.round("r9")
        await until(lambda: _caught_up(serve.url), "the publishers caught up")
        serve.stop()
        logged = await logged_events(serve.data_dir)
        want = {e.id: _as_json(e) for events in logged.values() for e in events}
        with contextlib.suppress(AssertionError):  # what is missing is said below
            await until(lambda: _count(consumer, len(want)), "every event consumed", 30)
    missing = [event_id for event_id in want if event_id not in consumer.kept]
    assert not missing, f"{len(missing)} of {len(want)} changes never arrived: {missing[:5]}"
    assert consumer.kept == want  # every logged change once, as logged
    assert len(consumer.arrived) >= len(want)
    assert made_while_down <= {e["data"]["id"] for e in consumer.kept.values()}
    assert big <= {e["data"]["id"] for e in consumer.kept.values()}
    kept = list(consumer.kept.values())
    for shard, events in logged.items():
        ledger = [e for e in kept if e["shard"] == shard and e["type"].startswith("transfer.")]
        assert [e["seq"] for e in ledger] == list(range(1, len(ledger) + 1)), shard
        for account in [*WALLETS, "shop"]:
            assert _touching(ledger, account) == _touching(
                [_as_json(e) for e in events if e.type.startswith("transfer.")], account
            ), (shard, account)
        payments = [e for e in kept if e["shard"] == shard and e["type"][:9] != "transfer."]
        logged_payments = [e.seq for e in events if not e.type.startswith("transfer.")]
        assert [e["seq"] for e in payments] == sorted(logged_payments), shard
    assert {e["type"] for e in kept} >= {"transfer.pending", "transfer.posted",
                                         "transfer.voided", "payment.succeeded",
                                         "refund.succeeded"}  # fmt: skip


async def _rounds(client: Client, numbers: range) -> None:
    for r in numbers:
        await client.round(f"r{r}")


async def _has(consumer: Consumer, transfer_id: str) -> bool:
    return any(e["data"].get("id") == transfer_id for e in list(consumer.kept.values()))


async def stream_count(url: str) -> int:
    """How many messages the stream holds."""
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.messages)
    finally:
        await nc.close()


async def _more(url: str, n: int) -> bool:
    return await stream_count(url) >= n


async def _behind(url: str) -> bool:
    return await lag(url) > 0


async def _caught_up(url: str) -> bool:
    return await lag(url) == 0


async def _count(consumer: Consumer, n: int) -> bool:
    return len(consumer.kept) >= n


def _touching(ledger: list[dict[str, Any]], account: str) -> list[str]:
    """The transfers of ``account`` in the order given."""
    return [
        e["data"]["id"]
        for e in ledger
        if account in (e["data"]["debit_account_id"], e["data"]["credit_account_id"])
    ]


def _as_json(event: Event) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(event))
    return decoded
