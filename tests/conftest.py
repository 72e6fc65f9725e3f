"""Suite-wide settings: the Hypothesis profiles, and the backend every ledger test runs on.

``ci`` is the default: derandomized (the same examples on every run, so a red build
is reproducible), no per-example deadline (a loaded CI machine must not flake), and
no example database. ``long`` explores much more and is random; choose it with
``HYPOTHESIS_PROFILE=long``.

Embedded layout: the suite runs the embedded ledger split over four SQLite files
(``SUITE_EMBEDDED_SHARDS``) wherever a test does not say how many, in this process and in
the ``paycore`` processes it starts (``PAYCORE_EMBEDDED_SHARDS``). Sharding is where the
rules are hardest to keep, and shards are invisible: a test written for one file holds
on four. A test of the product's own default asks for ``product_embedded_default``.

Backends: a test that asks for ``make_store`` (or ``new_database``) runs once per
backend, with ids ``sqlite`` and ``postgres``; the PostgreSQL runs carry the
``postgres`` marker and share one server per session (``fix_postgres``), with a
fresh database per test. ``-m "not postgres"`` skips them, and then no server starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import paycore.config as paycore_config
from backends import (
    LedgerDatabase,
    PostgresDatabase,
    SQLiteDatabase,
    StoreFactory,
)

pytest_plugins = ["fix_logs", "fix_nats", "fix_postgres", "fix_redis"]

settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=2_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


SUITE_EMBEDDED_SHARDS = 4
_PRODUCT_EMBEDDED_SHARDS = paycore_config.EMBEDDED_SHARDS


@pytest.fixture(autouse=True)
def suite_embedded_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four embedded shards unless a test says otherwise (see the module docstring)."""
    monkeypatch.setattr(paycore_config, "EMBEDDED_SHARDS", SUITE_EMBEDDED_SHARDS)
    monkeypatch.setenv("PAYCORE_EMBEDDED_SHARDS", str(SUITE_EMBEDDED_SHARDS))


@pytest.fixture
def product_embedded_default(monkeypatch: pytest.MonkeyPatch) -> int:
    """The product's embedded default (what a fresh machine gets), for this test."""
    monkeypatch.setattr(paycore_config, "EMBEDDED_SHARDS", _PRODUCT_EMBEDDED_SHARDS)
    monkeypatch.delenv("PAYCORE_EMBEDDED_SHARDS", raising=False)
    return _PRODUCT_EMBEDDED_SHARDS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs against the test PostgreSQL server")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The ledger backend of this run: ``sqlite`` or ``postgres``."""
    name: str = request.param
    return name


@pytest.fixture
def new_database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], LedgerDatabase]]:
    """Makes fresh ledger databases of the test's backend; all are dropped afterwards."""
    made: list[LedgerDatabase] = []
    server = request.getfixturevalue("postgres_server") if backend == "postgres" else None

    def make() -> LedgerDatabase:
        database: LedgerDatabase
        if server is not None:
            database = PostgresDatabase(server)
        else:
            database = SQLiteDatabase(tmp_path / f"db{len(made)}")
        made.append(database)
        return database

    yield make
    for database in made:
        database.drop()


@pytest.fixture
def database(new_database: Callable[[], LedgerDatabase]) -> LedgerDatabase:
    """The test's ledger database (a SQLite file, or a PostgreSQL database)."""
    return new_database()


@pytest.fixture
def make_store(database: LedgerDatabase) -> StoreFactory:
    """Opens new, unstarted stores on the test's database: ``make_store(clock=...)``."""
    return database.store
