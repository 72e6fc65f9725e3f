"""The embedded ledger store: one SQLite file per shard, WAL, one writer thread.

Durability: ``synchronous=FULL`` by default, so a command is answered only after
its transaction's WAL frames are fsynced; ``NORMAL`` may lose the last commits on
power loss (never on a process crash) and is only taken when asked for, loudly.

Every write goes through the group-commit writer: the commands queued while the
previous transaction ran are applied together in one ``BEGIN IMMEDIATE``
transaction with set-based statements, and each account's counters are written
once per group; the transfers written are chained after the shard's history chain
head (``paycore.storage.chain``), read and stored in the same transaction. Reads use
per-thread read-only connections and see committed state only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from paycore.errors import ErrorCode, PaycoreError, UnavailableError
from paycore.ledger.model import (
    Account,
    BalanceRecord,
    PendingStatus,
    Transfer,
    TransferView,
)
from paycore.ledger.refusals import Refusal
from paycore.ledger.rules import (
    WorkingSet,
)
from paycore.storage.apply import backfill_chain, run_group
from paycore.storage.base import (
    OutboxRow,
    ShardSnapshot,
    StoredResponse,
)
from paycore.storage.chain import ChainLinker
from paycore.storage.codec import (
    A_COLUMNS,
    ACCOUNT_COLUMNS,
    OUTBOX_COLUMNS,
    REFUSAL_COLUMNS,
    SAGA_NOTE_PATTERN,
    T_COLUMNS,
    TRANSFER_COLUMNS,
    account_flags_bits,
    account_from_row,
    encode_metadata,
    outbox_values,
    refusal_from_row,
    refusal_row,
    transfer_from_row,
    transfer_row,
    view_from_row,
)
from paycore.storage.group_commit import GroupCommitWriter, Job, WriterThread
from paycore.storage.listing import (
    Dialect,
)
from paycore.storage.migrations import migration_scripts, outdated_schema_error
from paycore.storage.saga_holds import save_saga_holds
from paycore.storage.snapshot import SnapshotReads
from paycore.storage.sql_shard import SqlShard, SqlTx

__all__ = [
    "SQLiteStore",
    "map_sqlite_errors",
    "migrate",
    "pending_migrations",
    "prepare_private_file",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
_ids_json = msgspec.json.Encoder()


@contextlib.contextmanager
def map_sqlite_errors(store: str) -> Iterator[None]:
    """Translate sqlite3 exceptions at the storage boundary.

    Operational errors (locked, I/O, disk full, cannot open) mean the shard cannot
    serve right now: 503 and retryable, with nothing committed. Anything else is a
    bug or corruption and surfaces as an internal error.
    """
    try:
        yield
    except PaycoreError:
        raise
    except sqlite3.OperationalError as exc:
        raise UnavailableError(f"shard {store}: {exc}") from exc
    except sqlite3.Error as exc:
        raise PaycoreError(ErrorCode.INTERNAL_ERROR, f"shard {store}: {exc}") from exc


def prepare_private_file(path: Path, *, store: str) -> None:
    """Make ``path``'s directory (0700, if new) and the file itself, empty, 0600, if new.

    A shard's file holds every balance and transfer: it is its owner's only, whatever
    the umask, and so are its -wal, -shm and -journal files (SQLite creates them with the
    database file's mode). An existing file keeps its mode (an operator may let a backup
    user read it); if others may read it, a warning names it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "shard %s: %s is readable by others (mode %04o): chmod 600 it (and its "
                "-wal and -shm files) unless they must",
                store,
                path,
                mode,
            )
        return
    os.fchmod(fd, 0o600)  # the umask may have taken bits off, never added: keep it exact
    os.close(fd)


