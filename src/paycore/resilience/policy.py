"""One guarded call: retry, circuit breaker, bulkhead and timeout composed in one order.

::

    retry(                                  stamina: attempts, jittered backoff, deadline
      breaker.acquire()                     fast fail while open (CallNotPermitted)
      bulkhead.slot(                        at most N in flight, wait <= max_wait (BulkheadFull)
        [clock starts]  timeout(call)  [clock stops]
      )
      breaker.record(verdict, duration)     duration = the call alone
    )

Why this order:

- **Retry outermost.** Every attempt asks the breaker again, so when an attempt trips
  it the next one fails fast instead of hammering a dying dependency; no bulkhead slot
  is held while backing off; the deadline bounds the whole thing.
- **The breaker's permission before the bulkhead.** An open breaker rejects at once,
  without queueing for a slot first. A bulkhead rejection is *our* saturation, not the
  dependency's health, so it is released (IGNORE), never recorded as a failure; in
  HALF_OPEN that gives the probe permit back.
- **The breaker's measurement around the call only.** The time spent waiting for a
  bulkhead slot is neither in the slow-call duration nor in the timeout: the breaker
  judges the dependency, not our queue (resilience4j's aspect order,
  Retry(CircuitBreaker(Bulkhead(TimeLimiter(call)))), would count the queueing).
- **Timeout innermost.** It bounds exactly the time the dependency has; a timed-out
  call is cancelled there and classified by the caller: ``on_timeout`` turns it into a
  result (then ``classify`` and ``retry_if`` see that result like any other), otherwise
  ``CallTimeout`` is raised (a FAILURE for the breaker unless ``classify_exception``
  says otherwise, not retried unless ``retry_if_exception`` says so).

A cancelled call (``asyncio.CancelledError``) releases its breaker permit and its slot
and is not recorded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

from paycore.resilience.breaker import CircuitBreaker, Clock, Permit, Verdict
from paycore.resilience.bulkhead import Bulkhead
from paycore.resilience.errors import CallTimeout
from paycore.resilience.retry import RetryConfig, retry_call
from paycore.resilience.timeout import run_with_timeout

__all__ = ["DEFAULT_TIMEOUT", "Policy"]

T = TypeVar("T")


class _DefaultTimeout:
    def __repr__(self) -> str:
        return "DEFAULT_TIMEOUT"


DEFAULT_TIMEOUT: Final = _DefaultTimeout()


def _success(_: object) -> Verdict:
    return Verdict.SUCCESS


def _failure(_: Exception) -> Verdict:
    return Verdict.FAILURE


def _never(_: object) -> bool:
    return False


class Policy(Generic[T]):
    """Runs calls that return ``T`` through the layers given (each one optional).

    ``classify`` tells the breaker what a result means (default SUCCESS) and
    ``classify_exception`` what an exception means (default FAILURE); ``retry_if`` and
    ``retry_if_exception`` say what may be retried (default nothing; see ``retry``).
    ``clock`` times the calls for the breaker; by default the breaker's own.
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        bulkhead: Bulkhead | None = None,
        timeout: float | None = None,
        retry: RetryConfig | None = None,
        classify: Callable[[T], Verdict] = _success,
        classify_exception: Callable[[Exception], Verdict] = _failure,
        on_timeout: Callable[[CallTimeout], T] | None = None,
        retry_if: Callable[[T], bool] = _never,
        retry_if_exception: Callable[[Exception], bool] = _never,
        clock: Clock | None = None,
    ) -> None:
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.timeout = timeout
        self.retry = retry
        self.classify = classify
        self.classify_exception = classify_exception
        self.on_timeout = on_timeout
        self.retry_if = retry_if
        self.retry_if_exception = retry_if_exception
        self.clock: Clock = clock or (breaker.clock if breaker else time.monotonic)

    async def __call__(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        time_limit: float | _DefaultTimeout | None = DEFAULT_TIMEOUT,
        retry: bool = True,
    ) -> T:
        """``await fn()`` through every layer; ``time_limit`` overrides the policy's timeout
        for this call, ``retry=False`` makes it one attempt (for calls that must not repeat)."""
        seconds = self.timeout if isinstance(time_limit, _DefaultTimeout) else time_limit

        async def attempt() -> T:
            return await self.once(fn, seconds)

        if self.retry is None or not retry:
            return await attempt()
        return await retry_call(
            attempt,
            self.retry,
            retry_if=self.retry_if,
            retry_if_exception=self.retry_if_exception,
        )

    async def once(self, fn: Callable[[], Awaitable[T]], time_limit: float | None) -> T:
        """One attempt: breaker permission, bulkhead slot, timed call, breaker record."""
        breaker = self.breaker
        permit = breaker.acquire() if breaker else None
        try:
            if self.bulkhead is None:
                return await self._timed(fn, time_limit, permit)
            async with self.bulkhead.slot():
                return await self._timed(fn, time_limit, permit)
        finally:
            # Not settled by _timed: the bulkhead refused, or the task was cancelled.
            if breaker and permit and not permit.settled:
                breaker.release(permit)

    async def _timed(
        self, fn: Callable[[], Awaitable[T]], time_limit: float | None, permit: Permit | None
    ) -> T:
        started = self.clock()
        try:
            result = await run_with_timeout(fn, time_limit)
        except CallTimeout as exc:
            if self.on_timeout is None:
                self._record(permit, self.classify_exception(exc), started)
                raise
            result = self.on_timeout(exc)
        except Exception as exc:
            self._record(permit, self.classify_exception(exc), started)
            raise
        self._record(permit, self.classify(result), started)
        return result

    def _record(self, permit: Permit | None, verdict: Verdict, started: float) -> None:
        if self.breaker is not None and permit is not None:
            self.breaker.record(permit, verdict, self.clock() - started)
