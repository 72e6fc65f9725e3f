"""Metrics read from the shards and the node's jobs when ``/metrics`` is scraped.

Nothing here is counted on a request's path: each scrape asks every shard, at once and
each within ``timeout_seconds``, for a ping and its ``ShardBacklog`` (index seeks only,
``paycore.storage.usage``), and reads the node's ``WorkerSupervisor`` in memory::

    paycore_shard_up{shard}                         1 if the shard answered this scrape
    paycore_saga_backlog{shard}                     cross-shard transfers not finished
    paycore_saga_oldest_age_seconds{shard}          ... the oldest one's age (0: none)
    paycore_payments_open{shard,status}             payments processing / requires_capture
    paycore_payments_oldest_age_seconds{shard,status}  since the oldest one last changed
    paycore_webhook_backlog{shard}                  payment events not delivered nor given up
    paycore_webhook_oldest_age_seconds{shard}       ... the oldest one's age
    paycore_webhook_events_total{shard,outcome}     events this node's sender ended a pass
                                                    with: delivered, retried, failed
    paycore_webhook_requests_total{shard}           POSTs this node's sender made
    paycore_job_leader{job,shard}                   1 while this node leads the job
    paycore_job_failures_total{job,shard}           the job's failed rounds on this node
    paycore_event_stream_lag_events{shard,log}      rows not yet acknowledged by NATS
    paycore_event_stream_lag_seconds{shard,log}     ... the oldest one's age
                                                    (both only with ``[events]``)

A shard that does not answer in time shows ``paycore_shard_up 0`` and none of its
backlog series for that scrape (an alert on the backlog then keeps its last value in
Prometheus' staleness window; ``shard_up`` is the alert for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, Final, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from paycore.errors import PaycoreError
from paycore.storage.store import ShardStore, Store
from paycore.storage.usage import Oldest, ShardBacklog

__all__ = ["JobsView", "StateCollector"]

log = logging.getLogger(__name__)

_NS: Final = 1_000_000_000
# A scrape waits at most this long for a shard (Prometheus' own default timeout is 10 s).
SHARD_TIMEOUT_SECONDS: Final = 2.0


class JobsView(Protocol):
    """What the metrics need of the node's background jobs (``WorkerSupervisor``)."""

    def status(self) -> dict[str, Any]: ...

    def webhook_totals(self) -> dict[str, dict[str, int]]: ...


def _age(now: int, oldest: Oldest) -> float:
    return max(now - oldest.since, 0) / _NS if oldest.count else 0.0


