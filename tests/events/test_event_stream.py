"""The event stream against a real ``nats-server -js`` (``fix_nats``) and a real store of
each backend: every ledger and payment change is published once in effect, in order,
under a stable id, through a killed publisher and a restarted NATS, and can be replayed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from backends import StoreFactory
from fix_nats import NatsServer
from paycore.cli import main
from paycore.cluster.topology import build_store
from paycore.config import EventStreamConfig, Settings, load_settings
from paycore.events.json_schema import validate_event
from paycore.events.publisher import MSG_ID_HEADER, EventPublisher
from paycore.events.schema import Event, payment_event, subject_of, transfer_event
from paycore.events.tail import tail
from paycore.ledger.model import DEFAULT_TENANT, SYSTEM_TENANT, TransferFlags, TransferRequest
from paycore.locks import LocalLockService
from paycore.payments.flows.model import NewPayment
from paycore.storage.base import CreateTransfers
from paycore.storage.event_stream import EventStreamReads
from paycore.storage.payments import PurgePaymentEvents
from paycore.storage.store import Store
from paycore.workers.supervisor import WorkerSupervisor
from payments.payment_support import (
    CARD,
    ManualClock,
    World,
    open_world,
    payment_of,
    setup_accounts,
    shard_of,
)

ROOT = Path(__file__).resolve().parents[2]
STREAM = "PAYCORE"


class Crash(Exception):
    """The publisher's process dying at the worst moment: after NATS acked, before the
    cursor moved."""


def stream_config(server: NatsServer, *, batch_limit: int = 500) -> EventStreamConfig:
    # Short publish timeout and backoff: a publish lost in NATS's restart fails fast and
    # is retried soon.
    return EventStreamConfig(
        nats_url=server.url,
        batch_limit=batch_limit,
        interval_seconds=0.05,
        publish_timeout_seconds=1.0,
        retry_max_seconds=0.5,
    )


def reads_of(store: Store) -> EventStreamReads:
    reads = getattr(store, "event_stream", None)
    assert isinstance(reads, EventStreamReads)
    return reads


async def transfers(store: Store, *requests: TransferRequest) -> None:
    results = await store.execute(CreateTransfers(requests))
    assert all(r.ok for r in results), results


async def business(world: World, tag: str) -> None:
    """Some of everything: a plain transfer, a hold then its capture, a hold voided, a
    card payment refunded in part, a wallet payment."""
    usd: dict[str, Any] = {"currency": "USD"}
    await transfers(
        world.store,
        TransferRequest(
            f"{tag}-t1", debit_account_id="bank", credit_account_id="m1", amount=7, **usd
        ),
        TransferRequest(
            f"{tag}-h1", debit_account_id="w1", credit_account_id="m1", amount=30,
            flags=TransferFlags(pending=True), **usd,
        ),
        TransferRequest(
            f"{tag}-h2", debit_account_id="w1", credit_account_id="m1", amount=5,
            flags=TransferFlags(pending=True), **usd,
        ),
    )  # fmt: skip
    await transfers(
        world.store,
        TransferRequest(
            f"{tag}-p1", debit_account_id="w1", credit_account_id="m1", amount=20,
            pending_id=f"{tag}-h1", flags=TransferFlags(post_pending=True), **usd,
        ),
        TransferRequest(
            f"{tag}-v2", debit_account_id="w1", credit_account_id="m1", amount=5,
            pending_id=f"{tag}-h2", flags=TransferFlags(void_pending=True), **usd,
        ),
    )  # fmt: skip
    paid = payment_of(
        (await world.service.create_payment(NewPayment(400, "USD", "m1", card=CARD))).outcome
    )
    await world.service.refund(paid.payment.id, 50)
    await world.service.create_payment(NewPayment(60, "USD", "m1", wallet_account_id="w1"))


async def expected(store: Store) -> list[Event]:
    """Every event the shard's logs hold, in log order (ledger, then payments)."""
    reads = reads_of(store)
    ledger = [transfer_event(store.name, r) for r in await reads.transfers_after(0, 10_000)]
    payments = [payment_event(store.name, r) for r in await reads.payment_events_after(0, 10_000)]
    return ledger + payments


