"""Retries with jittered exponential backoff, on stamina, for outcomes the caller marks.

stamina (tenacity underneath) does the backoff, the jitter, the attempt count, the
total deadline, its retry hooks (logging, ``stamina_retries_total``) and its test mode
(``stamina.set_testing``: no backoff). This module adds one thing it does not have:
retrying on a *result*. A result the caller's ``retry_if`` marks is wrapped in a
private exception so that stamina retries it; once the attempts or the deadline are
used up, the last result is returned as it is, never raised.

``retry_if`` must answer True only for outcomes that *definitely did not* take effect
and may succeed if repeated (a refused connection, a 503 before processing). An
outcome that may have taken effect (a timeout after the request left, a connection
reset mid-answer) must never be retried blindly: the caller resolves it otherwise
(for payments: a status lookup by reference). Exceptions are not retried unless
``retry_if_exception`` says so.

The backoff before attempt ``n + 1`` is
``min(wait_max, wait_initial * wait_exp_base ** (n - 1) + uniform(0, wait_jitter))``
(stamina's formula). ``deadline`` bounds the time after which no new attempt starts;
it does not cut an attempt that is running (a per-call timeout does that).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

import msgspec
import stamina

__all__ = ["RetryConfig", "retry_call"]

T = TypeVar("T")


class RetryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    attempts: int = 3  # in all, the first one included; 1 means no retry
    deadline: float | None = 10.0  # seconds after which no new attempt starts; None: none
    wait_initial: float = 0.05
    wait_max: float = 1.0
    wait_jitter: float = 0.05
    wait_exp_base: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError("deadline must be a number of seconds above 0, or None")
        for field in ("wait_initial", "wait_max", "wait_jitter"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"{field} must be a number of seconds, 0 or more")
        if not self.wait_exp_base >= 1:
            raise ValueError("wait_exp_base must be at least 1")


class _RetryableResult(Exception, Generic[T]):
    """Carries a result that ``retry_if`` marked through stamina's exception machinery."""

    def __init__(self, result: T) -> None:
        super().__init__("retryable result")
        self.result = result


def _never(_: object) -> bool:
    return False


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    config: RetryConfig,
    *,
    retry_if: Callable[[T], bool] = _never,
    retry_if_exception: Callable[[Exception], bool] = _never,
) -> T:
    """``await fn()`` up to ``config.attempts`` times while its result is ``retry_if``
    (or it raises an exception ``retry_if_exception``); the last result or exception.

    The first attempt runs before stamina is entered: most calls succeed at once, and
    setting up stamina's retrying (tenacity underneath) cost about a tenth of a card
    payment's CPU. Only a retryable first outcome enters stamina, whose first attempt
    gives that outcome back without calling ``fn`` again: the backoff, the hooks and
    the count of attempts are stamina's, as if it had run the first one too."""
    started = time.monotonic()
    try:
        first = await fn()
    except Exception as exc:
        if config.attempts == 1 or not retry_if_exception(exc):
            raise
        replay: _Replay[T] = _Replay(error=exc)
    else:
        if config.attempts == 1 or not retry_if(first):
            return first
        replay = _Replay(result=first)
    deadline = config.deadline
    if deadline is not None:
        deadline -= time.monotonic() - started
        if deadline <= 0:  # no new attempt may start: the first outcome stands
            return replay.give_back()

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, _RetryableResult):
            return True
        return isinstance(exc, Exception) and retry_if_exception(exc)

    try:
        async for attempt in stamina.retry_context(
            on=should_retry,
            attempts=config.attempts,
            timeout=deadline,
            wait_initial=config.wait_initial,
            wait_max=config.wait_max,
            wait_jitter=config.wait_jitter,
            wait_exp_base=config.wait_exp_base,
        ):
            with attempt:
                result = replay.take() if replay.pending else await fn()
                if retry_if(result):
                    raise _RetryableResult(result)
                return result
    except _RetryableResult as last:
        return cast(T, last.result)
    raise AssertionError("unreachable: stamina yields at least one attempt")


class _Replay(Generic[T]):
    """The first attempt's outcome, given back once as stamina's first attempt."""

    def __init__(self, *, result: T | None = None, error: Exception | None = None) -> None:
        self.result, self.error, self.pending = result, error, True

    def give_back(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.result)

    def take(self) -> T:
        self.pending = False
        return self.give_back()
