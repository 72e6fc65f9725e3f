"""ResilientConnector: outcomes through timeout, bulkhead, breaker and retries, and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from paycore.payments.processors.base import (
    AuthorizeRequest,
    CardDetails,
    Operation,
    Outcome,
    PayoutRequest,
    ProcessorConnector,
    ProcessorResult,
)
from paycore.payments.resilient import (
    ProcessorMetrics,
    ResilienceConfig,
    ResilientConnector,
    availability,
)
from paycore.payments.routing import Router, RoutingConfig, RoutingRule, StrategyName
from paycore.resilience import BreakerConfig, BulkheadConfig, RetryConfig, State

HANG = "hang"
CARD = CardDetails("4242424242424242", 12, 2030, "123")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Step:
    """One scripted answer: an outcome (or HANG, or an exception) after ``latency``
    seconds of the fake clock."""

    answer: Outcome | str | Exception
    latency: float = 0.01


@dataclass
class ScriptedConnector:
    """An in-memory ProcessorConnector answering from a script (the last step repeats)."""

    name: str
    clock: FakeClock
    script: list[Step] = field(default_factory=lambda: [Step(Outcome.APPROVED)])
    calls: list[tuple[Operation, str]] = field(default_factory=list)
    closed: bool = False

    async def _answer(self, operation: Operation, reference: str) -> ProcessorResult:
        self.calls.append((operation, reference))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.clock.now += step.latency
        if isinstance(step.answer, Exception):
            raise step.answer
        if step.answer == HANG:
            await asyncio.sleep(3600)
        outcome = Outcome(step.answer)
        return ProcessorResult(
            outcome=outcome,
            processor=self.name,
            operation=operation,
            reference=reference,
            decline_code="do_not_honor" if outcome is Outcome.DECLINED else None,
            error="processing_error" if outcome is Outcome.FAILED else None,
            latency_ms=step.latency * 1000,
        )

    async def authorize(self, request: AuthorizeRequest) -> ProcessorResult:
        return await self._answer(Operation.AUTHORIZE, request.reference)

    async def capture(self, reference: str, amount: int, capture_reference: str) -> ProcessorResult:
        return await self._answer(Operation.CAPTURE, capture_reference)

    async def void(self, reference: str) -> ProcessorResult:
        return await self._answer(Operation.VOID, reference)

    async def refund(self, reference: str, amount: int, refund_reference: str) -> ProcessorResult:
        return await self._answer(Operation.REFUND, refund_reference)

    async def payout(self, request: PayoutRequest) -> ProcessorResult:
        return await self._answer(Operation.PAYOUT, request.reference)

    async def status(self, reference: str) -> ProcessorResult:
        return await self._answer(Operation.STATUS, reference)

    async def aclose(self) -> None:
        self.closed = True


NO_WAIT = RetryConfig(attempts=3, deadline=None, wait_initial=0, wait_max=0, wait_jitter=0)


def config(**changes: object) -> ResilienceConfig:
    base = ResilienceConfig(
        timeout=1.0,
        breaker=BreakerConfig(
            window_size=4,
            minimum_calls=4,
            failure_rate_threshold=50,
            slow_call_rate_threshold=50,
            slow_call_duration=2.0,
            wait_in_open=5.0,
            permitted_calls_in_half_open=2,
        ),
        bulkhead=BulkheadConfig(max_concurrent=4),
        retry=RetryConfig(attempts=1, deadline=None),
    )
    return msgspec.structs.replace(base, **changes)


@dataclass
class Rig:
    connector: ResilientConnector
    inner: ScriptedConnector
    clock: FakeClock
    registry: CollectorRegistry
    attempts: list[ProcessorResult]

    def script(self, *steps: Step) -> None:
        self.inner.script = list(steps)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def authorize(self, reference: str = "pay_1") -> ProcessorResult:
        return await self.connector.authorize(AuthorizeRequest(reference, 1000, "EUR", CARD))


def rig(settings: ResilienceConfig | None = None, name: str = "acq-a") -> Rig:
    clock = FakeClock()
    inner = ScriptedConnector(name, clock)
    registry = CollectorRegistry()
    attempts: list[ProcessorResult] = []
    connector = ResilientConnector(
        inner, settings or config(), clock=clock, registry=registry, on_attempt=attempts.append
    )
    return Rig(connector, inner, clock, registry, attempts)


def test_it_is_a_processor_connector() -> None:
    """The wrapper satisfies the connector protocol, so payments use it unchanged."""
    wrapped: ProcessorConnector = rig().connector
    assert wrapped.name == "acq-a"


# -- outcomes and the breaker ------------------------------------------------------------


async def test_an_approval_passes_through_and_is_measured() -> None:
    """The processor's result comes back as is; the attempt is counted and timed."""
    r = rig()
    r.script(Step(Outcome.APPROVED, latency=0.25))
    result = await r.authorize()
    assert (result.outcome, result.reference) == (Outcome.APPROVED, "pay_1")
    labels = {"processor": "acq-a", "operation": "authorize"}
    assert r.metric("paycore_processor_calls_total", **labels, outcome="approved") == 1
    assert r.metric("paycore_processor_call_duration_seconds_count", **labels) == 1
    assert r.metric("paycore_processor_call_duration_seconds_sum", **labels) == pytest.approx(0.25)
    assert r.attempts == [result]


