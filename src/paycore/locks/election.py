"""Leader election per (job, shard) on any ``LockService``, and a runner for leader-only jobs.

The leader is whoever holds the lock ``leader:<job>[:<shard>]``; it renews it every
ttl/3 (``HeldLease``). A follower tries to take it every ``retry_every`` (ttl/3 by
default, jittered), so when a leader dies without a word its lease runs out and a
follower leads within about one TTL plus one retry interval. A leader that stops on
purpose (SIGTERM) releases the lock, and a follower takes over at its next try.

Each term has its own fencing token: a job's writes carry it, so the store can refuse
the writes of a deposed leader that has not noticed yet.

``WorkerRunner`` runs a job function only while leader::

    async def relay(held: HeldLease) -> None:
        while True:
            held.check()                        # LockLost if the term is over
            await store.relay_step(fence=(held.name, held.fencing_token))

    runner = WorkerRunner(locks, "relay", relay, shard="shard-0", ttl=5.0)
    stop_on_signals(runner)                     # SIGTERM/SIGINT: step down, release
    await runner.run()

The job is cancelled when the lease is lost or the runner stops. A job that returns or
fails ends its term: the runner releases the lock and campaigns again after
``restart_delay``, so a crashing job does not keep leadership away from healthy nodes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from paycore.locks.base import LockLost, LockService, LockUnavailable, check_ttl
from paycore.locks.renewal import HeldLease
from paycore.logs import bind

__all__ = ["JobFunction", "LeaderElection", "WorkerRunner", "leader_lock_name", "stop_on_signals"]

log = logging.getLogger(__name__)

JobFunction = Callable[[HeldLease], Coroutine[Any, Any, None]]
T = TypeVar("T")


def leader_lock_name(job: str, shard: str | None = None) -> str:
    """The lock that elects the leader of ``job`` (on ``shard``, if per shard)."""
    return f"leader:{job}" if shard is None else f"leader:{job}:{shard}"


class LeaderElection:
    """Campaign for, hold and resign the leadership of one (job, shard)."""

    def __init__(
        self,
        locks: LockService,
        job: str,
        shard: str | None = None,
        *,
        ttl: float = 5.0,
        retry_every: float | None = None,
    ) -> None:
        self.locks = locks
        self.name = leader_lock_name(job, shard)
        self.ttl = check_ttl(ttl)
        self.retry_every = retry_every if retry_every is not None else self.ttl / 3
        if self.retry_every <= 0:
            raise ValueError("retry_every must be positive")
        self.held: HeldLease | None = None
        self.terms = 0
        self.backend_down = False

    @property
    def is_leader(self) -> bool:
        """True while this node holds a lease that is not lost."""
        return self.held is not None and not self.held.lost

    @property
    def fencing_token(self) -> int | None:
        """The current term's token while leader, else None."""
        return self.held.fencing_token if self.held is not None and self.is_leader else None

    async def campaign(self) -> HeldLease:
        """Wait until elected; return the lease, renewing in the background.

        While the backend is unreachable this keeps trying (nobody can lead then, which is
        the safe outcome); cancel the call to give up.
        """
        if self.is_leader:
            assert self.held is not None
            return self.held
        attempts = 0
        while True:
            attempts += 1
            try:
                lease = await self.locks.acquire(self.name, self.ttl)
            except LockUnavailable as exc:
                if not self.backend_down:
                    log.warning("%s: lock backend unavailable (%s)", self.name, exc.detail)
                self.backend_down = True
                lease = None
            else:
                if self.backend_down:
                    log.info("%s: lock backend reachable again", self.name)
                self.backend_down = False
            if lease is not None:
                self.terms += 1
                self.held = HeldLease(self.locks, lease, self.ttl).start()
                # Routine at start-up (the first try of the first term): one line per
                # node says the jobs started. A term won after waiting is a takeover.
                routine = attempts == 1 and self.terms == 1
                log.log(
                    logging.DEBUG if routine else logging.INFO,
                    "%s: elected, fencing token %d",
                    self.name,
                    lease.fencing_token,
                )
                return self.held
            jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not crypto
            await asyncio.sleep(self.retry_every * jitter)

    async def resign(self) -> None:
        """Step down: stop renewing and release the lock, so a follower can lead at once."""
        held, self.held = self.held, None
        if held is not None:
            released = await held.release()
            log.log(
                logging.DEBUG if released else logging.INFO,
                "%s: stepped down (%s)",
                self.name,
                "released" if released else "was lost",
            )


