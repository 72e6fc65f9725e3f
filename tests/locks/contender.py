"""A child process of the lock tests: one "node" contending for a lock or a leadership.

``contender.py exclusion URL NAME LOG ROUNDS``
    take NAME ROUNDS times; while holding it, append ``enter PID TOKEN`` to LOG, pause,
    append ``leave PID TOKEN``; release.
``contender.py leader URL JOB LOG TTL``
    run a ``WorkerRunner`` for JOB whose job appends ``elected PID TOKEN T`` when a term
    starts and ``ended PID TOKEN T`` when it is cancelled (T: the system-wide monotonic
    clock); ``ready PID`` once running. SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from paycore.locks import HeldLease, WorkerRunner, open_lock_service, stop_on_signals


def _append(log: Path, line: str) -> None:
    # One write of one line with O_APPEND: lines of several processes never interleave.
    with log.open("a") as f:
        f.write(line + "\n")


async def exclusion(url: str, name: str, log: Path, rounds: int) -> None:
    async with open_lock_service(url) as locks:
        for _ in range(rounds):
            lease = await locks.acquire(name, 5, wait=30)
            assert lease is not None, "lock not granted within 30 s"
            _append(log, f"enter {os.getpid()} {lease.fencing_token}")
            await asyncio.sleep(0.002)
            _append(log, f"leave {os.getpid()} {lease.fencing_token}")
            assert await locks.release(lease), "lease lost while held"


async def leader(url: str, job: str, log: Path, ttl: float) -> None:
    async def work(held: HeldLease) -> None:
        _append(log, f"elected {os.getpid()} {held.fencing_token} {time.monotonic()}")
        try:
            while True:
                held.check()
                await asyncio.sleep(0.02)
        finally:
            _append(log, f"ended {os.getpid()} {held.fencing_token} {time.monotonic()}")

    async with open_lock_service(url) as locks:
        runner = WorkerRunner(locks, job, work, ttl=ttl)
        stop_on_signals(runner)
        _append(log, f"ready {os.getpid()}")
        await runner.run()


def main(argv: list[str]) -> None:
    mode, url, name, log = argv[1], argv[2], argv[3], Path(argv[4])
    if mode == "exclusion":
        asyncio.run(exclusion(url, name, log, int(argv[5])))
    elif mode == "leader":
        asyncio.run(leader(url, name, log, float(argv[5])))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