async def test_declines_do_not_open_the_breaker() -> None:
    """A DECLINED answer means the processor worked: a success for the breaker."""
    r = rig()
    r.script(Step(Outcome.DECLINED))
    for i in range(20):
        assert (await r.authorize(f"pay_{i}")).outcome is Outcome.DECLINED
    snapshot = r.connector.snapshot()
    assert (snapshot.state, snapshot.failure_rate) == (State.CLOSED, 0.0)


async def test_failed_and_ambiguous_open_the_breaker_then_calls_fail_fast() -> None:
    """FAILED and AMBIGUOUS count as failures; once open, calls get FAILED circuit_open
    without reaching the processor."""
    r = rig()
    r.script(Step(Outcome.FAILED), Step(Outcome.AMBIGUOUS), Step(Outcome.APPROVED))
    for i in range(4):
        await r.authorize(f"pay_{i}")
    assert r.connector.snapshot().state is State.OPEN
    assert not r.connector.available()
    sent = len(r.inner.calls)
    result = await r.authorize("pay_x")
    assert (result.outcome, result.error, result.reference) == (
        Outcome.FAILED,
        "circuit_open",
        "pay_x",
    )
    assert len(r.inner.calls) == sent
    rejected = {"processor": "acq-a", "operation": "authorize", "reason": "circuit_open"}
    assert r.metric("paycore_processor_rejected_calls_total", **rejected) == 1
    assert r.metric("paycore_processor_breaker_state", processor="acq-a", state="open") == 1
    assert r.metric("paycore_processor_breaker_state", processor="acq-a", state="closed") == 0
    assert r.metric("paycore_processor_breaker_failure_rate", processor="acq-a") == 50.0


async def test_slow_calls_open_the_breaker() -> None:
    """Approvals slower than slow_call_duration count toward the slow-call rate."""
    r = rig()
    r.script(Step(Outcome.APPROVED, latency=2.5), Step(Outcome.APPROVED, latency=0.1))
    for i in range(3):
        await r.authorize(f"pay_{i}")
    assert r.connector.snapshot().state is State.CLOSED
    r.script(Step(Outcome.APPROVED, latency=3.0))
    await r.authorize("pay_3")
    assert r.connector.snapshot().state is State.OPEN


async def test_the_breaker_recovers_through_half_open_probes() -> None:
    """After wait_in_open the processor is available again, probes that pass close it,
    and every transition is counted."""
    r = rig()
    r.script(Step(Outcome.FAILED))
    for i in range(4):
        await r.authorize(f"pay_{i}")
    r.clock.now += 5.0
    assert r.connector.available()
    r.script(Step(Outcome.APPROVED))
    await r.authorize("probe_1")
    await r.authorize("probe_2")
    assert r.connector.snapshot().state is State.CLOSED
    for previous, state in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]:
        labels = {"processor": "acq-a", "from_state": previous, "to_state": state}
        assert r.metric("paycore_processor_breaker_transitions_total", **labels) == 1