def _connect(path: Path, synchronous: str, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache, bounded
    conn.execute("PRAGMA temp_store=MEMORY")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


def _migrations() -> list[tuple[int, str, str]]:
    return migration_scripts("sqlite")


_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
)


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations this file lacks, each in its own transaction.

    A new file gets the schema they build in ONE transaction instead: a new shard would
    otherwise replay every CREATE and ALTER of its history (hundreds of statements, most
    of a new store's start-up), where the end result is known.
    """
    conn.execute(_MIGRATIONS_TABLE)
    done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    if not done and _is_new(conn):
        applied = _create_latest(conn, tuple(_migrations()))
        if applied is not None:
            return applied
    return _apply_each(conn, done)


def _apply_each(conn: sqlite3.Connection, done: set[int]) -> list[str]:
    applied = []
    for version, name, sql in _migrations():
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the write lock.
            if conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ).fetchone():
                conn.execute("ROLLBACK")
                continue
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time_ns())
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _is_new(conn: sqlite3.Connection) -> bool:
    """Nothing but the (empty) migrations table: a file no migration has touched."""
    (count,) = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE name NOT IN ('schema_migrations') "
        "AND name NOT LIKE 'sqlite_%'"
    ).fetchone()
    return bool(count == 0)


class _LatestSchema(msgspec.Struct, frozen=True):
    """What every migration applied in turn leaves in an empty file: its schema, in an
    order that creates tables before their indexes, and the rows migrations seed."""

    statements: tuple[str, ...]
    rows: tuple[tuple[str, tuple[tuple[Any, ...], ...]], ...]


_OBJECT_ORDER = {"table": 0, "index": 1, "view": 2, "trigger": 3}


@functools.cache
def _latest_schema(migrations: tuple[tuple[int, str, str], ...]) -> _LatestSchema:
    """Built once per process (and per list of migrations) in memory, by applying them."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        memory.execute(_MIGRATIONS_TABLE)
        for _version, _name, sql in migrations:
            memory.execute("BEGIN")
            for statement in _split_sql(sql):
                memory.execute(statement)
            memory.execute("COMMIT")
        objects = memory.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name != 'schema_migrations' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ).fetchall()
        objects.sort(key=lambda o: _OBJECT_ORDER[o[0]])  # stable: creation order within
        rows = []
        for kind, name, _sql in objects:
            if kind == "table":
                found = tuple(memory.execute(f'SELECT * FROM "{name}"').fetchall())
                if found:
                    rows.append((name, found))
        return _LatestSchema(tuple(sql for _, _, sql in objects), tuple(rows))
    finally:
        memory.close()


