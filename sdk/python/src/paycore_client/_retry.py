"""When the client retries a request on its own, and how long it waits first.

Pure decisions over values (no I/O, no clock): the sync and async clients ask
``RetryPolicy.delay_after`` after every failed attempt and sleep as told.

Only what cannot have been a definite answer is retried, and every retry of a POST
carries the first attempt's Idempotency-Key, so the server runs it at most once:

- no answer at all (connection refused or reset, timeout): the request may have been
  done, and the key makes the retry return that first result;
- 409 ``idempotency_key_in_use`` (the first attempt is still running on the server),
  ``transfer_in_flight`` (a cross-shard hold being finished after a fault) and
  ``import_in_progress`` (another import of the processor's reports is running);
- 429 (rate limited), 503 (a shard, lock service or processor down, nothing done),
  502 and 504 (a proxy lost its upstream: the same uncertainty as a lost answer).

A definite answer (any other 4xx) is never retried: sending it again gives the same
answer. Nor is a 500: it is paycore failing unexpectedly (a bug, not a passing
condition), so the same request most likely fails the same way, and the caller should
see it at once rather than after the backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

__all__ = ["RETRYABLE_CODES", "RETRYABLE_STATUSES", "RetryPolicy", "is_retryable_answer"]

RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})
RETRYABLE_CODES: Final = frozenset(
    {
        "idempotency_key_in_use",
        "transfer_in_flight",
        "webhook_delivery_in_progress",
        "import_in_progress",
    }
)


def is_retryable_answer(status: int, code: str | None) -> bool:
    """Whether an HTTP error answer may change if the same request is sent again."""
    return status in RETRYABLE_STATUSES or (status == 409 and code in RETRYABLE_CODES)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded, honouring ``Retry-After``.

    Retry ``n`` (0-based) waits ``initial_delay * 2**n`` capped at ``max_delay``, of
    which a random half is taken off ("equal jitter": many clients failed by one outage
    come back spread out, yet none retries at once). A ``Retry-After`` from the server
    is a floor; one beyond ``max_retry_after`` seconds is not waited for in a call (the
    error is raised, with its ``retry_after``, for the caller to schedule).
    """

    max_network_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.max_network_retries < 0:
            raise ValueError("max_network_retries must be >= 0")
        if not 0 <= self.initial_delay <= self.max_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0 for the first), jittered."""
        base = min(self.max_delay, self.initial_delay * 2.0**retry)
        return base / 2 + self.rng.uniform(0, base / 2)

    def delay_after(self, retries_done: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt of a retryable failure, or None to
        give up (retries spent, or the server asks for a longer wait than we hold a
        call for)."""
        if retries_done >= self.max_network_retries:
            return None
        delay = self.backoff(retries_done)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            delay = max(delay, retry_after)
        return delay
