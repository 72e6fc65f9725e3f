"""Group commit: one writer thread per shard drains queued commands into one transaction.

Many concurrent callers each wait for their own command; the writer takes every
command queued at the moment it becomes free (up to a bound), runs them in one
database transaction, commits once (one fsync), then answers each caller. Under
load the fsync cost is shared by the whole group; when idle, a lone command is
committed immediately, so nothing waits for a timer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paycore.errors import UnavailableError
from paycore.storage.slot_fence import ROUTED_BY

__all__ = ["GroupCommitWriter", "Job"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """A command waiting for the writer, and where to deliver its outcome."""

    command: Any
    idempotency: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    weight: int = 1
    # The slot map version the command was routed by (``paycore.storage.slot_fence``).
    routed_by: int | None = field(default_factory=ROUTED_BY.get)
    outcome: Any = field(default=None)
    error: BaseException | None = field(default=None)


def _deliver(job: Job) -> None:
    if job.future.done():  # the caller gave up (cancelled); the effect still stands
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.outcome)


def _answer(job: Job) -> None:
    try:
        job.loop.call_soon_threadsafe(_deliver, job)
    except RuntimeError:  # the caller's event loop is closed: nobody is waiting any more
        log.debug("dropped the answer of a job whose event loop is closed")


class GroupCommitWriter:
    """Owns a thread that runs ``run_group(jobs)`` on batches of queued jobs.

    ``run_group`` must set ``outcome`` or ``error`` on every job and return only
    after the transaction is durable (or rolled back).
    """

    def __init__(
        self,
        name: str,
        run_group: Callable[[Sequence[Job]], None],
        *,
        max_jobs: int = 512,
        max_weight: int = 16_384,
    ) -> None:
        self._name = name
        self._run_group = run_group
        self._max_jobs = max_jobs
        self._max_weight = max_weight
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Guards the running/closing switch, so that no job is queued behind the stop mark.
        self._state_lock = threading.Lock()
        self.groups = 0
        self.jobs = 0

    def start(self) -> None:
        with self._state_lock:
            self._thread = threading.Thread(
                target=self._loop, name=f"writer-{self._name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread; later submits get 503."""
        with self._state_lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(None)
        thread.join()

    async def submit(self, command: Any, idempotency: Any = None, weight: int = 1) -> Any:
        loop = asyncio.get_running_loop()
        job = Job(command, idempotency, loop, loop.create_future(), weight)
        with self._state_lock:
            if self._thread is None:
                raise UnavailableError(f"shard {self._name} is not running")
            self._queue.put(job)
        return await job.future

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            weight = first.weight
            while len(group) < self._max_jobs and weight < self._max_weight:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
                weight += nxt.weight
            try:
                self._run_group(group)
            except BaseException as exc:  # a bug in run_group must not strand callers
                log.exception("writer %s failed a group of %d", self._name, len(group))
                for job in group:
                    if job.error is None and job.outcome is None:
                        job.error = exc
            self.groups += 1
            self.jobs += len(group)
            for job in group:
                _answer(job)
