"""Bulkhead, timeout, retry (on stamina) and the Policy that composes them with a breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import stamina

from paycore.resilience import (
    BreakerConfig,
    Bulkhead,
    BulkheadConfig,
    BulkheadFull,
    CallNotPermitted,
    CallTimeout,
    CircuitBreaker,
    Policy,
    RetryConfig,
    State,
    Verdict,
    retry_call,
    run_with_timeout,
)

NO_WAIT = RetryConfig(attempts=4, deadline=None, wait_initial=0, wait_max=0, wait_jitter=0)


async def _hold(gate: asyncio.Event, result: str = "done") -> str:
    await gate.wait()
    return result


# -- bulkhead ----------------------------------------------------------------------------


async def test_bulkhead_refuses_a_call_over_its_limit_at_once() -> None:
    """With every slot taken and max_wait 0, a call is refused without running."""
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=2))
    gate = asyncio.Event()
    held = [asyncio.create_task(bulkhead.call(lambda: _hold(gate))) for _ in range(2)]
    await asyncio.sleep(0)
    ran = False

    async def third() -> str:
        nonlocal ran
        ran = True
        return "third"

    with pytest.raises(BulkheadFull) as info:
        await bulkhead.call(third)
    assert info.value.code == "bulkhead_full"
    assert not ran
    snapshot = bulkhead.snapshot()
    assert (snapshot.in_flight, snapshot.rejected) == (2, 1)
    gate.set()
    assert await asyncio.gather(*held) == ["done", "done"]
    assert await bulkhead.call(third) == "third"
    assert bulkhead.in_flight == 0


async def test_bulkhead_waits_up_to_max_wait_for_a_slot() -> None:
    """A call waits for a slot freed within max_wait, and is refused after it."""
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=1, max_wait=5.0))
    gate = asyncio.Event()
    first = asyncio.create_task(bulkhead.call(lambda: _hold(gate, "first")))
    await asyncio.sleep(0)
    second = asyncio.create_task(bulkhead.call(lambda: _hold(gate, "second")))
    await asyncio.sleep(0)
    assert bulkhead.snapshot().waiting == 1
    gate.set()
    assert list(await asyncio.gather(first, second)) == ["first", "second"]

    short = Bulkhead("acq", BulkheadConfig(max_concurrent=1, max_wait=0.02))
    blocker = asyncio.Event()
    task = asyncio.create_task(short.call(lambda: _hold(blocker)))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await short.call(lambda: _hold(blocker))
    assert short.snapshot().waiting == 0
    blocker.set()
    await task


async def test_bulkhead_frees_the_slot_on_error_and_cancellation() -> None:
    """A call that raises or is cancelled gives its slot back."""
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=1))

    async def boom() -> str:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await bulkhead.call(boom)
    task = asyncio.create_task(bulkhead.call(lambda: _hold(asyncio.Event())))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.in_flight == 0


async def test_bulkhead_never_exceeds_its_limit_under_load() -> None:
    """Fifty concurrent callers with waiting allowed never run more than the limit at once."""
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=3, max_wait=10.0))
    running = peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1

    await asyncio.gather(*(bulkhead.call(work) for _ in range(50)))
    assert peak == 3


def test_bulkhead_config_is_validated() -> None:
    """A bulkhead needs at least one slot and a non-negative wait."""
    with pytest.raises(ValueError, match="max_concurrent"):
        BulkheadConfig(max_concurrent=0)
    with pytest.raises(ValueError, match="max_wait"):
        BulkheadConfig(max_wait=-1)


# -- timeout -----------------------------------------------------------------------------


async def test_timeout_cancels_the_call_and_raises_call_timeout() -> None:
    """A call past its timeout is cancelled and CallTimeout (a TimeoutError) raised."""
    cancelled = False

    async def slow() -> str:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled = True
            raise
        return "late"

    with pytest.raises(CallTimeout) as info:
        await run_with_timeout(slow, 0.01)
    assert isinstance(info.value, TimeoutError)
    assert info.value.seconds == 0.01
    assert cancelled


async def test_a_timeout_raised_by_the_call_itself_passes_through() -> None:
    """Only our own deadline becomes CallTimeout; the callee's TimeoutError is kept."""

    async def own_timeout() -> str:
        raise TimeoutError("client read timeout")

    with pytest.raises(TimeoutError, match="client read timeout") as info:
        await run_with_timeout(own_timeout, 5.0)
    assert not isinstance(info.value, CallTimeout)


