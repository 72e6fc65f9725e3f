"""Group commit: a writer thread drains queued commands into one transaction per shard.

Many concurrent callers each wait for their own command; the writer takes every
command queued at the moment it becomes free (up to a bound), runs them in one
database transaction, commits once (one fsync), then answers each caller. Under
load the fsync cost is shared by the whole group; when idle, a lone command is
committed immediately, so nothing waits for a timer.

A ``GroupCommitWriter`` is one shard's queue discipline; a ``WriterThread`` is the OS
thread that runs it. A PostgreSQL shard has a thread of its own (its calls wait on the
network, so shards overlap). The embedded SQLite shards of one process share one: their
work is CPU under the interpreter lock, and every extra thread that takes and gives the
lock back around each SQLite call made it change hands dozens of times per transfer
(four shards, one thread each: 77 context switches and 2.6 ms CPU per transfer).
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

__all__ = ["GroupCommitWriter", "Job", "WriterThread"]

log = logging.getLogger(__name__)

MAX_BATCH = 4_096
"""Jobs a writer thread takes off its queue at once, over all its shards."""


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
    writer: GroupCommitWriter | None = field(default=None)


def _deliver(jobs: Sequence[Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller gave up (cancelled); the effect still stands
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.outcome)


def _answer(jobs: Sequence[Job]) -> None:
    """Hand a group's outcomes to their event loops: one wake-up per loop, not per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, waiting)
        except RuntimeError:  # the callers' event loop is closed: nobody is waiting any more
            log.debug("dropped the answers of %d jobs whose event loop is closed", len(waiting))


@dataclass(slots=True)
class _Drained:
    """Queued by a stopping writer: set once everything queued before it has run."""

    writer: GroupCommitWriter
    done: threading.Event = field(default_factory=threading.Event)


class WriterThread:
    """One OS thread running the groups of the writers attached to it, in queue order.

    It starts with its first writer and ends with its last; each takes jobs off one
    queue, runs each writer's share as that writer's groups, and answers them.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job | _Drained | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._writers = 0

    def attach(self) -> None:
        with self._lock:
            self._writers += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, args=(self._queue,), name=f"writer-{self.name}", daemon=True
                )
                self._thread.start()

    def put(self, job: Job) -> None:
        self._queue.put(job)

    def detach(self, writer: GroupCommitWriter) -> None:
        """Wait until ``writer``'s queued jobs have run; end the thread after its last writer."""
        drained = _Drained(writer)
        self._queue.put(drained)
        drained.done.wait()
        with self._lock:
            self._writers -= 1
            if self._writers > 0 or self._thread is None:
                return
            thread, self._thread = self._thread, None
            # The next start gets a fresh queue, so no job can queue behind this stop mark.
            ending, self._queue = self._queue, queue.SimpleQueue()
            ending.put(None)
        thread.join()

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[Job | _Drained | None]) -> None:
        while True:
            batch = [jobs.get()]
            while len(batch) < MAX_BATCH and isinstance(batch[-1], Job):
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            by_writer: dict[GroupCommitWriter, list[Job]] = {}
            for item in batch:
                if isinstance(item, Job):
                    assert item.writer is not None
                    by_writer.setdefault(item.writer, []).append(item)
            for writer, queued in by_writer.items():
                writer.run_groups(queued)
            mark = batch[-1]
            if mark is None:
                return
            if isinstance(mark, _Drained):
                mark.done.set()


