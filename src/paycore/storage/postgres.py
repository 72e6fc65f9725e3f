"""A ledger shard in PostgreSQL (psycopg 3): the same semantics as the SQLite store.

Writes: one writer per shard and node drains queued commands into one transaction
(group commit, see ``group_commit``), on its own synchronous connection; the
command logic is the backend-independent ``apply_group``. The transaction first
locks the shard's ``last_timestamp`` row, so writers of several API nodes take
turns on a shard and every shard keeps one total order of transfers; inside a
turn everything is set-based (``unnest`` arrays), one statement per table. The same
statement locks the head of the shard's history chain (``paycore.storage.chain``): the
hashes of new transfers are computed in Python and go in with their rows, and the head
is stored with ``last_timestamp``, so the chain adds no round trip. A writer that waits
longer than ``lock_timeout`` for its turn answers 503.

Reads: an async connection pool (psycopg_pool), binary protocol, committed data
only. A libpq multi-host DSN with ``target_session_attrs=read-write`` lets both
follow a failover; a transaction cut by one answers 503 and changes nothing
(its retry is safe: every write is idempotent). A connection that died while idle
is replaced before it is used (the writer's when its turn begins, a pooled one by
the pool's check, the snapshot one by a ping), so only work in flight fails.

Answers match the SQLite store's (the same tests run on both): ties are broken in
id byte order (``COLLATE "C"``), an id holding a NUL byte (which PostgreSQL text
cannot hold) names no row, and a negative LIMIT means no limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from paycore.errors import ErrorCode, PaycoreError, UnavailableError
from paycore.ledger.model import (
    Account,
    BalanceRecord,
    PendingStatus,
    Transfer,
    TransferView,
)
from paycore.ledger.refusals import Refusal
from paycore.ledger.rules import WorkingSet
from paycore.redaction import redact_dsn, redact_text
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
from paycore.storage.group_commit import GroupCommitWriter, Job
from paycore.storage.listing import (
    MAX_TIME,
    Dialect,
)
from paycore.storage.migrations import migration_scripts, outdated_schema_error
from paycore.storage.saga_holds import save_saga_holds
from paycore.storage.snapshot import SnapshotReads
from paycore.storage.sql_shard import SqlShard, SqlTx

__all__ = [
    "PostgresStore",
    "map_postgres_errors",
    "migrate_postgres",
    "pending_migrations_postgres",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _storable(ids: Iterable[str]) -> list[str]:
    """The ids a row may have: text with a NUL byte cannot be stored (nor sent) in
    PostgreSQL, so such an id names no row, as it names none in SQLite."""
    return [i for i in ids if "\x00" not in i]


def _limit(limit: int) -> int:
    """A LIMIT (positive: callers check it) that PostgreSQL takes: past bigint is clamped."""
    return min(limit, MAX_TIME)


# Our reads and writes look up a batch of ids (``= ANY(...)``, ``unnest``) by primary
# key. With the default random_page_cost (4, tuned for spinning disks) the planner
# turns a batch of some thousand ids on a large table into a full scan (measured: 688 ms
# instead of 171 ms per batch on 10^6 accounts); 1.1 is the usual SSD setting, under
# which those lookups stay index scans and cost stays flat as the ledger grows.
_PLANNER_SETTINGS = "SET random_page_cost = 1.1"


# Every connection gives up connecting after this long, unless the DSN (or
# PGCONNECT_TIMEOUT) says otherwise; a pooled read is cancelled after
# READ_STATEMENT_TIMEOUT_MS (503, retryable). The writer waits lock_timeout for its turn.
CONNECT_TIMEOUT_SECONDS = 5
READ_STATEMENT_TIMEOUT_MS = 30_000


def connect_options(dsn: str) -> dict[str, Any]:
    """``connect_timeout`` for ``psycopg.connect(dsn, ...)``, unless ``dsn`` sets one."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return {}  # connecting reports it
    if "connect_timeout" in params or "PGCONNECT_TIMEOUT" in os.environ:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


