"""Per-caller rate limits: GCRA (a token bucket kept as one timestamp), 429 when over.

Each caller (``caller_identity``) may send ``per_second`` requests a second on average
and ``burst`` at once. GCRA keeps, per caller, one number: the theoretical arrival time
(TAT) of its next request. A request at ``now`` is allowed when
``max(TAT, now) + interval - burst * interval <= now``, and then moves TAT on by one
``interval`` (``1 / per_second``); otherwise it is refused with ``Retry-After`` the
seconds until it would be allowed, and TAT does not move (a refused request costs
nothing, so a caller that keeps retrying too fast is not locked out for longer).

Two limiters, one ``RateLimiter`` protocol:

- ``LocalRateLimiter``: in the process (the embedded default, and the fallback below);
- ``RedisRateLimiter``: when ``locks_url`` is Redis, one atomic Lua script per request
  (``GET`` the TAT, decide, ``SET ... PX``), on the server's clock (``TIME``), so every
  API node shares the budget.

Redis down: rate limiting is a guard against abuse, not a money promise, so it fails
*open*: while Redis does not answer (each call bounded by ``timeout``; after a failure
Redis is skipped for ``retry_after_failure`` seconds) each node limits on its own with
its in-process limiter. A caller may then get up to N times its rate over N nodes;
no request is ever refused because Redis is down. It is logged, once per outage.

The middleware answers 429 ``rate_limited`` (problem+json) with ``Retry-After`` and the
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` headers (IETF
draft), and adds those three headers to every limited answer. ``/healthz``,
``/readyz`` and ``/metrics`` are never limited.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from paycore.api.problems import problem
from paycore.errors import ErrorCode

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = [
    "EXEMPT_PATHS",
    "Decision",
    "Limit",
    "LocalRateLimiter",
    "RateLimitMiddleware",
    "RateLimiter",
    "RedisRateLimiter",
    "caller_identity",
    "gcra",
    "rate_limiter_for",
]

log = logging.getLogger(__name__)

EXEMPT_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
# ``pk_live_<keyid>_<secret>`` (or ``pk_test_``): the key id names the caller.
_API_KEY: Final = re.compile(r"pk_(?:live|test)_([A-Za-z0-9]{1,64})_\S+")


def caller_identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Who is calling, for rate limits: ``key:<keyid>`` for a bearer API key
    (``pk_live_<keyid>_<secret>``), else ``auth:<sha256 of the Authorization header>``
    (never the header itself), else ``ip:<client address>``.

    The one place to change once requests carry an authenticated key (then: its id).
    """
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        match = _API_KEY.fullmatch(token.strip()) if scheme.lower() == "bearer" else None
        if match is not None:
            return f"key:{match.group(1)}"
        digest = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).hexdigest()
        return f"auth:{digest[:32]}"
    client = connection.client
    return f"ip:{client.host if client is not None else 'unknown'}"


@dataclass(frozen=True, slots=True)
class Limit:
    """A caller's budget: ``per_second`` on average, ``burst`` at once."""

    per_second: float
    burst: int

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's verdict; seconds are floats (the middleware rounds them up)."""

    allowed: bool
    limit: int  # the burst: how many requests may come at once
    remaining: int  # how many more may come right now
    retry_after: float  # 0 when allowed: how long until one more is allowed
    reset_after: float  # how long until the whole burst is available again


class RateLimiter(Protocol):
    """Counts one request of ``key`` against ``limit``."""

    async def hit(self, key: str, limit: Limit) -> Decision: ...

    async def aclose(self) -> None: ...


def gcra(tat: float, now: float, limit: Limit) -> tuple[Decision, float]:
    """The decision for a request at ``now`` given the stored ``tat``, and the new TAT
    (unchanged when refused). Pure: both limiters' rule (the Lua script mirrors it)."""
    interval = limit.interval
    tolerance = interval * limit.burst
    new_tat = max(tat, now) + interval
    allow_at = new_tat - tolerance
    if allow_at > now:
        reset = max(tat, now) - now
        return Decision(False, limit.burst, 0, allow_at - now, reset), tat
    remaining = int((now - allow_at) / interval + 1e-9)
    return Decision(True, limit.burst, remaining, 0.0, new_tat - now), new_tat


