"""The HTTP API as one Litestar app over one ``Store``.

The app owns the store's lifecycle (started on startup, stopped on shutdown) and,
unless told otherwise, the background maintenance worker (expiring holds,
purging old idempotency records) and, over a sharded store, the relay worker that
settles cross-shard transfers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from paycore.api.idempotency import WriteExecutor
from paycore.api.metrics import ApiMetrics, MetricsMiddleware
from paycore.api.problems import EXCEPTION_HANDLERS
from paycore.api.routes import account_routes, ops_routes, transfer_routes
from paycore.api.routes.ops import OPEN_AUTH_WARNING
from paycore.config import Settings
from paycore.storage.base import Store

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(store: Store, settings: Settings, *, start_workers: bool = True) -> Litestar:
    """The paycore HTTP API serving ``store``, configured by ``settings``."""
    writes = WriteExecutor(store, retention_seconds=settings.idempotency_retention_hours * 3600)
    metrics = ApiMetrics(store, writes.in_flight)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await store.start()
        if settings.auth == "open":
            log.warning("SECURITY: %s; never expose it beyond this machine", OPEN_AUTH_WARNING)
        worker = None
        relay = None
        try:
            if start_workers:
                # Imported only when wanted: tests and tools serve the API without workers.
                from paycore.cluster.router import ShardedStore  # noqa: PLC0415
                from paycore.workers.maintenance import MaintenanceWorker  # noqa: PLC0415
                from paycore.workers.relay import RelayWorker  # noqa: PLC0415

                worker = MaintenanceWorker(
                    store,
                    interval_seconds=settings.maintenance_interval_seconds,
                    outbox_retention_seconds=settings.outbox_retention_hours * 3600,
                )
                await worker.start()
                if isinstance(store, ShardedStore):  # cross-shard transfers need their relay
                    relay = RelayWorker(
                        store,
                        interval_seconds=settings.relay_interval_seconds,
                        lease_seconds=settings.relay_lease_seconds,
                    )
                    await relay.start()
            yield
        finally:
            if relay is not None:
                await relay.stop()
            if worker is not None:
                await worker.stop()
            await store.stop()

    return Litestar(
        route_handlers=[
            *account_routes(store, writes, settings),
            *transfer_routes(store, writes, settings),
            *ops_routes(store, settings, metrics),
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(MetricsMiddleware, metrics=metrics)],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="paycore",
            version=version("paycore"),
            description="A payment core: double-entry ledger. Amounts are integer minor units.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin()],
        ),
        # Logging is configured by the entry point (CLI), not by the web framework.
        logging_config=None,
    )
