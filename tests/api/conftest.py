"""Fixtures for the API tests: the real app over a real store of each backend (SQLite file
or PostgreSQL database, see ``make_store``).

The app owns the store's lifecycle (the client's context runs the lifespan);
maintenance workers are off, so a test drives expiry itself. ``shared_shards`` is
four shard databases that several nodes open (see ``api.nodes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.nodes import SharedShards
from api.support import Api, ManualClock
from backends import AnyStore, StoreFactory
from paycore.api import create_app
from paycore.config import Settings

ClientFactory = Callable[..., AbstractAsyncContextManager[AsyncTestClient[Any]]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Open mode (tenant "default", every scope): these tests are about the API itself;
    # tests/api/test_auth.py checks keys and tenants.
    return Settings(data_dir=str(tmp_path), auth="open")


@pytest.fixture
def store(make_store: StoreFactory, clock: ManualClock) -> AnyStore:
    """The store behind the app; started and stopped by the app's lifespan."""
    return make_store(clock=clock)


@pytest.fixture
def open_client(store: AnyStore, settings: Settings) -> ClientFactory:
    """Opens a client on an app over ``store``; keyword arguments override settings."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
        app_settings = msgspec.structs.replace(settings, **overrides)
        app = create_app(store, app_settings, start_workers=False)
        async with AsyncTestClient(app=app) as client:
            yield client

    return factory


@pytest.fixture
async def client(open_client: ClientFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    async with open_client() as c:
        yield c


@pytest.fixture
async def document(client: AsyncTestClient[Any]) -> dict[str, Any]:
    """The OpenAPI document the app serves at /docs/openapi.json."""
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


@pytest.fixture
def api(client: AsyncTestClient[Any]) -> Api:
    return Api(client)


@pytest.fixture
def fund_amount() -> int:
    """What ``funded`` puts in the wallet (a test module may override it)."""
    return 100


@pytest.fixture
async def funded(api: Api, fund_amount: int) -> Api:
    """bank (no limits), wallet w (no overdraft) holding ``fund_amount``, shop (no limits)."""
    await api.account("bank")
    await api.account("w", flags={"no_overdraft": True})
    await api.account("shop")
    await api.ok_transfer("fund", "bank", "w", fund_amount)
    return api


@pytest.fixture
def shared_shards(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SharedShards]:
    """Four shard databases of the test's backend for several nodes; dropped after."""
    server = request.getfixturevalue("postgres_server") if backend == "postgres" else None
    shards = SharedShards(backend, tmp_path / "shards", server)
    yield shards
    shards.drop()
