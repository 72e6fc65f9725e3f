"""The circuit breaker: its transition table, every transition driven by calls, windows."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.resilience import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    CallNotPermitted,
    CircuitBreaker,
    EventKind,
    IllegalTransition,
    Permit,
    State,
    Trigger,
    Verdict,
    WindowType,
    next_state,
)
from paycore.resilience._window import CountWindow, TimeWindow

S = State
T = Trigger
OK = Verdict.SUCCESS
KO = Verdict.FAILURE


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**settings: object) -> tuple[CircuitBreaker, FakeClock]:
    defaults: dict[str, object] = {
        "window_size": 4,
        "minimum_calls": 4,
        "failure_rate_threshold": 50.0,
        "wait_in_open": 10.0,
        "permitted_calls_in_half_open": 2,
        "slow_call_duration": 1.0,
    }
    defaults.update(settings)
    clock = FakeClock()
    return CircuitBreaker("acq", BreakerConfig(**defaults), clock=clock), clock  # type: ignore[arg-type]


def calls(breaker: CircuitBreaker, *verdicts: Verdict, duration: float = 0.0) -> None:
    for verdict in verdicts:
        breaker.record(breaker.acquire(), verdict, duration)


def state_now(breaker: CircuitBreaker) -> State:
    """``breaker.state``, read through a call: after ``assert breaker.state is X`` mypy
    keeps ``breaker.state`` narrowed to X across the calls that change it."""
    return breaker.state


def open_breaker(breaker: CircuitBreaker) -> None:
    calls(breaker, *[KO] * breaker.config.window_size)
    assert breaker.state is S.OPEN


def half_open_breaker(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(breaker.config.wait_in_open)
    assert breaker.state is S.HALF_OPEN


# -- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(("edge", "target"), sorted(TRANSITIONS.items()))
def test_every_table_entry_is_a_legal_transition(
    edge: tuple[State, Trigger], target: State
) -> None:
    """next_state follows each entry of the transition table."""
    assert next_state(*edge) is target


@pytest.mark.parametrize("edge", sorted(set(itertools.product(State, Trigger)) - set(TRANSITIONS)))
def test_every_other_pair_is_illegal(edge: tuple[State, Trigger]) -> None:
    """A (state, trigger) pair missing from the table raises IllegalTransition."""
    with pytest.raises(IllegalTransition):
        next_state(*edge)


def test_the_table_reaches_every_state_and_covers_every_trigger() -> None:
    """Every state is a target and every trigger is used: no dead entries in the enums."""
    assert set(TRANSITIONS.values()) == set(State)
    assert {trigger for _, trigger in TRANSITIONS} == set(Trigger)


# -- CLOSED -> OPEN ----------------------------------------------------------------------


def test_closed_opens_when_the_failure_rate_reaches_the_threshold() -> None:
    """Two failures in a full window of four (50 %) open the breaker; 25 % does not."""
    breaker, _ = make()
    calls(breaker, OK, OK, KO)
    assert breaker.state is S.CLOSED
    calls(breaker, OK)  # 1 of 4 = 25 %
    assert breaker.state is S.CLOSED
    calls(breaker, KO)  # the window is now OK KO OK KO: 50 %
    assert state_now(breaker) is S.OPEN


def test_count_window_forgets_the_oldest_call() -> None:
    """Failures that slid out of the last-N window no longer count."""
    breaker, _ = make(failure_rate_threshold=75.0)
    calls(breaker, KO, KO, OK, OK)  # 50 %
    calls(breaker, OK, OK)  # the two failures slid out: 0 %
    calls(breaker, KO, KO)  # 50 % again, never 75 %
    assert breaker.state is S.CLOSED
    calls(breaker, KO)  # OK KO KO KO = 75 %
    assert state_now(breaker) is S.OPEN


def test_no_rate_is_evaluated_below_the_minimum_number_of_calls() -> None:
    """Below minimum_calls even 100 % failures leave the breaker closed."""
    breaker, _ = make(window_size=10, minimum_calls=5)
    calls(breaker, KO, KO, KO, KO)
    snapshot = breaker.snapshot()
    assert snapshot.state is S.CLOSED
    assert snapshot.failure_rate is None
    assert snapshot.buffered_calls == 4
    calls(breaker, KO)
    assert breaker.state is S.OPEN


def test_minimum_calls_is_capped_at_a_count_window_size() -> None:
    """A count window of 3 evaluates after 3 calls even if minimum_calls is larger."""
    breaker, _ = make(window_size=3, minimum_calls=100)
    calls(breaker, KO, KO, KO)
    assert breaker.state is S.OPEN


def test_slow_calls_open_the_breaker_without_any_failure() -> None:
    """Successful calls that take slow_call_duration or more count toward the slow rate."""
    breaker, _ = make(slow_call_rate_threshold=50.0)
    calls(breaker, OK, OK, duration=0.999)
    calls(breaker, OK, duration=1.0)
    assert breaker.state is S.CLOSED
    calls(breaker, OK, duration=5.0)
    snapshot = breaker.snapshot()
    assert snapshot.state is S.OPEN
    assert snapshot.slow_call_rate == 50.0
    assert snapshot.failure_rate == 0.0


def test_duration_defaults_to_the_time_since_the_permit() -> None:
    """Without an explicit duration the breaker times the call with its own clock."""
    breaker, clock = make(slow_call_rate_threshold=100.0)
    for _ in range(4):
        permit = breaker.acquire()
        clock.advance(2.0)
        breaker.record(permit, OK)
    assert breaker.state is S.OPEN


def test_time_window_counts_only_the_last_n_seconds() -> None:
    """A time window of 10 s forgets a failure 10 s old and opens on three recent ones."""
    breaker, clock = make(window_type=WindowType.TIME_BASED, window_size=10, minimum_calls=3)
    calls(breaker, KO)  # second 1000
    clock.advance(5)
    calls(breaker, KO)  # second 1005
    clock.advance(5)
    calls(breaker, KO)  # second 1010: the one of 1000 left the window
    snapshot = breaker.snapshot()
    assert snapshot.state is S.CLOSED
    assert snapshot.buffered_calls == 2
    calls(breaker, KO)
    assert breaker.state is S.OPEN


def test_time_window_is_empty_after_a_long_silence() -> None:
    """After more than a whole window without calls every bucket is cleared."""
    breaker, clock = make(window_type=WindowType.TIME_BASED, window_size=5, minimum_calls=3)
    calls(breaker, KO, KO)
    clock.advance(1_000)
    calls(breaker, KO)
    assert breaker.snapshot().buffered_calls == 1
    assert breaker.state is S.CLOSED


def test_time_window_minimum_is_not_capped_by_its_size() -> None:
    """A 2-second window with minimum_calls 5 needs 5 calls, however many seconds."""
    breaker, _ = make(window_type=WindowType.TIME_BASED, window_size=2, minimum_calls=5)
    calls(breaker, KO, KO, KO, KO)
    assert breaker.state is S.CLOSED
    calls(breaker, KO)
    assert state_now(breaker) is S.OPEN


# -- OPEN --------------------------------------------------------------------------------


def test_open_rejects_at_once_and_counts_rejections() -> None:
    """While OPEN every call is refused with CallNotPermitted carrying the time left."""
    breaker, clock = make()
    open_breaker(breaker)
    clock.advance(4)
    with pytest.raises(CallNotPermitted) as info:
        breaker.acquire()
    assert info.value.code == "circuit_open"
    assert info.value.retry_after == pytest.approx(6.0)
    assert breaker.try_acquire() is None
    assert not breaker.available()
    snapshot = breaker.snapshot()
    assert snapshot.not_permitted_calls == 2
    assert snapshot.retry_after == pytest.approx(6.0)
    assert snapshot.failure_rate == 100.0  # the rates that opened it


def test_open_turns_half_open_lazily_when_the_wait_is_over() -> None:
    """OPEN -> HALF_OPEN happens at the first observation after wait_in_open, not before."""
    breaker, clock = make()
    events: list[BreakerEvent] = []
    open_breaker(breaker)
    breaker.add_listener(events.append)
    clock.advance(9.999)
    assert breaker.state is S.OPEN
    clock.advance(0.001)
    assert not events  # nothing happens without an observation
    assert breaker.available()
    assert [(e.previous, e.state, e.trigger) for e in events] == [
        (S.OPEN, S.HALF_OPEN, T.WAIT_ELAPSED)
    ]


# -- HALF_OPEN ---------------------------------------------------------------------------


def test_half_open_permits_only_the_probes() -> None:
    """HALF_OPEN lets permitted_calls_in_half_open calls in and rejects the rest meanwhile."""
    breaker, clock = make(permitted_calls_in_half_open=3)
    half_open_breaker(breaker, clock)
    permits = [breaker.acquire() for _ in range(3)]
    assert not breaker.available()
    assert breaker.snapshot().half_open_permits_left == 0
    with pytest.raises(CallNotPermitted) as info:
        breaker.acquire()
    assert info.value.retry_after is None
    assert breaker.state is S.HALF_OPEN
    for permit in permits:
        breaker.record(permit, OK)
    assert state_now(breaker) is S.CLOSED


def test_half_open_closes_when_probes_pass_with_a_fresh_window() -> None:
    """Probes below both thresholds close the breaker, which starts with an empty window."""
    breaker, clock = make(permitted_calls_in_half_open=4)
    half_open_breaker(breaker, clock)
    calls(breaker, OK, OK, OK, KO)  # 25 % < 50 %
    snapshot = breaker.snapshot()
    assert snapshot.state is S.CLOSED
    assert snapshot.buffered_calls == 0


def test_half_open_reopens_when_probes_fail() -> None:
    """Probes at or above the failure threshold open the breaker again for a full wait."""
    breaker, clock = make(permitted_calls_in_half_open=2)
    half_open_breaker(breaker, clock)
    calls(breaker, OK)
    assert breaker.state is S.HALF_OPEN  # waits for every probe
    calls(breaker, KO)
    snapshot = breaker.snapshot()
    assert snapshot.state is S.OPEN
    assert snapshot.retry_after == pytest.approx(10.0)


def test_half_open_reopens_when_probes_are_slow() -> None:
    """Slow probes at or above the slow-call threshold open the breaker again."""
    breaker, clock = make(permitted_calls_in_half_open=2, slow_call_rate_threshold=50.0)
    half_open_breaker(breaker, clock)
    calls(breaker, OK, duration=0.1)
    calls(breaker, OK, duration=3.0)
    assert breaker.state is S.OPEN


def test_an_ignored_probe_gives_its_permit_back() -> None:
    """An IGNORE verdict in HALF_OPEN is not recorded and frees the probe slot."""
    breaker, clock = make(permitted_calls_in_half_open=1)
    half_open_breaker(breaker, clock)
    permit = breaker.acquire()
    assert not breaker.available()
    breaker.release(permit)
    assert breaker.available()
    assert breaker.state is S.HALF_OPEN
    calls(breaker, OK)
    assert state_now(breaker) is S.CLOSED


def test_half_open_expires_when_probes_outlast_the_maximum_wait() -> None:
    """With max_wait_in_half_open, probes that never answer let the breaker reopen."""
    breaker, clock = make(max_wait_in_half_open=5.0)
    half_open_breaker(breaker, clock)
    late = breaker.acquire()
    clock.advance(5.0)
    assert breaker.state is S.OPEN
    breaker.record(late, OK)  # from an ended period: not counted
    assert breaker.snapshot().state is S.OPEN


def test_a_result_from_an_ended_state_period_is_not_counted() -> None:
    """A call let in while CLOSED that answers in HALF_OPEN is not taken for a probe."""
    breaker, clock = make(permitted_calls_in_half_open=1)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    early = breaker.acquire()
    half_open_breaker(breaker, clock)
    breaker.record(early, OK)
    assert breaker.state is S.HALF_OPEN
    assert events[-1].kind is EventKind.SUCCESS
    assert not events[-1].counted
    assert breaker.snapshot().half_open_permits_left == 1


# -- operator states ---------------------------------------------------------------------


def test_forced_open_rejects_until_reset() -> None:
    """FORCED_OPEN rejects whatever the time; reset() closes with an empty window."""
    breaker, clock = make()
    calls(breaker, KO)
    breaker.force_open()
    clock.advance(1_000_000)
    assert breaker.state is S.FORCED_OPEN
    assert breaker.try_acquire() is None
    breaker.reset()
    snapshot = breaker.snapshot()
    assert snapshot.state is S.CLOSED
    assert snapshot.buffered_calls == 0


def test_disabled_permits_everything_and_records_nothing() -> None:
    """DISABLED lets every call through; failures do not open it."""
    breaker, _ = make()
    breaker.disable()
    calls(breaker, *[KO] * 20)
    snapshot = breaker.snapshot()
    assert snapshot.state is S.DISABLED
    assert snapshot.buffered_calls == 0
    breaker.force_open()
    assert breaker.state is S.FORCED_OPEN


@pytest.mark.parametrize("state", list(State))
def test_reset_closes_from_every_state(state: State) -> None:
    """reset() leads to CLOSED from each state, including CLOSED itself."""
    breaker, clock = make(permitted_calls_in_half_open=2)
    if state is S.OPEN:
        open_breaker(breaker)
    elif state is S.HALF_OPEN:
        half_open_breaker(breaker, clock)
    elif state is S.FORCED_OPEN:
        breaker.force_open()
    elif state is S.DISABLED:
        breaker.disable()
    assert breaker.state is state
    breaker.reset()
    assert breaker.state is S.CLOSED


def test_an_illegal_operator_transition_raises() -> None:
    """Forcing open a breaker that is already forced open is an error, not a no-op."""
    breaker, _ = make()
    breaker.force_open()
    with pytest.raises(IllegalTransition):
        breaker.force_open()
    breaker.disable()
    with pytest.raises(IllegalTransition):
        breaker.disable()


# -- permits, listeners, call() ----------------------------------------------------------


def test_a_permit_is_settled_once() -> None:
    """Recording the same permit twice is a bug and raises."""
    breaker, _ = make()
    permit = breaker.acquire()
    breaker.record(permit, OK)
    with pytest.raises(RuntimeError, match="already settled"):
        breaker.record(permit, OK)


def test_listeners_see_the_whole_cycle_and_cannot_break_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Transition events come in order; a listener that raises is logged and skipped."""
    breaker, clock = make(permitted_calls_in_half_open=1)
    seen: list[tuple[State | None, State, Trigger | None]] = []

    def broken(_: BreakerEvent) -> None:
        raise ValueError("metrics bug")

    breaker.add_listener(broken)
    breaker.add_listener(
        lambda e: (
            seen.append((e.previous, e.state, e.trigger))
            if e.kind is EventKind.TRANSITION
            else None
        )
    )
    with caplog.at_level(logging.ERROR):
        half_open_breaker(breaker, clock)
        calls(breaker, OK)
    assert seen == [
        (S.CLOSED, S.OPEN, T.RATE_EXCEEDED),
        (S.OPEN, S.HALF_OPEN, T.WAIT_ELAPSED),
        (S.HALF_OPEN, S.CLOSED, T.PROBES_PASSED),
    ]
    assert "metrics bug" in caplog.text
    breaker.remove_listener(broken)


