"""Operations endpoints: liveness, readiness, Prometheus metrics.

``/readyz`` checks what a request may need, at once and each bounded in time: the
shards (``store.ping()``) and the lock service (``locks.ping()``). It is 503, with
Retry-After, while either cannot be reached: a load balancer should send its traffic
elsewhere. The node itself keeps serving what needs no lock meanwhile (reads, writes
without an Idempotency-Key), and is ready again by itself once both answer. The body
says what is down, where the lock service is (its URL with any password masked), and
how the background jobs of this node fare (``WorkerSupervisor.status()``), for
operators.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final, Protocol

import msgspec
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from paycore.api.metrics import ApiMetrics
from paycore.api.routes._docs import documented
from paycore.api.schemas import encode
from paycore.config import Settings
from paycore.errors import PaycoreError
from paycore.locks import LockService
from paycore.redaction import redact_text, redact_url, secrets_in
from paycore.storage.store import Store

__all__ = ["OPEN_AUTH_WARNING", "WorkerStatus", "lock_backend_kind", "ops_routes", "redact_url"]

_JSON = "application/json"
# Served without an API key (paycore.api.auth): load balancers and monitoring call these.
_PUBLIC: Final = {"public": True}
OPEN_AUTH_WARNING = "this server accepts every request without an API key (auth = 'open')"
# A dependency that has not answered a readiness check in this long counts as down.
_CHECK_SECONDS: Final = 2.0
_KINDS: Final = {
    "RedisLockService": "redis",
    "PostgresLockService": "postgres",
    "LocalLockService": "local",
}


class WorkerStatus(Protocol):
    """What /readyz needs of the node's ``WorkerSupervisor``."""

    def status(self) -> dict[str, Any]: ...


def lock_backend_kind(locks: LockService) -> str:
    """``redis``, ``postgres`` or ``local`` (another service: its class name)."""
    name = type(locks).__name__
    return _KINDS.get(name, name)


async def _check(probe: Awaitable[object]) -> PaycoreError | str | None:
    """None if ``probe`` answered in time; the error (or why not) otherwise."""
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            await probe
    except PaycoreError as exc:
        return exc
    except TimeoutError:
        return f"no answer within {_CHECK_SECONDS:g} s"
    return None


def _detail(failure: PaycoreError | str) -> str:
    return failure if isinstance(failure, str) else failure.detail


class HealthOut(msgspec.Struct, frozen=True):
    """The process is up."""

    status: str


class ReadyOut(msgspec.Struct, frozen=True):
    """Readiness: ``ready`` or ``unavailable`` (then 503 and ``detail``), with what was
    checked: the store, the lock service, this node's background jobs."""

    status: str
    store: str
    auth: str
    workers: dict[str, Any] | None
    warning: str | None = None
    locks: dict[str, Any] | None = None
    detail: str | None = None


def ops_routes(
    store: Store,
    settings: Settings,
    metrics: ApiMetrics,
    *,
    locks: LockService | None = None,
    workers: WorkerStatus | None = None,
) -> list[HTTPRouteHandler]:
    """Handlers for load balancers and monitoring, bound to one store, the node's lock
    service and its background jobs (None: this node runs none)."""
    open_auth = settings.auth == "open"
    lock_url = redact_url(settings.locks_url)
    lock_secrets = secrets_in(settings.locks_url)

    def scrub(text: str) -> str:
        return redact_text(text, lock_secrets)

    @get("/healthz", tags=["ops"], opt=_PUBLIC, operation_class=documented({200: HealthOut}))
    async def healthz() -> Response[bytes]:
        """The process is up and serving HTTP."""
        return Response(encode({"status": "ok"}), media_type=_JSON)

    @get(
        "/readyz",
        tags=["ops"],
        opt=_PUBLIC,
        operation_class=documented({200: ReadyOut, 503: ReadyOut}),
    )
    async def readyz() -> Response[bytes]:
        """The shards and the lock service answer; 503 (with Retry-After) when one does not."""
        body: dict[str, object] = {"status": "ready", "store": store.name, "auth": settings.auth}
        if open_auth:
            body["warning"] = OPEN_AUTH_WARNING
        probes = [_check(store.ping())]
        if locks is not None:
            probes.append(_check(locks.ping()))
        store_failure, *rest = await asyncio.gather(*probes)
        lock_failure = rest[0] if rest else None
        if locks is not None:
            lock_report: dict[str, object] = {
                "backend": lock_backend_kind(locks),
                "url": lock_url,
                "reachable": lock_failure is None,
            }
            if lock_failure is not None:
                lock_report["detail"] = scrub(_detail(lock_failure))
            body["locks"] = lock_report
        body["workers"] = workers.status() if workers is not None else None
        failures = [f for f in (store_failure, lock_failure) if f is not None]
        if not failures:
            return Response(encode(body), media_type=_JSON)
        body["status"] = "unavailable"
        details = []
        if store_failure is not None:
            details.append(redact_text(_detail(store_failure)))
        if lock_failure is not None:
            details.append(f"lock service: {scrub(_detail(lock_failure))}")
        body["detail"] = "; ".join(details)
        retry_after = max(int(getattr(f, "retry_after", 1)) for f in failures)
        headers = {"Retry-After": str(retry_after)}
        return Response(encode(body), status_code=503, media_type=_JSON, headers=headers)

    @get("/metrics", include_in_schema=False, opt=_PUBLIC)
    async def prometheus_metrics() -> Response[bytes]:
        """Prometheus text exposition."""
        return Response(await metrics.scrape(), media_type=metrics.content_type)

    return [healthz, readyz, prometheus_metrics]
