"""Failure behaviour of a node whose lock service (Redis) goes away, and /readyz.

While Redis is down (killed, or stalled), a write with an Idempotency-Key needs the
key's lock and fails safe: 503 ``lock_unavailable`` with Retry-After, and it changed
nothing (the same key runs normally later). Reads and writes without a key go on.
/readyz is 503 and says the lock service is unreachable; when Redis is back the node
is ready again and serves keyed writes without a restart. /readyz also shows where the
lock service is (password masked) and the node's background jobs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from api.nodes import Node, SharedShards, ids_on, running_node
from api.support import assert_problem
from paycore.api.idempotency import REPLAYED_HEADER
from paycore.api.routes.ops import redact_url
from paycore.errors import ErrorCode, UnavailableError
from paycore.locks.testing import RedisServer, free_port


@pytest.fixture
def backend() -> str:
    """SQLite shards only: what is tested here is the lock service, not the ledger's
    backend (the cross-node tests run on both)."""
    return "sqlite"


LOCK_DOWN = ErrorCode.LOCK_UNAVAILABLE


async def _accounts(node: Node) -> tuple[str, str]:
    """A bank and a wallet, both on shard-0 (so a transfer posts at once, no saga)."""
    bank = ids_on(node.store, "shard-0", 1, prefix="bank")[0]
    wallet = ids_on(node.store, "shard-0", 1, prefix="wallet")[0]
    for account in (bank, wallet):
        created = await node.client.post("/v1/accounts", json={"id": account, "currency": "USD"})
        assert created.status_code == 201, created.text
    return bank, wallet


def _transfer(transfer_id: str, debit: str, credit: str) -> dict[str, Any]:
    return {"id": transfer_id, "debit_account_id": debit, "credit_account_id": credit,
            "amount": 5, "currency": "USD"}  # fmt: skip


async def _keyed(node: Node, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    return await node.client.post(path, json=body, headers={"Idempotency-Key": key})


async def _ready_within(node: Node, seconds: float) -> dict[str, Any]:
    """/readyz's body once it is 200 (asserted to happen within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        response = await node.client.get("/readyz")
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.05)


async def test_redis_down_fails_keyed_writes_safe_and_the_node_recovers_by_itself(
    shared_shards: SharedShards, own_redis: RedisServer
) -> None:
    """Redis killed: keyed POSTs are 503 lock_unavailable + Retry-After and change
    nothing, reads and keyless POSTs work, /readyz is 503 naming the lock service.
    Redis restarted (same port, empty): ready again, and the refused keys run."""
    settings = shared_shards.settings(locks_url=own_redis.url)
    async with running_node(settings) as node:
        bank, wallet = await _accounts(node)
        ready = (await node.client.get("/readyz")).json()
        assert ready["status"] == "ready"
        assert ready["locks"] == {"backend": "redis", "url": own_redis.url, "reachable": True}

        own_redis.stop()
        refused_transfer = await _keyed(
            node, "/v1/transfers", _transfer("t-key", bank, wallet), "k-transfer"
        )
        assert_problem(refused_transfer, LOCK_DOWN)
        assert refused_transfer.headers["retry-after"] == "1"
        assert "lock service" in refused_transfer.json()["detail"]
        refused_account = await _keyed(
            node, "/v1/accounts", {"id": "acct-key", "currency": "USD"}, "k-account"
        )
        assert_problem(refused_account, LOCK_DOWN)
        # ... and nothing of them exists.
        assert (await node.client.get("/v1/transfers/t-key")).status_code == 404
        assert (await node.client.get("/v1/accounts/acct-key")).status_code == 404
        assert shared_shards.count("SELECT count(*) FROM idempotency") == 0
        # What needs no lock goes on: reads, writes without a key (their ids make them safe).
        keyless = await node.client.post("/v1/transfers", json=_transfer("t-free", bank, wallet))
        assert keyless.status_code == 201, keyless.text
        assert (await node.client.get("/v1/transfers/t-free")).status_code == 200
        assert (await node.client.get(f"/v1/accounts/{wallet}")).json()["balance"][
            "credits_posted"
        ] == 5
        not_ready = await node.client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.headers["retry-after"] == "1"
        body = not_ready.json()
        assert body["status"] == "unavailable"
        assert body["locks"]["reachable"] is False
        assert body["locks"]["backend"] == "redis"
        assert "lock service" in body["detail"]

        own_redis.start()  # the same port, empty: no restart of the node
        assert (await _ready_within(node, 3.0))["locks"]["reachable"] is True
        ran = await _keyed(node, "/v1/transfers", _transfer("t-key", bank, wallet), "k-transfer")
        assert ran.status_code == 201, ran.text
        assert REPLAYED_HEADER.lower() not in ran.headers  # the refusal stored nothing
        replay = await _keyed(node, "/v1/transfers", _transfer("t-key", bank, wallet), "k-transfer")
        assert replay.headers[REPLAYED_HEADER] == "true"
        account = await _keyed(
            node, "/v1/accounts", {"id": "acct-key", "currency": "USD"}, "k-account"
        )
        assert account.status_code == 201, account.text
        assert (await node.client.get(f"/v1/accounts/{wallet}")).json()["balance"][
            "credits_posted"
        ] == 10