async def test_call_classifies_results_and_exceptions() -> None:
    """call(): results by classify, exceptions as failures, cancellation not recorded."""
    breaker, _ = make(window_size=10, minimum_calls=10)

    async def answer(value: str) -> str:
        return value

    async def boom() -> str:
        raise ConnectionError("refused")

    async def cancelled() -> str:
        raise asyncio.CancelledError

    def by_value(value: str) -> Verdict:
        return KO if value in ("failed", "ambiguous") else OK

    for value in ("approved", "declined", "failed", "ambiguous"):
        assert await breaker.call(functools.partial(answer, value), classify=by_value) == value
    with pytest.raises(ConnectionError):
        await breaker.call(boom)
    with pytest.raises(ConnectionError):
        await breaker.call(boom, classify_exception=lambda _: Verdict.IGNORE)
    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)
    snapshot = breaker.snapshot()
    assert (snapshot.buffered_calls, snapshot.failed_calls) == (5, 3)


def test_config_rejects_nonsense_with_clear_errors() -> None:
    """Impossible settings are refused, naming the field."""
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        BreakerConfig(failure_rate_threshold=0)
    with pytest.raises(ValueError, match="window_size"):
        BreakerConfig(window_size=0)
    with pytest.raises(ValueError, match="wait_in_open"):
        BreakerConfig(wait_in_open=-1)
    with pytest.raises(ValueError, match="max_wait_in_half_open"):
        BreakerConfig(max_wait_in_half_open=0)


