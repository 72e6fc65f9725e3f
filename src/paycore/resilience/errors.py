"""Why a guarded call did not run, or did not finish: the resilience exceptions.

::

    ResilienceError          root; ``code`` is a stable snake_case reason
    ├── CallNotPermitted     the circuit breaker is open (or half-open with every probe out)
    ├── BulkheadFull         every concurrency slot is taken and ``max_wait`` ran out
    ├── CallTimeout          the call ran past its timeout and was cancelled
    └── IllegalTransition    a breaker was asked for a transition its table does not have

The first two are raised *before* the guarded call starts, so the callee never saw the
request; ``CallTimeout`` is raised *after* it started, so whether the callee acted is
unknown: the caller decides what a timeout means (paycore's payments call it ambiguous).
These are internal control flow: the payments layer turns them into processor results,
so none of them reaches the HTTP API.
"""

from __future__ import annotations

__all__ = [
    "BulkheadFull",
    "CallNotPermitted",
    "CallTimeout",
    "IllegalTransition",
    "ResilienceError",
]


class ResilienceError(Exception):
    """Root of the resilience errors; ``code`` names the reason in results and metrics."""

    code: str = "resilience_error"


class CallNotPermitted(ResilienceError):
    """The breaker rejected the call without running it (fast fail).

    ``retry_after`` is the number of seconds until an open breaker lets probes through,
    or None when that is not known (forced open, or half-open with every probe out).
    """

    code = "circuit_open"

    def __init__(self, name: str, state: str, retry_after: float | None = None) -> None:
        super().__init__(f"circuit breaker {name!r} is {state}: call not permitted")
        self.name = name
        self.state = state
        self.retry_after = retry_after


class BulkheadFull(ResilienceError):
    """Every slot of the bulkhead was taken for the whole ``max_wait``; the call did not run."""

    code = "bulkhead_full"

    def __init__(self, name: str, max_concurrent: int, max_wait: float) -> None:
        super().__init__(
            f"bulkhead {name!r} is full ({max_concurrent} calls in flight, waited {max_wait:g}s)"
        )
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait = max_wait


class CallTimeout(ResilienceError, TimeoutError):
    """The call ran for ``seconds`` and was cancelled; it may or may not have taken effect."""

    code = "timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"call timed out after {seconds:g}s")
        self.seconds = seconds


class IllegalTransition(ResilienceError):
    """A breaker transition that its table does not allow: a bug, never a call outcome."""

    code = "illegal_transition"

    def __init__(self, state: str, trigger: str) -> None:
        super().__init__(f"no transition from {state} on {trigger}")
        self.state = state
        self.trigger = trigger
