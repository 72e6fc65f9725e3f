"""Group commit: many concurrent callers share transactions, yet each gets its own answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from backends import AnyStore
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.group_commit import GroupCommitWriter, Job, WriterThread
from paycore.storage.store import Command
from store.support import audit, read_state

N = 500


async def test_concurrent_commands_share_transactions_and_keep_their_order(
    store: AnyStore,
) -> None:
    """500 concurrent transfers run in fewer transactions, in arrival order, each answered."""
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("wallet", "USD", flags=AccountFlags(no_overdraft=True)),
                AccountRequest("shop", "USD"),
            )
        )
    )
    await store.execute(CreateTransfers((TransferRequest("fund", "bank", "wallet", 300),)))
    groups_before, jobs_before = store.writer_stats

    results = await asyncio.gather(
        *(
            store.execute(CreateTransfers((TransferRequest(f"t{i}", "wallet", "shop", 1),)))
            for i in range(N)
        )
    )

    groups = store.writer_stats[0] - groups_before
    jobs = store.writer_stats[1] - jobs_before
    assert jobs == N
    assert groups < N
    assert [r.id for (r,) in results] == [f"t{i}" for i in range(N)]
    # the wallet holds 300: exactly the first 300 callers in arrival order are paid
    assert [r.code for (r,) in results] == [None] * 300 + [ErrorCode.INSUFFICIENT_FUNDS] * 200
    stamps = [r.transfer.timestamp for (r,) in results[:300] if r.transfer]
    assert stamps == sorted(set(stamps))
    accounts = await store.get_accounts(["wallet", "shop"])
    assert accounts["wallet"].available == 0
    assert accounts["shop"].credits_posted == 300
    assert audit(await store.with_snapshot(read_state)) == []


async def test_commands_of_different_kinds_in_one_group_see_each_other(store: AnyStore) -> None:
    """In one group, a transfer sees an account created by an earlier command, not a later one."""
    await store.execute(CreateAccounts((AccountRequest("a", "USD"),)))
    hold = TransferRequest("h", "a", "late", 5, flags=TransferFlags(pending=True))
    commands: list[Command] = [
        CreateTransfers((TransferRequest("early", "a", "late", 5),)),
        CreateAccounts((AccountRequest("late", "USD"),)),
        CreateTransfers((hold,)),
        CreateTransfers(
            (
                TransferRequest(
                    "p", pending_id="h", amount=2, flags=TransferFlags(post_pending=True)
                ),
            )
        ),
        # The id refused earlier in the group keeps its refusal (the contract: a retry
        # never changes an answer); a new id sees the account.
        CreateTransfers((TransferRequest("early", "a", "late", 5),)),
        CreateTransfers((TransferRequest("later", "a", "late", 5),)),
    ]
    results = await asyncio.gather(*(store.execute(c) for c in commands))
    assert results[0][0].code is ErrorCode.ACCOUNT_NOT_FOUND
    assert results[1][0].ok
    assert results[2][0].ok
    assert results[3][0].ok
    assert (results[4][0].code, results[4][0].detail) == (
        ErrorCode.ACCOUNT_NOT_FOUND,
        results[0][0].detail,
    )
    assert (results[5][0].ok, results[5][0].exists) == (True, False)
    accounts = await store.get_accounts(["late"])
    assert (accounts["late"].credits_pending, accounts["late"].credits_posted) == (0, 7)


async def test_a_big_batch_is_one_command_with_a_result_per_item(store: AnyStore) -> None:
    """A batch of 2,000 items commits at once with one result per item, in order."""
    await store.execute(CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD"))))
    batch = tuple(TransferRequest(f"t{i}", "a", "b", i + 1) for i in range(2_000))
    results = await store.execute(CreateTransfers(batch))
    assert [r.id for r in results] == [r.id for r in batch]
    assert all(r.ok for r in results)
    accounts = await store.get_accounts(["a"])
    assert accounts["a"].debits_posted == sum(range(1, 2_001))


# -- the writer on its own -------------------------------------------------------------------


class Recorder:
    """A run_group that records groups and answers each job with its command doubled."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.groups: list[list[int]] = []
        self.gate = gate

    def __call__(self, jobs: Sequence[Job]) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        self.groups.append([j.command for j in jobs])
        for job in jobs:
            job.outcome = job.command * 2


