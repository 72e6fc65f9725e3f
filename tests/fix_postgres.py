"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on a free port.

The suite never depends on a server it did not start: a fresh machine only needs the
PostgreSQL binaries (Debian's postgresql package). As root, the server runs as the
``postgres`` system user, since PostgreSQL refuses to run as root.

Databases: ``postgres_dsn`` gives an empty one (for migration tests), dropped after
the test. Ledger tests take ``ledger_database()``: migrated, holding no data. Making
one is ``CREATE DATABASE ... TEMPLATE`` of a migrated template, which costs 0.1-0.3 s
of server CPU here (it copies the whole catalog); so a released ledger database is
emptied (a few ``DELETE``s, ~2 ms), checked to still have the template's schema, and
handed to the next test. Reads and edits of rows are fine in a ledger database; a
test that changes the schema must use ``postgres_dsn`` (a changed schema is dropped,
not reused, anyway).

The server runs with ``fsync=off``: a killed server process still keeps every
commit (the WAL reaches the OS before the commit returns), only an OS crash could
lose one, and no test crashes the OS; it makes creating databases cheaper.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from paycore.locks.testing import free_port
from paycore.storage.postgres import migrate_postgres

_TEMPLATE = "paycore_ledger_template"
# The shape of the public schema: tables, columns, constraints, indexes, triggers.
_SCHEMA_FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, ',' ORDER BY item), '')) FROM (
    SELECT concat_ws(':', c.relname, c.relkind, a.attname, a.atttypid) AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname = 'public'
    UNION ALL
    SELECT concat_ws(':', conname, pg_get_constraintdef(oid)) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT concat_ws(':', tgname, tgrelid::regclass) FROM pg_trigger WHERE NOT tgisinternal
) items
"""


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


class _Template:
    """What a ledger database holds right after the migrations: seed rows and schema."""

    def __init__(self, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            self.tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'schema_migrations' ORDER BY tablename"
                )
            ]
            self.sequences = [
                row[0]
                for row in conn.execute(
                    "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
                )
            ]
            self.seeds: dict[str, list[tuple[Any, ...]]] = {}
            for table in self.tables:
                rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                self.seeds[table] = rows.fetchall()
            self.fingerprint = _fingerprint(conn)

    def reset(self, conn: psycopg.Connection[Any]) -> None:
        """Empty every table but ``schema_migrations`` and put the seed rows back."""
        with conn.transaction():
            for table in self.tables:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
                for row in self.seeds[table]:
                    values = sql.SQL(", ").join([sql.Placeholder()] * len(row))
                    insert = sql.SQL("INSERT INTO {} VALUES ({})")
                    conn.execute(insert.format(sql.Identifier(table), values), row)
            for sequence in self.sequences:
                conn.execute(sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(sequence)))


def _fingerprint(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(_SCHEMA_FINGERPRINT).fetchone()
    assert row is not None
    return str(row[0])


class PostgresServer:
    """A running server; it hands out empty databases and reusable ledger databases."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self._template: _Template | None = None
        self._free: list[str] = []

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c shared_buffers=128MB -c max_connections=200 -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l",
                  str(self.root / "log"), "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the server's ``postgres`` database."""
        return psycopg.connect(self.dsn(), autocommit=True)

    def new_database(self, template: str | None = None) -> str:
        """A DSN of a new database: empty, or a copy of ``template`` (a database name)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.admin() as conn:
            conn.execute(query)
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Drop the database of ``dsn``, closing whatever connections a test left open."""
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
            )

    def disconnect_all(self, dsn: str) -> None:
        """Kill every session on the database of ``dsn`` and wait until they are gone."""
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with self.admin() as conn:
            deadline = time.monotonic() + 10
            while conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, f"sessions on {name} would not end"
                time.sleep(0.005)

    def ledger_database(self) -> str:
        """A DSN of a migrated ledger database holding no data (see the module docstring)."""
        if self._free:
            return self._free.pop()
        if self._template is None:
            with self.admin() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_TEMPLATE)))
            migrate_postgres(self.dsn(_TEMPLATE))
            self._template = _Template(self.dsn(_TEMPLATE))
        return self.new_database(template=_TEMPLATE)

    def release_ledger_database(self, dsn: str) -> None:
        """Empty a ledger database for the next test; drop it if its schema was changed."""
        assert self._template is not None
        self.disconnect_all(dsn)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                if _fingerprint(conn) != self._template.fingerprint:
                    raise LookupError("schema changed")
                self._template.reset(conn)
        except (psycopg.Error, LookupError):
            self.drop_database(dsn)
        else:
            self._free.append(dsn)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, stopped at the end."""
    bindir = _bindir()
    if bindir is None:
        pytest.fail("PostgreSQL binaries not found: install Debian's 'postgresql' package")
    root = Path(tempfile.mkdtemp(prefix="paycore-pg-"))
    server = PostgresServer(bindir, root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A DSN of a fresh, empty database on the test server, dropped after the test."""
    dsn = postgres_server.new_database()
    yield dsn
    postgres_server.drop_database(dsn)