async def test_no_timeout_means_no_limit_and_nonsense_is_refused() -> None:
    """None runs the call as is; a timeout of zero or less is a ValueError."""

    async def quick() -> int:
        return 7

    assert await run_with_timeout(quick, None) == 7
    with pytest.raises(ValueError, match="above 0"):
        await run_with_timeout(quick, 0)


# -- retry -------------------------------------------------------------------------------


def _script(*answers: str) -> tuple[list[str], Callable[[], Awaitable[str]]]:
    calls: list[str] = []
    queue = list(answers)

    async def fn() -> str:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        calls.append(answer)
        if answer == "raise":
            raise ConnectionError("refused")
        return answer

    return calls, fn


async def test_retry_repeats_marked_results_until_one_is_not() -> None:
    """A result marked retryable is repeated; the first unmarked one is returned."""
    calls, fn = _script("failed", "failed", "approved")
    result = await retry_call(fn, NO_WAIT, retry_if=lambda r: r == "failed")
    assert result == "approved"
    assert calls == ["failed", "failed", "approved"]


async def test_retry_returns_the_last_result_when_attempts_run_out() -> None:
    """After the last attempt a marked result is returned, not raised."""
    calls, fn = _script("failed")
    result = await retry_call(fn, NO_WAIT, retry_if=lambda r: r == "failed")
    assert result == "failed"
    assert len(calls) == 4


async def test_retry_never_repeats_an_unmarked_ambiguous_outcome() -> None:
    """An outcome the caller did not mark (ambiguous) is returned after one attempt."""
    calls, fn = _script("ambiguous", "approved")
    result = await retry_call(fn, NO_WAIT, retry_if=lambda r: r == "failed")
    assert result == "ambiguous"
    assert calls == ["ambiguous"]


async def test_retry_leaves_exceptions_alone_unless_told() -> None:
    """Exceptions propagate at once by default, and are retried when retry_if_exception."""
    calls, fn = _script("raise", "approved")
    with pytest.raises(ConnectionError):
        await retry_call(fn, NO_WAIT)
    assert calls == ["raise"]
    calls, fn = _script("raise", "raise", "approved")
    result = await retry_call(
        fn,
        NO_WAIT,
        retry_if_exception=lambda e: isinstance(e, ConnectionError),
    )
    assert result == "approved"
    assert len(calls) == 3


async def test_retry_deadline_stops_new_attempts() -> None:
    """No attempt starts once the total deadline has passed."""
    calls = 0

    async def slow_failure() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return "failed"

    # Attempts start at about 0, 0.3, 0.6 and 0.9 s; none after the 1 s deadline. The
    # margins are wide, so a loaded machine (slower attempts: fewer of them) still passes.
    config = RetryConfig(attempts=50, deadline=1.0, wait_initial=0, wait_max=0, wait_jitter=0)
    started = time.monotonic()
    assert await retry_call(slow_failure, config, retry_if=lambda r: r == "failed") == "failed"
    assert 2 <= calls <= 4
    assert time.monotonic() - started < 3.0


