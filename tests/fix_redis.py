"""Redis servers for the tests (a pytest plugin, like ``fix_postgres``): a real
``redis-server`` on a free port, no persistence (``paycore.locks.testing.RedisServer``).

``redis_server`` is one server for the whole run; nothing cleans it, so a test uses
names (locks, keys) no other test uses. ``own_redis`` is a server of one test alone,
which it may stop, stall and restart (``restart()`` keeps the port, so clients
reconnect by themselves).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from paycore.locks.testing import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One ``redis-server`` on a free port for the whole run (no persistence), stopped at
    the end. Tests that restart Redis take ``own_redis`` instead."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A ``redis-server`` of this test alone, which it may stop and restart."""
    with RedisServer() as server:
        yield server
