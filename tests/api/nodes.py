"""Several API nodes over one sharded ledger, for the cross-node tests.

``SharedShards`` is four shard databases of the test's backend (SQLite files, or
PostgreSQL databases on the session's server) and the settings that name them; every
node opens its own stores on them, as separate processes would. ``running_node``
starts one app ("node") over its own ``ShardedStore`` and lock client in the test's
event loop, so that requests to several nodes really run at once (Litestar's test
client runs the app on another loop, one request at a time).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from litestar import Litestar

from api.support import asgi_transport
from backends import LedgerDatabase, PostgresDatabase, SQLiteDatabase
from paycore.api import create_app
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings, ShardConfig
from paycore.locks import LockService

if TYPE_CHECKING:
    from fix_postgres import PostgresServer

__all__ = ["Node", "SharedShards", "ids_on", "running_node"]

SHARDS = tuple(f"shard-{i}" for i in range(4))


class SharedShards:
    """Four shard databases that several nodes share, and the settings naming them."""

    def __init__(self, backend: str, directory: Path, server: PostgresServer | None) -> None:
        self.backend = backend
        self.directory = directory
        self.databases: list[LedgerDatabase] = []
        for name in SHARDS:
            if backend == "postgres":
                assert server is not None
                self.databases.append(PostgresDatabase(server))
            else:
                (directory / name).mkdir(parents=True)
                self.databases.append(SQLiteDatabase(directory / name))

    def settings(self, **knobs: Any) -> Settings:
        """The topology (shard-0 .. shard-3, slots split evenly) plus ``knobs``; auth open
        unless a knob says otherwise."""
        knobs.setdefault("auth", "open")
        shards = []
        for name, database in zip(SHARDS, self.databases, strict=True):
            if isinstance(database, PostgresDatabase):
                shards.append(ShardConfig(name=name, backend="postgres", dsn=database.dsn))
            else:
                assert isinstance(database, SQLiteDatabase)
                shards.append(ShardConfig(name=name, backend="sqlite", path=str(database.path)))
        return Settings(data_dir=str(self.directory), shards=tuple(shards), **knobs)

    def count(self, sql: str, *params: object) -> int:
        """``SELECT count(*) ...`` summed over the shards."""
        return sum(int(db.query(sql, *params)[0][0]) for db in self.databases)

    def drop(self) -> None:
        for database in self.databases:
            database.drop()


@dataclass
class Node:
    """One running API node: its app, its own store over the shared shards, a client."""

    app: Litestar
    store: ShardedStore
    client: httpx.AsyncClient


@asynccontextmanager
async def running_node(
    settings: Settings, *, locks: LockService | None = None, start_workers: bool = False
) -> AsyncIterator[Node]:
    """A node over ``settings``' shards with its own store and (unless ``locks`` is
    given) its own client of ``settings.locks_url``, started and stopped around the
    block."""
    store = build_store(settings)
    app = create_app(store, settings, start_workers=start_workers, locks=locks)
    async with app.lifespan():
        transport = asgi_transport(app)
        name = uuid.uuid4().hex[:6]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield Node(app, store, client)


def ids_on(store: ShardedStore, shard: str, n: int, prefix: str) -> list[str]:
    """``n`` account ids that ``store`` places on ``shard``."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        candidate = f"{prefix}{i}"
        if store.shard_for(candidate) == shard:
            found.append(candidate)
        i += 1
    return found


def settings_with(settings: Settings, **knobs: Any) -> Settings:
    return msgspec.structs.replace(settings, **knobs)
