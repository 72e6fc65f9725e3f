"""``ResilientConnector``: one processor behind a timeout, a bulkhead, a breaker and retries.

It wraps any ``ProcessorConnector`` and is one itself, so the payment logic cannot tell
the difference except that it never hangs and never piles onto a sick processor::

    ResilientConnector.authorize(request)
      Policy (paycore.resilience.policy): retry( breaker( bulkhead( timeout(call) ) ) )
        processor answered        -> its ProcessorResult (each attempt: metrics, on_attempt)
        breaker open              -> FAILED  error="circuit_open"   processor not called
        bulkhead full             -> FAILED  error="bulkhead_full"  processor not called
        timeout                   -> AMBIGUOUS error="timeout"     (STATUS: FAILED)

What the outcomes mean here (see ``processors.base``):

- for the **breaker**, APPROVED and DECLINED are successes (the processor worked; a
  declined card is not a sick processor), FAILED and AMBIGUOUS are failures, and any
  call slower than ``breaker.slow_call_duration`` is slow, whatever its outcome;
- for **retries**, only FAILED is retried (the processor definitely did not act), with
  the same reference (processors are idempotent by it), and only for the operations in
  ``retry_operations``; AMBIGUOUS is never retried, here or elsewhere: the payment stays
  ``processing`` until a status lookup tells;
- a **timeout** of a call that may have reached the processor is AMBIGUOUS: once the
  connector's coroutine runs, the request may have left, and nothing tells us it did
  not. A STATUS lookup changes nothing at the processor, so its timeout is FAILED.
- a rejection (``circuit_open``, ``bulkhead_full``) is FAILED and is not retried here:
  the router's next processor is the better try (``available()`` says which).

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

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from paycore.payments.processors.base import (
    AuthorizeRequest,
    Operation,
    Outcome,
    PayoutRequest,
    ProcessorConnector,
    ProcessorResult,
)
from paycore.resilience import (
    BreakerConfig,
    BreakerEvent,
    BreakerSnapshot,
    Bulkhead,
    BulkheadConfig,
    BulkheadFull,
    CallNotPermitted,
    CallTimeout,
    CircuitBreaker,
    Clock,
    EventKind,
    Policy,
    RetryConfig,
    State,
    Verdict,
    with_defaults,
)

__all__ = [
    "ProcessorMetrics",
    "ResilienceConfig",
    "ResilientConnector",
    "availability",
]

log = logging.getLogger(__name__)

CIRCUIT_OPEN: Final = "circuit_open"
BULKHEAD_FULL: Final = "bulkhead_full"
TIMEOUT: Final = "timeout"
REJECTIONS: Final = frozenset({CIRCUIT_OPEN, BULKHEAD_FULL})

_LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def _payment_breaker() -> BreakerConfig:
    return BreakerConfig(
        failure_rate_threshold=50.0,
        slow_call_rate_threshold=80.0,
        slow_call_duration=3.0,
        window_size=20,
        minimum_calls=10,
        wait_in_open=5.0,
        permitted_calls_in_half_open=3,
    )


def _payment_bulkhead() -> BulkheadConfig:
    return BulkheadConfig(max_concurrent=64, max_wait=0.0)


def _payment_retry() -> RetryConfig:
    return RetryConfig(attempts=2, deadline=5.0, wait_initial=0.05, wait_max=0.5, wait_jitter=0.05)


class ResilienceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How one processor is guarded; ``from_table`` reads a ``[processors.resilience]``
    table (docs/payments.md lists every setting and its default)."""

    timeout: float = 8.0  # seconds per attempt, unless the operation has its own
    operation_timeouts: dict[Operation, float] = msgspec.field(default_factory=dict)
    breaker: BreakerConfig = msgspec.field(default_factory=_payment_breaker)
    bulkhead: BulkheadConfig = msgspec.field(default_factory=_payment_bulkhead)
    retry: RetryConfig = msgspec.field(default_factory=_payment_retry)
    # Operations whose FAILED outcome is retried with the same reference. All of them
    # are idempotent by reference (see processors.base); remove one to never repeat it.
    retry_operations: frozenset[Operation] = frozenset(Operation)

    def __post_init__(self) -> None:
        for where, seconds in [("timeout", self.timeout), *self.operation_timeouts.items()]:
            if not seconds > 0:
                raise ValueError(f"{where}: a timeout must be above 0 seconds")

    def timeout_for(self, operation: Operation) -> float:
        return self.operation_timeouts.get(operation, self.timeout)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ResilienceConfig:
        """A config table over these defaults: a key it leaves out, at any depth, keeps
        the default above. (``msgspec.convert`` would fill a partial ``breaker`` table
        from ``BreakerConfig``'s bare defaults, ``minimum_calls = 100``: a breaker that
        never opens in a short outage.)"""
        return with_defaults(cls(), table)


