"""What only the PostgreSQL backend has: the lease table created idempotently by racing
nodes, the token row kept after release, reconnection after the server cut every
session, and every psycopg error translated."""

from __future__ import annotations

import asyncio
import time

import psycopg
import psycopg_pool
import pytest

from fix_postgres import PostgresServer
from paycore.locks import LockUnavailable
from paycore.locks.postgres import PostgresLockService, map_postgres_lock_errors
from paycore.locks.testing import free_port

pytestmark = pytest.mark.postgres


async def test_racing_nodes_create_the_lease_table_once(postgres_dsn: str) -> None:
    """Several services starting at once on an empty database all work: the DDL runs
    under an advisory lock and is idempotent."""
    services = [PostgresLockService(postgres_dsn) for _ in range(4)]
    leases = await asyncio.gather(*(s.acquire(f"race-{i}", 5) for i, s in enumerate(services)))
    assert all(lease is not None for lease in leases)
    for service in services:
        await service.aclose()
    with psycopg.connect(postgres_dsn) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'lock_leases' ORDER BY ordinal_position"
        ).fetchall()
    assert columns == [
        ("name", "text"),
        ("owner", "text"),
        ("fencing_token", "bigint"),
        ("expires_at", "timestamp with time zone"),
    ]


async def test_release_keeps_the_token_row(lock_database: str) -> None:
    """A released lock keeps its row (no owner), so the next token still counts up."""
    async with PostgresLockService(lock_database) as locks:
        first = await locks.acquire("kept-row", 5)
        assert first is not None
        assert await locks.release(first)
        with psycopg.connect(lock_database) as conn:
            row = conn.execute(
                "SELECT owner, fencing_token FROM lock_leases WHERE name = 'kept-row'"
            ).fetchone()
        assert row == (None, first.fencing_token)
        second = await locks.acquire("kept-row", 5)
        assert second is not None
        assert second.fencing_token > first.fencing_token


async def test_a_retried_grant_answers_the_same_token(lock_database: str) -> None:
    """A grant run twice for one owner (a retry on a fresh connection) answers the same
    token; another owner is still refused."""
    async with PostgresLockService(lock_database) as locks:
        first = await locks._grant("retried", "owner-1", 5)
        again = await locks._grant("retried", "owner-1", 5)
        assert first is not None
        assert again == first
        assert await locks._grant("retried", "owner-2", 5) is None


async def test_sessions_cut_by_the_server_are_replaced(
    postgres_server: PostgresServer, lock_database: str
) -> None:
    """After the server killed every session (as a restart does), the next calls work on
    new connections; a held lease keeps being renewed."""
    async with PostgresLockService(lock_database) as locks:
        async with locks.hold("cut", 0.6) as held:
            await asyncio.to_thread(postgres_server.disconnect_all, lock_database)
            await asyncio.sleep(0.7)
            assert not held.lost
        assert await locks.acquire("cut", 5) is not None


async def test_an_unreachable_database_fails_fast_and_safe() -> None:
    """Nothing listening: calls answer LockUnavailable within the timeout."""
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=none connect_timeout=1"
    async with PostgresLockService(dsn, timeout=0.3) as locks:
        started = time.monotonic()
        with pytest.raises(LockUnavailable, match="PostgreSQL"):
            await locks.acquire("nowhere", 1)
        with pytest.raises(LockUnavailable):
            await locks.ping()
        assert time.monotonic() - started < 1.5


def _psycopg_errors() -> list[type[Exception]]:
    found: list[type[Exception]] = [OSError, TimeoutError, psycopg_pool.PoolTimeout]
    for module in (psycopg, psycopg.errors):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, psycopg.Error):
                found.append(value)
    return sorted(set(found), key=lambda e: e.__name__)


def test_every_psycopg_error_is_mapped() -> None:
    """Whatever psycopg or its pool raises becomes LockUnavailable: no lock, no crash."""
    errors = _psycopg_errors()
    assert len(errors) > 100  # every SQLSTATE class, not an empty scan
    for error in errors:
        with pytest.raises(LockUnavailable) as caught, map_postgres_lock_errors("x"):
            raise error("boom")
        assert isinstance(caught.value.__cause__, error), error
