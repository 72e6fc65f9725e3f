"""Lock throughput: acquire + release cycles per second, one at a time and concurrently.

    python -m paycore.locks.bench                      # starts a throwaway redis-server
    python -m paycore.locks.bench --url redis://127.0.0.1:6379/0 --seconds 5 --tasks 16
    python -m paycore.locks.bench --url 'postgresql://postgres@127.0.0.1:5432/locks'
    python -m paycore.locks.bench --url local

A cycle is one ``acquire`` (a grant with a fencing token) and one ``release`` of a
lock, each a round trip to the backend. ``sequential`` runs one cycle after another
on one name; ``concurrent`` runs ``--tasks`` loops at once, each on its own name
(uncontended: the backend and the client are the limit, not waiting for a holder).
Latency is per cycle. This is a measurement, not a test: nothing fails on a low rate.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from paycore.locks import LockServiceBase, open_lock_service
from paycore.locks.testing import RedisServer

__all__ = ["BenchResult", "main", "measure"]


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One scenario's outcome."""

    scenario: str
    tasks: int
    cycles: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.cycles / self.seconds

    def line(self) -> str:
        return (
            f"{self.scenario:<11} tasks={self.tasks:<3} {self.per_second:>9,.0f} cycles/s  "
            f"p50 {self.p50_ms:.3f} ms  p99 {self.p99_ms:.3f} ms  ({self.cycles} cycles)"
        )


async def _loop(locks: LockServiceBase, name: str, until: float, latencies: list[float]) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        lease = await locks.acquire(name, 10)
        if lease is None:
            raise RuntimeError(f"lock {name!r} unexpectedly held: is another bench running?")
        await locks.release(lease)
        latencies.append(time.perf_counter() - started)


async def measure(
    locks: LockServiceBase, *, seconds: float, tasks: int, scenario: str
) -> BenchResult:
    """Run ``tasks`` acquire/release loops on distinct names for ``seconds``."""
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    await _loop(locks, f"{prefix}:warmup", time.monotonic() + min(0.2, seconds), [])
    latencies: list[float] = []
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(_loop(locks, f"{prefix}:{i}", until, latencies) for i in range(tasks)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return BenchResult(
        scenario, tasks, len(latencies), elapsed, statistics.median(ordered) * 1e3, p99 * 1e3
    )


async def run(url: str, *, seconds: float, tasks: int) -> list[BenchResult]:
    """Both scenarios against ``url``."""
    async with open_lock_service(url) as locks:
        await locks.ping()
        return [
            await measure(locks, seconds=seconds, tasks=1, scenario="sequential"),
            await measure(locks, seconds=seconds, tasks=tasks, scenario="concurrent"),
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paycore.locks.bench", description=__doc__)
    parser.add_argument("--url", help="redis://, postgresql:// or local (default: a new redis)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario (default 3)")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent loops (default 16)")
    args = parser.parse_args(argv)
    command = shlex.join(
        [sys.executable, "-m", "paycore.locks.bench", "--seconds", str(args.seconds),
         "--tasks", str(args.tasks), *(["--url", args.url] if args.url else [])]
    )  # fmt: skip
    server = None
    url = args.url
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
    try:
        print(f"paycore lock bench against {url}")
        print(f"reproduce: {command}")
        for result in asyncio.run(run(url, seconds=args.seconds, tasks=args.tasks)):
            print(result.line())
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