async def test_half_open_admits_only_its_probes() -> None:
    """While the permitted probes are out, other calls get circuit_open."""
    r = rig(config(timeout=30.0))
    r.script(Step(Outcome.FAILED))
    for i in range(4):
        await r.authorize(f"pay_{i}")
    r.clock.now += 5.0
    r.script(Step(HANG))
    probes = [asyncio.create_task(r.authorize(f"probe_{i}")) for i in range(2)]
    await asyncio.sleep(0)
    third = await r.authorize("pay_late")
    assert third.error == "circuit_open"
    assert not r.connector.available()
    for probe in probes:
        probe.cancel()
    await asyncio.gather(*probes, return_exceptions=True)
    assert r.connector.available()  # cancelled probes gave their permits back


# -- retries -----------------------------------------------------------------------------


async def test_failed_is_retried_with_the_same_reference() -> None:
    """A FAILED outcome is repeated (same reference) until it is not, within the attempts."""
    r = rig(config(retry=NO_WAIT, breaker=BreakerConfig(window_size=10, minimum_calls=10)))
    r.script(Step(Outcome.FAILED), Step(Outcome.FAILED), Step(Outcome.APPROVED))
    result = await r.authorize("pay_1")
    assert result.outcome is Outcome.APPROVED
    assert r.inner.calls == [(Operation.AUTHORIZE, "pay_1")] * 3
    assert [a.outcome for a in r.attempts] == [Outcome.FAILED, Outcome.FAILED, Outcome.APPROVED]
    labels = {"processor": "acq-a", "operation": "authorize"}
    assert r.metric("paycore_processor_retries_total", **labels) == 2
    assert r.metric("paycore_processor_calls_total", **labels, outcome="failed") == 2


@pytest.mark.parametrize("outcome", [Outcome.AMBIGUOUS, Outcome.DECLINED])
async def test_ambiguous_and_declined_are_never_retried(outcome: Outcome) -> None:
    """AMBIGUOUS may have taken effect and DECLINED is final: one attempt only."""
    r = rig(config(retry=NO_WAIT))
    r.script(Step(outcome), Step(Outcome.APPROVED))
    assert (await r.authorize()).outcome is outcome
    assert len(r.inner.calls) == 1


async def test_operations_outside_retry_operations_are_not_retried() -> None:
    """retry_operations limits which operations may be repeated."""
    r = rig(config(retry=NO_WAIT, retry_operations=frozenset({Operation.STATUS})))
    r.script(Step(Outcome.FAILED), Step(Outcome.APPROVED))
    assert (await r.authorize()).outcome is Outcome.FAILED
    assert len(r.inner.calls) == 1
    r.script(Step(Outcome.FAILED), Step(Outcome.APPROVED))
    assert (await r.connector.status("pay_1")).outcome is Outcome.APPROVED


async def test_retries_stop_when_the_breaker_opens() -> None:
    """A retry that finds the breaker open is not sent; the answer is the last failure the
    processor gave (it was called), not circuit_open."""
    settings = config(
        retry=RetryConfig(attempts=5, deadline=None, wait_initial=0, wait_max=0, wait_jitter=0),
        breaker=BreakerConfig(window_size=2, minimum_calls=2),
    )
    r = rig(settings)
    r.script(Step(Outcome.FAILED))
    result = await r.authorize()
    assert result.outcome is Outcome.FAILED
    assert result.error != "circuit_open"
    assert len(r.inner.calls) == 2


# -- timeouts and the bulkhead -----------------------------------------------------------


async def test_a_timeout_is_ambiguous_counted_as_failure_and_not_retried() -> None:
    """A call past its timeout may have reached the processor: AMBIGUOUS, never repeated,
    a failure for the breaker."""
    r = rig(config(timeout=0.02, retry=NO_WAIT))
    r.script(Step(HANG))
    result = await r.authorize()
    assert result.outcome is Outcome.AMBIGUOUS
    assert result.error == "timeout after 0.02s"
    assert len(r.inner.calls) == 1
    assert r.attempts == [result]
    assert r.connector.snapshot().failed_calls == 1
    labels = {"processor": "acq-a", "operation": "authorize", "outcome": "ambiguous"}
    assert r.metric("paycore_processor_calls_total", **labels) == 1


async def test_a_status_lookup_timeout_is_failed_and_per_operation_timeouts_apply() -> None:
    """A status lookup changes nothing, so its timeout is FAILED; operation_timeouts
    override the default per operation."""
    r = rig(config(timeout=30.0, operation_timeouts={Operation.STATUS: 0.02}))
    r.script(Step(HANG))
    result = await r.connector.status("pay_1")
    assert (result.outcome, result.error) == (Outcome.FAILED, "timeout after 0.02s")
    assert r.connector.config.timeout_for(Operation.AUTHORIZE) == 30.0