def _create_latest(
    conn: sqlite3.Connection, migrations: tuple[tuple[int, str, str], ...]
) -> list[str] | None:
    """Give a new file the latest schema in one transaction; None when another process
    began migrating it first (the caller then goes on migration by migration)."""
    latest = _latest_schema(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _is_new(conn) or conn.execute("SELECT 1 FROM schema_migrations").fetchone():
            conn.execute("ROLLBACK")
            return None
        for statement in latest.statements:
            conn.execute(statement)
        for table, rows in latest.rows:
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
        now = time.time_ns()
        conn.executemany(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
            [(version, name, now) for version, name, _ in migrations],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return [name for _, name, _ in migrations]


def pending_migrations(conn: sqlite3.Connection) -> list[str]:
    """The migrations this file lacks, in order (all of them without a schema); reads only."""
    known = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    done: set[int] = set()
    if known is not None:
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in _migrations() if version not in done]


def _split_sql(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class _SQLiteTx(SqlTx):
    """``LedgerTx`` and ``WriteSession`` on the writer's connection."""

    def __init__(self, conn: sqlite3.Connection, store: str) -> None:
        self.conn = conn
        self.store = store
        self.chain = ChainLinker(store, 0, None)  # the real head is loaded by begin()

    # -- transaction control (run_group) ---------------------------------------------

    def begin(self) -> int:
        self.conn.execute("BEGIN IMMEDIATE")  # the file's one write lock, taken up front
        return self._turn(
            self.conn.execute(
                "SELECT key, value, digest FROM shard_meta "
                "WHERE key IN ('last_timestamp', 'chain_head')"
            )
        )

    def commit(self, last_timestamp: int) -> None:
        self.conn.execute(
            "UPDATE shard_meta SET value = ? WHERE key = 'last_timestamp'", (last_timestamp,)
        )
        if self.chain.moved:
            self.conn.execute(
                "UPDATE shard_meta SET value = ?, digest = ? WHERE key = 'chain_head'",
                (self.chain.seq, self.chain.hash),
            )
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return map_sqlite_errors(self.store)

    # -- LedgerTx ------------------------------------------------------------------------

    def transfers_by_ids(self, ids: Iterable[str]) -> list[Transfer]:
        return _transfers_by_ids(self.conn, ids)

    def pending_statuses(self, ids: Iterable[str]) -> dict[str, tuple[PendingStatus, str | None]]:
        rows = self.conn.execute(
            "SELECT id, status, resolved_by FROM pending_transfers "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (_ids_json.encode(list(ids)).decode(),),
        )
        return {row[0]: (PendingStatus(row[1]), row[2]) for row in rows}

    def refusals_by_ids(self, ids: Iterable[str]) -> list[Refusal]:
        rows = self.conn.execute(
            f"SELECT {REFUSAL_COLUMNS} FROM transfer_refusals "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (_ids_json.encode(list(ids)).decode(),),
        )
        return [refusal_from_row(row) for row in rows]

    def accounts_by_ids(self, ids: Iterable[str], *, with_metadata: bool) -> dict[str, Account]:
        return _accounts_by_ids(self.conn, ids, with_metadata=with_metadata)

    def insert_accounts(self, accounts: Sequence[Account]) -> None:
        self.conn.executemany(
            f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ({_q(11)})",
            [
                (a.id, a.currency, a.code, account_flags_bits(a.flags), a.flags.credit_limit,
                 a.timestamp, 0, 0, 0, 0, a.tenant)
                for a in accounts
            ],
        )  # fmt: skip
        self.conn.executemany(
            "INSERT INTO account_metadata VALUES (?, ?)",
            [(a.id, encode_metadata(a.metadata)) for a in accounts if a.metadata is not None],
        )

    def due_holds(self, now: int, limit: int) -> list[Transfer]:
        rows = self.conn.execute(
            f"SELECT {T_COLUMNS} FROM pending_transfers p JOIN transfers t ON t.id = p.id "
            "WHERE p.status = 'pending' AND p.expires_at IS NOT NULL AND p.expires_at <= ? "
            "ORDER BY p.expires_at LIMIT ?",
            (now, limit),
        )
        return [transfer_from_row(row) for row in rows]

    def write(self, ws: WorkingSet) -> None:
        """Write what a working set changed: a few set-based statements."""
        conn = self.conn
        if ws.created:
            links = self.chain.extend(ws.created)
            conn.executemany(
                f"INSERT INTO transfers ({TRANSFER_COLUMNS}, chain_seq, chain_hash) "
                f"VALUES ({_q(12)})",
                [(*transfer_row(t), *link) for t, link in zip(ws.created, links, strict=True)],
            )
            conn.executemany(
                "INSERT INTO transfer_metadata VALUES (?, ?)",
                [(t.id, encode_metadata(t.metadata)) for t in ws.created if t.metadata is not None],
            )
        if ws.changed_pendings:
            conn.executemany(
                "INSERT INTO pending_transfers (id, status, expires_at, resolved_by) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                "SET status = excluded.status, resolved_by = excluded.resolved_by",
                [
                    (s.transfer.id, s.status.value, s.transfer.expires_at, s.resolved_by)
                    for s in ws.changed_pendings.values()
                ],
            )
        conn.executemany(
            "UPDATE accounts SET debits_pending = ?, debits_posted = ?, "
            "credits_pending = ?, credits_posted = ? WHERE id = ?",
            [(a.dp, a.dpo, a.cp, a.cpo, a.account.id) for a in ws.dirty_accounts()],
        )
        if ws.saga_holds or ws.saga_holds_loaded:
            save_saga_holds(self.run_sql, ws)
        if ws.history:
            conn.executemany(
                "INSERT INTO account_balances VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (h.account_id, h.timestamp, h.debits_pending, h.debits_posted,
                     h.credits_pending, h.credits_posted)
                    for h in ws.history
                ],
            )  # fmt: skip
        if ws.new_refusals:
            conn.executemany(
                f"INSERT INTO transfer_refusals ({REFUSAL_COLUMNS}) VALUES ({_q(6)})",
                [refusal_row(f) for f in ws.new_refusals],
            )

    def set_chain_links(self, links: Sequence[tuple[int, int, bytes]]) -> None:
        self.conn.executemany(
            "UPDATE transfers SET chain_seq = ?, chain_hash = ? WHERE timestamp = ?",
            [(seq, digest, timestamp) for timestamp, seq, digest in links],
        )

    def purge_idempotency(self, now: int, limit: int) -> int:
        cur = self.conn.execute(
            "DELETE FROM idempotency WHERE key IN "
            "(SELECT key FROM idempotency WHERE expires_at <= ? LIMIT ?)",
            (now, limit),
        )
        return cur.rowcount

    def idempotency_record(self, key: str) -> tuple[str, StoredResponse, int] | None:
        row = self.conn.execute(
            "SELECT fingerprint, status, body, content_type, expires_at "
            "FROM idempotency WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return row[0], StoredResponse(row[1], row[2], row[3]), row[4]

    def idempotency_records(
        self, keys: Iterable[str]
    ) -> dict[str, tuple[str, StoredResponse, int]]:
        rows = self.conn.execute(
            "SELECT key, fingerprint, status, body, content_type, expires_at FROM idempotency "
            "WHERE key IN (SELECT value FROM json_each(?))",
            (_ids_json.encode(list(keys)).decode(),),
        )
        return {row[0]: (row[1], StoredResponse(row[2], row[3], row[4]), row[5]) for row in rows}

    def save_idempotency(
        self, key: str, fingerprint: str, response: StoredResponse, now: int, expires_at: int
    ) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, fingerprint, response.status, response.body, response.content_type,
             now, expires_at),
        )  # fmt: skip

    # -- fencing tokens (migration 0005) ---------------------------------------------------

    def fence_token(self, name: str) -> int | None:
        row = self.conn.execute("SELECT token FROM fencing_tokens WHERE name = ?", (name,))
        found = row.fetchone()
        return None if found is None else int(found[0])

    # -- transfer-id reservations (migration 0003) -----------------------------------------

    def reserved_ids(self, ids: Iterable[str]) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT id, shard FROM transfer_ids WHERE id IN (SELECT value FROM json_each(?))",
            (_ids_json.encode(list(ids)).decode(),),
        )
        return {row[0]: row[1] for row in rows}

    def reserve_ids(self, rows: Sequence[tuple[str, str]], now: int) -> None:
        self.conn.executemany(
            "INSERT INTO transfer_ids (id, shard, reserved_at) VALUES (?, ?, ?)",
            [(transfer_id, shard, now) for transfer_id, shard in rows],
        )

    # -- outbox (migration 0002) ------------------------------------------------------------

    def insert_outbox(self, rows: Sequence[OutboxRow]) -> None:
        self.conn.executemany(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ({_q(16)})",
            [outbox_values(r) for r in rows],
        )

    def set_outbox_states(self, changes: Sequence[tuple[str, str]], now: int) -> None:
        self.conn.executemany(
            "UPDATE outbox SET state = ?, updated_at = ?, claimed_by = NULL, claimed_until = 0 "
            "WHERE transfer_id = ?",
            [(state, now, transfer_id) for transfer_id, state in changes],
        )

    def purge_outbox(self, states: Sequence[str], updated_before: int, limit: int) -> int:
        cur = self.conn.execute(
            "DELETE FROM outbox WHERE transfer_id IN (SELECT transfer_id FROM outbox "
            "WHERE state IN (SELECT value FROM json_each(?)) AND created_at <= ? "
            "AND updated_at <= ? LIMIT ?)",
            (_ids_json.encode(list(states)).decode(), updated_before, updated_before, limit),
        )
        return cur.rowcount

    def claim_outbox(
        self, owner: str, open_states: Sequence[str], now: int, until: int, limit: int
    ) -> list[OutboxRow]:
        # The file's one writer (BEGIN IMMEDIATE) makes the claim exclusive; the lease
        # lets another relay retake the rows of one that crashed. Fewest attempts first:
        # rows that keep failing (a target shard down) must not starve fresh ones.
        states = _ids_json.encode(list(open_states)).decode()
        rows = self.conn.execute(
            "UPDATE outbox SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1 "
            "WHERE transfer_id IN (SELECT transfer_id FROM outbox "
            "WHERE state IN (SELECT value FROM json_each(?)) "
            "AND (claimed_until <= ? OR claimed_by = ?) ORDER BY attempts, created_at LIMIT ?) "
            f"RETURNING {OUTBOX_COLUMNS}",
            (owner, until, states, now, owner, limit),
        ).fetchall()
        return sorted((OutboxRow(*row) for row in rows), key=lambda r: r.created_at)

    # -- payment rows (migration 0006) -------------------------------------------------------

    def run_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def run_many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(query, rows)


