"""What the demo checks and measures: a ``Promise`` (a property it checks, with what broke it)
and ``OpStats`` (one operation's requests, outcomes and latency), shared by every act."""

from __future__ import annotations

from collections import Counter

import msgspec

from paycore.tools.loadgen import latency_summary

__all__ = ["OpStats", "Promise", "op_stats"]


class Promise(msgspec.Struct):
    """One promise the demo checks, how often, and what broke it (first few)."""

    name: str
    checks: int = 0
    broken: int = 0
    examples: list[str] = msgspec.field(default_factory=list)

    def check(self, ok: bool, example: str = "") -> None:
        self.checks += 1
        if not ok:
            self.broken += 1
            if len(self.examples) < 5:
                self.examples.append(example)


class OpStats(msgspec.Struct):
    name: str
    requests: int
    outcomes: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def op_stats(latencies: dict[str, list[float]], outcomes: dict[str, Counter[str]]) -> list[OpStats]:
    """Each kind of request but the setup's, by name: how many, their outcomes (most
    common first) and latencies."""
    return [
        OpStats(
            name=kind,
            requests=len(lat),
            outcomes=dict(outcomes[kind].most_common()),
            **latency_summary(lat),
        )
        for kind, lat in sorted(latencies.items())
        if kind != "setup"
    ]