async def test_a_full_bulkhead_fails_fast_without_touching_the_breaker() -> None:
    """Over max_concurrent, a call gets FAILED bulkhead_full, not sent, not a failure."""
    r = rig(config(timeout=30.0, bulkhead=BulkheadConfig(max_concurrent=1)))
    r.script(Step(HANG))
    busy = asyncio.create_task(r.authorize("pay_busy"))
    await asyncio.sleep(0)
    result = await r.authorize("pay_2")
    assert (result.outcome, result.error, result.reference) == (
        Outcome.FAILED,
        "bulkhead_full",
        "pay_2",
    )
    assert r.inner.calls == [(Operation.AUTHORIZE, "pay_busy")]
    assert r.metric("paycore_processor_bulkhead_in_flight", processor="acq-a") == 1
    rejected = {"processor": "acq-a", "operation": "authorize", "reason": "bulkhead_full"}
    assert r.metric("paycore_processor_rejected_calls_total", **rejected) == 1
    busy.cancel()
    await asyncio.gather(busy, return_exceptions=True)
    assert r.connector.snapshot().buffered_calls == 0


async def test_a_connector_bug_propagates_and_counts_as_a_failure() -> None:
    """An exception from the connector (a bug) is raised, recorded as an error and a
    breaker failure."""
    r = rig()
    r.script(Step(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        await r.authorize()
    assert r.connector.snapshot().failed_calls == 1
    labels = {"processor": "acq-a", "operation": "authorize", "outcome": "error"}
    assert r.metric("paycore_processor_calls_total", **labels) == 1


# -- every operation ---------------------------------------------------------------------

OPERATIONS: list[
    tuple[Operation, Callable[[ResilientConnector], Awaitable[ProcessorResult]], str]
] = [
    (Operation.AUTHORIZE, lambda c: c.authorize(AuthorizeRequest("au_1", 5, "EUR", CARD)), "au_1"),
    (Operation.CAPTURE, lambda c: c.capture("au_1", 5, "cap_1"), "cap_1"),
    (Operation.VOID, lambda c: c.void("au_1"), "au_1"),
    (Operation.REFUND, lambda c: c.refund("au_1", 5, "ref_1"), "ref_1"),
    (Operation.PAYOUT, lambda c: c.payout(PayoutRequest("po_1", 5, "EUR", "DE89")), "po_1"),
    (Operation.STATUS, lambda c: c.status("au_1"), "au_1"),
]


@pytest.mark.parametrize(("operation", "call", "reference"), OPERATIONS)
async def test_every_operation_is_guarded_with_its_own_reference(
    operation: Operation,
    call: Callable[[ResilientConnector], Awaitable[ProcessorResult]],
    reference: str,
) -> None:
    """Each operation goes through; when the breaker is open its rejection carries the
    operation's own reference (capture and refund: theirs, not the authorization's)."""
    r = rig()
    assert (await call(r.connector)).outcome is Outcome.APPROVED
    assert r.inner.calls == [(operation, reference)]
    r.connector.breaker.force_open()
    rejected = await call(r.connector)
    assert (rejected.operation, rejected.reference, rejected.error) == (
        operation,
        reference,
        "circuit_open",
    )


# -- wiring ------------------------------------------------------------------------------


async def test_availability_follows_the_breakers() -> None:
    """availability(connectors) is the router's available(): open breaker or unknown -> False."""
    a, b = rig(name="acq-a"), rig(name="acq-b")
    available = availability({"acq-a": a.connector, "acq-b": b.connector})
    b.connector.breaker.force_open()
    assert [available(n) for n in ("acq-a", "acq-b", "acq-z")] == [True, False, False]
    await a.connector.aclose()
    assert a.inner.closed


def test_connectors_share_one_set_of_instruments_per_registry() -> None:
    """Several connectors on one registry (the global one by default) do not clash."""
    registry = CollectorRegistry()
    clock = FakeClock()
    one = ResilientConnector(ScriptedConnector("p1", clock), registry=registry)
    two = ResilientConnector(ScriptedConnector("p2", clock), registry=registry)
    assert ProcessorMetrics.on(registry) is ProcessorMetrics.on(registry)
    assert registry.get_sample_value(
        "paycore_processor_breaker_state", {"processor": "p2", "state": "closed"}
    )
    assert (
        registry.get_sample_value("paycore_processor_breaker_failure_rate", {"processor": "p1"})
        == -1.0
    )
    assert one.name != two.name
    ResilientConnector(ScriptedConnector("test-global-1", clock))
    ResilientConnector(ScriptedConnector("test-global-2", clock))


def test_config_loads_from_a_table_and_refuses_bad_timeouts() -> None:
    """ResilienceConfig converts from a TOML-like table; a timeout must be above 0."""
    loaded = msgspec.convert(
        {
            "timeout": 5,
            "operation_timeouts": {"status": 1.5},
            "breaker": {"window_type": "time_based", "window_size": 30},
            "retry_operations": ["status", "capture"],
        },
        ResilienceConfig,
    )
    assert loaded.timeout_for(Operation.STATUS) == 1.5
    assert loaded.timeout_for(Operation.REFUND) == 5
    assert loaded.retry_operations == {Operation.STATUS, Operation.CAPTURE}
    with pytest.raises(ValueError, match="timeout"):
        ResilienceConfig(timeout=0)
    with pytest.raises(msgspec.ValidationError, match="minimum_calls"):
        msgspec.convert({"breaker": {"minimum_calls": 0}}, ResilienceConfig)


async def test_an_outage_shifts_traffic_and_probes_bring_the_processor_back() -> None:
    """With priority routing over guarded processors, a failing first choice opens its
    breaker, payments fall back to the second, and after the wait the routed probes
    close it again; every payment succeeds."""
    clock = FakeClock()
    registry = CollectorRegistry()
    inner = {name: ScriptedConnector(name, clock) for name in ("acq-a", "acq-b")}
    guarded = {
        name: ResilientConnector(c, config(), clock=clock, registry=registry)
        for name, c in inner.items()
    }
    router = Router(
        RoutingConfig(default=RoutingRule(StrategyName.PRIORITY, ("acq-a", "acq-b"))),
        available=availability(guarded),
        registry=registry,
    )

    async def pay(reference: str) -> ProcessorResult:
        route = router.route(currency="EUR")
        result = None
        for name in route.candidates:
            request = AuthorizeRequest(f"{reference}-{name}", 100, "EUR", CARD)
            result = await guarded[name].authorize(request)
            if result.outcome is not Outcome.FAILED:  # fall back on definite failures only
                break
        assert result is not None
        return result

    inner["acq-a"].script = [Step(Outcome.FAILED)]
    outcomes = [(await pay(f"p{i}")).outcome for i in range(10)]
    assert guarded["acq-a"].snapshot().state is State.OPEN
    assert len(inner["acq-a"].calls) == 4  # the window's minimum, then no more
    inner["acq-a"].script = [Step(Outcome.APPROVED)]
    clock.now += 5.0
    outcomes += [(await pay(f"q{i}")).outcome for i in range(5)]
    assert guarded["acq-a"].snapshot().state is State.CLOSED
    assert len(inner["acq-a"].calls) == 4 + 5
    assert outcomes == [Outcome.APPROVED] * 15


async def test_a_retry_refused_by_the_breaker_the_failure_opened_reports_that_failure() -> None:
    """The processor was called and failed; its retry is refused because that failure
    opened the breaker. The result is the failure (latency and all), not 'circuit_open',
    which would say the processor was never called."""
    from paycore.payments.processors.base import AuthorizeRequest, CardDetails
    from paycore.payments.testing import Behaviour, ScriptedConnector

    inner = ScriptedConnector("acq-a").plan(Operation.AUTHORIZE, Behaviour.FAIL)
    config = ResilienceConfig(breaker=BreakerConfig(window_size=1, minimum_calls=1))
    guarded = ResilientConnector(inner, config, registry=CollectorRegistry())
    card = CardDetails("4242424242424242", 12, 2030, "123")
    result = await guarded.authorize(AuthorizeRequest("ref-1", 1000, "USD", card))
    assert inner.calls  # it did reach the processor
    assert result.outcome is Outcome.FAILED
    assert result.error != "circuit_open"