async def test_retry_backs_off_with_jitter_and_stamina_testing_mode_drops_it() -> None:
    """Backoff sleeps between attempts; stamina.set_testing removes the sleeps."""
    config = RetryConfig(attempts=3, deadline=None, wait_initial=0.02, wait_jitter=0.01)
    calls, fn = _script("failed")
    started = time.monotonic()
    await retry_call(fn, config, retry_if=lambda r: r == "failed")
    assert time.monotonic() - started >= 0.02 + 0.04
    with stamina.set_testing(True, attempts=3, cap=True):
        calls, fn = _script("failed")
        started = time.monotonic()
        await retry_call(fn, config, retry_if=lambda r: r == "failed")
        assert time.monotonic() - started < 0.02
        assert len(calls) == 3


def test_retry_config_is_validated() -> None:
    """At least one attempt, a positive deadline, no negative waits."""
    with pytest.raises(ValueError, match="attempts"):
        RetryConfig(attempts=0)
    with pytest.raises(ValueError, match="deadline"):
        RetryConfig(deadline=0)
    with pytest.raises(ValueError, match="wait_jitter"):
        RetryConfig(wait_jitter=-1)


# -- policy ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state_now(breaker: CircuitBreaker) -> State:
    """``breaker.state``, read through a call: after ``assert breaker.state is X`` mypy
    keeps ``breaker.state`` narrowed to X across the calls that change it."""
    return breaker.state


def _breaker(clock: FakeClock, **settings: Any) -> CircuitBreaker:
    config: dict[str, Any] = {
        "window_size": 2,
        "minimum_calls": 2,
        "wait_in_open": 10.0,
        "permitted_calls_in_half_open": 1,
        "slow_call_duration": 1.0,
    }
    config.update(settings)
    return CircuitBreaker("acq", BreakerConfig(**config), clock=clock)


def _outcome(result: str) -> Verdict:
    return Verdict.FAILURE if result in ("failed", "ambiguous") else Verdict.SUCCESS


async def test_policy_classifies_results_for_the_breaker() -> None:
    """A declined-like result is a success for the breaker; failed ones open it."""
    clock = FakeClock()
    breaker = _breaker(clock, window_size=3, minimum_calls=3)
    policy: Policy[str] = Policy(breaker=breaker, classify=_outcome)
    _, declined = _script("declined")
    _, failed = _script("failed")
    for fn in (declined, declined, declined, failed):
        await policy(fn)
    assert breaker.state is State.CLOSED  # one failure in three
    await policy(failed)
    assert _state_now(breaker) is State.OPEN


async def test_policy_retries_until_the_breaker_opens_then_fails_fast() -> None:
    """Each retry asks the breaker again: once a retry trips it, the next is not sent."""
    clock = FakeClock()
    breaker = _breaker(clock)
    policy: Policy[str] = Policy(
        breaker=breaker, classify=_outcome, retry=NO_WAIT, retry_if=lambda r: r == "failed"
    )
    calls, fn = _script("failed")
    with pytest.raises(CallNotPermitted):
        await policy(fn)
    assert len(calls) == 2
    assert breaker.snapshot().not_permitted_calls == 1


async def test_policy_timeout_becomes_the_callers_result_and_counts_as_slow() -> None:
    """on_timeout turns a timeout into a result, classified (and not retried) like any."""
    breaker = CircuitBreaker(
        "acq",
        BreakerConfig(
            window_size=1, minimum_calls=1, slow_call_duration=0.005, slow_call_rate_threshold=100
        ),
    )
    calls = 0

    async def hang() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return "approved"

    policy: Policy[str] = Policy(
        breaker=breaker,
        timeout=0.01,
        on_timeout=lambda _: "timeout-ambiguous",
        classify=lambda _: Verdict.SUCCESS,  # even as a success, it is slow
        retry=NO_WAIT,
        retry_if=lambda r: r == "failed",
    )
    assert await policy(hang) == "timeout-ambiguous"
    assert calls == 1
    assert breaker.state is State.OPEN

    bare: Policy[str] = Policy(timeout=0.01)
    with pytest.raises(CallTimeout):
        await bare(hang)
    with pytest.raises(CallTimeout):
        await bare(hang, time_limit=0.005)