class SQLiteStore(SqlShard):
    """A ledger shard in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "shard-0",
        synchronous: str = "FULL",
        clock: Callable[[], int] = time.time_ns,
        max_group_jobs: int = 512,
        migrate: bool = True,
        writer_thread: WriterThread | None = None,
    ) -> None:
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.name = name
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.clock = clock
        # False: start() only checks the schema is current (``paycore migrate`` applies it).
        self._migrate = migrate
        self._session: _SQLiteTx | None = None
        # The embedded shards of one process share a writer thread (``group_commit``); a
        # shared thread commits without fsync and this shard's own sync thread makes the
        # WAL durable before the callers are answered: the same promise as FULL.
        self._deferred_sync = writer_thread is not None and self.synchronous == "FULL"
        self._wal_fd: int | None = None
        self._writer = GroupCommitWriter(
            name,
            self._run_group,
            max_jobs=max_group_jobs,
            thread=writer_thread,
            sync=self._sync_wal if self._deferred_sync else None,
        )
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._attach_reads(Dialect.SQLITE)

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self.synchronous == "NORMAL":
            log.warning(
                "shard %s runs with synchronous=NORMAL: acknowledged transfers may be lost "
                "on power loss (not on a process crash)",
                self.name,
            )
        if not self._migrate and not self.path.exists():  # checking must not create it
            raise outdated_schema_error(self.name, [name for _, name, _ in _migrations()])
        try:
            prepare_private_file(self.path, store=self.name)
        except OSError as exc:
            raise UnavailableError(f"shard {self.name}: cannot create {self.path}") from exc
        with map_sqlite_errors(self.name):
            conn = _connect(self.path, "NORMAL" if self._deferred_sync else self.synchronous)
            if self._migrate:
                migrate(conn)
            elif missing := pending_migrations(conn):
                conn.close()
                raise outdated_schema_error(self.name, missing)
        self._session = _SQLiteTx(conn, self.name)
        try:
            backfill_chain(self._session)  # once, on a shard that had data before 0009
        except BaseException:
            conn.close()
            self._session = None
            raise
        self._writer.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._session is not None:
            with contextlib.suppress(sqlite3.Error):  # leave a small file behind
                self._session.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._session.conn.close()
            self._session = None
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self._local = threading.local()

    # -- writes -------------------------------------------------------------------

    def _sync_wal(self) -> None:
        """Sync thread: make every commit so far durable (``synchronous=FULL`` syncs the
        WAL after each commit; this syncs it once after several)."""
        if self._wal_fd is None:
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        os.fdatasync(self._wal_fd)

    def _run_group(self, jobs: Sequence[Job]) -> None:
        """Writer thread: run ``jobs`` in one transaction (see ``apply.run_group``)."""
        assert self._session is not None
        run_group(self._session, self.clock, jobs, self.slot_ownership)

    # -- reads ------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self.synchronous, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with map_sqlite_errors(self.name):
            return fn(self._reader())

    async def get_accounts(self, ids: list[str]) -> dict[str, Account]:
        return self._read(lambda c: _accounts_by_ids(c, ids, with_metadata=True))

    async def _fetch_rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._read(lambda c: c.execute(query, params).fetchall())

    async def get_transfer(self, transfer_id: str) -> TransferView | None:
        def read(conn: sqlite3.Connection) -> TransferView | None:
            row = conn.execute(
                f"SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM transfers t "
                "LEFT JOIN transfer_metadata m ON m.id = t.id "
                "LEFT JOIN pending_transfers p ON p.id = t.id WHERE t.id = ?",
                (transfer_id,),
            ).fetchone()
            return None if row is None else view_from_row(row)

        return self._read(read)

    async def get_transfers(self, ids: list[str]) -> dict[str, TransferView]:
        if not ids:
            return {}
        return self._read(lambda c: _transfer_views(c, ids))

    async def accounts_and_transfers(
        self, account_ids: list[str], transfer_ids: list[str]
    ) -> tuple[dict[str, Account], dict[str, TransferView]]:
        def read(conn: sqlite3.Connection) -> tuple[dict[str, Account], dict[str, TransferView]]:
            accounts = (
                _accounts_by_ids(conn, account_ids, with_metadata=True) if account_ids else {}
            )
            return accounts, _transfer_views(conn, transfer_ids) if transfer_ids else {}

        return self._read(read)

    def _account_history_sql(self, sides: Sequence[str], cmp: str, order: str) -> str:
        parts = [
            f"SELECT * FROM (SELECT {T_COLUMNS} FROM transfers t WHERE t.{s}_account_id = ? "
            f"AND t.timestamp {cmp} ? ORDER BY t.timestamp {order} LIMIT ?)"
            for s in sides
        ]
        moved = [  # history that moved in with the account (migration 0022)
            f"SELECT * FROM (SELECT {T_COLUMNS}, t.metadata, t.status, t.resolved_by "
            f"FROM moved_transfers t WHERE t.{s}_account_id = ? AND t.timestamp {cmp} ? "
            f"ORDER BY t.timestamp {order} LIMIT ?)"
            for s in sides
        ]
        return (
            f"SELECT * FROM (SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM ("
            + " UNION ALL ".join(parts)
            + ") t LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN pending_transfers p ON p.id = t.id UNION ALL "
            + " UNION ALL ".join(moved)
            + f") ORDER BY timestamp {order} LIMIT ?"
        )

    async def _bytes_held(self) -> int:
        files = (self.path, Path(f"{self.path}-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    async def ping(self) -> str | None:
        self._read(lambda c: c.execute("SELECT 1").fetchone())
        if self._session is None:
            raise UnavailableError(f"shard {self.name} is not started")
        return None  # a file of this process: nowhere else to tell

    async def with_snapshot(self, reader: Callable[[ShardSnapshot], T]) -> T:
        def run() -> T:
            with map_sqlite_errors(self.name):
                conn = _connect(self.path, self.synchronous, readonly=True)
                try:
                    conn.execute("BEGIN")  # one WAL snapshot for every query below
                    return reader(_Snapshot(conn, self.clock(), self.name))
                finally:
                    conn.close()

        return await asyncio.to_thread(run)


class _Snapshot(SnapshotReads):
    conn: sqlite3.Connection

    def rows(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a query written with ``?`` placeholders."""
        yield from self.conn.execute(query, params)

    def _stream(self, query: str) -> Iterator[tuple[Any, ...]]:
        yield from self.conn.execute(query)

    def accounts(self) -> Iterator[Account]:
        # Accounts that moved out stay in this shard's book, as they left (migration 0022).
        for row in self.conn.execute(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts "
            f"UNION ALL SELECT {ACCOUNT_COLUMNS} FROM moved_accounts ORDER BY id"
        ):
            yield account_from_row(row)

    def transfers(self) -> Iterator[Transfer]:
        # Metadata only where a saga's note is (the auditor reads it to replay balance
        # history: ``paycore.ledger.saga_history``); decoding every row's would be slow.
        for row in self.conn.execute(
            f"SELECT {T_COLUMNS}, CASE WHEN m.metadata LIKE ? THEN m.metadata END "
            "FROM transfers t LEFT JOIN transfer_metadata m ON m.id = t.id "
            "ORDER BY t.timestamp",
            (SAGA_NOTE_PATTERN,),
        ):
            yield transfer_from_row(row, row[10])

    def pendings(self) -> Iterator[tuple[str, PendingStatus, str | None]]:
        for row in self.conn.execute("SELECT id, status, resolved_by FROM pending_transfers"):
            yield row[0], PendingStatus(row[1]), row[2]

    def balance_history(self) -> Iterator[BalanceRecord]:
        for row in self.conn.execute("SELECT * FROM account_balances ORDER BY timestamp"):
            yield BalanceRecord(*row)