async def stream_messages(url: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    """Every message of the stream, in stream order: (stream seq, subject, Nats-Msg-Id,
    the event), each checked against the events' schema."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(STREAM)).state.messages
        out = []
        if total:
            sub = await js.subscribe("paycore.>", stream=STREAM, ordered_consumer=True)
            for _ in range(total):
                msg = await sub.next_msg(timeout=10)
                validate_event(msg.data)  # every message as docs/events.schema.json says
                headers = msg.headers or {}
                out.append(
                    (
                        msg.metadata.sequence.stream,
                        msg.subject,
                        headers.get(MSG_ID_HEADER, ""),
                        json.loads(msg.data),
                    )
                )
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def dedup(messages: list[tuple[int, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """What a consumer that drops an id it has seen keeps, in arrival order."""
    seen: set[str] = set()
    kept = []
    for _, _, _, event in messages:
        if event["id"] not in seen:
            seen.add(event["id"])
            kept.append(event)
    return kept


def assert_ordered_per_log(events: list[dict[str, Any]]) -> None:
    """Each log of each shard arrives in its own order: ledger seqs 1, 2, ... without a
    gap, so every account's transfers in the order they were written; payment events by
    increasing seq, so every payment's in order."""
    ledger = [e["seq"] for e in events if e["type"].startswith("transfer.")]
    assert ledger == list(range(1, len(ledger) + 1))
    per_account: dict[str, list[int]] = {}
    for e in events:
        if e["type"].startswith("transfer."):
            for side in ("debit_account_id", "credit_account_id"):
                per_account.setdefault(e["data"][side], []).append(e["data"]["timestamp"])
    for account, stamps in per_account.items():
        assert stamps == sorted(stamps), account
    per_object: dict[str, list[int]] = {}
    for e in events:
        if not e["type"].startswith("transfer."):
            per_object.setdefault(e["data"]["id"], []).append(e["seq"])
    for object_id, seqs in per_object.items():
        assert seqs == sorted(seqs), object_id
    payments = [e["seq"] for e in events if not e["type"].startswith("transfer.")]
    assert payments == sorted(payments)
    assert len(set(payments)) == len(payments)


def per_log(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    """The ledger's events and the payments' apart, each in the order given (the stream
    interleaves the two logs batch by batch)."""
    ledger = [e for e in events if e["type"].startswith("transfer.")]
    return ledger, [e for e in events if not e["type"].startswith("transfer.")]


async def drain(publisher: EventPublisher) -> None:
    while await publisher.run_once():
        pass


@pytest.fixture
async def world(make_store: StoreFactory) -> AsyncIterator[World]:
    clock = ManualClock()
    async with open_world(make_store(clock=clock), clock) as w:
        await business(w, "a")
        yield w


def as_json(event: Event) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(event))
    return decoded


async def test_every_change_is_published_in_order_under_a_stable_id(
    world: World, nats_server: NatsServer
) -> None:
    """Transfers and payments become events, each log in its order, with stable ids,
    integer amounts, no card number, on per-shard subjects; a second pass sends nothing."""
    publisher = EventPublisher(shard_of(world), world.store.name, stream_config(nats_server))
    try:
        await drain(publisher)
        assert await publisher.run_once() == 0
    finally:
        await publisher.aclose()
    want = await expected(world.store)
    got = await stream_messages(nats_server.url)
    assert [m[3] for m in got] == [as_json(e) for e in want]
    assert [m[2] for m in got] == [e.id for e in want]  # Nats-Msg-Id is the event id
    assert [m[1] for m in got] == [subject_of("paycore", e) for e in want]
    shard = world.store.name
    ledger = [m[3] for m in got if m[1] == f"paycore.ledger.{shard}.transfer"]
    assert [e["id"] for e in ledger] == [f"{shard}:transfer:{i}" for i in range(1, len(ledger) + 1)]
    by_id = {e["data"]["id"]: e for e in ledger}
    assert by_id["a-h1"]["type"] == "transfer.pending"
    capture = by_id["a-p1"]["data"]
    assert (capture["amount"], capture["pending_id"], capture["flags"], capture["status"]) == (
        20, "a-h1", ["post_pending"], "posted"
    )  # fmt: skip
    assert by_id["a-v2"]["type"] == "transfer.voided"
    types = [m[3]["type"] for m in got if ".payments." in m[1]]
    assert "payment.succeeded" in types
    assert "refund.succeeded" in types
    assert all(m[3]["version"] == 1 for m in got)
    assert {m[3]["tenant"] for m in got} == {DEFAULT_TENANT, SYSTEM_TENANT}  # psp: legs
    raw = json.dumps([m[3] for m in got])
    assert CARD.number not in raw
    assert_ordered_per_log([m[3] for m in got])


async def test_a_publisher_killed_before_its_cursor_moved_publishes_nothing_twice(
    world: World, nats_server: NatsServer
) -> None:
    """A publisher dying after NATS acked some events but before the cursor moved leaves
    the cursor; its successor publishes them again and NATS drops the copies by id."""
    config = stream_config(nats_server, batch_limit=4)
    acked: list[str] = []

    def crash_after_three(event: Event) -> None:
        acked.append(event.id)
        if len(acked) == 3:
            raise Crash

    doomed = EventPublisher(
        shard_of(world), world.store.name, config, after_publish=crash_after_three
    )
    with pytest.raises(Crash):
        await doomed.run_once()
    await doomed.aclose()
    assert (await reads_of(world.store).cursor("ledger")).seq == 0
    successor = EventPublisher(shard_of(world), world.store.name, config)
    try:
        await drain(successor)
    finally:
        await successor.aclose()
    assert successor.duplicates_total == 3
    got = await stream_messages(nats_server.url)
    want = await expected(world.store)
    assert len(got) == len(want)  # stored once each
    assert per_log(dedup(got)) == per_log([as_json(e) for e in want])
    assert_ordered_per_log(dedup(got))


async def test_a_restarted_nats_delays_the_events_and_loses_or_doubles_none(
    world: World, nats_server: NatsServer
) -> None:
    """With NATS killed mid-run the publisher retries with backoff and keeps its cursor;
    once NATS is back (same port and store) it goes on, and every event is there once."""
    config = stream_config(nats_server, batch_limit=3)
    publisher = EventPublisher(shard_of(world), world.store.name, config)
    assert await publisher.run_once() > 0  # the first batch of each log
    nats_server.stop()
    await business(world, "b")  # changes made while NATS is down
    before = await reads_of(world.store).cursor("ledger")
    task = asyncio.create_task(publisher.serve())
    try:
        await wait_for(lambda: publisher.failures >= 2)
        assert await reads_of(world.store).cursor("ledger") == before
        nats_server.start()
        want = await expected(world.store)
        head = max(e.seq for e in want if e.type.startswith("transfer."))
        last_payment = max(e.seq for e in want if not e.type.startswith("transfer."))
        reads = reads_of(world.store)
        await wait_for_async(lambda: _caught_up(reads, head, last_payment))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    got = await stream_messages(nats_server.url)
    assert sorted(m[3]["id"] for m in got) == sorted(e.id for e in want)
    kept = dedup(got)
    assert len(kept) == len(got)  # nothing stored twice
    assert_ordered_per_log(kept)
    assert {e["id"]: e for e in kept} == {e.id: as_json(e) for e in want}


async def test_a_consumer_sees_every_change_once_in_order_through_a_crash_and_a_restart(
    world: World, nats_server: NatsServer
) -> None:
    """While changes keep coming, the publisher dies after an ack (before its cursor
    moved) and NATS is killed and started again; a consumer that de-duplicates by id
    then has every change once, each account's and each payment's in order."""
    config = stream_config(nats_server, batch_limit=2)
    published: list[str] = []

    def crash_once(event: Event) -> None:
        published.append(event.id)
        if len(published) == 5:
            raise Crash

    first = EventPublisher(shard_of(world), world.store.name, config, after_publish=crash_once)
    task = asyncio.create_task(first.serve())
    await business(world, "b")
    with pytest.raises(Crash):
        await task  # the first publisher died mid-batch
    successor = EventPublisher(shard_of(world), world.store.name, config)
    task = asyncio.create_task(successor.serve())
    try:
        await business(world, "c")
        nats_server.stop()
        await business(world, "d")
        await wait_for(lambda: successor.failures >= 1)
        nats_server.start()
        await business(world, "e")
        want = await expected(world.store)
        head = max(e.seq for e in want if e.type.startswith("transfer."))
        last_payment = max(e.seq for e in want if not e.type.startswith("transfer."))
        reads = reads_of(world.store)
        await wait_for_async(lambda: _caught_up(reads, head, last_payment))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    got = await stream_messages(nats_server.url)
    kept = dedup(got)
    assert len(kept) == len(want)
    assert {e["id"]: e for e in kept} == {e.id: as_json(e) for e in want}
    assert_ordered_per_log(kept)


async def _caught_up(reads: EventStreamReads, head: int, last_payment: int) -> bool:
    ledger, payments = await reads.cursor("ledger"), await reads.cursor("payments")
    return ledger.seq == head and payments.seq == last_payment


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds (polled; at most 30 s, then the test fails)."""
    for _ in range(1500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in 30 s")


async def wait_for_async(condition: Callable[[], Awaitable[bool]]) -> None:
    """Until ``await condition()`` holds (polled; at most 30 s, then the test fails)."""
    for _ in range(1500):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in 30 s")


async def test_replay_from_a_sequence_gives_the_same_events(
    world: World, nats_server: NatsServer
) -> None:
    """``tail`` from stream sequence 3 prints the stored events from the third on, byte
    for byte, and stops after ``count``."""
    publisher = EventPublisher(shard_of(world), world.store.name, stream_config(nats_server))
    try:
        await drain(publisher)
    finally:
        await publisher.aclose()
    stored = await stream_messages(nats_server.url)
    out = io.StringIO()
    printed = await tail(nats_server.url, out, from_seq=3, count=len(stored) - 2)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed == len(lines) == len(stored) - 2
    assert [(x["stream_seq"], x["subject"], x["event"]) for x in lines] == [
        (seq, subject, event) for seq, subject, _, event in stored[2:]
    ]
    ledger_only = io.StringIO()
    await tail(
        nats_server.url, ledger_only, from_seq=1, subject="paycore.ledger.>", idle_seconds=0.5
    )
    subjects = {json.loads(x)["subject"] for x in ledger_only.getvalue().splitlines()}
    assert subjects == {f"paycore.ledger.{world.store.name}.transfer"}


async def test_retention_purges_no_payment_event_the_stream_has_not_published(
    world: World, nats_server: NatsServer
) -> None:
    """With a stream configured, the maintenance purge (``published_only``) keeps every
    payment event past the stream's cursor, however old; once published they may go."""
    everything = PurgePaymentEvents(2**62, undelivered_too=True, published_only=True)
    assert await world.store.execute(everything) == 0
    publisher = EventPublisher(shard_of(world), world.store.name, stream_config(nats_server))
    try:
        await drain(publisher)
    finally:
        await publisher.aclose()
    published = await reads_of(world.store).payment_events_after(0, 10_000)
    assert published
    assert await world.store.execute(everything) == len(published)


async def test_paycore_events_tail_prints_the_stream(world: World, nats_server: NatsServer) -> None:
    """``paycore events tail --from 1 --count N`` prints the first N events as JSON lines
    and exits 0."""
    publisher = EventPublisher(shard_of(world), world.store.name, stream_config(nats_server))
    try:
        await drain(publisher)
    finally:
        await publisher.aclose()
    want = await expected(world.store)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "paycore", "events", "tail", "--nats", nats_server.url,
            "--from", "1", "--count", str(len(want))]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [x["event"]["id"] for x in lines] == [e.id for e in want]
    assert [x["stream_seq"] for x in lines] == list(range(1, len(want) + 1))