async def test_policy_bulkhead_rejection_is_not_a_breaker_failure() -> None:
    """BulkheadFull is not recorded, and in HALF_OPEN it gives the probe permit back."""
    clock = FakeClock()
    breaker = _breaker(clock)
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=1))
    policy: Policy[str] = Policy(breaker=breaker, bulkhead=bulkhead, classify=_outcome)
    gate = asyncio.Event()
    held = asyncio.create_task(bulkhead.call(lambda: _hold(gate)))
    await asyncio.sleep(0)
    for _ in range(5):
        with pytest.raises(BulkheadFull):
            await policy(lambda: _hold(gate))
    assert breaker.snapshot().buffered_calls == 0
    assert breaker.state is State.CLOSED

    breaker.record(breaker.acquire(), Verdict.FAILURE)
    breaker.record(breaker.acquire(), Verdict.FAILURE)
    clock.now += 10
    assert _state_now(breaker) is State.HALF_OPEN
    with pytest.raises(BulkheadFull):
        await policy(lambda: _hold(gate))
    assert breaker.snapshot().half_open_permits_left == 1
    gate.set()
    await held
    assert await policy(lambda: _hold(gate, "approved")) == "approved"
    assert breaker.state is State.CLOSED


async def test_policy_open_breaker_rejects_before_the_bulkhead() -> None:
    """An open breaker fails fast without taking or waiting for a bulkhead slot."""
    clock = FakeClock()
    breaker = _breaker(clock)
    breaker.force_open()
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=1, max_wait=5))
    gate = asyncio.Event()
    held = asyncio.create_task(bulkhead.call(lambda: _hold(gate)))
    await asyncio.sleep(0)
    policy: Policy[str] = Policy(breaker=breaker, bulkhead=bulkhead)
    started = time.monotonic()
    with pytest.raises(CallNotPermitted):
        await policy(lambda: _hold(gate))
    assert time.monotonic() - started < 0.5
    assert bulkhead.snapshot().waiting == 0
    gate.set()
    await held


async def test_policy_times_only_the_call_not_the_bulkhead_queue() -> None:
    """Time spent waiting for a slot is not part of the breaker's slow-call duration."""
    clock = FakeClock()
    breaker = _breaker(clock, slow_call_rate_threshold=50.0, window_size=1, minimum_calls=1)
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=1, max_wait=60))
    gate = asyncio.Event()

    async def quick() -> str:
        return "approved"

    async def long_wait() -> str:
        await gate.wait()
        return "approved"

    policy: Policy[str] = Policy(breaker=breaker, bulkhead=bulkhead)
    first = asyncio.create_task(bulkhead.call(long_wait))
    await asyncio.sleep(0)
    queued = asyncio.create_task(policy(quick))
    await asyncio.sleep(0)
    clock.now += 30  # the queued call waits 30 "seconds" for its slot
    gate.set()
    await first
    assert await queued == "approved"
    assert breaker.state is State.CLOSED


async def test_policy_cancellation_releases_the_permit_and_the_slot() -> None:
    """A cancelled call is not recorded and gives back its probe permit and its slot."""
    clock = FakeClock()
    breaker = _breaker(clock)
    breaker.record(breaker.acquire(), Verdict.FAILURE)
    breaker.record(breaker.acquire(), Verdict.FAILURE)
    clock.now += 10
    assert breaker.state is State.HALF_OPEN
    bulkhead = Bulkhead("acq", BulkheadConfig(max_concurrent=1))
    policy: Policy[str] = Policy(breaker=breaker, bulkhead=bulkhead)
    task = asyncio.create_task(policy(lambda: _hold(asyncio.Event())))
    await asyncio.sleep(0)
    assert not breaker.available()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.available()
    assert bulkhead.in_flight == 0
    assert breaker.state is State.HALF_OPEN
