"""What the demo checks and measures: a ``Promise`` (a property it checks, with what broke it)
and ``OpStats`` (one operation's requests, outcomes and latency), shared by every act."""

from __future__ import annotations

import msgspec

__all__ = ["OpStats", "Promise"]


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