async def test_the_supervisor_runs_an_events_job_per_shard_only_when_configured(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """No [events] table: no events job (and no NATS needed); with one, a
    ``leader:events:<shard>`` job per shard, which publishes that shard's changes."""
    settings = Settings(data_dir=str(tmp_path), embedded_shards=2, leader_ttl_seconds=0.5)
    store = build_store(settings)
    await store.start()
    try:
        plain = WorkerSupervisor(store, settings, LocalLockService())
        assert "events" not in {r.job for r in plain.runners}
        await plain.stop()
        await setup_accounts(store)
        on = msgspec.structs.replace(settings, events=stream_config(nats_server))
        node = WorkerSupervisor(store, on, LocalLockService())
        assert sorted(r.shard or "" for r in node.runners if r.job == "events") == sorted(
            store.shards
        )
        await node.start()
        try:
            await wait_for(lambda: sum(p.published_total for p in node.events.values()) >= 1)
            jobs = {(j["job"], j["shard"]) for j in node.status()["jobs"] if j["leader"]}
        finally:
            await node.stop()
    finally:
        await store.stop()
    assert {("events", shard) for shard in store.shards} <= jobs
    got = await stream_messages(nats_server.url)
    assert {m[3]["data"]["id"] for m in got} >= {"fund-w1"}


def test_the_events_table_and_its_environment_variable() -> None:
    """[events] is off by default; PAYCORE_EVENTS_NATS_URL turns it on; a bad URL is refused."""
    assert load_settings(env={}).events is None
    on = load_settings(env={"PAYCORE_EVENTS_NATS_URL": "nats://n1:4222"}).events
    assert on is not None
    assert (on.nats_url, on.stream, on.subject_prefix) == ("nats://n1:4222", "PAYCORE", "paycore")
    with pytest.raises(msgspec.ValidationError, match="nats_url"):
        load_settings(env={"PAYCORE_EVENTS_NATS_URL": "http://n1"})


def test_events_tail_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """``--from 0`` or ``--count 0`` is a usage error (exit 2), and so is no action."""
    assert main(["events", "tail", "--from", "0"]) == 2
    assert main(["events", "tail", "--count", "0"]) == 2
    assert main(["events"]) == 2
    assert "at least 1" in capsys.readouterr().err


async def test_the_consumer_in_the_docs_applies_every_ledger_event_once_in_order(
    world: World, nats_server: NatsServer
) -> None:
    """The Python consumer docs/events.md shows, run as written (its URL aside), applies
    the ledger's events in order and skips an id it has seen."""
    publisher = EventPublisher(shard_of(world), world.store.name, stream_config(nats_server))
    try:
        await drain(publisher)
    finally:
        await publisher.aclose()
    doc = (ROOT / "docs" / "events.md").read_text()
    source = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(source.replace("nats://127.0.0.1:4222", nats_server.url), namespace)
    ledger = [as_json(e) for e in await expected(world.store) if e.type.startswith("transfer.")]
    applied: list[dict[str, Any]] = []
    seen = {ledger[0]["id"]}  # applied before: acked, not applied again
    task = asyncio.create_task(namespace["consume"](applied.append, seen))
    try:
        await wait_for(lambda: len(applied) == len(ledger) - 1)
        await asyncio.sleep(0.2)  # nothing more comes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert applied == ledger[1:]
    assert seen == {e["id"] for e in ledger}
