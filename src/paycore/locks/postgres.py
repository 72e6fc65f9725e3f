"""Locks in PostgreSQL: a lease table, one autocommit statement per operation.

The table (``postgres.sql`` beside this module) has one row per lock name. A grant is
one upsert: insert the row, or take over an existing one only if its lease has expired
(``ON CONFLICT ... DO UPDATE ... WHERE expires_at <= now``), raising the fencing token
in the same statement; the row lock that the upsert takes makes concurrent grants of
one name queue, and exactly one of them wins. Release and extend are UPDATEs that
compare the owner and refuse an expired lease; a grant repeated by its owner (a
retry after a lost reply) answers the same token. Release keeps the row (owner NULL) so
the name's token never goes back. Expiry is on the server's clock; tokens follow the
rule of ``paycore.locks.base`` (last + 1, at least the clock in microseconds).

The table is created at first use, under an advisory lock so that several nodes
starting at once do not race; it lives in the database of the DSN given (a shard's, or
one of its own). Connections come from a psycopg_pool pool; a statement that met a
dead connection is run again on a fresh one, so the service follows a server restart
or failover by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from paycore.locks._service import LockServiceBase
from paycore.locks.base import LockUnavailable

__all__ = ["PostgresLockService", "map_postgres_lock_errors"]

log = logging.getLogger(__name__)

_SCHEMA_LOCK_KEY = 7412002  # pg_advisory_xact_lock key of the lease table's DDL

_GRANT = """
INSERT INTO lock_leases AS l (name, owner, fencing_token, expires_at)
VALUES (%(name)s, %(owner)s, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
        clock_timestamp() + %(ttl_ms)s * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE
SET owner = excluded.owner,
    fencing_token = CASE WHEN l.owner = excluded.owner THEN l.fencing_token
                         ELSE greatest(l.fencing_token + 1, excluded.fencing_token) END,
    expires_at = excluded.expires_at
WHERE l.expires_at <= clock_timestamp() OR l.owner = excluded.owner
RETURNING fencing_token
"""

_RELEASE = """
UPDATE lock_leases SET owner = NULL, expires_at = '-infinity'
WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()
"""

_EXTEND = """
UPDATE lock_leases SET expires_at = clock_timestamp() + %(ttl_ms)s * interval '1 millisecond'
WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()
"""


@contextlib.contextmanager
def map_postgres_lock_errors(name: str) -> Iterator[None]:
    """Turn every failure of a call (a time-out included) into ``LockUnavailable``:
    whatever went wrong, the caller holds no lock."""
    try:
        yield
    except (psycopg.Error, OSError) as exc:  # PoolTimeout is a psycopg.OperationalError
        detail = f"PostgreSQL: {type(exc).__name__}: {exc}".strip().rstrip(":")
        raise LockUnavailable(name, detail) from exc


def _milliseconds(seconds: float) -> int:
    # Rounded up: the server must never expire a lease before our local deadline.
    return max(1, math.ceil(seconds * 1000))


class PostgresLockService(LockServiceBase):
    """Locks in a PostgreSQL lease table (see the module docstring)."""

    def __init__(self, dsn: str, *, timeout: float = 2.0, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = (
            AsyncConnectionPool(
                dsn,
                min_size=1,
                max_size=pool_size,
                open=False,
                timeout=timeout,
                kwargs={"autocommit": True, "connect_timeout": max(1, math.ceil(timeout))},
            )
        )
        self._schema_ready = False

    async def open(self) -> None:
        # wait=False: a node must start (and fail safe, holding no lock) while the
        # database is down; calls answer LockUnavailable until it is back.
        if self._pool.closed:
            await self._pool.open(wait=False)

    async def aclose(self) -> None:
        await self._stop_forgetting()
        await self._pool.close()

    async def _execute(
        self, name: str, query: str, params: dict[str, Any]
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run one autocommit statement: its rows (if any) and its row count.

        A statement that failed because its pooled connection was dead (the server
        restarted or cut the session) is run again on another one: every statement
        here may run twice (a grant is idempotent for its owner). The pool's own
        ``check`` is not used: after a failed check it backs off for about a second,
        longer than a short lease may wait.
        """
        with map_postgres_lock_errors(name):
            await self.open()
            async with asyncio.timeout(self.timeout):
                while True:
                    async with self._pool.connection() as conn:
                        try:
                            return await self._run(conn, query, params)
                        except psycopg.OperationalError:
                            if not conn.broken:
                                raise
                    log.info("lock %r: connection was dead, retrying on another", name)

    async def _run(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], query: str, params: dict[str, Any]
    ) -> tuple[list[tuple[Any, ...]], int]:
        if not self._schema_ready:
            await self._create_schema(conn)
        cur = await conn.execute(query, params)
        rows = await cur.fetchall() if cur.description else []
        return rows, cur.rowcount

    async def _create_schema(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        ddl = resources.files("paycore.locks").joinpath("postgres.sql").read_text()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            await conn.execute(sql.SQL(ddl))
        self._schema_ready = True

    async def _grant(self, name: str, owner: str, ttl: float) -> int | None:
        params = {"name": name, "owner": owner, "ttl_ms": _milliseconds(ttl)}
        rows, _ = await self._execute(name, _GRANT, params)
        return int(rows[0][0]) if rows else None

    async def _release(self, name: str, owner: str) -> bool:
        _, count = await self._execute(name, _RELEASE, {"name": name, "owner": owner})
        return count == 1

    async def _extend(self, name: str, owner: str, ttl: float) -> bool:
        params = {"name": name, "owner": owner, "ttl_ms": _milliseconds(ttl)}
        _, count = await self._execute(name, _EXTEND, params)
        return count == 1

    async def ping(self) -> None:
        await self._execute("<ping>", "SELECT 1", {})