async def _configure_reader(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(_PLANNER_SETTINGS)
    await conn.execute(f"SET statement_timeout = {READ_STATEMENT_TIMEOUT_MS}")


@contextlib.contextmanager
def map_postgres_errors(store: str) -> Iterator[None]:
    """Translate psycopg exceptions at the storage boundary.

    Lost connections, failovers, serialization failures, deadlocks, lock and
    statement timeouts, a read-only standby, admin shutdowns and a session cut for
    idling in a transaction mean the shard cannot serve right now: 503, retryable,
    nothing acknowledged. Anything else is a bug or corruption and surfaces as an
    internal error.
    """
    try:
        yield
    except PaycoreError:
        raise
    except (
        psycopg.OperationalError,
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.LockNotAvailable,
        psycopg.errors.QueryCanceled,
        psycopg.errors.ReadOnlySqlTransaction,
        psycopg.errors.IdleInTransactionSessionTimeout,
        psycopg.errors.AdminShutdown,
        psycopg.errors.CannotConnectNow,
    ) as exc:
        raise UnavailableError(f"shard {store}: {type(exc).__name__}") from exc
    except psycopg.Error as exc:
        # Never a DSN's password: libpq may quote a malformed connection string.
        raise PaycoreError(
            ErrorCode.INTERNAL_ERROR, f"shard {store}: {redact_text(str(exc))}"
        ) from exc


def _migrations() -> list[tuple[int, str, str]]:
    return migration_scripts("postgres")


def migrate_postgres(dsn: str) -> list[str]:
    """Apply missing migrations; an advisory lock keeps concurrent nodes from racing."""
    applied = []
    with psycopg.connect(dsn, autocommit=True, **connect_options(dsn)) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7412001)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)"
            )
        for version, name, script in _migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(7412001)")
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)
                ).fetchone()
                if done:
                    continue
                conn.execute(sql.SQL(script))
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                    (version, name, time.time_ns()),
                )
                applied.append(name)
    return applied


def pending_migrations_postgres(dsn: str) -> list[str]:
    """The migrations the database lacks, in order (all of them without a schema); reads only."""
    with psycopg.connect(dsn, autocommit=True, **connect_options(dsn)) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        done: set[int] = set()
        if row is not None and row[0] is not None:
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in _migrations() if version not in done]


