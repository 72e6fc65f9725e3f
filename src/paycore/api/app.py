"""The HTTP API as one Litestar app over one ``Store``.

The app owns, for its lifetime (the lifespan):

- the lock service of ``settings.locks_url`` (opened first, closed last), unless one
  is passed in (then its owner opens and closes it); the ``WriteExecutor`` holds an
  Idempotency-Key's lock there while its request runs, and /readyz checks it;
- the rate limiter (``paycore.api.ratelimit``: in-process, or Redis-backed when
  ``locks_url`` is Redis), closed last but one;
- the store (started after the locks, stopped before they close);
- unless told otherwise, the background jobs: a ``WorkerSupervisor`` that runs each
  shard's relay and maintenance while this node is elected their leader (started
  after the store, stopped before it).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.router import Router

from paycore.api.auth import ApiKeys, AuthMiddleware
from paycore.api.bodies import MAX_BODY_DEPTH
from paycore.api.console import console_routes, console_templates
from paycore.api.console.audit_runs import Auditor
from paycore.api.idempotency import WriteExecutor
from paycore.api.metrics import ApiMetrics, MetricsMiddleware
from paycore.api.openapi import SECURED, openapi_config
from paycore.api.problems import EXCEPTION_HANDLERS
from paycore.api.ratelimit import Limit, RateLimiter, RateLimitMiddleware, rate_limiter_for
from paycore.api.request_id import add_request_id
from paycore.api.routes import account_routes, api_key_routes, ops_routes, transfer_routes
from paycore.api.routes.fx import fx_routes
from paycore.api.routes.ops import OPEN_AUTH_WARNING
from paycore.config import Settings
from paycore.fx.rates import RateSource, rate_source_for
from paycore.locks import LockService, LockServiceBase, open_lock_service
from paycore.payments.endpoint_secrets import signing_key
from paycore.redaction import redact_url
from paycore.storage.store import Store

if TYPE_CHECKING:
    from paycore.payments.service import PaymentService
    from paycore.workers.supervisor import WorkerSupervisor

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _Workers:
    """The node's supervisor once the lifespan made it (/readyz reads it then)."""

    def __init__(self) -> None:
        self.supervisor: WorkerSupervisor | None = None

    def status(self) -> dict[str, Any]:
        if self.supervisor is None:  # not started yet, or stopped
            return {"jobs": [], "lock_backend_down": False}
        return self.supervisor.status()

    def webhook_totals(self) -> dict[str, dict[str, int]]:
        return {} if self.supervisor is None else self.supervisor.webhook_totals()


