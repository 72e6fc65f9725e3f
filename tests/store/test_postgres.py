"""What only PostgreSQL has: its errors are all translated, its migrations race safely, its
writer survives a killed connection and a held lock, and two nodes may write one shard.

The behaviour both backends share is tested on both by the other store tests (the
``backend`` fixture); these are the PostgreSQL counterparts of the SQLite-only ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import pytest

from backends import PostgresDatabase
from fix_postgres import PostgresServer
from paycore.errors import ErrorCode, IdempotencyError, PaycoreError, UnavailableError
from paycore.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from paycore.ledger.rules import TransferResult
from paycore.storage import postgres as postgres_module
from paycore.storage.base import (
    CreateAccounts,
    CreateTransfers,
    Idempotency,
    LedgerSnapshot,
    StoredResponse,
)
from paycore.storage.postgres import PostgresStore, map_postgres_errors, migrate_postgres
from store.support import ManualClock, audit, read_state

pytestmark = pytest.mark.postgres
T = TypeVar("T")


@pytest.fixture
def backend() -> str:
    """Only PostgreSQL here: ``database`` is a ``PostgresDatabase``."""
    return "postgres"


async def _all(*awaitables: Awaitable[T]) -> list[T]:
    """Like ``gather``, but every outcome is retrieved before the first error is raised."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


async def _settle(task: Awaitable[T]) -> T | BaseException:
    """The task's outcome, retrieved whatever it is (an exception is returned, not raised)."""
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    return outcome


# -- every psycopg error is translated ---------------------------------------------------------

# What "the shard cannot serve right now" is: a lost or refused connection, a failover,
# a transaction the server rolled back (serialization, deadlock), a lock or statement
# timeout, a read-only standby, a session cut for idling in a transaction.
TRANSIENT = (
    psycopg.OperationalError,
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.IdleInTransactionSessionTimeout,
)
NAMED_TRANSIENT = [
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
    psycopg.errors.ConnectionFailure,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
]


def _all_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _all_subclasses(sub)
    return found


def _translate(original: BaseException) -> PaycoreError:
    try:
        with map_postgres_errors("shard-9"):
            raise original
    except PaycoreError as err:
        return err
    raise AssertionError("map_postgres_errors let the error through")


@pytest.mark.parametrize("exc_type", NAMED_TRANSIENT, ids=lambda c: c.__name__)
def test_a_transient_psycopg_error_is_unavailable(exc_type: type[psycopg.Error]) -> None:
    """Lost connections, failovers, rolled-back transactions and timeouts become a 503
    store_unavailable, retryable, with the psycopg error as its cause."""
    original = exc_type("boom")
    err = _translate(original)
    assert isinstance(err, UnavailableError)
    assert (err.code, err.status, err.retryable) == (ErrorCode.STORE_UNAVAILABLE, 503, True)
    assert err.__cause__ is original
    assert "shard-9" in err.detail


def test_every_psycopg_error_becomes_a_paycore_error() -> None:
    """Each of psycopg's ~270 error classes is translated: a transient one to 503, any other
    (a constraint, a syntax error, a data error: a bug) to a 500 internal_error."""
    classes = _all_subclasses(psycopg.Error)
    assert len(classes) > 200  # the whole SQLSTATE tree, not a few
    wrong = []
    for exc_type in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        original = exc_type("boom")
        err = _translate(original)
        if issubclass(exc_type, TRANSIENT):
            expected = (ErrorCode.STORE_UNAVAILABLE, 503, True)
        else:
            expected = (ErrorCode.INTERNAL_ERROR, 500, False)
        got = (err.code, err.status, isinstance(err, UnavailableError))
        if got != expected or err.__cause__ is not original or "shard-9" not in err.detail:
            wrong.append((exc_type.__name__, got))
    assert wrong == []


def test_other_exceptions_are_left_alone() -> None:
    """A translated error passes through as it is, and a non-database error is not caught."""
    already = UnavailableError("already mapped")
    assert _translate(already) is already
    with pytest.raises(KeyError), map_postgres_errors("shard-0"):
        raise KeyError("x")


# -- migrations ----------------------------------------------------------------------------------


def _migration_names() -> list[str]:
    return [name for _, name, _ in postgres_module._migrations()]


def _query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def test_migrations_are_applied_once_and_recorded(postgres_dsn: str) -> None:
    """An empty database gets every migration in order, recorded once; a re-run applies none."""
    assert migrate_postgres(postgres_dsn) == _migration_names()
    assert migrate_postgres(postgres_dsn) == []
    recorded = _query(postgres_dsn, "SELECT version, name FROM schema_migrations ORDER BY 1")
    assert [name for _, name in recorded] == _migration_names()
    tables = {r[0] for r in _query(postgres_dsn, "SELECT tablename FROM pg_tables")}
    assert {"accounts", "transfers", "pending_transfers", "idempotency", "shard_meta"} <= tables


