"""``paycore migrate``: bring every shard of a topology to the current schema.

Each shard is migrated on its own (its migrations run in order, each in its own
transaction, safe against nodes migrating at the same time), so one unreachable shard
does not keep the others back: its row reports the error and what is still missing,
and a re-run finishes the job. A dry run only reads: it lists what would be applied
and creates nothing, not even a missing SQLite file.

Where a shard lives is printed with any DSN password replaced by ``***``; an error
message never repeats the password either.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import msgspec
import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from paycore.config import ShardSpec
from paycore.redaction import redact_dsn, redact_text, secrets_in
from paycore.storage.postgres import migrate_postgres, pending_migrations_postgres
from paycore.storage.sqlite import migrate, pending_migrations, prepare_private_file

__all__ = ["ShardMigration", "migrate_shards", "print_migrations"]

# A migration run must not hang on an unreachable host (libpq waits for the OS by default).
_CONNECT_TIMEOUT_SECONDS = 10
_FAILURES = (sqlite3.Error, psycopg.Error, OSError)


class ShardMigration(msgspec.Struct, frozen=True):
    """What a run did on one shard.

    ``applied``: the migrations this run applied (none on a dry run); ``pending``: those
    still missing after it (on a dry run: what a run would apply); ``error``: why the
    shard could not be brought up to date, else None.
    """

    shard: str
    backend: str
    location: str  # the SQLite file, or the DSN with its password redacted
    applied: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def migrate_shards(specs: Sequence[ShardSpec], *, dry_run: bool = False) -> list[ShardMigration]:
    """Apply (or, with ``dry_run``, list) the missing migrations of every shard, in order."""
    return [_migrate_shard(spec, dry_run=dry_run) for spec in specs]


def _migrate_shard(spec: ShardSpec, *, dry_run: bool) -> ShardMigration:
    pending: Callable[[], list[str]]
    apply: Callable[[], list[str]]
    if spec.backend == "postgres":
        assert spec.dsn is not None
        dsn = _with_connect_timeout(spec.dsn)
        location = redact_dsn(spec.dsn)
        pending = partial(pending_migrations_postgres, dsn)
        apply = partial(migrate_postgres, dsn)
    else:
        assert spec.path is not None
        location = str(spec.path)
        pending = partial(_sqlite_pending, spec.path)
        apply = partial(_sqlite_migrate, spec.path)
    result = ShardMigration(spec.name, spec.backend, location)
    try:
        before = pending()
    except _FAILURES as exc:
        return msgspec.structs.replace(result, error=_describe(exc, spec.dsn))
    if dry_run or not before:
        return msgspec.structs.replace(result, pending=tuple(before))
    try:
        applied = apply()
    except _FAILURES as exc:
        # Migrations commit one by one: say which ones made it before the failure.
        try:
            after = pending()
        except _FAILURES:
            after = before
        return msgspec.structs.replace(
            result,
            applied=tuple(m for m in before if m not in after),
            pending=tuple(after),
            error=_describe(exc, spec.dsn),
        )
    return msgspec.structs.replace(result, applied=tuple(applied))


def _sqlite_pending(path: Path) -> list[str]:
    """What the file lacks, read without writing (a missing file lacks everything)."""
    where = f"{path.resolve().as_uri()}?mode=ro" if path.exists() else ":memory:"
    with contextlib.closing(sqlite3.connect(where, uri=True)) as conn:
        return pending_migrations(conn)


def _sqlite_migrate(path: Path) -> list[str]:
    """Migrate the file as its store would at start-up (WAL, every commit fsynced; a new
    file and directory its owner's only)."""
    prepare_private_file(path, store=str(path))
    # timeout: wait for a serving node's writer to finish its transaction.
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return migrate(conn)
    finally:
        conn.close()


def _with_connect_timeout(dsn: str) -> str:
    """``dsn`` with a connect timeout, unless it (or PGCONNECT_TIMEOUT) sets one."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return dsn  # connecting reports it, as an unparsable DSN
    if "connect_timeout" in params or "PGCONNECT_TIMEOUT" in os.environ:
        return dsn
    return psycopg.conninfo.make_conninfo(dsn, connect_timeout=_CONNECT_TIMEOUT_SECONDS)


def _describe(exc: BaseException, dsn: str | None) -> str:
    """A one-line error that never shows the DSN's password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if dsn is None:
        return text
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        # libpq quotes pieces of a DSN it cannot parse, and a piece may be the password.
        return "the dsn cannot be parsed (expected libpq key=value pairs or a postgresql:// URI)"
    return redact_text(text, [str(password or ""), *secrets_in(dsn)])


def print_migrations(results: Sequence[ShardMigration], console: Console, *, dry_run: bool) -> None:
    """One row per shard: where it lives, what was (or would be) applied, the outcome."""
    title = "Migrations that would be applied (dry run)" if dry_run else "Migrations"
    table = Table(title=title, title_justify="left")
    table.add_column("shard")
    table.add_column("backend")
    table.add_column("where", overflow="fold")
    table.add_column("would apply" if dry_run else "applied", overflow="fold")
    table.add_column("result", overflow="fold")
    for r in results:
        names = r.pending if dry_run else r.applied
        if r.error is not None:
            missing = f"; still missing: {', '.join(r.pending)}" if r.pending else ""
            outcome = f"[red]error[/]: {escape(r.error + missing)}"
        elif dry_run:
            outcome = f"{len(r.pending)} pending" if r.pending else "up to date"
        else:
            outcome = "migrated" if r.applied else "up to date"
        table.add_row(
            r.shard, r.backend, escape(r.location), escape("\n".join(names) or "-"), outcome
        )
    console.print(table)
    failed = [r.shard for r in results if not r.ok]
    if failed:
        console.print(f"[red]✗ {len(failed)} shard(s) not migrated:[/] {', '.join(failed)}")
    elif dry_run:
        console.print("dry run: nothing was changed")
    else:
        console.print("[green]✓[/] every shard is up to date")