class _PostgresTx(SqlTx):
    """``LedgerTx`` on one synchronous connection (the writer's)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], store: str) -> None:
        self.connect = connect
        self.conn = connect()
        self.store = store
        self.chain = ChainLinker(store, 0, None)  # the real head is loaded with the turn

    # -- transaction control (run_group) ---------------------------------------------

    def begin(self) -> int:
        try:
            return self._take_turn()
        except psycopg.OperationalError:
            if not self.conn.broken:
                raise
        # The connection died while idle (a server restart, a failover, an idle-session
        # kill): this group wrote nothing yet, so it may take its turn on a new one.
        self.conn.close()
        self.conn = self.connect()
        return self._take_turn()

    def _take_turn(self) -> int:
        self.conn.execute("BEGIN")
        # Both rows locked, in key order, by every writer: the turn and the chain's head
        # come in one round trip, each the newest committed version (FOR UPDATE rereads).
        return self._turn(
            self.conn.execute(
                "SELECT key, value, digest FROM shard_meta "
                "WHERE key IN ('last_timestamp', 'chain_head') ORDER BY key FOR UPDATE"
            )
        )

    def commit(self, last_timestamp: int) -> None:
        if self.chain.moved:  # one statement for both rows: no extra round trip
            self.conn.execute(
                "UPDATE shard_meta SET "
                "value = CASE key WHEN 'chain_head' THEN %s ELSE %s END, "
                "digest = CASE key WHEN 'chain_head' THEN %s ELSE digest END "
                "WHERE key IN ('last_timestamp', 'chain_head')",
                (self.chain.seq, last_timestamp, self.chain.hash),
            )
        else:
            self.conn.execute(
                "UPDATE shard_meta SET value = %s WHERE key = 'last_timestamp'", (last_timestamp,)
            )
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if not self.conn.closed and not self.conn.broken:
            self.conn.execute("ROLLBACK")

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return map_postgres_errors(self.store)

    # -- LedgerTx ------------------------------------------------------------------------

    def transfers_by_ids(self, ids: Iterable[str]) -> list[Transfer]:
        rows = self.conn.execute(
            f"SELECT {T_COLUMNS}, m.metadata FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id WHERE t.id = ANY(%b)",
            (_storable(ids),),
        )
        return [transfer_from_row(row, row[10]) for row in rows]

    def pending_statuses(self, ids: Iterable[str]) -> dict[str, tuple[PendingStatus, str | None]]:
        rows = self.conn.execute(
            "SELECT id, status, resolved_by FROM pending_transfers WHERE id = ANY(%b)",
            (_storable(ids),),
        )
        return {row[0]: (PendingStatus(row[1]), row[2]) for row in rows}

    def refusals_by_ids(self, ids: Iterable[str]) -> list[Refusal]:
        rows = self.conn.execute(
            f"SELECT {REFUSAL_COLUMNS} FROM transfer_refusals WHERE id = ANY(%b)",
            (_storable(ids),),
        )
        return [refusal_from_row(row) for row in rows]

    def accounts_by_ids(self, ids: Iterable[str], *, with_metadata: bool) -> dict[str, Account]:
        return _accounts_by_ids(self.conn, ids, with_metadata=with_metadata)

    def insert_accounts(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            return
        self.conn.execute(
            f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) SELECT * FROM unnest("
            "%b::text[], %b::text[], %b::int[], %b::int[], %b::bigint[], %b::bigint[], "
            "%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::text[])",
            (
                [a.id for a in accounts],
                [a.currency for a in accounts],
                [a.code for a in accounts],
                [account_flags_bits(a.flags) for a in accounts],
                [a.flags.credit_limit for a in accounts],
                [a.timestamp for a in accounts],
                *([0] * len(accounts) for _ in range(4)),
                [a.tenant for a in accounts],
            ),
        )
        with_meta = [a for a in accounts if a.metadata is not None]
        if with_meta:
            self.conn.execute(
                "INSERT INTO account_metadata SELECT * FROM unnest(%b::text[], %b::text[])",
                ([a.id for a in with_meta], [encode_metadata(a.metadata) for a in with_meta]),
            )

    def due_holds(self, now: int, limit: int) -> list[Transfer]:
        rows = self.conn.execute(
            f"SELECT {T_COLUMNS} FROM pending_transfers p JOIN transfers t ON t.id = p.id "
            "WHERE p.status = 'pending' AND p.expires_at IS NOT NULL AND p.expires_at <= %s "
            'ORDER BY p.expires_at, p.id COLLATE "C" LIMIT %s',  # ties in byte order, as SQLite
            (now, _limit(limit)),
        )
        return [transfer_from_row(row) for row in rows]

    def write(self, ws: WorkingSet) -> None:
        conn = self.conn
        created = ws.created
        if created:
            # The hashes are computed here, under the turn that read the head: the rows
            # go in one set-based statement, as before the chain.
            links = self.chain.extend(created)
            conn.execute(
                f"INSERT INTO transfers ({TRANSFER_COLUMNS}, chain_seq, chain_hash) "
                "SELECT * FROM unnest("
                "%b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[], %b::int[], "
                "%b::int[], %b::text[], %b::int[], %b::bigint[], %b::bigint[], %b::bytea[])",
                _columns(
                    [(*transfer_row(t), *link) for t, link in zip(created, links, strict=True)]
                ),
            )
            with_meta = [t for t in created if t.metadata is not None]
            if with_meta:
                conn.execute(
                    "INSERT INTO transfer_metadata SELECT * FROM unnest(%b::text[], %b::text[])",
                    ([t.id for t in with_meta], [encode_metadata(t.metadata) for t in with_meta]),
                )
        if ws.changed_pendings:
            states = list(ws.changed_pendings.values())
            conn.execute(
                "INSERT INTO pending_transfers (id, status, expires_at, resolved_by) "
                "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[]) "
                "ON CONFLICT (id) DO UPDATE "
                "SET status = excluded.status, resolved_by = excluded.resolved_by",
                (
                    [s.transfer.id for s in states],
                    [s.status.value for s in states],
                    [s.transfer.expires_at for s in states],
                    [s.resolved_by for s in states],
                ),
            )
        dirty = ws.dirty_accounts()
        if dirty:
            conn.execute(
                "UPDATE accounts a SET debits_pending = v.dp, debits_posted = v.dpo, "
                "credits_pending = v.cp, credits_posted = v.cpo FROM unnest("
                "%b::text[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[]) "
                "AS v (id, dp, dpo, cp, cpo) WHERE a.id = v.id",
                _columns([(a.account.id, a.dp, a.dpo, a.cp, a.cpo) for a in dirty]),
            )
        if ws.saga_holds or ws.saga_holds_loaded:
            save_saga_holds(self.run_sql, ws)
        if ws.history:
            h = ws.history
            conn.execute(
                "INSERT INTO account_balances SELECT * FROM unnest(%b::text[], %b::bigint[], "
                "%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[])",
                _columns([msgspec.structs.astuple(r) for r in h]),
            )
        if ws.new_refusals:
            conn.execute(
                f"INSERT INTO transfer_refusals ({REFUSAL_COLUMNS}) SELECT * FROM unnest("
                "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[])",
                _columns([refusal_row(f) for f in ws.new_refusals]),
            )

    def set_chain_links(self, links: Sequence[tuple[int, int, bytes]]) -> None:
        if not links:
            return
        self.conn.execute(
            "UPDATE transfers t SET chain_seq = v.seq, chain_hash = v.hash "
            "FROM unnest(%b::bigint[], %b::bigint[], %b::bytea[]) AS v (ts, seq, hash) "
            "WHERE t.timestamp = v.ts",
            _columns(list(links)),
        )

    def purge_idempotency(self, now: int, limit: int) -> int:
        cur = self.conn.execute(
            "DELETE FROM idempotency WHERE key IN "
            "(SELECT key FROM idempotency WHERE expires_at <= %s LIMIT %s)",
            (now, _limit(limit)),
        )
        return cur.rowcount

    def idempotency_record(self, key: str) -> tuple[str, StoredResponse, int] | None:
        if not _storable([key]):
            return None
        row = self.conn.execute(
            "SELECT fingerprint, status, body, content_type, expires_at "
            "FROM idempotency WHERE key = %s",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return row[0], StoredResponse(row[1], bytes(row[2]), row[3]), row[4]

    def idempotency_records(
        self, keys: Iterable[str]
    ) -> dict[str, tuple[str, StoredResponse, int]]:
        rows = self.conn.execute(
            "SELECT key, fingerprint, status, body, content_type, expires_at FROM idempotency "
            "WHERE key = ANY(%b)",
            (_storable(keys),),
        )
        return {
            row[0]: (row[1], StoredResponse(row[2], bytes(row[3]), row[4]), row[5]) for row in rows
        }

    def save_idempotency(
        self, key: str, fingerprint: str, response: StoredResponse, now: int, expires_at: int
    ) -> None:
        self.conn.execute(
            "INSERT INTO idempotency VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, "
            "status = excluded.status, body = excluded.body, "
            "content_type = excluded.content_type, created_at = excluded.created_at, "
            "expires_at = excluded.expires_at",
            (key, fingerprint, response.status, response.body, response.content_type,
             now, expires_at),
        )  # fmt: skip

    # -- fencing tokens (migration 0005) ---------------------------------------------------

    def fence_token(self, name: str) -> int | None:
        # FOR UPDATE: the writer holds the shard's write turn already; the lock keeps a
        # concurrent maintenance connection (if any) from racing the check.
        found = self.conn.execute(
            "SELECT token FROM fencing_tokens WHERE name = %s FOR UPDATE", (name,)
        ).fetchone()
        return None if found is None else int(found[0])

    # -- transfer-id reservations (migration 0003) -----------------------------------------

    def reserved_ids(self, ids: Iterable[str]) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT id, shard FROM transfer_ids WHERE id = ANY(%b)", (_storable(ids),)
        )
        return {row[0]: row[1] for row in rows}

    def reserve_ids(self, rows: Sequence[tuple[str, str]], now: int) -> None:
        if not rows:
            return
        self.conn.execute(
            "INSERT INTO transfer_ids (id, shard, reserved_at) "
            "SELECT i, s, %s FROM unnest(%b::text[], %b::text[]) AS r(i, s)",
            (now, [r[0] for r in rows], [r[1] for r in rows]),
        )

    # -- outbox of cross-shard transfers (migration 0002) -----------------------------------

    def insert_outbox(self, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        self.conn.execute(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT * FROM unnest("
            "%b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[], "
            "%b::int[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], "
            "%b::bigint[], %b::int[], %b::int[], %b::int[])",
            _columns([outbox_values(r) for r in rows]),
        )

    def set_outbox_states(self, changes: Sequence[tuple[str, str]], now: int) -> None:
        if not changes:
            return
        self.conn.execute(
            "UPDATE outbox o SET state = v.state, updated_at = %s, claimed_by = NULL, "
            "claimed_until = 0 FROM unnest(%b::text[], %b::text[]) AS v (id, state) "
            "WHERE o.transfer_id = v.id",
            (now, [c[0] for c in changes], [c[1] for c in changes]),
        )

    def purge_outbox(self, states: Sequence[str], updated_before: int, limit: int) -> int:
        cur = self.conn.execute(
            "DELETE FROM outbox WHERE transfer_id IN (SELECT transfer_id FROM outbox "
            "WHERE state = ANY(%b) AND created_at <= %s AND updated_at <= %s LIMIT %s)",
            (list(states), updated_before, updated_before, _limit(limit)),
        )
        return cur.rowcount

    def claim_outbox(
        self, owner: str, open_states: Sequence[str], now: int, until: int, limit: int
    ) -> list[OutboxRow]:
        # SKIP LOCKED: relays of several nodes claim disjoint rows without waiting.
        # MATERIALIZED: the picked ids are computed once. As ``IN (subquery)`` the planner
        # may make the subquery the inner side of a nested loop and run it again per outer
        # row (it does with an emptied table's statistics); a rerun skips the rows this
        # statement already updated (locked by itself) and picks the next ones, so the
        # UPDATE took more than ``limit`` rows.
        rows = self.conn.execute(
            "WITH picked AS MATERIALIZED (SELECT transfer_id FROM outbox WHERE state = ANY(%b) "
            "AND (claimed_until <= %s OR claimed_by = %s) ORDER BY attempts, created_at LIMIT %s "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE outbox o SET claimed_by = %s, claimed_until = %s, attempts = o.attempts + 1 "
            "FROM picked WHERE o.transfer_id = picked.transfer_id "
            f"RETURNING {_qualified('o', OUTBOX_COLUMNS)}",
            (list(open_states), now, owner, _limit(limit), owner, until),
        ).fetchall()
        return sorted((OutboxRow(*row) for row in rows), key=lambda r: r.created_at)

    # -- payment rows (migration 0006) -------------------------------------------------------

    def run_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if any(isinstance(p, str) and "\x00" in p for p in params):
            # PostgreSQL text cannot hold NUL; such a value names no row (as in SQLite).
            raise PaycoreError(ErrorCode.INVALID_REQUEST, "a value holds a NUL character")
        cur = self.conn.execute(_placeholders(query), params)
        return cur.fetchall() if cur.description is not None else []

    def run_many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_placeholders(query), rows)  # pipelined by psycopg


def _qualified(alias: str, columns: str) -> str:
    """``a, b`` as ``o.a, o.b``: a RETURNING list that a joined CTE's columns cannot shadow."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _placeholders(query: str) -> str:
    """The shared payment SQL is written with ``?``; psycopg takes ``%s``."""
    return query.replace("?", "%s")


