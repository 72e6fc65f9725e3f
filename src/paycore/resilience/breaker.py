"""A circuit breaker with resilience4j's semantics: a pure state machine over a clock.

States (the lifecycle is ``TRANSITIONS``, one dict; anything else is ``IllegalTransition``)::

                    rate >= threshold                      wait_in_open elapsed
        CLOSED ─────────────────────────────▶ OPEN ─────────────────────────────▶ HALF_OPEN
          ▲                                     ▲  probes failed / half-open expired  │
          │                                     └─────────────────────────────────────┤
          └──────────────────────── probes passed ────────────────────────────────────┘
        FORCED_OPEN, DISABLED: set by an operator (force_open, disable); reset() -> CLOSED

- CLOSED: every call is permitted; each outcome goes into a sliding window (the last N
  calls, or the calls of the last N seconds in one-second buckets). Once the window
  holds ``minimum_calls`` (capped at the window size for a count window), a failure
  rate or a slow-call rate at or above its threshold opens the breaker.
- OPEN: every call is rejected at once with ``CallNotPermitted`` (fast fail) until
  ``wait_in_open`` has passed.
- HALF_OPEN: exactly ``permitted_calls_in_half_open`` probe calls are let through;
  more are rejected while probes are out. When every probe has answered, rates below
  both thresholds close the breaker (with a fresh window), otherwise it opens again.
  With ``max_wait_in_half_open`` set, probes that take longer than that open it too.
- FORCED_OPEN rejects everything and DISABLED permits everything and records nothing,
  until ``reset()``.

What counts: the caller tells each outcome's ``Verdict``: SUCCESS, FAILURE or IGNORE
(an ignored call is not recorded and gives its half-open permit back). ``call()``
classifies an exception as FAILURE and a result as SUCCESS unless told otherwise, so
the payments layer can say that a declined payment is a success (the processor
worked) while failed and ambiguous ones are failures. A call is *slow* when it took
``slow_call_duration`` or more, whatever its verdict.

Time and transitions: there are no timers and no background tasks. The clock is
injected (``time.monotonic`` by default), and the time-driven transitions (OPEN ->
HALF_OPEN when the wait is over, HALF_OPEN -> OPEN when probes took too long) happen
lazily, at the first observation after their deadline: ``acquire``, ``available``,
``state`` or ``snapshot``. That is resilience4j with
``automaticTransitionFromOpenToHalfOpenEnabled=false``, except that reading the state
or asking ``available()`` counts as an observation: a router that skips processors
whose breaker says unavailable would otherwise never send the probe that lets it close.
A process that wants the transition on time without traffic can call ``available()``
after ``snapshot().retry_after`` seconds (for instance with ``loop.call_later``).

Each call holds a ``Permit`` tagged with the state period (generation) that let it
in; a result that arrives after the breaker changed state is reported to listeners
but not counted, so a slow call admitted while CLOSED can never pass for a probe.

Not thread-safe by design: it belongs to one event loop, and no method awaits while
it changes state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeVar

import msgspec

from paycore.resilience._window import CountWindow, SlidingWindow, TimeWindow, Totals
from paycore.resilience.errors import CallNotPermitted, IllegalTransition

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerSnapshot",
    "CircuitBreaker",
    "Clock",
    "EventKind",
    "Listener",
    "Permit",
    "State",
    "Trigger",
    "Verdict",
    "WindowType",
    "next_state",
]

T = TypeVar("T")
Clock = Callable[[], float]

logger = logging.getLogger(__name__)


class State(StrEnum):
    CLOSED = "closed"  # calls flow; outcomes go into the sliding window
    OPEN = "open"  # calls rejected until wait_in_open has passed
    HALF_OPEN = "half_open"  # a limited number of probe calls decide
    FORCED_OPEN = "forced_open"  # an operator rejects every call until reset
    DISABLED = "disabled"  # an operator lets every call through, nothing is recorded


class Trigger(StrEnum):
    RATE_EXCEEDED = "rate_exceeded"  # CLOSED: failure or slow-call rate >= threshold
    WAIT_ELAPSED = "wait_elapsed"  # OPEN: wait_in_open has passed
    PROBES_PASSED = "probes_passed"  # HALF_OPEN: every probe answered, rates below thresholds
    PROBES_FAILED = "probes_failed"  # HALF_OPEN: every probe answered, a rate >= threshold
    HALF_OPEN_EXPIRED = "half_open_expired"  # HALF_OPEN: probes outlasted max_wait_in_half_open
    FORCE_OPEN = "force_open"  # operator
    DISABLE = "disable"  # operator
    RESET = "reset"  # operator: back to CLOSED with an empty window


_S = State
_T = Trigger
TRANSITIONS: Final[dict[tuple[State, Trigger], State]] = {
    # the automatic cycle
    (_S.CLOSED, _T.RATE_EXCEEDED): _S.OPEN,
    (_S.OPEN, _T.WAIT_ELAPSED): _S.HALF_OPEN,
    (_S.HALF_OPEN, _T.PROBES_PASSED): _S.CLOSED,
    (_S.HALF_OPEN, _T.PROBES_FAILED): _S.OPEN,
    (_S.HALF_OPEN, _T.HALF_OPEN_EXPIRED): _S.OPEN,
    # operator overrides: from any other state
    (_S.CLOSED, _T.FORCE_OPEN): _S.FORCED_OPEN,
    (_S.OPEN, _T.FORCE_OPEN): _S.FORCED_OPEN,
    (_S.HALF_OPEN, _T.FORCE_OPEN): _S.FORCED_OPEN,
    (_S.DISABLED, _T.FORCE_OPEN): _S.FORCED_OPEN,
    (_S.CLOSED, _T.DISABLE): _S.DISABLED,
    (_S.OPEN, _T.DISABLE): _S.DISABLED,
    (_S.HALF_OPEN, _T.DISABLE): _S.DISABLED,
    (_S.FORCED_OPEN, _T.DISABLE): _S.DISABLED,
    # reset: from every state, CLOSED included (it empties the window)
    (_S.CLOSED, _T.RESET): _S.CLOSED,
    (_S.OPEN, _T.RESET): _S.CLOSED,
    (_S.HALF_OPEN, _T.RESET): _S.CLOSED,
    (_S.FORCED_OPEN, _T.RESET): _S.CLOSED,
    (_S.DISABLED, _T.RESET): _S.CLOSED,
}


def next_state(state: State, trigger: Trigger) -> State:
    """The state ``trigger`` leads to from ``state``; ``IllegalTransition`` if none."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(state, trigger) from None


