"""How one processor is guarded: ``ResilienceConfig``, the timeouts, breaker, bulkhead and
retries of a ``ResilientConnector``, over defaults made for payments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from paycore.payments.processors.base import Operation
from paycore.resilience import BreakerConfig, BulkheadConfig, RetryConfig, with_defaults

__all__ = ["ResilienceConfig"]


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
