"""SQLite schema migrations: applied once, recorded, safe to re-run; a reopened store (of
either backend) keeps its data. The PostgreSQL migrations are tested in ``test_postgres``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backends import StoreFactory
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.storage import sqlite as sqlite_module
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.sqlite import SQLiteStore, migrate
from store.support import ManualClock, audit, read_state

MIGRATIONS = [
    "0001_ledger.sql",
    "0002_outbox.sql",
    "0003_transfer_ids.sql",
    "0004_collate_c.sql",
    "0005_fencing.sql",
    "0006_payments.sql",
    "0007_webhooks.sql",
    "0008_event_retention.sql",
    "0009_history_chain.sql",
    "0010_tenants_api_keys.sql",
    "0011_event_tenants.sql",
    "0012_chains.sql",
    "0013_transfer_refusals.sql",
    "0014_outbox_flags.sql",
    "0015_list_indexes.sql",
    "0016_saga_history.sql",
    "0017_admin_api.sql",
    "0018_event_stream.sql",
    "0019_fx_quotes.sql",
    "0020_reconciliation.sql",
    "0021_attempt_keys.sql",
    "0022_slot_maps.sql",
    "0023_fx_payments.sql",
]


def _recorded(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return list(rows)


async def test_a_new_store_applies_and_records_every_migration(db_path: Path) -> None:
    """Starting on a fresh file creates the schema and records each migration once."""
    store = SQLiteStore(db_path, clock=ManualClock())
    await store.start()
    await store.stop()
    assert [name for _, name in _recorded(db_path)] == MIGRATIONS
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert {"accounts", "transfers", "pending_transfers", "idempotency", "shard_meta"} <= tables
    assert mode == "wal"


async def test_restarting_applies_nothing_again(db_path: Path) -> None:
    """A second start, and a direct re-run of migrate, apply no migration twice."""
    for _ in range(2):
        store = SQLiteStore(db_path, clock=ManualClock())
        await store.start()
        await store.stop()
    assert len(_recorded(db_path)) == len(MIGRATIONS)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(conn) == []
    finally:
        conn.close()


def test_migrate_returns_what_it_applied(tmp_path: Path) -> None:
    """migrate applies the missing migrations in order and names them."""
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    try:
        assert migrate(conn) == MIGRATIONS
        assert migrate(conn) == []
    finally:
        conn.close()


def _schema_and_rows(
    path: Path,
) -> tuple[set[tuple[str, ...]], dict[str, list[tuple[object, ...]]]]:
    with sqlite3.connect(path) as conn:
        objects = set(
            conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        )
        tables = [o[1] for o in objects if o[0] == "table" and o[1] != "schema_migrations"]
        columns = {t: list(conn.execute(f'PRAGMA table_info("{t}")')) for t in tables}
        rows = {t: sorted(conn.execute(f'SELECT * FROM "{t}"')) for t in tables}
        objects |= {("columns", t, repr(c)) for t, c in columns.items()}
    return objects, rows


def test_a_new_file_gets_the_schema_the_migrations_build_one_by_one(tmp_path: Path) -> None:
    """A new file takes the latest schema in one transaction; it is the schema (tables,
    columns, indexes, seeded rows) that applying each migration in turn leaves."""
    stepwise = tmp_path / "stepwise.sqlite3"
    with sqlite3.connect(stepwise, isolation_level=None) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        )
        conn.execute("CREATE TABLE early_marker (x INTEGER)")  # not new: one by one
        assert migrate(conn) == MIGRATIONS
        conn.execute("DROP TABLE early_marker")
    fresh = tmp_path / "fresh.sqlite3"
    with sqlite3.connect(fresh, isolation_level=None) as conn:
        assert migrate(conn) == MIGRATIONS
        assert migrate(conn) == []
    assert _schema_and_rows(fresh) == _schema_and_rows(stepwise)
    assert _recorded(fresh) == _recorded(stepwise)


def test_a_failing_migration_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half way is rolled back and not recorded."""
    broken = [(1, "0001_broken.sql", "CREATE TABLE t1 (x INTEGER); CREATE TABLE t1 (y INTEGER);")]
    monkeypatch.setattr(sqlite_module, "_migrations", lambda: broken)
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            migrate(conn)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "t1" not in names
    finally:
        conn.close()


def test_two_processes_migrating_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another process applies a migration between our check and our lock, we skip it."""
    path = tmp_path / "x.sqlite3"
    original = sqlite_module._migrations
    raced: list[bool] = []

    def migrations_after_a_rival() -> list[tuple[int, str, str]]:
        if not raced:  # the rival process runs its whole migrate() right now
            raced.append(True)
            rival = sqlite3.connect(path, isolation_level=None)
            try:
                assert migrate(rival) == MIGRATIONS
            finally:
                rival.close()
        return original()

    monkeypatch.setattr(sqlite_module, "_migrations", migrations_after_a_rival)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn) == []
    finally:
        conn.close()
    assert len(_recorded(path)) == len(MIGRATIONS)


async def test_reopening_the_store_keeps_everything(make_store: StoreFactory) -> None:
    """Accounts, counters, transfers, holds and history survive a stop and a new start."""
    clock = ManualClock()
    store = make_store(clock=clock)
    await store.start()
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("a", "USD", metadata={"owner": "ann"}),
                AccountRequest("b", "USD", flags=AccountFlags(history=True, no_overdraft=True)),
            )
        )
    )
    await store.execute(
        CreateTransfers(
            (
                TransferRequest("t1", "a", "b", 100, metadata={"ref": 1}),
                TransferRequest("h1", "b", "a", 30, flags=TransferFlags(pending=True)),
            )
        )
    )
    before = await store.with_snapshot(read_state)
    last = before.transfers[-1].timestamp
    await store.stop()

    clock.now -= 10**12  # the clock went back while the process was down
    reopened = make_store(clock=clock)
    await reopened.start()
    try:
        after = await reopened.with_snapshot(read_state)
        assert after == before
        assert audit(after) == []
        accounts = await reopened.get_accounts(["a"])
        assert accounts["a"].metadata == {"owner": "ann"}
        (post,) = await reopened.execute(
            CreateTransfers(
                (TransferRequest("p1", pending_id="h1", flags=TransferFlags(post_pending=True)),)
            )
        )
        assert post.ok
        assert post.transfer is not None
        assert post.transfer.timestamp > last  # the sequence resumes where it stopped
        (again,) = await reopened.execute(
            CreateTransfers((TransferRequest("t1", "a", "b", 100, metadata={"ref": 1}),))
        )
        assert again.exists
    finally:
        await reopened.stop()
