"""Prometheus metrics of one API process: requests by route and status, latency, writer.

Each app gets its own registry (tests build many apps in one process). The
middleware is a bare ASGI wrapper that reads the route template Litestar put in
the scope: labels stay few (no raw paths with ids in them), and the hot path
pays a dict lookup, a counter and a histogram observation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from paycore.api.idempotency import KeysInFlight
from paycore.api.problems import status_of
from paycore.api.request_id import request_id_of
from paycore.api.state_metrics import JobsView, StateCollector
from paycore.api.traffic import RecentTraffic
from paycore.logs import ACCESS_LOGGER, bound, unbind
from paycore.storage.store import Store

__all__ = ["ApiMetrics", "MetricsMiddleware"]

# One line per request at INFO, when asked for (``paycore serve --access-log``).
access_log = logging.getLogger(ACCESS_LOGGER)

_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class _StoreCollector(Collector):
    """Reads the store's writer counters (and keys in flight) when scraped."""

    def __init__(self, store: Store, in_flight: KeysInFlight) -> None:
        self._store = store
        self._in_flight = in_flight

    def collect(self) -> Iterator[Any]:
        transactions, commands = self._store.writer_stats
        yield CounterMetricFamily(
            "paycore_store_transactions",
            "Write transactions committed by the store's writer (one per group commit)",
            value=transactions,
        )
        yield CounterMetricFamily(
            "paycore_store_commands",
            "Write commands run by the store's writer",
            value=commands,
        )
        yield GaugeMetricFamily(
            "paycore_idempotency_keys_in_flight",
            "Idempotency-Keys whose first request is still running in this process",
            value=len(self._in_flight),
        )


class ApiMetrics:
    """The registry and instruments of one app."""

    # Litestar adds "; charset=utf-8" to every text/* media type by itself: naming it here
    # too sent the parameter twice, which strict parsers refuse.
    content_type: Final = "text/plain; version=0.0.4"

    def __init__(
        self,
        store: Store,
        in_flight: KeysInFlight,
        *,
        jobs: JobsView | None = None,
        stream: bool = False,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "paycore_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "paycore_http_request_duration_seconds",
            "Time from request to last response byte, by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store, in_flight))
        # The shards' backlog and the jobs' leadership (``jobs``: the node's, None: it runs
        # none; ``stream``: the event stream's lag too), read by ``scrape``.
        self.state = StateCollector(store, jobs=jobs, stream=stream)
        self.registry.register(self.state)
        # Labelled children cached by key: ``labels()`` is the slow part of an observation.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        # The last minutes minute by minute, for the console's overview (this node's).
        self.traffic = RecentTraffic()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._requests.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._latency.labels(method, route)
            self._histograms[(method, route)] = histogram
        histogram.observe(seconds)
        self.traffic.note(method, route, status)

    async def scrape(self) -> bytes:
        """Read the shards' state, then the exposition (``GET /metrics``)."""
        await self.state.refresh()
        return self.exposition()

    def exposition(self) -> bytes:
        # The app's own instruments, then the process-wide registry, where the processor
        # connectors and the router count their calls, breaker states and decisions.
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class MetricsMiddleware:
    """Times each HTTP request, counts it by route template and status, and writes its
    access log line; every line logged while it runs carries its ``request_id``."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        with bound(request_id=request_id_of(scope)):
            try:
                await self._timed(scope, receive, send)
            finally:
                # Bound inside the request: the tenant once the key is known, a new payment's
                # id once it is made.
                unbind("tenant", "payment")

    async def _timed(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        except BaseException as exc:
            # Litestar turns the exception into a response outside this middleware.
            status = status_of(exc)
            raise
        finally:
            route = scope.get("path_template", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.observe(method, route, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 1),
                    },
                )