async def _blocked_writer(
    recorder: Recorder, max_jobs: int = 512, max_weight: int = 16_384
) -> tuple[GroupCommitWriter, asyncio.Task[object]]:
    """A started writer busy with a first job until ``recorder.gate`` is set."""
    writer = GroupCommitWriter("test", recorder, max_jobs=max_jobs, max_weight=max_weight)
    writer.start()
    first = asyncio.create_task(writer.submit(-1))
    await asyncio.sleep(0.05)  # the writer has taken job -1 and waits on the gate
    return writer, first


async def test_the_writer_takes_everything_queued_as_one_group() -> None:
    """Jobs queued while the writer is busy are run together, each answered with its own result."""
    recorder = Recorder(threading.Event())
    writer, first = await _blocked_writer(recorder)
    waiting = [asyncio.create_task(writer.submit(i)) for i in range(10)]
    await asyncio.sleep(0.05)
    assert recorder.gate is not None
    recorder.gate.set()
    assert await asyncio.gather(*waiting) == [i * 2 for i in range(10)]
    assert await first == -2
    await asyncio.to_thread(writer.stop)
    assert recorder.groups == [[-1], list(range(10))]
    assert (writer.groups, writer.jobs) == (2, 11)


@pytest.mark.parametrize(
    ("limits", "sizes"), [({"max_jobs": 4}, [4, 4, 2]), ({"max_weight": 6}, [3, 3, 3, 1])]
)
async def test_a_group_is_bounded(limits: dict[str, int], sizes: list[int]) -> None:
    """A group holds at most max_jobs jobs, and stops growing once it reaches max_weight."""
    recorder = Recorder(threading.Event())
    writer, first = await _blocked_writer(recorder, **limits)
    waiting = [asyncio.create_task(writer.submit(i, weight=2)) for i in range(10)]
    await asyncio.sleep(0.05)
    assert recorder.gate is not None
    recorder.gate.set()
    await asyncio.gather(first, *waiting)
    await asyncio.to_thread(writer.stop)
    assert [len(g) for g in recorder.groups[1:]] == sizes


async def test_a_crashing_group_answers_every_caller_with_the_error() -> None:
    """If run_group raises, each caller of the group gets the exception instead of hanging."""

    def crash(jobs: Sequence[Job]) -> None:
        raise ValueError("bug in run_group")

    writer = GroupCommitWriter("test", crash)
    writer.start()
    try:
        outcomes = await asyncio.gather(
            *(writer.submit(i) for i in range(5)), return_exceptions=True
        )
    finally:
        await asyncio.to_thread(writer.stop)
    assert all(isinstance(o, ValueError) for o in outcomes)


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    """A cancelled caller's job still runs; the other callers get their answers."""
    recorder = Recorder(threading.Event())
    writer, first = await _blocked_writer(recorder)
    impatient = asyncio.create_task(writer.submit(7))
    patient = asyncio.create_task(writer.submit(8))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert recorder.gate is not None
    recorder.gate.set()
    assert await patient == 16
    await first
    await asyncio.to_thread(writer.stop)
    assert impatient.cancelled()
    assert recorder.groups[1] == [7, 8]


async def test_a_writer_that_never_started_refuses_jobs() -> None:
    """Submitting to a writer that is not running fails at once instead of waiting forever."""
    writer = GroupCommitWriter("test", Recorder())
    with pytest.raises(UnavailableError, match="not running"):
        await writer.submit(1)
    writer.stop()  # stopping a writer that never ran is a no-op


