"""One ledger database per backend, so that the same tests run on SQLite and PostgreSQL.

A ``LedgerDatabase`` is where one shard's data lives (a SQLite file, or a migrated
PostgreSQL database, see ``fix_postgres``); ``store()`` opens a new, unstarted store
on it (call it again to reopen), ``query()`` reads or edits rows behind the store's
back (rows only: a test that changes the schema uses its own database), and
``drop()`` deletes it (a PostgreSQL one is emptied and reused by a later test).
The ``backend`` fixture in ``conftest.py`` picks the kind; ``make_store`` and
``new_database`` hand them out.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from paycore.storage.postgres import PostgresStore
from paycore.storage.sqlite import SQLiteStore

if TYPE_CHECKING:  # imported by pytest as a plugin, to rewrite its asserts
    from fix_postgres import PostgresServer

__all__ = [
    "AnyStore",
    "LedgerDatabase",
    "PostgresDatabase",
    "SQLiteDatabase",
    "StoreFactory",
]

AnyStore = SQLiteStore | PostgresStore
StoreFactory = Callable[..., AnyStore]  # make_store(clock=..., name=...)
Clock = Callable[[], int]


class LedgerDatabase(ABC):
    """Where one shard lives; stores opened on it see each other's commits."""

    backend: str

    @abstractmethod
    def store(self, *, clock: Clock = time.time_ns, name: str = "shard-0") -> AnyStore:
        """A new, unstarted store on this database."""

    @abstractmethod
    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) in its own committed transaction."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the database; doing it twice is harmless."""


class SQLiteDatabase(LedgerDatabase):
    backend = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "shard-0.sqlite3"

    def store(self, *, clock: Clock = time.time_ns, name: str = "shard-0") -> SQLiteStore:
        return SQLiteStore(self.path, clock=clock, name=name)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                return list(conn.execute(sql, params))
        finally:
            conn.close()

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresDatabase(LedgerDatabase):
    backend = "postgres"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.dsn = server.ledger_database()
        self.dropped = False

    def store(self, *, clock: Clock = time.time_ns, name: str = "shard-0") -> PostgresStore:
        return PostgresStore(self.dsn, clock=clock, name=name)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description is not None else []

    def drop(self) -> None:
        if not self.dropped:
            self.dropped = True
            self.server.release_ledger_database(self.dsn)
