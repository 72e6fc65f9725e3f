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

Its settings are ``paycore.payments.resilient_config``, its metrics
``paycore.payments.resilient_metrics`` (both names importable from here too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry

from paycore.payments.processors.base import (
    AuthorizeRequest,
    Operation,
    Outcome,
    PayoutRequest,
    ProcessorConnector,
    ProcessorResult,
)
from paycore.payments.resilient_config import ResilienceConfig
from paycore.payments.resilient_metrics import ProcessorMetrics
from paycore.resilience import (
    BreakerEvent,
    BreakerSnapshot,
    Bulkhead,
    BulkheadFull,
    CallNotPermitted,
    CallTimeout,
    CircuitBreaker,
    Clock,
    EventKind,
    Policy,
    State,
    Verdict,
)

__all__ = ["ProcessorMetrics", "ResilienceConfig", "ResilientConnector", "availability"]

log = logging.getLogger(__name__)


CIRCUIT_OPEN: Final = "circuit_open"
BULKHEAD_FULL: Final = "bulkhead_full"
TIMEOUT: Final = "timeout"
REJECTIONS: Final = frozenset({CIRCUIT_OPEN, BULKHEAD_FULL})


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
