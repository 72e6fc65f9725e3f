"""PostgreSQL ids compare byte-wise (migration 0004), whatever locale the database has.

The core orders ids by their bytes, as SQLite does; a database created with a locale
(en-US: 'a' < 'B') would sort the id columns otherwise. These tests make such a database
(ICU's en-US, or the OS's en_US.utf8; skipped when the server has neither) and show the
order before and after the migration.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fix_postgres import PostgresServer
from paycore.storage import postgres as postgres_module
from paycore.storage.postgres import PostgresStore, migrate_postgres

pytestmark = pytest.mark.postgres

IDS = ["b", "B", "a", "A", "ab", "a-b", "a_b", "a.b", "Z", "z", "0", "9x", "_u", "-m", "a:1"]

# Every id column of the schema: looked up, joined, ordered or range-scanned by id.
C_COLUMNS = {
    ("accounts", "id"),
    ("accounts", "tenant"),  # 0010: compared exactly, like an id
    ("api_keys", "id"),
    ("api_keys", "tenant"),
    ("api_keys", "replaced_by"),
    ("account_metadata", "id"),
    ("transfers", "id"),
    ("transfers", "debit_account_id"),
    ("transfers", "credit_account_id"),
    ("transfers", "pending_id"),
    ("transfer_metadata", "id"),
    ("pending_transfers", "id"),
    ("pending_transfers", "resolved_by"),
    ("account_balances", "account_id"),
    ("idempotency", "key"),
    ("outbox", "transfer_id"),
    ("outbox", "debit_account_id"),
    ("outbox", "credit_account_id"),
    ("transfer_ids", "id"),
    ("chains", "chain_id"),  # 0012 creates them collated
    ("chain_reservations", "chain_id"),
    ("chain_reservations", "account_id"),
    ("saga_holds_in_flight", "hold_id"),
    ("saga_holds_in_flight", "account_id"),
    ("webhook_endpoints", "id"),  # 0017
    ("event_stream_cursors", "log"),  # 0018
    ("webhook_endpoints", "tenant"),
    ("fx_quotes", "id"),  # 0019
    ("fx_quotes", "tenant"),
    ("payment_attempts", "idempotency_key"),  # 0021
    ("slot_moves", "id"),  # 0022
    ("slot_moves", "source"),
    ("slot_moves", "target"),
    ("moved_transfers", "id"),
    ("moved_transfers", "debit_account_id"),
    ("moved_transfers", "credit_account_id"),
    ("moved_transfers", "pending_id"),
    ("moved_transfers", "resolved_by"),
    ("moved_transfers", "source"),
    ("moved_accounts", "id"),
    ("moved_accounts", "tenant"),
    ("moved_accounts", "target"),
    ("moved_accounts", "move_id"),
    ("moved_in", "account_id"),
    ("moved_in", "source"),
    ("reconciliation_reports", "processor"),  # 0020
    ("reconciliation_reports", "batch_id"),
    ("reconciliation_settled", "processor"),
    ("reconciliation_settled", "reference"),
    ("reconciliation_settled", "batch_id"),
    ("reconciliation_exceptions", "id"),
    ("reconciliation_exceptions", "processor"),
    ("reconciliation_exceptions", "batch_id"),
    ("reconciliation_exceptions", "reference"),
    ("payment_events", "only_endpoint"),
    ("chain_locks", "pending_id"),
    ("chain_locks", "chain_id"),
    ("transfer_refusals", "id"),  # 0013 creates them collated
    ("transfer_refusals", "tenant"),
    ("fencing_tokens", "name"),  # 0005 creates it collated
    # 0006 creates its id columns collated
    ("payments", "id"),
    ("payments", "merchant_account_id"),
    ("payments", "source_account_id"),
    ("payments", "hold_id"),
    ("payments", "idempotency_key"),
    ("payment_attempts", "parent_id"),
    ("payment_attempts", "reference"),
    ("refunds", "id"),
    ("refunds", "payment_id"),
    ("refunds", "hold_id"),
    ("refunds", "idempotency_key"),
    ("payouts", "id"),
    ("payouts", "wallet_account_id"),
    ("payouts", "hold_id"),
    ("payouts", "idempotency_key"),
    ("payment_events", "id"),
    ("payment_events", "object_id"),
    ("payment_events", "tenant"),  # 0011
    # 0007 creates its id columns collated
    ("webhook_deliveries", "event_id"),
    ("webhook_deliveries", "endpoint"),
    ("processor_events", "processor"),
    ("processor_events", "id"),
    ("processor_events", "reference"),
}


def _byte_order(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: i.encode())


@pytest.fixture
def locale_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """An empty database whose default collation sorts by a locale, not by bytes."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with postgres_server.admin() as conn:
        found = {
            row[0]
            for row in conn.execute(
                "SELECT collname FROM pg_collation WHERE collname IN ('en-US-x-icu', 'en_US.utf8')"
            )
        }
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' ").format(
            sql.Identifier(name)
        )
        if "en-US-x-icu" in found:
            conn.execute(create + sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"))
        elif "en_US.utf8" in found:
            conn.execute(create + sql.SQL("LC_COLLATE 'en_US.utf8' LC_CTYPE 'en_US.utf8'"))
        else:
            pytest.skip("the server knows no non-C collation (neither ICU en-US nor en_US.utf8)")
    dsn = postgres_server.dsn(name)
    yield dsn
    postgres_server.drop_database(dsn)


def _query(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


async def test_ids_sort_by_bytes_after_migration_0004(
    locale_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 0004 the locale database sorts ids its own way; after it, ORDER BY and range
    scans on the id columns follow byte order, and the store still reads and joins."""
    assert _query(locale_dsn, "SELECT 'a' < 'B'") == [(True,)]  # a locale order indeed
    every = postgres_module._migrations()
    monkeypatch.setattr(postgres_module, "_migrations", lambda: [m for m in every if m[0] < 4])
    migrate_postgres(locale_dsn)
    # Rows as the store writes them (this version's store needs the newer migrations).
    with psycopg.connect(locale_dsn, autocommit=True) as conn:
        for n, i in enumerate(IDS):
            conn.execute(
                "INSERT INTO accounts (id, currency, code, flags, timestamp) "
                "VALUES (%s, 'USD', 0, 0, %s)",
                (i, n + 1),
            )
            conn.execute("INSERT INTO account_metadata VALUES (%s, %s)", (i, f'{{"n":"{i}"}}'))
    before = [row[0] for row in _query(locale_dsn, "SELECT id FROM accounts ORDER BY id")]
    assert before != _byte_order(IDS)

    monkeypatch.undo()
    assert migrate_postgres(locale_dsn) == [name for version, name, _ in every if version >= 4]
    after = [row[0] for row in _query(locale_dsn, "SELECT id FROM accounts ORDER BY id")]
    assert after == _byte_order(IDS)
    above = _query(locale_dsn, "SELECT id FROM accounts WHERE id > 'Z' ORDER BY id")
    assert [row[0] for row in above] == [i for i in _byte_order(IDS) if i.encode() > b"Z"]
    keys = _query(locale_dsn, "SELECT id FROM account_metadata ORDER BY id DESC")
    assert [row[0] for row in keys] == _byte_order(IDS)[::-1]

    store = PostgresStore(locale_dsn, migrate=False)  # up to date: starts without migrating
    await store.start()
    try:
        found = await store.get_accounts(["a", "B", "missing"])
        assert {k: v.metadata for k, v in found.items()} == {"a": {"n": "a"}, "B": {"n": "B"}}
    finally:
        await store.stop()


def test_every_id_column_is_collated_c(postgres_dsn: str) -> None:
    """After the migrations, each id column (and no other text column) has collation C."""
    migrate_postgres(postgres_dsn)
    rows = _query(
        postgres_dsn,
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type = 'text'",
    )
    collated = {(table, column) for table, column, collation in rows if collation == "C"}
    assert collated == C_COLUMNS


def test_indexes_on_id_columns_serve_the_joins(postgres_dsn: str) -> None:
    """The id columns joined together share one collation, so the joins keep their index."""
    migrate_postgres(postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT a.id, m.metadata FROM accounts a "
            "LEFT JOIN account_metadata m ON m.id = a.id WHERE a.id = ANY(%s)",
            (["a", "b"],),
        ).fetchall()
    text = "\n".join(row[0] for row in plan)
    assert "account_metadata_pkey" in text
    assert "accounts_pkey" in text
