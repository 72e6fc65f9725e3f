"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from paycore.api.metrics import ApiMetrics
from paycore.api.schemas import encode
from paycore.config import Settings
from paycore.errors import PaycoreError
from paycore.storage.base import Store

__all__ = ["OPEN_AUTH_WARNING", "ops_routes"]

_JSON = "application/json"
OPEN_AUTH_WARNING = "this server accepts every request without an API key (auth = 'open')"


def ops_routes(store: Store, settings: Settings, metrics: ApiMetrics) -> list[HTTPRouteHandler]:
    """Handlers for load balancers and monitoring, bound to one store."""
    open_auth = settings.auth == "open"

    @get("/healthz", tags=["ops"])
    async def healthz() -> Response[bytes]:
        """The process is up and serving HTTP."""
        return Response(encode({"status": "ok"}), media_type=_JSON)

    @get("/readyz", tags=["ops"])
    async def readyz() -> Response[bytes]:
        """The store answers; 503 (with Retry-After) when it does not."""
        body: dict[str, object] = {"status": "ready", "store": store.name, "auth": settings.auth}
        if open_auth:
            body["warning"] = OPEN_AUTH_WARNING
        try:
            await store.ping()
        except PaycoreError as exc:
            body["status"] = "unavailable"
            body["detail"] = exc.detail
            headers = {"Retry-After": str(getattr(exc, "retry_after", 1))}
            return Response(encode(body), status_code=503, media_type=_JSON, headers=headers)
        return Response(encode(body), media_type=_JSON)

    @get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response[bytes]:
        """Prometheus text exposition."""
        return Response(metrics.exposition(), media_type=metrics.content_type)

    return [healthz, readyz, prometheus_metrics]