def _verdict(result: ProcessorResult) -> Verdict:
    """The breaker's view: did the processor work?"""
    if result.outcome in (Outcome.APPROVED, Outcome.DECLINED):
        return Verdict.SUCCESS
    return Verdict.FAILURE


def _definitely_not_done(result: ProcessorResult) -> bool:
    """Only FAILED may be repeated: the processor did nothing. AMBIGUOUS never is."""
    return result.outcome is Outcome.FAILED


class ResilientConnector:
    """A ``ProcessorConnector`` that guards ``connector`` (see the module docstring).

    ``clock`` times calls for the breaker and the latency histogram (tests inject one);
    ``on_attempt`` is called with the result of every attempt that reached the
    processor (or may have: a timeout), retries included, for the payment's record.
    """

    def __init__(
        self,
        connector: ProcessorConnector,
        config: ResilienceConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        registry: CollectorRegistry | None = None,
        on_attempt: Callable[[ProcessorResult], None] | None = None,
    ) -> None:
        self.inner = connector
        self.name = connector.name
        self.config = config or ResilienceConfig()
        self.clock = clock
        self.on_attempt = on_attempt
        self.breaker = CircuitBreaker(self.name, self.config.breaker, clock=clock)
        self.bulkhead = Bulkhead(self.name, self.config.bulkhead)
        self._policy: Policy[ProcessorResult] = Policy(
            breaker=self.breaker,
            bulkhead=self.bulkhead,
            retry=self.config.retry,
            classify=_verdict,
            retry_if=_definitely_not_done,
            clock=clock,
        )
        self._metrics = ProcessorMetrics.on(REGISTRY if registry is None else registry)
        self._metrics.watch(self)
        self.breaker.add_listener(self._on_breaker_event)

    def __repr__(self) -> str:
        return f"ResilientConnector({self.inner!r})"

    # -- what routing and /metrics read -----------------------------------------------

    def available(self) -> bool:
        """Whether the breaker would let a call through now (takes no permit)."""
        return self.breaker.available()

    def snapshot(self) -> BreakerSnapshot:
        return self.breaker.snapshot()

    # -- the protocol -----------------------------------------------------------------

    async def authorize(self, request: AuthorizeRequest) -> ProcessorResult:
        return await self._run(
            Operation.AUTHORIZE, request.reference, lambda: self.inner.authorize(request)
        )

    async def capture(self, reference: str, amount: int, capture_reference: str) -> ProcessorResult:
        return await self._run(
            Operation.CAPTURE,
            capture_reference,
            lambda: self.inner.capture(reference, amount, capture_reference),
        )

    async def void(self, reference: str) -> ProcessorResult:
        return await self._run(Operation.VOID, reference, lambda: self.inner.void(reference))

    async def refund(self, reference: str, amount: int, refund_reference: str) -> ProcessorResult:
        return await self._run(
            Operation.REFUND,
            refund_reference,
            lambda: self.inner.refund(reference, amount, refund_reference),
        )

    async def payout(self, request: PayoutRequest) -> ProcessorResult:
        return await self._run(
            Operation.PAYOUT, request.reference, lambda: self.inner.payout(request)
        )

    async def status(self, reference: str) -> ProcessorResult:
        return await self._run(Operation.STATUS, reference, lambda: self.inner.status(reference))

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- the one guarded path ---------------------------------------------------------

    async def _run(
        self,
        operation: Operation,
        reference: str,
        call: Callable[[], Awaitable[ProcessorResult]],
    ) -> ProcessorResult:
        metrics = self._metrics
        attempts = 0
        started = self.clock()
        last: ProcessorResult | None = None  # the last answer the processor gave

        async def attempt() -> ProcessorResult:
            nonlocal attempts, started, last
            attempts += 1
            if attempts > 1:
                metrics.retried(self.name, operation)
            started = self.clock()
            result = await call()
            last = result
            self._observe(operation, result.outcome.value, started)
            if self.on_attempt is not None:
                self.on_attempt(result)
            return result

        try:
            return await self._policy(
                attempt,
                time_limit=self.config.timeout_for(operation),
                retry=operation in self.config.retry_operations,
            )
        except CallNotPermitted:
            # A retry refused by the breaker that the failure before it opened: the
            # processor WAS called and failed; say that, not "never called".
            if last is not None:
                return last
            return self._rejected(operation, reference, CIRCUIT_OPEN)
        except BulkheadFull:
            if last is not None:
                return last
            return self._rejected(operation, reference, BULKHEAD_FULL)
        except CallTimeout as exc:
            outcome = Outcome.FAILED if operation is Operation.STATUS else Outcome.AMBIGUOUS
            latency = self._observe(operation, outcome.value, started)
            result = ProcessorResult(
                outcome=outcome,
                processor=self.name,
                operation=operation,
                reference=reference,
                error=f"{TIMEOUT} after {exc.seconds:g}s",
                latency_ms=latency * 1000.0,
            )
            log.warning("%s %s %s timed out: %s", self.name, operation, reference, outcome)
            if self.on_attempt is not None:
                self.on_attempt(result)
            return result
        except Exception:
            self._observe(operation, "error", started)
            raise

    def _observe(self, operation: Operation, outcome: str, started: float) -> float:
        seconds = max(0.0, self.clock() - started)
        self._metrics.observe(self.name, operation, outcome, seconds)
        return seconds

    def _rejected(self, operation: Operation, reference: str, reason: str) -> ProcessorResult:
        self._metrics.rejected(self.name, operation, reason)
        return ProcessorResult(
            outcome=Outcome.FAILED,
            processor=self.name,
            operation=operation,
            reference=reference,
            error=reason,
        )

    def _on_breaker_event(self, event: BreakerEvent) -> None:
        if event.kind is not EventKind.TRANSITION or event.previous is None:
            return
        self._metrics.transition(self.name, event.previous, event.state)
        level = logging.INFO if event.state is State.CLOSED else logging.WARNING
        log.log(
            level,
            "processor %s: circuit breaker %s -> %s (%s)",
            self.name,
            event.previous,
            event.state,
            event.trigger,
        )


def availability(connectors: Mapping[str, ResilientConnector]) -> Callable[[str], bool]:
    """``available(name)`` for the router: a known processor whose breaker lets calls in."""

    def available(name: str) -> bool:
        connector = connectors.get(name)
        return connector is not None and connector.available()

    return available


class _BreakerCollector(Collector):
    """Reads each watched connector's breaker and bulkhead when scraped."""

    def __init__(self, connectors: Mapping[str, ResilientConnector]) -> None:
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
        self._connectors: dict[str, ResilientConnector] = {}
        registry.register(_BreakerCollector(self._connectors))

    @classmethod
    def on(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        """The instruments on ``registry``, made and registered the first time."""
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = cls(registry)
        return metrics

    def watch(self, connector: ResilientConnector) -> None:
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