# -- properties --------------------------------------------------------------------------

actions = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0), st.just(OK), st.just(0.0)),
        st.tuples(st.just("call"), st.just(0), st.sampled_from(list(Verdict)), st.floats(0, 3)),
        st.tuples(
            st.just("settle"),
            st.integers(0, 20),
            st.sampled_from(list(Verdict)),
            st.floats(0, 3),
        ),
        st.tuples(st.just("advance"), st.just(0), st.just(OK), st.floats(0, 15)),
    ),
    max_size=120,
)


@given(actions=actions, probes_allowed=st.integers(1, 4), max_wait=st.sampled_from([None, 7.0]))
def test_half_open_never_admits_more_than_its_probes(
    actions: list[tuple[str, int, Verdict, float]], probes_allowed: int, max_wait: float | None
) -> None:
    """Whatever the interleaving, a HALF_OPEN period never has more than N probes out,
    and OPEN or FORCED_OPEN never grants a permit."""
    breaker, clock = make(
        window_size=3,
        minimum_calls=3,
        permitted_calls_in_half_open=probes_allowed,
        max_wait_in_half_open=max_wait,
        slow_call_rate_threshold=60.0,
    )
    out: list[Permit] = []
    probes: list[Permit] = []  # permits taken in the current HALF_OPEN period, not given back

    def on_event(event: BreakerEvent) -> None:
        if event.kind is EventKind.TRANSITION:
            probes.clear()

    def settle(permit: Permit, verdict: Verdict, duration: float) -> None:
        if verdict is Verdict.IGNORE and any(p is permit for p in probes):
            probes.remove(permit)  # an ignored probe gives its permit back
        breaker.record(permit, verdict, duration)

    breaker.add_listener(on_event)
    half_open_breaker(breaker, clock)
    for action, index, verdict, amount in actions:
        if action in ("acquire", "call"):
            state = breaker.state
            permit = breaker.try_acquire()
            if state is S.OPEN:
                assert permit is None
            if permit is not None:
                if state is S.HALF_OPEN:
                    probes.append(permit)
                if action == "call":
                    settle(permit, verdict, amount)
                else:
                    out.append(permit)
        elif action == "settle" and out:
            settle(out.pop(index % len(out)), verdict, amount)
        elif action == "advance":
            clock.advance(amount)
        assert len(probes) <= probes_allowed
        if breaker.state is S.HALF_OPEN:
            assert breaker.snapshot().half_open_permits_left == probes_allowed - len(probes)


@given(
    events=st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(0, 4)), min_size=1, max_size=80
    ),
    size=st.integers(1, 6),
)
def test_windows_agree_with_a_naive_model(
    events: list[tuple[bool, bool, float]], size: int
) -> None:
    """CountWindow holds exactly the last N calls; TimeWindow exactly those of the last
    N whole seconds."""
    count, timed = CountWindow(size), TimeWindow(size)
    now = 0.0
    history: list[tuple[float, bool, bool]] = []
    for failed, slow, step in events:
        now += step
        history.append((now, failed, slow))
        count.add(failed=failed, slow=slow, now=now)
        timed.add(failed=failed, slow=slow, now=now)
        last = history[-size:]
        c = count.totals(now)
        assert (c.calls, c.failed, c.slow) == (
            len(last),
            sum(f for _, f, _ in last),
            sum(s for _, _, s in last),
        )
        recent = [h for h in history if math.floor(h[0]) > math.floor(now) - size]
        t = timed.totals(now)
        assert (t.calls, t.failed, t.slow) == (
            len(recent),
            sum(f for _, f, _ in recent),
            sum(s for _, _, s in recent),
        )