# -- shards sharing one writer thread, and a sync after the commit -----------------------------


async def test_writers_sharing_a_thread_run_their_own_groups_in_order() -> None:
    """Two writers on one thread each run their own jobs, in order, in groups of their own."""
    gate = threading.Event()
    thread = WriterThread("shared")
    left, right = Recorder(gate), Recorder()
    a = GroupCommitWriter("a", left, thread=thread)
    b = GroupCommitWriter("b", right, thread=thread)
    a.start()
    b.start()
    first = asyncio.create_task(a.submit(-1))
    await asyncio.sleep(0.05)  # the thread waits in a's first group
    waiting = [asyncio.create_task((a if i % 2 else b).submit(i)) for i in range(8)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(first, *waiting) == [-2] + [i * 2 for i in range(8)]
    await asyncio.to_thread(a.stop)
    await asyncio.to_thread(b.stop)
    assert left.groups == [[-1], [1, 3, 5, 7]]
    assert right.groups == [[0, 2, 4, 6]]


async def test_a_writer_stopping_on_a_shared_thread_leaves_the_other_running() -> None:
    """Stopping one writer runs its queued jobs; the other keeps the thread; both can restart."""
    thread = WriterThread("shared")
    left, right = Recorder(), Recorder()
    a = GroupCommitWriter("a", left, thread=thread)
    b = GroupCommitWriter("b", right, thread=thread)
    a.start()
    b.start()
    queued = [asyncio.create_task(a.submit(i)) for i in range(3)]
    await asyncio.sleep(0)  # queued before the stop
    await asyncio.to_thread(a.stop)
    assert await asyncio.gather(*queued) == [0, 2, 4]
    with pytest.raises(UnavailableError, match="not running"):
        await a.submit(9)
    assert await b.submit(5) == 10
    await asyncio.to_thread(b.stop)  # the last writer ends the thread
    a.start()
    assert await a.submit(6) == 12
    await asyncio.to_thread(a.stop)


async def test_callers_are_answered_only_after_the_sync_that_follows_their_commit() -> None:
    """With a sync, an answer waits for it; one sync may cover the groups committed before it."""
    synced = threading.Event()
    committed: list[list[int]] = []
    seen_at_sync: list[int] = []

    def run(jobs: Sequence[Job]) -> None:
        committed.append([j.command for j in jobs])
        for job in jobs:
            job.outcome = job.command

    def sync() -> None:  # what a sync covers is what was committed when it began
        seen_at_sync.append(sum(len(g) for g in committed))
        synced.wait(5)

    writer = GroupCommitWriter("s", run, sync=sync)
    writer.start()
    answer = asyncio.create_task(writer.submit(1))
    await asyncio.sleep(0.05)
    assert committed == [[1]]
    assert not answer.done()  # committed, not yet durable: no answer
    later = [asyncio.create_task(writer.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.05)
    synced.set()
    assert await asyncio.gather(answer, *later) == [1, 2, 3]
    await asyncio.to_thread(writer.stop)
    assert seen_at_sync[0] == 1
    assert seen_at_sync[-1] == 3


async def test_a_failed_sync_fails_its_callers_and_every_later_write() -> None:
    """After a failed fsync nothing is acknowledged again: the callers and later submits get 503."""

    def run(jobs: Sequence[Job]) -> None:
        for job in jobs:
            job.outcome = job.command

    def sync() -> None:
        raise OSError(5, "Input/output error")

    writer = GroupCommitWriter("s", run, sync=sync)
    writer.start()
    try:
        with pytest.raises(UnavailableError, match="durable") as failed:
            await writer.submit(1)
        assert failed.value.code is ErrorCode.STORE_UNAVAILABLE
        with pytest.raises(UnavailableError, match="durable"):
            await writer.submit(2)
    finally:
        await asyncio.to_thread(writer.stop)
