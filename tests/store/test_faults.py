"""Faults at the storage boundary: every sqlite3 error is translated, and a store that
cannot write answers 503 without leaving a partial write behind.

The last tests run on both backends; the PostgreSQL faults are in ``test_postgres``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from backends import StoreFactory
from paycore.errors import ErrorCode, PaycoreError, UnavailableError
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage import sqlite as sqlite_module
from paycore.storage.base import CreateAccounts, CreateTransfers, Idempotency
from paycore.storage.sqlite import SQLiteStore, map_sqlite_errors
from store.support import ManualClock, audit, read_state

SQLITE_ERRORS = [
    sqlite3.Error,
    sqlite3.DatabaseError,
    sqlite3.OperationalError,
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
    sqlite3.InternalError,
]


def _all_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _all_subclasses(sub)
    return found


def test_the_list_covers_every_sqlite3_error_class() -> None:
    """No sqlite3.Error subclass is missing from the mapping test below."""
    from_module = {
        c for c in _all_subclasses(sqlite3.Error) if c.__module__ in ("sqlite3", "_sqlite3")
    }
    assert from_module <= set(SQLITE_ERRORS)


@pytest.mark.parametrize("exc_type", SQLITE_ERRORS, ids=lambda c: c.__name__)
def test_every_sqlite3_error_becomes_a_paycore_error(exc_type: type[sqlite3.Error]) -> None:
    """map_sqlite_errors turns each sqlite3 exception into a PaycoreError, cause kept."""
    original = exc_type("boom")
    with pytest.raises(PaycoreError) as raised, map_sqlite_errors("shard-9"):
        raise original
    err = raised.value
    assert err.__cause__ is original
    assert "shard-9" in err.detail
    assert "boom" in err.detail
    if issubclass(exc_type, sqlite3.OperationalError):
        assert isinstance(err, UnavailableError)
        assert (err.code, err.status, err.retryable) == (ErrorCode.STORE_UNAVAILABLE, 503, True)
    else:
        assert not isinstance(err, UnavailableError)
        assert (err.code, err.status) == (ErrorCode.INTERNAL_ERROR, 500)


def test_paycore_errors_pass_through_unchanged() -> None:
    """An error already translated is not wrapped a second time."""
    original = UnavailableError("already mapped")
    with pytest.raises(UnavailableError) as raised, map_sqlite_errors("shard-0"):
        raise original
    assert raised.value is original


def test_other_exceptions_are_not_swallowed() -> None:
    """Non-database exceptions are left alone for the caller's own handling."""
    with pytest.raises(KeyError), map_sqlite_errors("shard-0"):
        raise KeyError("x")


async def test_a_database_path_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    """Starting a store on a path SQLite cannot open raises UnavailableError (503)."""
    store = SQLiteStore(tmp_path)  # a directory, not a file
    with pytest.raises(UnavailableError, match="unable to open"):
        await store.start()
    await store.stop()


async def test_a_data_dir_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    """A data directory blocked by a regular file gives UnavailableError, not a raw OSError."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = SQLiteStore(blocker / "shard-0.sqlite3")
    with pytest.raises(UnavailableError):
        await store.start()
    await store.stop()


# -- a database locked by another process ---------------------------------------------------

BUSY_TIMEOUT_MS = 100


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Store connections wait only 100 ms for a lock, and log every statement they run."""
    statements: list[str] = []
    connect = sqlite_module._connect

    def fast_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite_module, "_connect", fast_connect)
    return statements


