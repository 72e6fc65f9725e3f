"""An Idempotency-Key in flight is guarded across API nodes by the lock service (Redis).

Two nodes, each with its own stores over the same four shards and its own Redis client,
get the same keyed request at once, many times over: exactly one runs it; the other
answers 409 ``idempotency_key_in_use`` or, if the first had finished, replays its
answer. The effects are counted in the shard databases themselves (transfers, accounts,
stored answers, balances) and the ledger is audited: never two effects.

The requests chosen are the ones the store alone cannot keep single: a batch whose
transfers live on every shard (one of them a cross-shard saga) and an account created
without an id (a fresh id per run), both written before the key's own record.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from api.nodes import Node, SharedShards, ids_on, running_node
from api.support import assert_problem
from backends import SQLiteDatabase
from paycore.api.idempotency import REPLAYED_HEADER, key_lock_name, needs_cluster_lock
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.errors import ErrorCode, UnavailableError
from paycore.locks import LocalLockService, open_lock_service
from paycore.locks.testing import RedisServer
from paycore.ops.audit import audit_cluster

ROUNDS = 30
IN_USE = ErrorCode.IDEMPOTENCY_KEY_IN_USE


@asynccontextmanager
async def two_nodes(shards: SharedShards, redis: RedisServer) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes over the same shards, locking keys in ``redis``. (Not a fixture: an
    app's lifespan must end in the task that started it.)"""
    settings = shards.settings(locks_url=redis.url)
    async with running_node(settings) as first, running_node(settings) as second:
        yield first, second


async def _race(
    nodes: tuple[Node, Node], rng: random.Random, path: str, body: dict[str, Any], key: str
) -> list[httpx.Response]:
    """POST ``body`` under ``key`` to both nodes at once (in a random order, the second
    sometimes a little later); the answers in node order."""

    async def send(node: Node, delay: float) -> httpx.Response:
        if delay:
            await asyncio.sleep(delay)
        return await node.client.post(path, json=body, headers={"Idempotency-Key": key})

    delays = [0.0, rng.choice([0.0, 0.0, 0.0005, 0.002, 0.005, 0.02])]
    rng.shuffle(delays)
    return list(await asyncio.gather(*(send(n, d) for n, d in zip(nodes, delays, strict=True))))


def _one_ran(answers: list[httpx.Response], outcomes: dict[str, int]) -> httpx.Response:
    """Exactly one answer is a run (not replayed); the other is 409 in_use or a replay
    of the very same answer. Tallies what the other was."""
    ran = [a for a in answers if a.status_code != 409 and REPLAYED_HEADER.lower() not in a.headers]
    assert len(ran) == 1, [(a.status_code, a.headers.get(REPLAYED_HEADER), a.text) for a in answers]
    (other,) = [a for a in answers if a is not ran[0]]
    if other.status_code == 409:
        assert_problem(other, IN_USE)
        outcomes["in_use"] += 1
    else:
        assert other.headers[REPLAYED_HEADER] == "true"
        assert (other.status_code, other.content) == (ran[0].status_code, ran[0].content)
        outcomes["replayed"] += 1
    return ran[0]


async def test_a_batch_over_every_shard_runs_once_when_two_nodes_get_its_key(
    shared_shards: SharedShards, redis_server: RedisServer
) -> None:
    """The same key and multi-shard batch sent to two nodes at once, 30 times: one runs
    it, the other waits for nothing (409) or replays; every transfer exists once, the
    balances count each once, one answer is stored per key, and the ledger audits clean."""
    async with two_nodes(shared_shards, redis_server) as nodes:
        await _batches_race(nodes, shared_shards)