def _q(n: int) -> str:
    return ", ".join("?" * n)


def _accounts_by_ids(
    conn: sqlite3.Connection, ids: Iterable[str], *, with_metadata: bool = False
) -> dict[str, Account]:
    ids_json = _ids_json.encode(list(ids)).decode()
    if with_metadata:
        rows = conn.execute(
            f"SELECT {A_COLUMNS}, m.metadata FROM accounts a "
            "LEFT JOIN account_metadata m ON m.id = a.id "
            "WHERE a.id IN (SELECT value FROM json_each(?))",
            (ids_json,),
        )
        return {row[0]: account_from_row(row, row[11]) for row in rows}
    rows = conn.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id IN (SELECT value FROM json_each(?))",
        (ids_json,),
    )
    return {row[0]: account_from_row(row) for row in rows}


def _transfer_views(conn: sqlite3.Connection, ids: list[str]) -> dict[str, TransferView]:
    rows = conn.execute(
        f"SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM transfers t "
        "LEFT JOIN transfer_metadata m ON m.id = t.id "
        "LEFT JOIN pending_transfers p ON p.id = t.id "
        "WHERE t.id IN (SELECT value FROM json_each(?))",
        (_ids_json.encode(ids).decode(),),
    )
    return {row[0]: view_from_row(row) for row in rows}


def _transfers_by_ids(conn: sqlite3.Connection, ids: Iterable[str]) -> list[Transfer]:
    rows = conn.execute(
        f"SELECT {T_COLUMNS}, m.metadata FROM transfers t "
        "LEFT JOIN transfer_metadata m ON m.id = t.id "
        "WHERE t.id IN (SELECT value FROM json_each(?))",
        (_ids_json.encode(list(ids)).decode(),),
    )
    return [transfer_from_row(row, row[10]) for row in rows]