class LocalRateLimiter:
    """GCRA in this process: one float per caller seen lately (bounded)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, limit: Limit) -> Decision:
        return self.hit_now(key, limit)

    def hit_now(self, key: str, limit: Limit) -> Decision:
        now = self._clock()
        decision, tat = gcra(self._tat.get(key, now), now, limit)
        if decision.allowed:
            if key not in self._tat and len(self._tat) >= self._max_keys:
                self._sweep(now)
            self._tat[key] = tat
        return decision

    def _sweep(self, now: float) -> None:
        """Forget callers whose bucket is full again (as good as never seen); if that is
        not enough (a flood of new identities), forget the older half: failing open."""
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        if len(self._tat) >= self._max_keys:
            keep = sorted(self._tat.items(), key=lambda item: item[1])[len(self._tat) // 2 :]
            self._tat = dict(keep)

    async def aclose(self) -> None:
        self._tat.clear()


# KEYS: the caller's TAT. ARGV: interval in microseconds, burst.
# Returns {allowed, remaining, retry_after_us, reset_after_us}; mirrors ``gcra``.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
"""


class RedisRateLimiter:
    """GCRA in Redis, shared by every node; the in-process one while Redis is down."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "paycore",
        timeout: float = 0.25,
        retry_after_failure: float = 1.0,
        owns_client: bool = False,
        fallback: LocalRateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self.retry_after_failure = retry_after_failure
        self.fallback = fallback if fallback is not None else LocalRateLimiter(clock=clock)
        self._owns_client = owns_client
        self._clock = clock
        self._script: AsyncScript = client.register_script(_GCRA)
        self._down_until: float | None = None  # set while Redis is skipped
        self.failures = 0  # Redis calls that failed (the fallback decided)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.25, **options: Any) -> RedisRateLimiter:
        """A limiter with its own small client for ``url``: no retry (the fallback is
        the retry), connect and socket time-outs of ``timeout``."""
        import redis.asyncio as aioredis  # noqa: PLC0415 - loaded when chosen

        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=10,
            max_connections=64,
            client_name="paycore-ratelimit",
        )
        return cls(client, timeout=timeout, owns_client=True, **options)

    async def hit(self, key: str, limit: Limit) -> Decision:
        import redis.exceptions  # noqa: PLC0415 - redis is loaded already (the client)

        now = self._clock()
        if self._down_until is not None and now < self._down_until:
            return self.fallback.hit_now(key, limit)
        interval_us = max(1, round(limit.interval * 1_000_000))
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._script(
                    keys=[f"{self.prefix}:rl:{{{key}}}"], args=[interval_us, limit.burst]
                )
        except (redis.exceptions.RedisError, OSError) as exc:  # TimeoutError is an OSError
            self.failures += 1
            if self._down_until is None:
                log.warning(
                    "rate limits: Redis does not answer (%s); each node limits on its own "
                    "until it does (fail open)",
                    type(exc).__name__,
                )
            self._down_until = now + self.retry_after_failure
            return self.fallback.hit_now(key, limit)
        if self._down_until is not None:
            log.info("rate limits: Redis answers again; limits are shared by the nodes")
            self._down_until = None
        allowed, remaining, retry_us, reset_us = (int(v) for v in reply)
        return Decision(
            bool(allowed), limit.burst, remaining, retry_us / 1_000_000, reset_us / 1_000_000
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()


class RateLimitMiddleware:
    """Counts each request against its caller's limit (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        default: Limit,
        overrides: dict[str, Limit] | None = None,
        exempt: Iterable[str] = EXEMPT_PATHS,
        identity: Callable[[ASGIConnection[Any, Any, Any, Any]], str] = caller_identity,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.default = default
        self.overrides = overrides or {}
        self.exempt = frozenset(exempt)
        self.identity = identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        caller = self.identity(ASGIConnection(scope))
        decision = await self.limiter.hit(caller, self.overrides.get(caller, self.default))
        headers = [
            (b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(math.ceil(decision.reset_after)).encode()),
        ]
        if not decision.allowed:
            retry_after = max(1, math.ceil(decision.retry_after))
            answer = problem(
                ErrorCode.RATE_LIMITED,
                f"more than {decision.limit} requests at once or the sustained rate of this "
                f"caller; retry in {retry_after} s",
            )
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-type", answer.content_type.encode()),
                    (b"content-length", str(len(answer.body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                    *headers,
                ],
            }
            await send(start)
            body: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": answer.body,
                "more_body": False,
            }
            await send(body)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# How long a request waits for Redis's answer before its node decides alone (fail open):
# a rate limit must never make a request slow.
REDIS_TIMEOUT_SECONDS = 0.25


def rate_limiter_for(locks_url: str) -> RateLimiter:
    """Redis-backed when ``locks_url`` is Redis (the cluster), else in-process."""
    scheme = locks_url.split("://", 1)[0] if "://" in locks_url else ""
    if scheme in {"redis", "rediss", "unix"}:
        return RedisRateLimiter.from_url(locks_url, timeout=REDIS_TIMEOUT_SECONDS)
    return LocalRateLimiter()