async def _batches_race(nodes: tuple[Node, Node], shared_shards: SharedShards) -> None:
    first, _ = nodes
    store = first.store
    banks, wallets = {}, {}
    for shard in store.shards:
        banks[shard], wallets[shard] = ids_on(store, shard, 2, prefix=f"{shard}-")
        for account in (banks[shard], wallets[shard]):
            created = await first.client.post(
                "/v1/accounts", json={"id": account, "currency": "USD"}
            )
            assert created.status_code == 201, created.text
    rng = random.Random(5)
    outcomes = {"in_use": 0, "replayed": 0}
    run = uuid.uuid4().hex[:8]
    for r in range(ROUNDS):
        items = [
            {"id": f"{run}-{r}-{shard}", "debit_account_id": banks[shard],
             "credit_account_id": wallets[shard], "amount": 1, "currency": "USD"}
            for shard in store.shards
        ]  # fmt: skip
        items.append(  # a cross-shard saga: hold on shard-0, credit on shard-1, post
            {"id": f"{run}-{r}-x", "debit_account_id": banks["shard-0"],
             "credit_account_id": wallets["shard-1"], "amount": 2, "currency": "USD"}
        )  # fmt: skip
        answers = await _race(
            nodes, rng, "/v1/transfers/batch", {"transfers": items}, f"batch-{run}-{r}"
        )
        ran = _one_ran(answers, outcomes)
        assert ran.status_code == 200
        assert all("error" not in item for item in ran.json()["results"]), ran.text

    assert outcomes["in_use"] > 0, outcomes  # the nodes did meet in flight
    # Per round: four local transfers, and the saga's hold and credit leg (one id on two
    # shards, by design); the saga's step 3 has an internal xs. id.
    assert shared_shards.count("SELECT count(*) FROM transfers WHERE id LIKE ?", f"{run}-%") == (
        ROUNDS * 6
    )
    keys = shared_shards.count("SELECT count(*) FROM idempotency WHERE key LIKE ?", f"%{run}%")
    assert keys == ROUNDS
    for shard in store.shards:
        wallet = (await first.client.get(f"/v1/accounts/{wallets[shard]}")).json()["balance"]
        saga = 2 * ROUNDS if shard == "shard-1" else 0  # credited before the answer
        assert wallet["credits_posted"] == ROUNDS + saga
    bank = (await first.client.get(f"/v1/accounts/{banks['shard-0']}")).json()["balance"]
    # The request settled its saga before answering: nothing is left pending.
    assert (bank["debits_posted"], bank["debits_pending"]) == (3 * ROUNDS, 0)
    report = await audit_cluster(dict(store.shards))
    assert report.ok, report.violations
    assert report.sagas_open == 0  # every saga settled by its request


async def test_an_account_without_id_is_created_once_when_two_nodes_get_its_key(
    shared_shards: SharedShards, redis_server: RedisServer
) -> None:
    """``POST /v1/accounts`` without an id, with the same key at two nodes at once, 30
    times: exactly one account per key, and both answers name it."""
    rng = random.Random(7)
    outcomes = {"in_use": 0, "replayed": 0}
    run = uuid.uuid4().hex
    async with two_nodes(shared_shards, redis_server) as nodes:
        before = shared_shards.count("SELECT count(*) FROM accounts")
        for r in range(ROUNDS):
            body = {"currency": "USD"}
            ran = _one_ran(await _race(nodes, rng, "/v1/accounts", body, f"{run}-{r}"), outcomes)
            assert ran.status_code == 201, ran.text
    assert outcomes["in_use"] > 0, outcomes
    assert shared_shards.count("SELECT count(*) FROM accounts") - before == ROUNDS


