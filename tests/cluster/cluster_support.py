"""Helpers of the cluster tests: the shard databases of a test cluster on either backend,
its settings as a config file, accounts placed on chosen shards, quick requests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import conninfo_to_dict

from backends import PostgresDatabase
from paycore.cluster.router import ShardedStore
from paycore.config import Settings, ShardConfig
from paycore.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from paycore.storage.base import CreateAccounts

if TYPE_CHECKING:  # imported by pytest as a plugin, to rewrite its asserts
    from fix_postgres import PostgresServer

USD = "USD"
CLUSTER_SHARDS = 4
SHARDS = tuple(f"shard-{i}" for i in range(CLUSTER_SHARDS))


class ClusterDatabases:
    """The four shard databases of a test cluster, and the settings that name them.

    SQLite: the embedded layout split over four files in ``directory`` (what a node
    runs with no config file but ``embedded_shards = 4``). PostgreSQL: four migrated,
    empty databases on the session's test server (``fix_postgres``), listed as
    ``[[shards]]`` under the embedded names and without slots, so the slots are split
    in the same order and every id lands on the same shard name on both backends.
    ``drop()`` hands the PostgreSQL ones back to the server's pool (their sessions are
    ended first) or deletes the SQLite files.
    """

    def __init__(self, backend: str, directory: Path, server: PostgresServer | None) -> None:
        self.backend = backend
        self.directory = directory
        self.databases: list[PostgresDatabase] = []
        if backend == "postgres":
            assert server is not None
            self.databases = [PostgresDatabase(server) for _ in SHARDS]

    def settings(self, **knobs: Any) -> Settings:
        """The topology, plus any other setting (``relay_lease_seconds=...``); auth open
        unless a knob says otherwise (these tests are about the cluster, not keys)."""
        knobs.setdefault("auth", "open")
        if self.backend == "sqlite":
            return Settings(data_dir=str(self.directory), embedded_shards=CLUSTER_SHARDS, **knobs)
        shards = tuple(
            ShardConfig(name=name, backend="postgres", dsn=database.dsn)
            for name, database in zip(SHARDS, self.databases, strict=True)
        )
        return Settings(data_dir=str(self.directory), shards=shards, **knobs)

    def sessions(self) -> int:
        """How many server sessions are open on the shards (0 on SQLite)."""
        if not self.databases:
            return 0
        names = [conninfo_to_dict(d.dsn)["dbname"] for d in self.databases]
        with self.databases[0].server.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)", (names,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def drop(self) -> None:
        for database in self.databases:
            database.drop()
        shutil.rmtree(self.directory, ignore_errors=True)


def ids_on(store: ShardedStore, shard: str, n: int, prefix: str = "acct") -> list[str]:
    """``n`` account ids that the store places on ``shard``."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        candidate = f"{prefix}{i}"
        if store.shard_for(candidate) == shard:
            found.append(candidate)
        i += 1
    return found


async def open_accounts(
    store: ShardedStore, ids: list[str], *, no_overdraft: bool = True, currency: str = USD
) -> None:
    """Create ``ids`` (no_overdraft by default) and assert they were created."""
    flags = AccountFlags(no_overdraft=no_overdraft)
    results = await store.execute(
        CreateAccounts(tuple(AccountRequest(i, currency, flags=flags) for i in ids))
    )
    assert all(r.ok for r in results), results


def move(
    tid: str,
    debit: str,
    credit: str,
    amount: int,
    *,
    linked: bool = False,
    pending: bool = False,
    currency: str | None = USD,
) -> TransferRequest:
    return TransferRequest(
        tid, debit, credit, amount, currency, flags=TransferFlags(linked=linked, pending=pending)
    )


def counters(account: Account) -> tuple[int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted)."""
    return (
        account.debits_pending,
        account.debits_posted,
        account.credits_pending,
        account.credits_posted,
    )