class PostgresStore(SqlShard):
    """A ledger shard in one PostgreSQL database (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "shard-0",
        clock: Callable[[], int] = time.time_ns,
        migrate: bool = True,
        pool_size: int = 8,
        max_group_jobs: int = 512,
        lock_timeout: float = 10.0,
    ) -> None:
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            # libpq's message quotes pieces of the string, and a piece may be the password.
            raise ValueError(
                f"shard {name}: the dsn is not a libpq key=value string or postgresql:// URI "
                f"({redact_dsn(dsn)})"
            ) from None
        self.name = name
        self.dsn = dsn
        self.clock = clock
        # False: start() only checks the schema is current (``paycore migrate`` applies it).
        self._migrate = migrate
        self._pool_size = pool_size
        # How long the writer waits for the shard's write turn (held by another node's
        # writer, or by a stuck session) before answering 503, like SQLite's busy timeout.
        self._lock_timeout_ms = max(1, round(lock_timeout * 1000))
        self._pool = self._new_pool()
        self._tx: _PostgresTx | None = None
        self._writer = GroupCommitWriter(name, self._run_group, max_jobs=max_group_jobs)
        # One snapshot connection is kept between with_snapshot calls: a new one costs a
        # server fork and a login (~6 ms here), and an auditor may take many snapshots.
        self._idle_snapshot: psycopg.Connection[Any] | None = None
        self._snapshot_lock = threading.Lock()
        self._attach_reads(Dialect.POSTGRES)

    def _new_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]:
        # No check on checkout (a round trip per read): a read that meets a connection
        # that died while idle (a server restart, a failover) is retried once on a new
        # one instead (``_fetch``); the pool drops the broken one when it comes back.
        return AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            kwargs={"autocommit": True, **connect_options(self.dsn)},
            configure=_configure_reader,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._pool.closed:  # a pool opens once; a store may start again after a stop
            self._pool = self._new_pool()
        with map_postgres_errors(self.name):
            if self._migrate:
                await asyncio.to_thread(migrate_postgres, self.dsn)
            elif missing := await asyncio.to_thread(pending_migrations_postgres, self.dsn):
                raise outdated_schema_error(self.name, missing)
            await self._pool.open(wait=True, timeout=30)
        try:
            await asyncio.to_thread(self._backfill_chain)  # once, on data older than 0009
        except BaseException:
            await self._pool.close()
            raise
        self._writer.start()

    def _backfill_chain(self) -> None:
        """Chain the rows older than migration 0009, once (``apply.backfill_chain``)."""
        session = self._session()
        backfill_chain(session)

    async def stop(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        if self._tx is not None:
            self._tx.conn.close()
            self._tx = None
        await self._pool.close()  # first: a snapshot ending from now on keeps no connection
        with self._snapshot_lock:
            idle, self._idle_snapshot = self._idle_snapshot, None
        if idle is not None:
            idle.close()

    # -- writes ------------------------------------------------------------------------

    def _connect_writer(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True, **connect_options(self.dsn))
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self._lock_timeout_ms}",))
        conn.execute(_PLANNER_SETTINGS)
        return conn

    def _session(self) -> _PostgresTx:
        """The writer's connection, reopened after a failure (e.g. a failover)."""
        tx = self._tx
        if tx is not None and not tx.conn.closed and not tx.conn.broken:
            if tx.conn.info.transaction_status == TransactionStatus.IDLE:
                return tx
            tx.conn.close()  # a failed rollback left a transaction open: start afresh
        with map_postgres_errors(self.name):
            self._tx = tx = _PostgresTx(self._connect_writer, self.name)
        return tx

    def _run_group(self, jobs: Sequence[Job]) -> None:
        try:
            session = self._session()
        except PaycoreError as exc:
            for job in jobs:
                job.error = exc
            return
        run_group(session, self.clock, jobs, self.slot_ownership)

    # -- reads -------------------------------------------------------------------------

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with map_postgres_errors(self.name):
            try:
                return await self._fetch_once(query, params)
            except psycopg.OperationalError:  # a stale pooled connection: once more, fresh
                return await self._fetch_once(query, params)

    async def _fetch_rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if any(isinstance(p, str) and "\x00" in p for p in params):
            return []  # no row holds a NUL byte (PostgreSQL text cannot store one)
        return await self._fetch(_placeholders(query), params)

    async def _fetch_once(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def get_accounts(self, ids: list[str]) -> dict[str, Account]:
        rows = await self._fetch(
            f"SELECT {A_COLUMNS}, m.metadata FROM accounts a "
            "LEFT JOIN account_metadata m ON m.id = a.id WHERE a.id = ANY(%b)",
            (_storable(ids),),
        )
        return {row[0]: account_from_row(row, row[11]) for row in rows}

    async def get_transfer(self, transfer_id: str) -> TransferView | None:
        if not _storable([transfer_id]):
            return None
        rows = await self._fetch(
            f"SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN pending_transfers p ON p.id = t.id WHERE t.id = %s",
            (transfer_id,),
        )
        return view_from_row(rows[0]) if rows else None

    async def get_transfers(self, ids: list[str]) -> dict[str, TransferView]:
        wanted = _storable(ids)
        if not wanted:
            return {}
        rows = await self._fetch(
            f"SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN pending_transfers p ON p.id = t.id WHERE t.id = ANY(%b)",
            (wanted,),
        )
        return {row[0]: view_from_row(row) for row in rows}

    async def accounts_and_transfers(
        self, account_ids: list[str], transfer_ids: list[str]
    ) -> tuple[dict[str, Account], dict[str, TransferView]]:
        # Two pooled connections at once: one round trip's wait, as a pipeline would be.
        accounts, transfers = await asyncio.gather(
            self.get_accounts(account_ids) if account_ids else _no_accounts(),
            self.get_transfers(transfer_ids),
        )
        return accounts, transfers

    def _account_history_sql(self, sides: Sequence[str], cmp: str, order: str) -> str:
        parts = [
            f"(SELECT {T_COLUMNS} FROM transfers t WHERE t.{s}_account_id = ? "
            f"AND t.timestamp {cmp} ? ORDER BY t.timestamp {order} LIMIT ?)"
            for s in sides
        ]
        moved = [  # history that moved in with the account (migration 0022)
            f"(SELECT {T_COLUMNS}, t.metadata, t.status, t.resolved_by FROM moved_transfers t "
            f"WHERE t.{s}_account_id = ? AND t.timestamp {cmp} ? "
            f"ORDER BY t.timestamp {order} LIMIT ?)"
            for s in sides
        ]
        return (
            f"SELECT * FROM ((SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM ("
            + " UNION ALL ".join(parts)
            + ") t LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN pending_transfers p ON p.id = t.id) UNION ALL "
            + " UNION ALL ".join(moved)
            + f") h ORDER BY h.timestamp {order} LIMIT ?"
        )

    async def _bytes_held(self) -> int:
        rows = await self._fetch("SELECT pg_database_size(current_database())", ())
        return int(rows[0][0])

    async def ping(self) -> str | None:
        ((host, port),) = await self._fetch(
            "SELECT host(inet_server_addr()), inet_server_port()", ()
        )
        return "local socket" if host is None else f"{host}:{port}"

    async def with_snapshot(self, reader: Callable[[ShardSnapshot], T]) -> T:
        def run() -> T:
            with map_postgres_errors(self.name):
                conn = self._snapshot_connection()
                try:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    snapshot = _Snapshot(conn, self.clock(), self.name)
                    result = reader(snapshot)
                    snapshot.close()
                    conn.execute("ROLLBACK")
                except BaseException:
                    conn.close()
                    raise
                with self._snapshot_lock:
                    keep = self._idle_snapshot is None and not self._pool.closed
                    if keep:
                        self._idle_snapshot = conn
                if not keep:
                    conn.close()
                return result

        return await asyncio.to_thread(run)

    def _snapshot_connection(self) -> psycopg.Connection[Any]:
        """The idle snapshot connection if it still works, else a new one (autocommit)."""
        with self._snapshot_lock:
            conn, self._idle_snapshot = self._idle_snapshot, None
        if conn is not None:
            try:
                conn.execute("")  # it may have died while idle (a restart, a failover)
            except psycopg.Error:
                conn.close()
            else:
                return conn
        return psycopg.connect(self.dsn, autocommit=True, **connect_options(self.dsn))


class _Snapshot(SnapshotReads):
    """Server-side cursors inside one REPEATABLE READ transaction: constant memory."""

    conn: psycopg.Connection[Any]

    def __init__(self, conn: psycopg.Connection[Any], now: int, shard: str) -> None:
        super().__init__(conn, now, shard)
        self._cursors: list[psycopg.ServerCursor[Any]] = []

    def rows(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a query written with ``?`` placeholders."""
        cursor = self.conn.cursor(name=f"rows_{len(self._cursors)}")
        self._cursors.append(cursor)
        cursor.execute(_placeholders(query), params)
        yield from cursor

    def _stream(self, query: str) -> Iterator[tuple[Any, ...]]:
        with self.conn.cursor(name=f"snapshot_{len(self._cursors)}") as cur:
            self._cursors.append(cur)
            cur.itersize = 10_000
            cur.execute(query)
            yield from cur

    def close(self) -> None:
        """Close the cursors a reader left unfinished, while their transaction is open: a
        generator collected later must not touch the connection's next snapshot."""
        for cur in self._cursors:
            cur.close()

    def accounts(self) -> Iterator[Account]:
        # In id byte order, as SQLite yields them, so that an audit reads the same. Accounts
        # that moved out stay in this shard's book, as they left (migration 0022).
        for row in self._stream(
            f"SELECT * FROM (SELECT {ACCOUNT_COLUMNS} FROM accounts UNION ALL "
            f'SELECT {ACCOUNT_COLUMNS} FROM moved_accounts) a ORDER BY a.id COLLATE "C"'
        ):
            yield account_from_row(row)

    def transfers(self) -> Iterator[Transfer]:
        # Metadata only where a saga's note is (see the SQLite snapshot).
        query = (
            f"SELECT {T_COLUMNS}, CASE WHEN m.metadata::text LIKE "
            f"'{SAGA_NOTE_PATTERN}' THEN m.metadata END "
            "FROM transfers t LEFT JOIN transfer_metadata m ON m.id = t.id ORDER BY t.timestamp"
        )
        for row in self._stream(query):
            yield transfer_from_row(row, row[10])

    def pendings(self) -> Iterator[tuple[str, PendingStatus, str | None]]:
        query = 'SELECT id, status, resolved_by FROM pending_transfers ORDER BY id COLLATE "C"'
        for row in self._stream(query):
            yield row[0], PendingStatus(row[1]), row[2]

    def balance_history(self) -> Iterator[BalanceRecord]:
        query = 'SELECT * FROM account_balances ORDER BY timestamp, account_id COLLATE "C"'
        for row in self._stream(query):
            yield BalanceRecord(*row)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows (never none) turned into one list per column: the arrays ``unnest`` takes."""
    return [list(column) for column in zip(*rows, strict=True)]


def _accounts_by_ids(
    conn: psycopg.Connection[Any], ids: Iterable[str], *, with_metadata: bool
) -> dict[str, Account]:
    if with_metadata:
        rows = conn.execute(
            f"SELECT {A_COLUMNS}, m.metadata FROM accounts a "
            "LEFT JOIN account_metadata m ON m.id = a.id WHERE a.id = ANY(%b)",
            (_storable(ids),),
        )
        return {row[0]: account_from_row(row, row[11]) for row in rows}
    rows = conn.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(%b)", (_storable(ids),)
    )
    return {row[0]: account_from_row(row) for row in rows}


async def _no_accounts() -> dict[str, Account]:
    return {}