async def test_a_stalled_redis_costs_a_keyed_write_at_most_the_lock_timeout(
    shared_shards: SharedShards, own_redis: RedisServer
) -> None:
    """Redis stalled (SIGSTOP: connections open, no answers): a keyed POST is 503
    lock_unavailable within the client's timeout (1 s) instead of hanging, and works
    again once Redis resumes."""
    settings = shared_shards.settings(locks_url=own_redis.url)
    assert own_redis.process is not None
    pid = own_redis.process.pid
    async with running_node(settings) as node:
        await _accounts(node)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            refused = await _keyed(node, "/v1/accounts", {"currency": "USD"}, "k-stalled")
            took = time.monotonic() - started
            assert_problem(refused, LOCK_DOWN)
            assert took < 2.0, took
            readyz = await node.client.get("/readyz")
            assert readyz.status_code == 503
            assert readyz.json()["locks"]["reachable"] is False
        finally:
            os.kill(pid, signal.SIGCONT)
        await _ready_within(node, 3.0)
        ran = await _keyed(node, "/v1/accounts", {"currency": "USD"}, "k-stalled")
        assert ran.status_code == 201, ran.text
        assert shared_shards.count("SELECT count(*) FROM idempotency") == 1


async def test_readyz_names_each_failure_when_shards_and_locks_are_both_down(
    shared_shards: SharedShards, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both down: 503, the detail names the shard and the lock service, Retry-After is
    the longer of the two."""
    settings = shared_shards.settings(locks_url=own_redis.url)
    async with running_node(settings) as node:

        async def shard_down() -> None:
            raise UnavailableError("shard shard-3: unable to open database file", retry_after=4)

        monkeypatch.setattr(node.store, "ping", shard_down)
        own_redis.stop()
        response = await node.client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "4"
        detail = response.json()["detail"]
        assert "shard shard-3" in detail
        assert "lock service" in detail


async def test_readyz_masks_the_lock_service_password_everywhere(
    shared_shards: SharedShards, redis_server: RedisServer
) -> None:
    """A password in ``locks_url`` never shows in /readyz, whether the lock service
    answers (this Redis lets any password in as ``default``) or not (nobody listens)."""
    secret = f"pw-{uuid.uuid4().hex}"
    for port, status in ((redis_server.port, 200), (free_port(), 503)):
        url = f"redis://default:{secret}@127.0.0.1:{port}/0"
        async with running_node(shared_shards.settings(locks_url=url)) as node:
            response = await node.client.get("/readyz")
        assert response.status_code == status, response.text
        assert secret not in response.text
        assert response.json()["locks"]["url"] == f"redis://default:***@127.0.0.1:{port}/0"


def test_redact_url_masks_passwords_of_every_url_and_dsn_shape() -> None:
    """URLs with and without a user, a password in the query string, libpq DSNs
    (quoted or not); URLs without a password are left as they are."""
    cases = {
        "redis://127.0.0.1:6379/0": "redis://127.0.0.1:6379/0",
        "redis://:s3cr%40t@h:1/0": "redis://:***@h:1/0",
        "rediss://u:p@h:1/0?password=q&x=1": "rediss://u:***@h:1/0?password=***&x=1",
        "postgresql://u:p@db/locks": "postgresql://u:***@db/locks",
        "postgresql://u@db/locks": "postgresql://u@db/locks",
        "host=db password='a b' dbname=l": "host=db password=*** dbname=l",
        "host=db PASSWORD=abc dbname=l": "host=db PASSWORD=*** dbname=l",
        "local": "local",
    }
    for url, shown in cases.items():
        assert redact_url(url) == shown, url


async def test_readyz_reports_the_background_jobs_of_the_node(
    shared_shards: SharedShards, own_redis: RedisServer
) -> None:
    """With workers on, /readyz lists each job per shard (relay, maintenance, payments), whether
    this node leads it, its failures; without workers, ``workers`` is null."""
    settings = shared_shards.settings(locks_url=own_redis.url, leader_ttl_seconds=1.0)
    async with running_node(settings, start_workers=True) as node:
        deadline = time.monotonic() + 5
        while True:
            body = (await node.client.get("/readyz")).json()
            jobs = body["workers"]["jobs"]
            if all(job["leader"] for job in jobs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "ready"
        assert body["workers"]["lock_backend_down"] is False
        assert {(j["job"], j["shard"]) for j in jobs} == {
            (job, f"shard-{i}")
            for job in ("relay", "maintenance", "payments", "webhooks")
            for i in range(4)
        }
        assert all(j["leader"] for j in jobs), jobs  # the only node leads them all
        assert all(set(j) == {"job", "shard", "leader", "failures", "last_error"} for j in jobs)
    async with running_node(settings) as node:
        assert (await node.client.get("/readyz")).json()["workers"] is None


async def test_a_node_starts_while_redis_is_down_and_becomes_ready_when_it_comes(
    shared_shards: SharedShards,
) -> None:
    """No Redis at start-up: the node starts anyway (fails safe, does not crash), is
    not ready, and becomes ready once a Redis appears at the configured address."""
    server = RedisServer(port=free_port())
    settings = shared_shards.settings(locks_url=server.url)
    try:
        async with running_node(settings) as node:
            assert (await node.client.get("/readyz")).status_code == 503
            refused = await _keyed(node, "/v1/accounts", {"currency": "USD"}, "k-early")
            assert_problem(refused, LOCK_DOWN)
            server.start()
            await _ready_within(node, 3.0)
            assert (
                await _keyed(node, "/v1/accounts", {"currency": "USD"}, "k-early")
            ).status_code == 201
    finally:
        server.close()