def create_app(
    store: Store,
    settings: Settings,
    *,
    start_workers: bool = True,
    locks: LockService | None = None,
    payments: PaymentService | None = None,
    fx_rates: RateSource | None = None,
    clock: Callable[[], int] = time.time_ns,
    auditor: Auditor | None = None,
) -> Litestar:
    """The paycore HTTP API serving ``store``, configured by ``settings``.

    ``locks``: the lock service to use (its caller opens and closes it); None: the app
    opens ``settings.locks_url`` when it starts and closes it when it stops.
    ``payments``: the payment service (the app closes it when it stops); None: one built
    from the settings' ``[[processors]]`` and ``[routing]``.
    ``fx_rates``: where FX quotes take their rates (the app closes it when it stops);
    None: the source ``[fx]`` names. ``clock``: ns since the epoch, for quote expiry.
    ``auditor``: the ledger audit the console may run (``paycore serve`` passes
    ``paycore.ops.console_audit``; the product does not import the operator tooling).
    """
    # Imported here: the processor connectors load httpx, which a tool serving only the
    # ledger does not need at import time.
    from paycore.api.routes.lists import list_routes  # noqa: PLC0415
    from paycore.api.routes.payments import payment_routes  # noqa: PLC0415
    from paycore.api.routes.processor_events import processor_event_routes  # noqa: PLC0415
    from paycore.api.routes.reconciliation import reconciliation_routes  # noqa: PLC0415
    from paycore.api.routes.webhook_deliveries import webhook_delivery_routes  # noqa: PLC0415
    from paycore.api.routes.webhook_endpoints import webhook_endpoint_routes  # noqa: PLC0415
    from paycore.payments.service import build_payment_service  # noqa: PLC0415

    payment_service = payments if payments is not None else build_payment_service(store, settings)
    rate_source = fx_rates if fx_rates is not None else rate_source_for(settings.fx)
    payment_service.use_fx(rate_source, settings.fx)
    # Made now (no connection yet: every backend connects lazily or in ``open``), so
    # that the handlers can be bound to it; opened by the lifespan.
    owned: LockServiceBase | None = None
    service: LockService
    if locks is None:
        service = owned = open_lock_service(settings.locks_url)
    else:
        service = locks
    writes = WriteExecutor(
        store,
        retention_seconds=settings.idempotency_retention_hours * 3600,
        locks=service,
        lock_seconds=settings.idempotency_lock_seconds,
    )
    workers = _Workers() if start_workers else None
    metrics = ApiMetrics(store, writes.in_flight, jobs=workers, stream=settings.events is not None)
    middleware = [DefineMiddleware(MetricsMiddleware, metrics=metrics)]
    limiter: RateLimiter | None = None
    if settings.rate_limit_per_second > 0:
        limiter = rate_limiter_for(settings.locks_url)
        middleware.append(_rate_limit_middleware(settings, limiter))
    api_keys = ApiKeys(store)
    # None in open mode: every request acts for tenant "default" with every scope.
    checked_keys = api_keys if settings.auth == "api_keys" else None

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if owned is not None:
                await owned.open()  # never fails on a backend that is down: calls do
                stack.push_async_callback(owned.aclose)
            if limiter is not None:
                stack.push_async_callback(limiter.aclose)
            await store.start()
            stack.push_async_callback(store.stop)
            stack.push_async_callback(_close_all, payment_service, rate_source)
            if settings.auth == "open":
                log.warning(
                    "SECURITY: %s; every request acts for tenant 'default' with every scope; "
                    "never expose it beyond this machine",
                    OPEN_AUTH_WARNING,
                )
            else:
                log.info("API keys required (Authorization: Bearer ...); see `paycore keys`")
            if writes.locks is not None:
                log.info(
                    "Idempotency-Keys in flight are locked cluster-wide in %s",
                    redact_url(settings.locks_url),
                )
            if workers is not None:
                # Imported only when wanted: tests and tools serve the API without workers.
                from paycore.workers.supervisor import WorkerSupervisor  # noqa: PLC0415

                supervisor = WorkerSupervisor(store, settings, service, payments=payment_service)
                await supervisor.start()
                workers.supervisor = supervisor
                stack.push_async_callback(_stop_workers, workers)
            yield

    return Litestar(
        route_handlers=[
            # Routes that need an API key (``AuthMiddleware``), so documented with one.
            Router(
                "/",
                route_handlers=[
                    *account_routes(store, writes, settings),
                    *transfer_routes(store, writes, settings),
                    *payment_routes(payment_service, settings, writes=writes),
                    *list_routes(store, payment_service, settings),
                    *api_key_routes(api_keys, writes, settings),
                    *webhook_endpoint_routes(
                        store, writes, settings, functools.partial(signing_key, settings)
                    ),
                    *webhook_delivery_routes(store, writes, settings),
                    *fx_routes(store, writes, settings, rate_source, clock=clock),
                    *reconciliation_routes(
                        store,
                        writes,
                        settings,
                        processors=payment_service.connectors,
                        locks=service,
                    ),
                ],
                security=SECURED,
            ),
            *processor_event_routes(store, settings),
            *ops_routes(store, settings, metrics, locks=service, workers=workers),
            # The operator console (its own session login; not in the OpenAPI document).
            *console_routes(
                store,
                payment_service,
                settings,
                api_keys,
                workers=workers,
                traffic=metrics.traffic,
                auditor=auditor,
            ),
        ],
        template_config=console_templates(),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_request_id],  # X-Request-Id on every answer, 404s included
        # Outermost first: refused requests (429, 401) are counted in the metrics too.
        middleware=[*middleware, DefineMiddleware(AuthMiddleware, keys=checked_keys)],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(
            title="paycore",
            version=version("paycore"),
            description=(
                "A payment core: double-entry ledger. Amounts are integer minor units. "
                "Request bodies are JSON (Content-Type: application/json or "
                "application/*+json, else 415 unsupported_media_type) nested at most "
                f"{MAX_BODY_DEPTH} levels (else 422 invalid_request); `metadata` has the "
                "bounds its schema describes."
            ),
            idempotency_retention_hours=settings.idempotency_retention_hours,
        ),
        # Logging is configured by the entry point (CLI), not by the web framework.
        logging_config=None,
    )


def _rate_limit_middleware(settings: Settings, limiter: RateLimiter) -> DefineMiddleware:
    overrides = {
        caller: Limit(o.per_second, o.burst) for caller, o in settings.rate_limit_overrides.items()
    }
    default = Limit(settings.rate_limit_per_second, settings.rate_limit_burst)
    return DefineMiddleware(
        RateLimitMiddleware, limiter=limiter, default=default, overrides=overrides
    )


async def _close_all(*owned: PaymentService | RateSource) -> None:
    """Close what the app made for its handlers, in order."""
    for thing in owned:
        await thing.aclose()


async def _stop_workers(workers: _Workers) -> None:
    supervisor, workers.supervisor = workers.supervisor, None
    if supervisor is not None:
        await supervisor.stop()