def test_nodes_migrating_at_once_apply_each_migration_once(postgres_dsn: str) -> None:
    """Four nodes migrating one empty database at the same moment all succeed, and between them
    apply every migration exactly once."""
    start = threading.Barrier(4)

    def migrate(_: int) -> list[str]:
        start.wait(5)
        return migrate_postgres(postgres_dsn)

    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(migrate, range(4)))
    assert sorted(name for names in applied for name in names) == _migration_names()
    recorded = _query(postgres_dsn, "SELECT name FROM schema_migrations ORDER BY version")
    assert [name for (name,) in recorded] == _migration_names()


def test_a_failing_migration_leaves_no_trace(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half way is rolled back and not recorded."""
    broken = [(1, "0001_broken.sql", "CREATE TABLE t1 (x integer); CREATE TABLE t1 (y integer);")]
    monkeypatch.setattr(postgres_module, "_migrations", lambda: broken)
    with pytest.raises(psycopg.errors.DuplicateTable):
        migrate_postgres(postgres_dsn)
    assert _query(postgres_dsn, "SELECT count(*) FROM schema_migrations") == [(0,)]
    assert _query(postgres_dsn, "SELECT 1 FROM pg_tables WHERE tablename = 't1'") == []


async def test_two_stores_starting_on_an_empty_database_both_serve(postgres_dsn: str) -> None:
    """Two nodes starting at once on a new database migrate it once and both serve."""
    nodes = [PostgresStore(postgres_dsn, name=f"node-{i}") for i in (1, 2)]
    await _all(*(node.start() for node in nodes))
    try:
        (a,) = await nodes[0].execute(CreateAccounts((AccountRequest("a", "USD"),)))
        (again,) = await nodes[1].execute(CreateAccounts((AccountRequest("a", "USD"),)))
        assert (a.ok, a.exists, again.ok, again.exists) == (True, False, True, True)
    finally:
        await _all(*(node.stop() for node in nodes))
    recorded = _query(postgres_dsn, "SELECT name FROM schema_migrations ORDER BY version")
    assert [name for (name,) in recorded] == _migration_names()


async def test_ping_names_the_server_that_answered(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    """A shard's ping says which server answered (the primary a multi-host DSN found)."""
    store = PostgresStore(postgres_dsn)
    await store.start()
    try:
        assert await store.ping() == f"127.0.0.1:{postgres_server.port}"
    finally:
        await store.stop()


async def test_an_unreachable_server_is_unavailable(postgres_server: PostgresServer) -> None:
    """Starting on a database that does not exist answers UnavailableError, not a raw error."""
    store = PostgresStore(postgres_server.dsn("no_such_database"))
    with pytest.raises(UnavailableError):
        await store.start()
    await store.stop()


# -- the writer's connection ---------------------------------------------------------------------


def pay(transfer_id: str, amount: int = 5) -> CreateTransfers:
    return CreateTransfers((TransferRequest(transfer_id, "a", "b", amount),))


@asynccontextmanager
async def _started(store: PostgresStore) -> AsyncIterator[PostgresStore]:
    await store.start()
    try:
        await store.execute(
            CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD")))
        )
        yield store
    finally:
        await store.stop()


@asynccontextmanager
async def _holding(dsn: str, lock_query: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Another session holding row locks (``lock_query``) until the block ends."""
    other = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with other, other.transaction():
        await other.execute(lock_query)
        yield other


async def _waiting_for_a_lock(dsn: str) -> int:
    """The pid of the session that waits for a row lock on ``dsn``'s database."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(500):
            cur = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            rows = await cur.fetchall()
            if rows:
                assert len(rows) == 1, rows
                pid: int = rows[0][0]
                return pid
            await asyncio.sleep(0.01)
    raise AssertionError("the writer never waited for the lock")


async def test_a_writer_killed_mid_transaction_answers_503_changes_nothing_and_reconnects(
    database: PostgresDatabase, clock: ManualClock
) -> None:
    """The command whose transaction loses its connection (pg_terminate_backend) gets
    UnavailableError and leaves no trace; the next command runs on a new connection."""
    async with _started(database.store(clock=clock)) as store:
        await store.execute(pay("t0"))
        async with _holding(database.dsn, "SELECT 1 FROM accounts WHERE id = 'b' FOR UPDATE"):
            # The writer inserts t1's rows, then waits to update b's counters.
            in_flight = asyncio.ensure_future(store.execute(pay("t1")))
            try:
                pid = await _waiting_for_a_lock(database.dsn)
                killed = database.query("SELECT pg_terminate_backend(?)", pid)
            finally:
                outcome = await _settle(in_flight)
        assert killed == [(True,)]
        assert isinstance(outcome, UnavailableError), outcome
        assert outcome.status == 503
        assert await store.get_transfer("t1") is None
        assert (await store.get_accounts(["a"]))["a"].debits_posted == 5
        (again,) = await store.execute(pay("t1"))
        assert (again.ok, again.exists) == (True, False)
        assert (await store.get_accounts(["a"]))["a"].debits_posted == 10
        assert audit(await store.with_snapshot(read_state)) == []


async def test_connections_killed_while_idle_are_replaced_without_an_error(
    database: PostgresDatabase, clock: ManualClock, postgres_server: PostgresServer
) -> None:
    """After every session of the store is killed while idle (a server restart, a failover),
    the next write and the next reads succeed: nothing was in flight, so nothing fails."""
    async with _started(database.store(clock=clock)) as store:
        await store.execute(pay("t0"))
        assert await store.get_transfer("t0") is not None  # the read pool has a connection
        assert audit(await store.with_snapshot(read_state)) == []  # so has the snapshot
        postgres_server.disconnect_all(database.dsn)
        (result,) = await store.execute(pay("t1"))
        assert (result.ok, result.exists) == (True, False)
        views = await _all(*(store.get_transfer(f"t{i}") for i in range(2)))
        assert [v.transfer.id if v else None for v in views] == ["t0", "t1"]
        state = await store.with_snapshot(read_state)
        assert [t.id for t in state.transfers] == ["t0", "t1"]


async def test_a_shard_held_by_another_session_answers_503_after_the_lock_timeout(
    database: PostgresDatabase, clock: ManualClock
) -> None:
    """While another session holds the shard's write turn, a command waits the lock timeout,
    then fails with UnavailableError and writes nothing; once released, it goes through."""
    store = PostgresStore(database.dsn, clock=clock, lock_timeout=0.2)
    async with _started(store):
        lock = "SELECT 1 FROM shard_meta WHERE key = 'last_timestamp' FOR UPDATE"
        async with _holding(database.dsn, lock):
            with pytest.raises(UnavailableError) as raised:
                await asyncio.wait_for(store.execute(pay("t1")), 5)  # not forever
            assert isinstance(raised.value.__cause__, psycopg.errors.LockNotAvailable)
        assert await store.get_transfer("t1") is None
        (result,) = await store.execute(pay("t1"))
        assert (result.ok, result.exists) == (True, False)


async def test_a_cursor_left_open_by_a_reader_does_not_disturb_the_next_snapshot(
    database: PostgresDatabase, clock: ManualClock
) -> None:
    """A reader may stop iterating half way and keep the iterator: when it is collected
    later, during the next snapshot on the same connection, that snapshot reads on."""
    kept: list[Iterator[Account]] = []

    def leave_open(snapshot: LedgerSnapshot) -> None:
        accounts = snapshot.accounts()
        next(accounts)
        kept.append(accounts)

    def collect_the_old_one_meanwhile(snapshot: LedgerSnapshot) -> list[str]:
        accounts = snapshot.accounts()
        first = next(accounts)
        kept.clear()  # the first reader's iterator is finalized now, in this transaction
        return [first.id, *(a.id for a in accounts)]

    async with _started(database.store(clock=clock)) as store:
        await store.with_snapshot(leave_open)
        assert await store.with_snapshot(collect_the_old_one_meanwhile) == ["a", "b"]


# -- two nodes writing one shard -----------------------------------------------------------------


async def test_two_nodes_writing_one_shard_lose_nothing_and_keep_every_limit(
    database: PostgresDatabase, clock: ManualClock
) -> None:
    """Two stores (two API nodes) on one database racing on the same accounts: no update is
    lost, no limit is broken (holds included), timestamps stay one order, the audit is clean."""
    nodes = [database.store(clock=clock, name=f"node-{i}") for i in (1, 2)]
    await _all(*(node.start() for node in nodes))
    try:
        await nodes[0].execute(
            CreateAccounts(
                (
                    AccountRequest("bank", "USD"),
                    AccountRequest("wallet", "USD", flags=AccountFlags(no_overdraft=True)),
                    AccountRequest("credit", "USD", flags=AccountFlags(credit_limit=50)),
                    AccountRequest("shop", "USD"),
                )
            )
        )
        (fund,) = await nodes[1].execute(
            CreateTransfers((TransferRequest("fund", "bank", "wallet", 300),))
        )
        assert fund.ok
        hold = TransferFlags(pending=True)
        requests = [
            TransferRequest(
                f"w{i}", "wallet", "shop", 1, flags=hold if i % 4 == 0 else TransferFlags()
            )
            for i in range(400)
        ] + [TransferRequest(f"c{i}", "credit", "shop", 1) for i in range(80)]
        groups_before = [node.writer_stats[0] for node in nodes]

        async def client(k: int) -> list[TransferResult]:
            """One of 16 clients, each sending its share one request at a time to one node:
            both writers keep committing small groups, so their transactions overlap."""
            node = nodes[k % 2]
            return [(await node.execute(CreateTransfers((r,))))[0] for r in requests[k::16]]

        results = [r for rs in await _all(*(client(k) for k in range(16))) for r in rs]
        codes = [r.code for r in results]
        assert len(codes) == len(requests)
        assert codes.count(None) == 300 + 50
        assert set(codes) == {None, ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.EXCEEDS_CREDIT_LIMIT}
        groups = [
            node.writer_stats[0] - before for node, before in zip(nodes, groups_before, strict=True)
        ]
        assert min(groups) > 10  # both nodes kept taking turns writing
        accounts = await nodes[0].get_accounts(["wallet", "credit", "shop"])
        assert accounts["wallet"].available == 0
        assert accounts["credit"].debits_posted == 50
        shop = accounts["shop"]
        assert shop.credits_posted + shop.credits_pending == 350
        assert audit(await nodes[1].with_snapshot(read_state)) == []
    finally:
        await _all(*(node.stop() for node in nodes))


async def test_one_key_sent_to_two_nodes_acts_once(
    database: PostgresDatabase, clock: ManualClock
) -> None:
    """The same Idempotency-Key arriving at two nodes at once has one effect and one answer;
    the key with another request is refused on either node."""
    nodes = [database.store(clock=clock, name=f"node-{i}") for i in (1, 2)]
    await _all(*(node.start() for node in nodes))

    def render(result: object) -> StoredResponse:
        return StoredResponse(201, repr(result).encode())

    try:
        await nodes[0].execute(
            CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD")))
        )
        key = Idempotency("k1", "fp-1", render)
        outcomes = await _all(*(nodes[i % 2].execute_idempotent(pay("t1"), key) for i in range(10)))
        assert sorted(replayed for _, replayed in outcomes) == [False] + [True] * 9
        assert len({response for response, _ in outcomes}) == 1
        for node in nodes:
            with pytest.raises(IdempotencyError):
                await node.execute_idempotent(pay("t2"), Idempotency("k1", "fp-2", render))
        assert (await nodes[1].get_accounts(["a"]))["a"].debits_posted == 5
    finally:
        await _all(*(node.stop() for node in nodes))


# -- the test fixture itself ---------------------------------------------------------------------


def test_a_released_ledger_database_comes_back_empty(postgres_server: PostgresServer) -> None:
    """A ledger database handed to the next test holds only what the migrations left there."""
    dsn = postgres_server.ledger_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (id, currency, code, flags, timestamp) "
                     "VALUES ('a', 'USD', 0, 0, 1)")  # fmt: skip
        conn.execute("UPDATE shard_meta SET value = 42")
    with psycopg.connect(dsn, autocommit=True):  # a session the test forgot to close
        postgres_server.release_ledger_database(dsn)
    again = postgres_server.ledger_database()
    try:
        assert again == dsn
        assert _query(dsn, "SELECT count(*) FROM accounts") == [(0,)]
        assert _query(dsn, "SELECT key, value FROM shard_meta ORDER BY key") == [
            ("chain_head", 0),
            ("last_timestamp", 0),
            ("saga_history_since", 0),
        ]
        assert len(_query(dsn, "SELECT * FROM schema_migrations")) == len(_migration_names())
    finally:
        postgres_server.release_ledger_database(again)


def test_a_ledger_database_with_a_changed_schema_is_dropped(
    postgres_server: PostgresServer,
) -> None:
    """A test that altered the schema does not pass its database on: it is dropped."""
    dsn = postgres_server.ledger_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE accounts ADD COLUMN x integer")
    postgres_server.release_ledger_database(dsn)
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    found = _query(postgres_server.dsn(), f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
    assert found == []
    fresh = postgres_server.ledger_database()
    postgres_server.release_ledger_database(fresh)
    assert fresh != dsn
