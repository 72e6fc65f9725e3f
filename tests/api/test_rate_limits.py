"""Per-caller rate limits: GCRA's arithmetic, the 429 answer and its headers, who counts
as a caller, exempt probes, per-caller overrides, and the Redis-backed limiter shared by
two nodes that fails open (to per-node limits) while Redis is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.connection import ASGIConnection
from litestar.testing import AsyncTestClient

from api.support import assert_problem
from paycore.api import create_app, ratelimit
from paycore.api.ratelimit import (
    Limit,
    LocalRateLimiter,
    RedisRateLimiter,
    caller_identity,
    gcra,
)
from paycore.cluster.topology import build_store
from paycore.config import RateLimitConfig, Settings
from paycore.errors import ErrorCode
from paycore.locks.testing import RedisServer

Opener = Callable[..., AbstractAsyncContextManager[AsyncTestClient[Any]]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the rule ---------------------------------------------------------------------------


def test_gcra_allows_the_burst_then_one_request_per_interval() -> None:
    """A fresh caller gets ``burst`` requests at once, then one per ``1/per_second``;
    a refusal says exactly how long to wait and costs nothing."""
    limit = Limit(per_second=2.0, burst=3)
    tat, now = 0.0, 100.0
    remaining = []
    for _ in range(3):
        decision, tat = gcra(tat, now, limit)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [2, 1, 0]
    refused, same = gcra(tat, now, limit)
    assert (refused.allowed, refused.remaining, same) == (False, 0, tat)
    assert refused.retry_after == pytest.approx(0.5)
    assert refused.reset_after == pytest.approx(1.5)
    assert not gcra(tat, now + 0.49, limit)[0].allowed
    assert gcra(tat, now + 0.5, limit)[0].allowed
    # Idle long enough, the whole burst is back.
    assert gcra(tat, now + 10, limit)[0].remaining == 2


async def test_local_limiter_keeps_callers_apart_and_stays_bounded() -> None:
    """Each caller has its own budget; past ``max_keys`` callers, full buckets are
    forgotten first, so memory stays bounded under a flood of new identities."""
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock, max_keys=10)
    limit = Limit(1.0, 1)
    assert (await limiter.hit("a", limit)).allowed
    assert not (await limiter.hit("a", limit)).allowed
    assert (await limiter.hit("b", limit)).allowed
    for i in range(100):
        clock.now += 0.01
        assert (await limiter.hit(f"flood{i}", limit)).allowed
    assert len(limiter._tat) <= 10


def _connection(
    headers: dict[str, str], client: str = "10.1.2.3"
) -> ASGIConnection[Any, Any, Any, Any]:
    scope: Any = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (client, 5555),
        "path": "/",
    }
    return ASGIConnection(scope)


def test_caller_identity_is_the_key_id_else_a_hash_of_the_header_else_the_address() -> None:
    """A ``pk_live_<keyid>_<secret>`` bearer key is named by its id (its secret never
    appears); any other Authorization by a hash of it; no header by the client address."""
    key = caller_identity(_connection({"Authorization": "Bearer pk_live_k42_s3cr3tvalue"}))
    assert key == "key:k42"
    other = caller_identity(_connection({"Authorization": "Basic dXNlcjpwYXNz"}))
    assert other.startswith("auth:")
    assert "dXNlcjpwYXNz" not in other
    assert other == caller_identity(_connection({"Authorization": "Basic dXNlcjpwYXNz"}))
    assert caller_identity(_connection({})) == "ip:10.1.2.3"


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def open_app(tmp_path: Path) -> Opener:
    """Opens a client on an app over a one-shard SQLite store; keywords are settings."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
        settings = Settings(data_dir=str(tmp_path), embedded_shards=1, auth="open", **overrides)
        app = create_app(build_store(settings), settings, start_workers=False)
        async with AsyncTestClient(app=app) as client:
            yield client

    return factory


async def _account(client: AsyncTestClient[Any], n: int, **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/accounts", json={"id": f"a{n}", "currency": "USD"}, headers=headers
    )


