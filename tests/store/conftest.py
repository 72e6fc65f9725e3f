"""Fixtures for the store tests: a started store of the test's backend on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backends import AnyStore, StoreFactory
from store.support import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A SQLite file path, for the tests of SQLite itself."""
    return tmp_path / "shard-0.sqlite3"


@pytest.fixture
async def store(make_store: StoreFactory, clock: ManualClock) -> AsyncIterator[AnyStore]:
    """A started store (SQLite or PostgreSQL) on a fresh database, stopped after the test."""
    s = make_store(clock=clock)
    await s.start()
    yield s
    await s.stop()
