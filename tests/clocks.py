"""The hand-moved clock the tests inject into stores, writers and apps (one definition)."""

from __future__ import annotations

__all__ = ["NS", "T0", "ManualClock"]

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # 2023-11-14T22:13:20Z: where every test ledger's time starts


class ManualClock:
    """Nanoseconds that move only when the test says so (the store's writer reads it)."""

    def __init__(self, start_seconds: int = T0 // NS, *, now: int | None = None) -> None:
        self.now = start_seconds * NS if now is None else now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float = 0, *, ns: int = 0) -> int:
        self.now += int(seconds * NS) + ns
        return self.now
