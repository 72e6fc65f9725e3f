"""The processor instruments of the ``ResilientConnector``s.

Metrics (Prometheus, on the registry given, the global one by default; one set of
instruments per registry shared by every connector on it)::

    paycore_processor_calls_total{processor,operation,outcome}   each attempt that ran
    paycore_processor_rejected_calls_total{processor,operation,reason}  circuit_open|bulkhead_full
    paycore_processor_retries_total{processor,operation}
    paycore_processor_call_duration_seconds{processor,operation} histogram, per attempt
    paycore_processor_breaker_transitions_total{processor,from_state,to_state}
    paycore_processor_breaker_state{processor,state}      1 for the current state, else 0
    paycore_processor_breaker_failure_rate{processor}     percent; -1 below minimum calls
    paycore_processor_breaker_slow_call_rate{processor}   percent; -1 below minimum calls
    paycore_processor_breaker_buffered_calls{processor}
    paycore_processor_bulkhead_in_flight{processor}

The gauges are read from the breakers when scraped (like ``api.metrics``' store
collector), so a scrape also performs a due OPEN -> HALF_OPEN transition.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from paycore.payments.processors.base import Operation
from paycore.resilience import BreakerSnapshot, Bulkhead, State

__all__ = ["ProcessorMetrics", "Watched"]

_LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Watched(Protocol):
    """What the gauges read of a guarded processor (a ``ResilientConnector``)."""

    name: str
    bulkhead: Bulkhead

    def snapshot(self) -> BreakerSnapshot: ...


class _BreakerCollector(Collector):
    """Reads each watched connector's breaker and bulkhead when scraped."""

    def __init__(self, connectors: Mapping[str, Watched]) -> None:
        self._connectors = connectors

    def collect(self) -> Iterator[Any]:
        state = GaugeMetricFamily(
            "paycore_processor_breaker_state",
            "Circuit breaker state per processor: 1 for the current state, 0 for the others",
            labels=["processor", "state"],
        )
        failure_rate = GaugeMetricFamily(
            "paycore_processor_breaker_failure_rate",
            "Failed calls in the breaker's window, percent; -1 below the minimum calls",
            labels=["processor"],
        )
        slow_rate = GaugeMetricFamily(
            "paycore_processor_breaker_slow_call_rate",
            "Slow calls in the breaker's window, percent; -1 below the minimum calls",
            labels=["processor"],
        )
        buffered = GaugeMetricFamily(
            "paycore_processor_breaker_buffered_calls",
            "Calls in the breaker's window",
            labels=["processor"],
        )
        in_flight = GaugeMetricFamily(
            "paycore_processor_bulkhead_in_flight",
            "Calls to the processor in flight",
            labels=["processor"],
        )
        for name, connector in sorted(self._connectors.items()):
            snapshot = connector.snapshot()
            for each in State:
                state.add_metric([name, each.value], 1.0 if snapshot.state is each else 0.0)
            failure_rate.add_metric(
                [name], -1.0 if snapshot.failure_rate is None else snapshot.failure_rate
            )
            slow_rate.add_metric(
                [name], -1.0 if snapshot.slow_call_rate is None else snapshot.slow_call_rate
            )
            buffered.add_metric([name], snapshot.buffered_calls)
            in_flight.add_metric([name], connector.bulkhead.in_flight)
        yield from (state, failure_rate, slow_rate, buffered, in_flight)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, ProcessorMetrics] = (
    weakref.WeakKeyDictionary()
)


class ProcessorMetrics:
    """The processor instruments of one registry; ``ProcessorMetrics.on(registry)``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._calls = Counter(
            "paycore_processor_calls",
            "Calls that reached a processor (or may have), by operation and outcome",
            ["processor", "operation", "outcome"],
            registry=registry,
        )
        self._rejected = Counter(
            "paycore_processor_rejected_calls",
            "Calls refused before reaching the processor: circuit_open or bulkhead_full",
            ["processor", "operation", "reason"],
            registry=registry,
        )
        self._retries = Counter(
            "paycore_processor_retries",
            "Attempts repeated after a FAILED outcome, same reference",
            ["processor", "operation"],
            registry=registry,
        )
        self._latency = Histogram(
            "paycore_processor_call_duration_seconds",
            "Time of one attempt at a processor, timeouts included",
            ["processor", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._transitions = Counter(
            "paycore_processor_breaker_transitions",
            "Circuit breaker state changes per processor",
            ["processor", "from_state", "to_state"],
            registry=registry,
        )
        self._connectors: dict[str, Watched] = {}
        registry.register(_BreakerCollector(self._connectors))

    @classmethod
    def on(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        """The instruments on ``registry``, made and registered the first time."""
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = cls(registry)
        return metrics

    def watch(self, connector: Watched) -> None:
        """Export ``connector``'s breaker gauges (a newer one of the same name replaces it)."""
        self._connectors[connector.name] = connector

    def observe(self, processor: str, operation: Operation, outcome: str, seconds: float) -> None:
        self._calls.labels(processor, operation.value, outcome).inc()
        self._latency.labels(processor, operation.value).observe(seconds)

    def rejected(self, processor: str, operation: Operation, reason: str) -> None:
        self._rejected.labels(processor, operation.value, reason).inc()

    def retried(self, processor: str, operation: Operation) -> None:
        self._retries.labels(processor, operation.value).inc()

    def transition(self, processor: str, previous: State, state: State) -> None:
        self._transitions.labels(processor, previous.value, state.value).inc()