class _Syncer:
    """A writer's durability barrier, on a thread of its own: the writer thread hands it
    committed groups; one ``sync()`` makes all of them durable, then their callers are
    answered. A failed sync fails every later job too: after a failed fsync the kernel
    may have dropped the pages, so nothing written since can be trusted to be on disk."""

    def __init__(self, name: str, sync: Callable[[], None]) -> None:
        self._name = name
        self._sync = sync
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.failed: UnavailableError | None = None

    def start(self) -> None:
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop, args=(self._queue,), name=f"sync-{self._name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def put(self, group: list[Job]) -> None:
        self._queue.put(group)

    def _loop(self, groups: queue.SimpleQueue[list[Job] | None]) -> None:
        ending = False
        while not ending:
            batch: list[list[Job]] = []
            item = groups.get()
            while item is not None:
                batch.append(item)
                try:
                    item = groups.get_nowait()
                except queue.Empty:
                    break
            else:
                ending = True
            if not batch:
                continue
            if self.failed is None:
                try:
                    self._sync()
                except Exception:  # an I/O error, or a bug: neither may strand the callers
                    log.critical(
                        "shard %s: fsync failed, refusing writes", self._name, exc_info=True
                    )
                    self.failed = UnavailableError(
                        f"shard {self._name} could not make its writes durable; restart it"
                    )
            for group in batch:
                if self.failed is not None:
                    for job in group:
                        job.error = self.failed
                _answer(group)


class GroupCommitWriter:
    """One shard's writer: runs ``run_group(jobs)`` on groups of its queued jobs.

    ``run_group`` must set ``outcome`` or ``error`` on every job and return once the
    transaction is committed (or rolled back). Without ``sync`` the commit itself is
    durable and the callers are answered at once; with it, the callers are answered
    after ``sync()`` has run on a thread of the writer's own, so that the shards sharing
    a writer thread wait for their fsyncs side by side, not one after another. Without
    ``thread`` the writer has a thread of its own.
    """

    def __init__(
        self,
        name: str,
        run_group: Callable[[Sequence[Job]], None],
        *,
        max_jobs: int = 512,
        max_weight: int = 16_384,
        thread: WriterThread | None = None,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self._name = name
        self._syncer = None if sync is None else _Syncer(name, sync)
        self._run_group = run_group
        self._max_jobs = max_jobs
        self._max_weight = max_weight
        self._thread = thread if thread is not None else WriterThread(name)
        self._running = False
        # Guards the running/closing switch, so that no job is queued behind the stop mark.
        self._state_lock = threading.Lock()
        self.groups = 0
        self.jobs = 0

    def start(self) -> None:
        with self._state_lock:
            if not self._running:
                if self._syncer is not None:
                    self._syncer.start()
                self._thread.attach()
                self._running = True

    def stop(self) -> None:
        """Finish what is queued, then detach from the thread; later submits get 503."""
        with self._state_lock:
            if not self._running:
                return
            self._running = False
        self._thread.detach(self)
        if self._syncer is not None:
            self._syncer.stop()

    async def submit(self, command: Any, idempotency: Any = None, weight: int = 1) -> Any:
        loop = asyncio.get_running_loop()
        job = Job(command, idempotency, loop, loop.create_future(), weight, writer=self)
        with self._state_lock:
            if not self._running:
                raise UnavailableError(f"shard {self._name} is not running")
            if self._syncer is not None and self._syncer.failed is not None:
                raise self._syncer.failed
            self._thread.put(job)
        return await job.future

    def run_groups(self, queued: Sequence[Job]) -> None:
        """Writer thread: run ``queued`` in order as groups within the bounds, answering each."""
        group: list[Job] = []
        weight = 0
        for job in queued:
            if group and (len(group) >= self._max_jobs or weight >= self._max_weight):
                self._run(group)
                group, weight = [], 0
            group.append(job)
            weight += job.weight
        if group:
            self._run(group)

    def _run(self, group: list[Job]) -> None:
        try:
            self._run_group(group)
        except BaseException as exc:  # a bug in run_group must not strand callers
            log.exception("writer %s failed a group of %d", self._name, len(group))
            for job in group:
                if job.error is None and job.outcome is None:
                    job.error = exc
        self.groups += 1
        self.jobs += len(group)
        if self._syncer is None:
            _answer(group)
        else:
            self._syncer.put(group)
