"""Resilience around any async call: circuit breaker, bulkhead, timeout, retry, policy.

::

    Policy (policy.py)            retry( breaker( bulkhead( timeout(call) ) ) )
    ├── retry_call    retry.py    stamina: attempts, jittered backoff, deadline;
    │                             retries only results/exceptions the caller marks
    ├── CircuitBreaker breaker.py resilience4j semantics; pure state machine over an
    │                             injected clock; TRANSITIONS is its lifecycle table
    ├── Bulkhead      bulkhead.py at most N calls in flight, wait <= max_wait
    └── run_with_timeout timeout.py  asyncio.timeout -> CallTimeout
    errors.py                     CallNotPermitted, BulkheadFull, CallTimeout
    with_defaults     tables.py   a partial config table over complete defaults

Generic on purpose: nothing here knows about payments. The payments layer says what
its outcomes mean through the hooks (``classify``, ``retry_if``, ``on_timeout``).
"""

from __future__ import annotations

from paycore.resilience.breaker import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerSnapshot,
    CircuitBreaker,
    Clock,
    EventKind,
    Listener,
    Permit,
    State,
    Trigger,
    Verdict,
    WindowType,
    next_state,
)
from paycore.resilience.bulkhead import Bulkhead, BulkheadConfig, BulkheadSnapshot
from paycore.resilience.errors import (
    BulkheadFull,
    CallNotPermitted,
    CallTimeout,
    IllegalTransition,
    ResilienceError,
)
from paycore.resilience.policy import DEFAULT_TIMEOUT, Policy
from paycore.resilience.retry import RetryConfig, retry_call
from paycore.resilience.tables import with_defaults
from paycore.resilience.timeout import run_with_timeout

__all__ = [
    "DEFAULT_TIMEOUT",
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerSnapshot",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadFull",
    "BulkheadSnapshot",
    "CallNotPermitted",
    "CallTimeout",
    "CircuitBreaker",
    "Clock",
    "EventKind",
    "IllegalTransition",
    "Listener",
    "Permit",
    "Policy",
    "ResilienceError",
    "RetryConfig",
    "State",
    "Trigger",
    "Verdict",
    "WindowType",
    "next_state",
    "retry_call",
    "run_with_timeout",
    "with_defaults",
]