class StateCollector(Collector):
    """The shards' backlog and the jobs' leadership, as of the last ``refresh()``."""

    def __init__(
        self,
        store: Store,
        *,
        jobs: JobsView | None = None,
        stream: bool = False,
        timeout_seconds: float = SHARD_TIMEOUT_SECONDS,
    ) -> None:
        self._store = store
        self._stream = stream
        self._timeout = timeout_seconds
        self._jobs = jobs
        self._backlogs: dict[str, ShardBacklog | None] = {}

    async def refresh(self) -> None:
        """Read every shard's backlog now (each bounded in time; a failure is ``up 0``)."""
        shards = self._store.shard_stores
        found = await asyncio.gather(*(self._read(name, s) for name, s in shards.items()))
        self._backlogs = dict(zip(shards, found, strict=True))

    async def _read(self, name: str, shard: ShardStore) -> ShardBacklog | None:
        try:
            async with asyncio.timeout(self._timeout):
                await shard.ping()
                return await shard.backlog(stream=self._stream)
        except (PaycoreError, TimeoutError) as exc:
            log.debug("metrics: shard %s did not answer: %s", name, exc)
            return None

    def collect(self) -> Iterator[Any]:
        yield from self._shard_families()
        yield from self._job_families()

    def _shard_families(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "paycore_shard_up", "1 if the shard answered this scrape, else 0", labels=["shard"]
        )
        sagas = GaugeMetricFamily(
            "paycore_saga_backlog",
            "Cross-shard transfers started on the shard and not finished yet",
            labels=["shard"],
        )
        saga_age = GaugeMetricFamily(
            "paycore_saga_oldest_age_seconds",
            "Age of the oldest unfinished cross-shard transfer (0: none)",
            labels=["shard"],
        )
        payments = GaugeMetricFamily(
            "paycore_payments_open",
            "Payments in an open status (processing, requires_capture)",
            labels=["shard", "status"],
        )
        payment_age = GaugeMetricFamily(
            "paycore_payments_oldest_age_seconds",
            "Time since the oldest payment in the status last changed (0: none)",
            labels=["shard", "status"],
        )
        webhooks = GaugeMetricFamily(
            "paycore_webhook_backlog",
            "Payment events neither delivered to every endpoint nor given up",
            labels=["shard"],
        )
        webhook_age = GaugeMetricFamily(
            "paycore_webhook_oldest_age_seconds",
            "Age of the oldest payment event not delivered yet (0: none)",
            labels=["shard"],
        )
        lag = GaugeMetricFamily(
            "paycore_event_stream_lag_events",
            "Rows of the log not yet acknowledged by NATS (payments: at most 10000)",
            labels=["shard", "log"],
        )
        lag_age = GaugeMetricFamily(
            "paycore_event_stream_lag_seconds",
            "Age of the oldest row of the log not yet acknowledged by NATS (0: caught up)",
            labels=["shard", "log"],
        )
        for shard, backlog in sorted(self._backlogs.items()):
            up.add_metric([shard], 0.0 if backlog is None else 1.0)
            if backlog is None:
                continue
            now = backlog.now
            sagas.add_metric([shard], backlog.sagas.count)
            saga_age.add_metric([shard], _age(now, backlog.sagas))
            for status, oldest in sorted(backlog.payments.items()):
                payments.add_metric([shard, status], oldest.count)
                payment_age.add_metric([shard, status], _age(now, oldest))
            webhooks.add_metric([shard], backlog.webhook_events.count)
            webhook_age.add_metric([shard], _age(now, backlog.webhook_events))
            for each in backlog.stream:
                lag.add_metric([shard, each.log], each.behind)
                lag_age.add_metric(
                    [shard, each.log], max(now - each.since, 0) / _NS if each.behind else 0.0
                )
        yield from (up, sagas, saga_age, payments, payment_age, webhooks, webhook_age)
        if self._stream:
            yield from (lag, lag_age)

    def _job_families(self) -> Iterator[Any]:
        leader = GaugeMetricFamily(
            "paycore_job_leader",
            "1 while this node leads the background job on the shard, else 0",
            labels=["job", "shard"],
        )
        failures = CounterMetricFamily(
            "paycore_job_failures",
            "Failed rounds of the background job on this node",
            labels=["job", "shard"],
        )
        events = CounterMetricFamily(
            "paycore_webhook_events",
            "Payment events this node's webhook sender ended a pass with, by outcome: "
            "delivered (every endpoint took it), retried (some did not: later), failed "
            "(given up after the retry schedule)",
            labels=["shard", "outcome"],
        )
        requests = CounterMetricFamily(
            "paycore_webhook_requests",
            "Webhook POSTs this node's sender made",
            labels=["shard"],
        )
        if self._jobs is not None:
            for job in self._jobs.status()["jobs"]:
                labels = [job["job"], job["shard"] or ""]
                leader.add_metric(labels, 1.0 if job["leader"] else 0.0)
                failures.add_metric(labels, job["failures"])
            for shard, totals in sorted(self._jobs.webhook_totals().items()):
                for outcome in ("delivered", "retried", "failed"):
                    events.add_metric([shard, outcome], totals[outcome])
                requests.add_metric([shard], totals["requests"])
        yield from (leader, failures, events, requests)