def stop_on_signals(
    *runners: WorkerRunner,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Make ``signals`` stop all ``runners`` gracefully (they step down and release).

    Call it once per process, from inside its event loop, with every runner: a signal
    has one handler, and each call replaces the previous one.
    """
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        log.info("signal received: stopping %d worker runner(s)", len(runners))
        for runner in runners:
            runner.stop()

    for sig in signals:
        loop.add_signal_handler(sig, stop_all)


class WorkerRunner:
    """Runs ``job(held_lease)`` only while this node leads ``job`` (see the module docstring)."""

    def __init__(
        self,
        locks: LockService,
        job: str,
        run: JobFunction,
        *,
        shard: str | None = None,
        ttl: float = 5.0,
        retry_every: float | None = None,
        grace: float = 5.0,
        restart_delay: float | None = None,
    ) -> None:
        self.election = LeaderElection(locks, job, shard, ttl=ttl, retry_every=retry_every)
        self.job = job
        self.shard = shard
        self._run = run
        self.grace = grace
        self.restart_delay = restart_delay if restart_delay is not None else self.election.ttl
        self.failures = 0
        self.last_error: str | None = None
        self.elected_at: float | None = None
        self._stopping = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    def stop(self) -> None:
        """Ask the runner to end: the job is cancelled, the lock released, ``run`` returns."""
        self._stopping.set()

    async def run(self) -> None:
        """Campaign, run the job while leader, step down; until ``stop()``."""
        # This task's lines (and its job's, which inherits the context) name the job.
        bind(job=self.job, shard=self.shard)
        while not self._stopping.is_set():
            held = await self._until_stopped(self.election.campaign())
            if held is None:
                break
            self.elected_at = time.monotonic()
            try:
                job_ended = await self._term(held)
            finally:
                self.elected_at = None
                await self.election.resign()
            if job_ended and not self._stopping.is_set():
                await self._until_stopped(asyncio.sleep(self.restart_delay))

    async def _term(self, held: HeldLease) -> bool:
        """Run the job for one term; True if the job ended it (returned or failed), False
        if the runner did (lease lost, stopping)."""
        job = asyncio.create_task(self._run(held), name=f"job {held.name}")
        lost = asyncio.create_task(held.wait_lost())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({job, lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the runner itself is cancelled: so is its job
            job.cancel()
            raise
        finally:
            lost.cancel()
            stopping.cancel()
        if not job.done():
            ending = self._stopping.is_set()
            log.log(
                logging.DEBUG if ending else logging.INFO,
                "%s: cancelling the job (%s)",
                held.name,
                "stopping" if ending else "leadership lost",
            )
            job.cancel()
            await asyncio.wait({job}, timeout=self.grace)
            if not job.done():
                log.error("%s: job still running %.1f s after cancel", held.name, self.grace)
                return False
            if job.cancelled():
                return False
        if job.cancelled():
            return True
        error = job.exception()
        if error is None:
            log.info("%s: job returned; stepping down", held.name)
        elif isinstance(error, LockLost):  # the job saw the loss first (``held.check()``)
            return False
        else:
            self.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            log.error("%s: job failed", held.name, exc_info=error)
        return True

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T | None:
        """Await ``awaitable`` unless ``stop()`` comes first (then cancel it, answer None)."""
        task = asyncio.ensure_future(awaitable)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                # Bounded: a step that swallows its cancellation (a lock call retried
                # inside) must not hang the node's shutdown for ever.
                await asyncio.wait({task}, timeout=self.grace)
        if not task.done():
            log.error("%s: still running %.1f s after cancel; left behind", self.job, self.grace)
            return None
        return None if task.cancelled() else task.result()
