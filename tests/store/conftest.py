"""Fixtures for the store tests: a started SQLiteStore in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paycore.storage.sqlite import SQLiteStore
from store.support import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "shard-0.sqlite3"


@pytest.fixture
async def store(db_path: Path, clock: ManualClock) -> AsyncIterator[SQLiteStore]:
    """A started store on a fresh file, stopped after the test."""
    s = SQLiteStore(db_path, clock=clock)
    await s.start()
    yield s
    await s.stop()