class Verdict(StrEnum):
    """How the breaker counts one call's outcome."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORE = "ignore"  # not recorded; a half-open permit is given back


class WindowType(StrEnum):
    COUNT_BASED = "count_based"  # the last window_size calls
    TIME_BASED = "time_based"  # the calls of the last window_size seconds


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A breaker's settings; the defaults are resilience4j's. Rates are percentages."""

    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration: float = 60.0  # seconds; a call this long or longer is slow
    window_type: WindowType = WindowType.COUNT_BASED
    window_size: int = 100  # calls (COUNT_BASED) or seconds (TIME_BASED)
    minimum_calls: int = 100  # rates are not evaluated on fewer calls
    wait_in_open: float = 60.0  # seconds in OPEN before probes are let through
    permitted_calls_in_half_open: int = 10
    max_wait_in_half_open: float | None = None  # seconds; None: wait for every probe

    def __post_init__(self) -> None:
        for field in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, field)
            if not 0 < value <= 100:
                raise ValueError(f"{field} must be a percentage above 0 and at most 100")
        for field in ("window_size", "minimum_calls", "permitted_calls_in_half_open"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1")
        for field in ("slow_call_duration", "wait_in_open", "max_wait_in_half_open"):
            value = getattr(self, field)
            if value is not None and not value > 0:
                raise ValueError(f"{field} must be a number of seconds above 0")

    @property
    def effective_minimum_calls(self) -> int:
        """A count window can never hold more than its size, so the minimum is capped."""
        if self.window_type is WindowType.COUNT_BASED:
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls


class Permit:
    """The right to make one call; settle it exactly once (``record`` or ``release``)."""

    __slots__ = ("generation", "settled", "started_at")

    def __init__(self, generation: int, started_at: float) -> None:
        self.generation = generation
        self.started_at = started_at
        self.settled = False

    def __repr__(self) -> str:
        return f"Permit(generation={self.generation}, started_at={self.started_at})"


class EventKind(StrEnum):
    TRANSITION = "transition"
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    NOT_PERMITTED = "not_permitted"


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """What happened to a breaker, for listeners (metrics, logs)."""

    breaker: str
    kind: EventKind
    at: float
    state: State  # the state after the event
    previous: State | None = None  # TRANSITION: the state left
    trigger: Trigger | None = None  # TRANSITION: why
    duration: float | None = None  # SUCCESS / FAILURE / IGNORED
    slow: bool = False
    counted: bool = True  # False: not in the window (IGNORE, DISABLED, or its period ended)


Listener = Callable[[BreakerEvent], None]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker at one instant. Rates are percentages of the buffered calls, None while
    fewer calls than the minimum are buffered (resilience4j reports -1 there); in OPEN
    they are the rates that opened it."""

    name: str
    state: State
    failure_rate: float | None
    slow_call_rate: float | None
    buffered_calls: int
    failed_calls: int
    slow_calls: int
    not_permitted_calls: int  # since the breaker was made; never reset
    half_open_permits_left: int  # probes that may still start (HALF_OPEN only, else 0)
    retry_after: float | None  # OPEN: seconds until probes are let through


class CircuitBreaker:
    """One breaker (see the module docstring); ``name`` labels events and metrics."""

    def __init__(
        self, name: str, config: BreakerConfig | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.clock = clock
        self._listeners: list[Listener] = []
        self._state = State.CLOSED
        self._generation = 0
        self._entered_at = clock()
        self._window: SlidingWindow = self._main_window()
        self._window_minimum = self.config.effective_minimum_calls
        self._open_totals = Totals()
        self._open_until = 0.0
        self._permits_left = 0
        self._not_permitted = 0

    # -- observing ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (after any time-driven transition that is due)."""
        self._advance(self.clock())
        return self._state

    def available(self) -> bool:
        """Whether a call made now would be permitted; takes no permit."""
        self._advance(self.clock())
        if self._state is State.HALF_OPEN:
            return self._permits_left > 0
        return self._state in (State.CLOSED, State.DISABLED)

    def snapshot(self) -> BreakerSnapshot:
        now = self.clock()
        self._advance(now)
        totals = self._open_totals if self._state is State.OPEN else self._window.totals(now)
        enough = totals.calls >= self._window_minimum
        return BreakerSnapshot(
            name=self.name,
            state=self._state,
            failure_rate=totals.failure_rate() if enough else None,
            slow_call_rate=totals.slow_call_rate() if enough else None,
            buffered_calls=totals.calls,
            failed_calls=totals.failed,
            slow_calls=totals.slow,
            not_permitted_calls=self._not_permitted,
            half_open_permits_left=self._permits_left if self._state is State.HALF_OPEN else 0,
            retry_after=max(0.0, self._open_until - now) if self._state is State.OPEN else None,
        )

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event; an exception in it is logged, not raised."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # -- calls --------------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None (and a NOT_PERMITTED event) if rejected."""
        now = self.clock()
        self._advance(now)
        state = self._state
        if state is State.HALF_OPEN and self._permits_left > 0:
            self._permits_left -= 1
        elif state not in (State.CLOSED, State.DISABLED):
            self._not_permitted += 1
            self._emit(BreakerEvent(self.name, EventKind.NOT_PERMITTED, now, state))
            return None
        return Permit(self._generation, now)

    def acquire(self) -> Permit:
        """A permit for one call; ``CallNotPermitted`` at once if the breaker rejects it."""
        permit = self.try_acquire()
        if permit is None:
            retry_after = self._open_until - self.clock() if self._state is State.OPEN else None
            raise CallNotPermitted(self.name, self._state, retry_after)
        return permit

    def record(self, permit: Permit, verdict: Verdict, duration: float | None = None) -> None:
        """Settle ``permit`` with the call's verdict; ``duration`` defaults to the time
        since the permit was taken, by the breaker's clock."""
        if permit.settled:
            raise RuntimeError(f"{permit!r} of breaker {self.name!r} was already settled")
        permit.settled = True
        now = self.clock()
        if duration is None:
            duration = now - permit.started_at
        slow = duration >= self.config.slow_call_duration
        current = permit.generation == self._generation
        kind = {
            Verdict.SUCCESS: EventKind.SUCCESS,
            Verdict.FAILURE: EventKind.FAILURE,
            Verdict.IGNORE: EventKind.IGNORED,
        }[verdict]
        counted = current and verdict is not Verdict.IGNORE and self._state is not State.DISABLED
        if current and verdict is Verdict.IGNORE and self._state is State.HALF_OPEN:
            self._permits_left += 1
        self._emit(
            BreakerEvent(
                self.name, kind, now, self._state, duration=duration, slow=slow, counted=counted
            )
        )
        if not counted:
            return
        totals = self._window.add(failed=verdict is Verdict.FAILURE, slow=slow, now=now)
        if totals.calls < self._window_minimum:
            return
        exceeded = (
            totals.failure_rate() >= self.config.failure_rate_threshold
            or totals.slow_call_rate() >= self.config.slow_call_rate_threshold
        )
        if self._state is State.CLOSED and exceeded:
            self._transition(Trigger.RATE_EXCEEDED, now)
        elif self._state is State.HALF_OPEN:
            self._transition(Trigger.PROBES_FAILED if exceeded else Trigger.PROBES_PASSED, now)

    def release(self, permit: Permit) -> None:
        """Settle ``permit`` for a call that did not happen or does not count (IGNORE)."""
        self.record(permit, Verdict.IGNORE)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        classify: Callable[[T], Verdict] | None = None,
        classify_exception: Callable[[Exception], Verdict] | None = None,
    ) -> T:
        """Run ``fn()`` under the breaker: results are SUCCESS and exceptions FAILURE
        unless the classifiers say otherwise; a cancelled call is IGNORE."""
        permit = self.acquire()
        try:
            result = await fn()
        except Exception as exc:
            self.record(permit, classify_exception(exc) if classify_exception else Verdict.FAILURE)
            raise
        except BaseException:
            self.release(permit)
            raise
        self.record(permit, classify(result) if classify else Verdict.SUCCESS)
        return result

    # -- operator -----------------------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until ``reset()``."""
        self._transition(Trigger.FORCE_OPEN, self.clock())

    def disable(self) -> None:
        """Permit every call and record nothing until ``reset()``."""
        self._transition(Trigger.DISABLE, self.clock())

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        self._transition(Trigger.RESET, self.clock())

    # -- the machine --------------------------------------------------------------------

    def _main_window(self) -> SlidingWindow:
        if self.config.window_type is WindowType.TIME_BASED:
            return TimeWindow(self.config.window_size)
        return CountWindow(self.config.window_size)

    def _advance(self, now: float) -> None:
        """Take the time-driven transition that is due, if any."""
        if self._state is State.OPEN and now >= self._open_until:
            self._transition(Trigger.WAIT_ELAPSED, now)
        elif (
            self._state is State.HALF_OPEN
            and self.config.max_wait_in_half_open is not None
            and now - self._entered_at >= self.config.max_wait_in_half_open
        ):
            self._transition(Trigger.HALF_OPEN_EXPIRED, now)

    def _transition(self, trigger: Trigger, now: float) -> None:
        previous = self._state
        state = next_state(previous, trigger)
        if state is State.OPEN:
            self._open_totals = self._window.totals(now)
            self._open_until = now + self.config.wait_in_open
        elif state is State.HALF_OPEN:
            probes = self.config.permitted_calls_in_half_open
            self._window = CountWindow(probes)
            self._window_minimum = probes
            self._permits_left = probes
        else:  # CLOSED, FORCED_OPEN, DISABLED: a fresh main window
            self._window = self._main_window()
            self._window_minimum = self.config.effective_minimum_calls
        self._state = state
        self._generation += 1
        self._entered_at = now
        self._emit(
            BreakerEvent(
                self.name, EventKind.TRANSITION, now, state, previous=previous, trigger=trigger
            )
        )

    def _emit(self, event: BreakerEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("listener %r of breaker %r failed", listener, self.name)