def _lock(path: Path) -> sqlite3.Connection:
    """Another process's connection holding the write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_locked_database_answers_unavailable_and_writes_nothing(
    db_path: Path, statements: list[str]
) -> None:
    """While another writer holds the lock, commands fail with 503 and leave no trace."""
    store = SQLiteStore(db_path, clock=ManualClock())
    await store.start()
    try:
        await store.execute(
            CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD")))
        )
        other = _lock(db_path)
        try:
            with pytest.raises(UnavailableError, match="locked") as raised:
                await store.execute(CreateTransfers((TransferRequest("t1", "a", "b", 5),)))
            assert raised.value.status == 503
            with pytest.raises(UnavailableError):
                await store.execute(CreateAccounts((AccountRequest("c", "USD"),)))
        finally:
            other.rollback()
            other.close()
        assert await store.get_transfer("t1") is None
        assert set(await store.get_accounts(["a", "b", "c"])) == {"a", "b"}
        assert audit(await store.with_snapshot(read_state)) == []
        # once the lock is gone the same command goes through
        (result,) = await store.execute(CreateTransfers((TransferRequest("t1", "a", "b", 5),)))
        assert result.ok
        assert not result.exists
    finally:
        await store.stop()


async def test_an_unavailable_group_is_tried_once_not_once_per_command(
    db_path: Path, statements: list[str]
) -> None:
    """A group that cannot get the write lock fails as a whole: one attempt per group."""
    store = SQLiteStore(db_path, clock=ManualClock())
    await store.start()
    try:
        await store.execute(
            CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD")))
        )
        groups_before = store.writer_stats[0]
        statements.clear()
        other = _lock(db_path)
        try:
            outcomes = await asyncio.gather(
                *(
                    store.execute(CreateTransfers((TransferRequest(f"t{i}", "a", "b", 1),)))
                    for i in range(12)
                ),
                return_exceptions=True,
            )
        finally:
            other.rollback()
            other.close()
        assert all(isinstance(o, UnavailableError) for o in outcomes)
        groups = store.writer_stats[0] - groups_before
        attempts = statements.count("BEGIN IMMEDIATE")
        assert groups < 12  # the callers were grouped ...
        assert attempts == groups  # ... and each group waited for the lock only once
    finally:
        await store.stop()


async def test_one_broken_command_does_not_fail_its_group(make_store: StoreFactory) -> None:
    """When one command of a group fails, the others still commit with their own results."""
    store = make_store(clock=ManualClock())
    await store.start()
    try:
        await store.execute(
            CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD")))
        )

        def explode(result: object) -> Any:
            raise RuntimeError("render failed")

        broken = store.execute_idempotent(
            CreateTransfers((TransferRequest("bad", "a", "b", 1),)),
            Idempotency("k", "f", explode),
        )
        good = [
            store.execute(CreateTransfers((TransferRequest(f"t{i}", "a", "b", 1),)))
            for i in range(20)
        ]
        outcomes = await asyncio.gather(broken, *good, return_exceptions=True)
        assert isinstance(outcomes[0], PaycoreError)
        assert outcomes[0].code is ErrorCode.INTERNAL_ERROR
        for i, outcome in enumerate(outcomes[1:]):
            assert isinstance(outcome, list)
            assert (outcome[0].id, outcome[0].ok) == (f"t{i}", True)
        assert await store.get_transfer("bad") is None
        accounts = await store.get_accounts(["a"])
        assert accounts["a"].debits_posted == 20
    finally:
        await store.stop()


async def test_commands_racing_with_stop_are_answered(make_store: StoreFactory) -> None:
    """Commands submitted as the store stops all get an answer: a result or UnavailableError."""
    store = make_store(clock=ManualClock())
    await store.start()
    await store.execute(CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD"))))
    tasks = [
        asyncio.create_task(
            store.execute(CreateTransfers((TransferRequest(f"t{i}", "a", "b", 1),)))
        )
        for i in range(20)
    ]
    await store.stop()
    done, pending = await asyncio.wait(tasks, timeout=1)
    for task in pending:  # leave nothing running behind, even when this test fails
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    # Retrieve every outcome before asserting: an exception left unretrieved would be
    # logged with its traceback when the task is collected, in the middle of a later test.
    errors = [type(e).__name__ for t in done if (e := t.exception()) is not None]
    assert not pending, f"{len(pending)} of 20 callers never got an answer"
    assert set(errors) <= {"UnavailableError"}, errors


async def test_a_stopped_store_answers_unavailable(make_store: StoreFactory) -> None:
    """A command sent to a stopped store raises UnavailableError (503), not a raw error."""
    store = make_store(clock=ManualClock())
    await store.start()
    await store.stop()
    with pytest.raises(UnavailableError):
        await store.execute(CreateAccounts((AccountRequest("a", "USD"),)))
