"""The routing feedback: per processor, calls in flight, latency and recent approvals
(what the adaptive strategies read and ``Router.record`` feeds).
"""

from __future__ import annotations

from collections import deque

from paycore.payments.processors.base import Outcome

__all__ = ["ProcessorStats"]


class ProcessorStats:
    """Per processor: calls in flight, an EWMA of latency, and the last ``window``
    outcomes (approved or not) for the success rate."""

    def __init__(self, *, window: int = 100, alpha: float = 0.3) -> None:
        if window < 1:
            raise ValueError("the success window needs at least 1 call")
        if not 0 < alpha <= 1:
            raise ValueError("latency_alpha must be above 0 and at most 1")
        self.window = window
        self.alpha = alpha
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._outcomes: dict[str, deque[bool]] = {}
        self._approved: dict[str, int] = {}

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    def latency(self, name: str) -> float | None:
        """The EWMA of the latency in seconds, None before the first call."""
        return self._latency.get(name)

    def success(self, name: str) -> tuple[int, int]:
        """(approved, calls) over the window."""
        outcomes = self._outcomes.get(name)
        return (self._approved.get(name, 0), len(outcomes)) if outcomes else (0, 0)

    def success_estimate(self, name: str) -> float:
        """The approval rate with a uniform prior, (approved + 1) / (calls + 2): 0.5 for a
        processor never tried, so a newcomer is neither favoured nor starved."""
        approved, calls = self.success(name)
        return (approved + 1) / (calls + 2)

    def begin(self, name: str) -> None:
        self._in_flight[name] = self._in_flight.get(name, 0) + 1

    def end(self, name: str) -> None:
        count = self._in_flight.get(name, 0)
        if count <= 0:
            raise RuntimeError(f"processor {name!r} has no call in flight to end")
        self._in_flight[name] = count - 1

    def record(self, name: str, outcome: Outcome, latency: float) -> None:
        """One call's outcome and latency (seconds)."""
        previous = self._latency.get(name)
        self._latency[name] = (
            latency if previous is None else self.alpha * latency + (1 - self.alpha) * previous
        )
        outcomes = self._outcomes.setdefault(name, deque())
        approved = outcome is Outcome.APPROVED
        if len(outcomes) == self.window:
            self._approved[name] -= outcomes.popleft()
        outcomes.append(approved)
        self._approved[name] = self._approved.get(name, 0) + approved