async def test_a_caller_over_its_burst_gets_429_with_retry_after(open_app: Opener) -> None:
    """Past its burst a caller gets 429 ``rate_limited`` (problem+json) with Retry-After
    and RateLimit-* headers, and nothing is done; answers within the limit carry the
    RateLimit-* headers too; another caller is not affected."""
    async with open_app(rate_limit_per_second=0.5, rate_limit_burst=3) as client:
        alice = {"Authorization": "Bearer pk_live_alice_0123456789"}
        answers = [await _account(client, n, **alice) for n in range(3)]
        assert [r.status_code for r in answers] == [201, 201, 201]
        assert [r.headers["ratelimit-remaining"] for r in answers] == ["2", "1", "0"]
        assert {r.headers["ratelimit-limit"] for r in answers} == {"3"}
        refused = await _account(client, 3, **alice)
        assert_problem(refused, ErrorCode.RATE_LIMITED)
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        assert refused.headers["ratelimit-remaining"] == "0"
        assert (await client.get("/v1/accounts/a3")).status_code == 404  # nothing done
        bob = {"Authorization": "Bearer pk_live_bob_0123456789"}
        assert (await _account(client, 4, **bob)).status_code == 201


async def test_probes_are_never_limited(open_app: Opener) -> None:
    """/healthz, /readyz and /metrics answer however often they are asked."""
    async with open_app(rate_limit_per_second=0.1, rate_limit_burst=1) as client:
        for _ in range(5):
            for path in ("/healthz", "/readyz", "/metrics"):
                response = await client.get(path)
                assert response.status_code == 200, path
                assert "ratelimit-limit" not in response.headers
        assert (await client.get("/v1/accounts/x")).status_code == 404
        assert_problem(await client.get("/v1/accounts/x"), ErrorCode.RATE_LIMITED)


async def test_an_override_gives_one_caller_its_own_budget(open_app: Opener) -> None:
    """``rate_limit_overrides`` sets one caller's budget; the others keep the default;
    0 turns rate limiting off."""
    overrides = {"key:big": RateLimitConfig(per_second=100, burst=10)}
    async with open_app(
        rate_limit_per_second=0.1, rate_limit_burst=1, rate_limit_overrides=overrides
    ) as client:
        big = {"Authorization": "Bearer pk_live_big_0123456789"}
        assert all([(await _account(client, n, **big)).status_code == 201 for n in range(10)])
        assert (await _account(client, 10)).status_code == 201
        assert (await _account(client, 11)).status_code == 429
    async with open_app(rate_limit_per_second=0) as client:
        answers = [await _account(client, n) for n in range(20, 30)]
        assert all(r.status_code == 201 for r in answers)
        assert "ratelimit-limit" not in answers[0].headers


# -- shared through Redis ---------------------------------------------------------------------


async def test_two_nodes_share_a_callers_budget_through_redis(
    open_app: Opener, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``locks_url`` on Redis, the budget is one for the whole cluster: what a
    caller spent on one node is spent on the other."""
    # A loaded machine may keep Redis's answer past the 250 ms that make a node decide
    # alone (fail open, tested below): here every answer must come from Redis.
    monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT_SECONDS", 5.0)
    settings: dict[str, Any] = {
        "locks_url": redis_server.url,
        "rate_limit_per_second": 0.5,
        "rate_limit_burst": 4,
    }
    caller = {"Authorization": "Bearer pk_live_sharedcaller_0123456789"}
    async with open_app(**settings) as one, open_app(**settings) as two:
        statuses = []
        for n in range(6):
            node = one if n % 2 else two
            statuses.append((await _account(node, n, **caller)).status_code)
    assert statuses[:4] == [201] * 4
    assert statuses[4:] == [429, 429]


async def test_redis_down_fails_open_to_per_node_limits_and_recovers(
    own_redis: RedisServer,
) -> None:
    """Redis down: no request is refused for that; each node limits on its own meanwhile
    (the in-process limiter), and the shared budget is used again once Redis is back."""
    clock = Clock()
    limiter = RedisRateLimiter.from_url(own_redis.url, clock=clock)
    try:
        limit = Limit(per_second=1.0, burst=2)
        assert (await limiter.hit("c", limit)).allowed
        own_redis.stop()
        during = [await limiter.hit("c", limit) for _ in range(3)]
        assert [d.allowed for d in during] == [True, True, False]  # the local budget
        assert limiter.failures == 1  # then Redis is skipped for a while
        own_redis.start()
        clock.now += 5.0  # past the pause after a failure
        back = [await limiter.hit("c", limit) for _ in range(3)]
        # The Redis TAT of "c" (one request spent) has long refilled on Redis's clock.
        assert [d.allowed for d in back] == [True, True, False]
        assert limiter.failures == 1
    finally:
        await limiter.aclose()
