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
    (or it raises an exception ``retry_if_exception``); the last result or exception."""

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, _RetryableResult):
            return True
        return isinstance(exc, Exception) and retry_if_exception(exc)

    try:
        async for attempt in stamina.retry_context(
            on=should_retry,
            attempts=config.attempts,
            timeout=config.deadline,
            wait_initial=config.wait_initial,
            wait_max=config.wait_max,
            wait_jitter=config.wait_jitter,
            wait_exp_base=config.wait_exp_base,
        ):
            with attempt:
                result = await fn()
                if retry_if(result):
                    raise _RetryableResult(result)
                return result
    except _RetryableResult as last:
        return cast(T, last.result)
    raise AssertionError("unreachable: stamina yields at least one attempt")