async def test_an_account_without_id_is_opened_once_even_if_its_key_runs_twice(
    shared_shards: SharedShards,
) -> None:
    """A keyed request can run twice if its key's lock is lost (a node frozen past the
    lease, a Redis failover). Without any shared lock at all (each node its own local
    one), 30 keys raced at two nodes still open 30 accounts: the id of an account
    created without one is derived from the tenant and the key, so a second run finds
    the first's account instead of opening another."""
    rng = random.Random(11)
    run = uuid.uuid4().hex
    settings = shared_shards.settings()
    async with (
        running_node(settings, locks=LocalLockService()) as first,
        running_node(settings, locks=LocalLockService()) as second,
    ):
        before = shared_shards.count("SELECT count(*) FROM accounts")
        for r in range(ROUNDS):
            answers = await _race((first, second), rng, "/v1/accounts", {"currency": "USD"},
                                  f"{run}-{r}")  # fmt: skip
            ids = {a.json()["id"] for a in answers if a.status_code in (200, 201)}
            assert len(ids) <= 1, [a.text for a in answers]
    assert shared_shards.count("SELECT count(*) FROM accounts") - before == ROUNDS


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_long_request_keeps_its_key_locked_past_the_ttl(
    shared_shards: SharedShards, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key's lease (TTL 0.6 s here) is renewed while its request runs (until the test
    lets it finish): another node gets 409 in_use well past the TTL, then the replay once
    the first is done. The request waits on an event, not a clock, so a slow machine
    cannot let it finish before the last probe."""
    settings = shared_shards.settings(locks_url=redis_server.url, idempotency_lock_seconds=0.6)
    async with running_node(settings) as first, running_node(settings) as second:
        execute_idempotent = first.store.execute_idempotent
        finish = asyncio.Event()

        async def slow(command: Any, idempotency: Any) -> Any:
            await finish.wait()
            return await execute_idempotent(command, idempotency)

        monkeypatch.setattr(first.store, "execute_idempotent", slow)
        key = {"Idempotency-Key": f"slow-{uuid.uuid4().hex}"}
        body = {"currency": "USD"}
        running = asyncio.create_task(first.client.post("/v1/accounts", json=body, headers=key))
        for _ in range(3):  # at 0.6, 1.2 and 1.8 s: three TTLs in
            await asyncio.sleep(0.6)
            assert_problem(await second.client.post("/v1/accounts", json=body, headers=key), IN_USE)
        finish.set()
        ran = await running
        assert ran.status_code == 201
        again = await second.client.post("/v1/accounts", json=body, headers=key)
        assert again.headers[REPLAYED_HEADER] == "true"
        assert again.json()["id"] == ran.json()["id"]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_key_lock_is_released_after_the_request_whatever_its_outcome(
    shared_shards: SharedShards, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a request that failed (503 store_unavailable) and after one that succeeded,
    the key's lock is gone from Redis at once: a retry at another node runs (or replays)
    instead of waiting out the TTL behind a 409."""
    settings = shared_shards.settings(locks_url=redis_server.url)
    raw_key = f"free-{uuid.uuid4().hex}"
    lock_key = f"paycore:lock:{{{key_lock_name('default:' + raw_key)}}}"
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        async with running_node(settings) as first, running_node(settings) as second:

            async def shard_down(command: Any, idempotency: Any) -> Any:
                assert await redis.exists(lock_key) == 1  # held while the request runs
                raise UnavailableError("shard shard-2: disk I/O error")

            monkeypatch.setattr(first.store, "execute_idempotent", shard_down)
            key = {"Idempotency-Key": raw_key}
            body = {"currency": "USD"}
            failed = await first.client.post("/v1/accounts", json=body, headers=key)
            assert_problem(failed, ErrorCode.STORE_UNAVAILABLE)
            assert await redis.exists(lock_key) == 0
            ran = await second.client.post("/v1/accounts", json=body, headers=key)
            assert ran.status_code == 201
            assert await redis.exists(lock_key) == 0
    finally:
        await redis.aclose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_any_printable_key_locks_under_a_hashed_name(
    shared_shards: SharedShards, redis_server: RedisServer
) -> None:
    """Keys are client strings: braces (Redis hash tags), spaces, 255 characters all
    work, under a short fixed-shape lock name; each key is its own lock."""
    tag = uuid.uuid4().hex
    async with two_nodes(shared_shards, redis_server) as (first, second):
        for raw in (f"{{{tag}}} }}{{ a b", f"{tag}-" + "~" * (255 - 33), f"{tag}:x"):
            name = key_lock_name(f"default:{raw}")
            assert name.startswith("idem:")
            assert len(name) == 5 + 64
            key = {"Idempotency-Key": raw}
            body = {"currency": "USD"}
            ran = await first.client.post("/v1/accounts", json=body, headers=key)
            assert ran.status_code == 201, ran.text
            again = await second.client.post("/v1/accounts", json=body, headers=key)
            assert again.headers[REPLAYED_HEADER] == "true"
            assert again.json()["id"] == ran.json()["id"]
    assert key_lock_name("default:a") != key_lock_name("other:a")


async def test_the_lock_is_taken_only_where_the_store_needs_it(tmp_path: Any) -> None:
    """A sharded store with a lock service shared by nodes: locked. The in-process
    service (embedded mode), or a store of one shard (one transaction per request, the
    store alone serialises a key): no lock, as before."""
    redis = open_lock_service("redis://127.0.0.1:1/0")
    try:
        four = build_store(Settings(data_dir=str(tmp_path / "four")))
        one = build_store(Settings(data_dir=str(tmp_path / "one"), embedded_shards=1))
        plain = SQLiteDatabase(tmp_path / "plain").store()
        assert needs_cluster_lock(four, redis)
        assert not needs_cluster_lock(four, LocalLockService())
        assert not needs_cluster_lock(four, None)
        assert not needs_cluster_lock(one, redis)
        assert not needs_cluster_lock(plain, redis)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_embedded_nodes_with_local_locks_behave_as_before(
    shared_shards: SharedShards,
) -> None:
    """With ``locks_url = "local"`` (the default) keyed writes run and replay as before,
    and a key in flight on the node is still 409 in_use (``KeysInFlight``)."""
    async with running_node(shared_shards.settings()) as node:
        key = {"Idempotency-Key": "k1"}
        body = {"currency": "USD"}
        answers = await asyncio.gather(
            node.client.post("/v1/accounts", json=body, headers=key),
            node.client.post("/v1/accounts", json=body, headers=key),
        )
        assert _one_ran(list(answers), {"in_use": 0, "replayed": 0}).status_code == 201
        replay = await node.client.post("/v1/accounts", json=body, headers=key)
        assert replay.headers[REPLAYED_HEADER] == "true"
