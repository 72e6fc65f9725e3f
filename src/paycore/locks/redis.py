"""Locks in Redis (redis-py's asyncio client): one atomic Lua script per operation.

Keys, per lock name N (the ``{N}`` hash tag keeps both in one Redis Cluster slot)::

    paycore:lock:{N}    the holder's owner token; SET NX PX, so it expires by itself
    paycore:fence:{N}   the last fencing token issued for N; outlives the lock by
                        ``fence_retention`` (refreshed at every grant and renewal)

The grant script sets the lock and issues the token in one step, so only the winner
gets a token and no token is issued twice. The token is ``INCR`` of the counter,
raised to the server's clock in microseconds if below it: after a restart that lost
the data (no persistence, or a failover to a replica that missed the last writes),
or once an idle counter expired, tokens still grow. A grant whose reply was lost
and is retried by the client with the same owner answers the same token (the script
is idempotent per owner), so redis-py may retry it safely.

Release and extend compare the owner before deleting or re-expiring (the classic
compare-and-delete): a holder whose lease ran out cannot free or prolong its
successor's lock.

Reconnection is redis-py's: a broken pooled connection is replaced on the next call
and a failed call is retried once, quickly; anything longer becomes
``LockUnavailable`` within ``timeout`` seconds, so callers fail safe instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript

from paycore.locks._service import LockServiceBase
from paycore.locks.base import LockUnavailable

__all__ = ["RedisLockService", "map_redis_errors"]

# KEYS: lock, fence counter. ARGV: owner, ttl ms, fence retention ms.
_GRANT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local now = redis.call('TIME')
  local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local token = redis.call('INCR', KEYS[2])
  if token < floor then
    token = floor
    redis.call('SET', KEYS[2], string.format('%d', token))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return token
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local token = redis.call('GET', KEYS[2])
  if token then return tonumber(token) end
end
return false
"""

# KEYS: lock. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lock, fence counter. ARGV: owner, ttl ms, fence retention ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


@contextlib.contextmanager
def map_redis_errors(name: str) -> Iterator[None]:
    """Turn every failure of a Redis call (a time-out included) into ``LockUnavailable``:
    whatever went wrong, the caller holds no lock."""
    try:
        yield
    except (redis.exceptions.RedisError, OSError) as exc:  # TimeoutError is an OSError
        detail = f"Redis: {type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise LockUnavailable(name, detail) from exc


def _milliseconds(seconds: float) -> int:
    # Rounded up: the server must never expire a lease before our local deadline.
    return max(1, math.ceil(seconds * 1000))


class RedisLockService(LockServiceBase):
    """Locks in one Redis server (or a Redis Cluster: each name lives in one slot)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "paycore",
        timeout: float = 1.0,
        fence_retention: float = 7 * 86_400.0,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self._retention_ms = _milliseconds(fence_retention)
        self._owns_client = owns_client
        # register_script: EVALSHA, and a reload when the server lost its script cache.
        self._grant_script = client.register_script(_GRANT)
        self._release_script = client.register_script(_RELEASE)
        self._extend_script = client.register_script(_EXTEND)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 1.0,
        max_connections: int = 64,
        **options: Any,
    ) -> RedisLockService:
        """A service with its own client for ``url`` (``redis://host:port/db``).

        Socket timeouts are half of ``timeout`` so that one quick retry on a fresh
        connection (after a server restart every pooled connection is dead) still fits;
        idle connections are checked before use.
        """
        # A blocking pool: past max_connections a call waits for a free connection
        # (within its own timeout) instead of failing at once with "Too many
        # connections", which under a burst of keyed requests turned into 503s and
        # into leaders dropping their leases.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            socket_timeout=timeout / 2,
            socket_connect_timeout=timeout / 2,
            retry=Retry(ExponentialWithJitterBackoff(cap=0.05, base=0.005), retries=1),
            health_check_interval=10,
            max_connections=max_connections,
            timeout=timeout,
            client_name="paycore-locks",
        )
        client = aioredis.Redis.from_pool(pool)  # the client closes the pool with itself
        return cls(client, timeout=timeout, owns_client=True, **options)

    def _keys(self, name: str) -> list[str]:
        return [f"{self.prefix}:lock:{{{name}}}", f"{self.prefix}:fence:{{{name}}}"]

    async def _call(
        self, name: str, script: AsyncScript, keys: list[str], args: list[str | int]
    ) -> Any:
        with map_redis_errors(name):
            async with asyncio.timeout(self.timeout):
                return await script(keys=keys, args=args)

    async def _grant(self, name: str, owner: str, ttl: float) -> int | None:
        args: list[str | int] = [owner, _milliseconds(ttl), self._retention_ms]
        token = await self._call(name, self._grant_script, self._keys(name), args)
        return None if token is None else int(token)

    async def _release(self, name: str, owner: str) -> bool:
        return bool(await self._call(name, self._release_script, self._keys(name)[:1], [owner]))

    async def _extend(self, name: str, owner: str, ttl: float) -> bool:
        args: list[str | int] = [owner, _milliseconds(ttl), self._retention_ms]
        return bool(await self._call(name, self._extend_script, self._keys(name), args))

    async def ping(self) -> None:
        with map_redis_errors("<ping>"):
            async with asyncio.timeout(self.timeout):
                await self.client.ping()

    async def aclose(self) -> None:
        await self._stop_forgetting()
        if self._owns_client:
            await self.client.aclose()
