"""Fixtures for the lock tests: a PostgreSQL database, and the backend of each run
(the Redis servers, ``redis_server`` and ``own_redis``, come from ``fix_redis``).

A test that asks for ``backend`` runs once per lock backend (ids ``redis``,
``postgres``, ``local``). ``backend.make()`` opens another client of the same backend:
two clients are two nodes (for ``local``, every "node" shares the one in-process
service, as the tasks of one embedded process do). Lock names are unique per test
(``lock_name``), so the session's Redis server and database need no cleaning.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from fix_postgres import PostgresServer
from paycore.locks import LocalLockService, LockServiceBase, open_lock_service


@pytest.fixture(scope="session")
def lock_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A DSN of a database for the PostgreSQL lock tests (the lease table is created by
    the service itself), dropped at the end of the run."""
    dsn = postgres_server.new_database()
    yield dsn
    postgres_server.drop_database(dsn)


class Backend:
    """The lock backend of a test run: its kind, its URL, and clients of it."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self._local = LocalLockService() if url is None else None
        self._opened: list[LockServiceBase] = []

    async def make(self) -> LockServiceBase:
        """A new, open client of this backend (one "node"); closed after the test."""
        if self._local is not None:
            return self._local
        service = open_lock_service(self.url)
        await service.open()
        self._opened.append(service)
        return service

    async def close(self) -> None:
        for service in self._opened:
            await service.aclose()


@pytest.fixture(params=["redis", pytest.param("postgres", marks=pytest.mark.postgres), "local"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The lock backend of this run: ``redis``, ``postgres`` or ``local``."""
    kind: str = request.param
    url: str | None = None
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
    elif kind == "postgres":
        url = request.getfixturevalue("lock_database")
    chosen = Backend(kind, url)
    yield chosen
    await chosen.close()


@pytest.fixture
def lock_name() -> str:
    """A lock name no other test uses."""
    return f"test:{uuid.uuid4().hex[:12]}"
