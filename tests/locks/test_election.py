"""Leader election and the worker runner: one leader at a time, a job that runs only
while leading, hand-over on stop, and failover after a leader process is killed
(measured and printed)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from locks.conftest import Backend
from paycore.locks import (
    HeldLease,
    JobFunction,
    LeaderElection,
    LockServiceBase,
    WorkerRunner,
)

CONTENDER = Path(__file__).with_name("contender.py")
PROCESS_BACKENDS = ["redis", pytest.param("postgres", marks=pytest.mark.postgres)]


async def _eventually(condition: Callable[[], bool], within: float = 5.0) -> float:
    """Wait until ``condition()`` holds; the seconds it took (fails after ``within`` s)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "condition not reached in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


class Jobs:
    """Job functions that record which node runs, so overlaps can be counted."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.overlaps = 0
        self.terms: list[tuple[str, int]] = []

    def job(self, node: str) -> JobFunction:
        async def run(held: HeldLease) -> None:
            self.running.add(node)
            self.overlaps += len(self.running) > 1
            self.terms.append((node, held.fencing_token))
            try:
                while True:
                    held.check()
                    await asyncio.sleep(0.01)
            finally:
                self.running.discard(node)

        return run


def _runners(
    services: Sequence[LockServiceBase], jobs: Jobs, job: str, ttl: float
) -> list[WorkerRunner]:
    return [
        WorkerRunner(service, job, jobs.job(f"node{i}"), ttl=ttl)
        for i, service in enumerate(services)
    ]


async def test_one_leader_among_many(backend: Backend, lock_name: str) -> None:
    """Three runners of one job: exactly one runs it at any time."""
    jobs = Jobs()
    runners = _runners([await backend.make() for _ in range(3)], jobs, lock_name, 0.3)
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    await _eventually(lambda: len(jobs.running) == 1)
    await asyncio.sleep(0.45)  # 1.5 TTLs: renewals keep the same leader
    assert sum(runner.is_leader for runner in runners) == 1
    assert len(jobs.terms) == 1
    for runner in runners:
        runner.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert jobs.overlaps == 0
    assert not any(runner.is_leader for runner in runners)


async def test_stop_hands_over_without_waiting_for_the_ttl(
    backend: Backend, lock_name: str
) -> None:
    """A leader that stops releases the lock: a follower leads at its next try (about
    ttl/3), long before the TTL, and the two jobs never overlap."""
    jobs = Jobs()
    ttl = 0.9
    first, second = _runners([await backend.make(), await backend.make()], jobs, lock_name, ttl)
    first_task = asyncio.create_task(first.run())
    await _eventually(lambda: first.is_leader)
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(0.05)
    first.stop()
    await asyncio.wait_for(first_task, 5)
    took = await _eventually(lambda: second.is_leader and len(jobs.running) == 1)
    assert took < ttl / 3 * 1.2 + 0.3 < ttl
    second.stop()
    await asyncio.wait_for(second_task, 5)
    assert jobs.overlaps == 0
    assert [node for node, _ in jobs.terms] == ["node0", "node1"]
    assert jobs.terms[1][1] > jobs.terms[0][1]


async def test_a_lost_lease_cancels_the_job_and_the_runner_campaigns_again(
    backend: Backend, lock_name: str
) -> None:
    """When the leader's lease is taken away, its job is cancelled; the runner then
    wins a new term with a larger token."""
    jobs = Jobs()
    service = await backend.make()
    (runner,) = _runners([service], jobs, lock_name, 0.3)
    task = asyncio.create_task(runner.run())
    await _eventually(lambda: runner.is_leader)
    held = runner.election.held
    assert held is not None
    await service.release(held.lease)  # as if it had expired and been taken over
    await _eventually(lambda: len(jobs.terms) == 2)
    assert held.lost
    assert jobs.terms[1][1] > jobs.terms[0][1]
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert jobs.overlaps == 0


async def test_a_failing_job_ends_the_term(backend: Backend, lock_name: str) -> None:
    """A job that raises gives up leadership (released), and runs again after the delay."""
    service = await backend.make()
    calls: list[int] = []

    async def flaky(held: HeldLease) -> None:
        calls.append(held.fencing_token)
        raise RuntimeError("boom")

    runner = WorkerRunner(service, lock_name, flaky, ttl=5, restart_delay=0.05)
    task = asyncio.create_task(runner.run())
    await _eventually(lambda: len(calls) >= 3)
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert runner.failures >= 3
    assert runner.last_error == "RuntimeError: boom"
    assert calls == sorted(set(calls))


async def test_election_reports_leadership_and_token(backend: Backend, lock_name: str) -> None:
    """``is_leader`` and ``fencing_token`` follow campaign and resign."""
    election = LeaderElection(await backend.make(), lock_name, "shard-1", ttl=1)

    def state() -> tuple[bool, int | None]:
        return election.is_leader, election.fencing_token

    assert election.name == f"leader:{lock_name}:shard-1"
    assert state() == (False, None)
    held = await election.campaign()
    assert state() == (True, held.fencing_token)
    await election.resign()
    assert state() == (False, None)


# -- processes: kill the leader, measure the failover -------------------------------------


class Cluster:
    """Leader-election child processes writing their events to one log."""

    def __init__(self, url: str, job: str, log: Path, ttl: float) -> None:
        self.argv = [str(CONTENDER), "leader", url, job, str(log), str(ttl)]
        self.log = log
        self.children: list[asyncio.subprocess.Process] = []

    async def start(self, count: int) -> None:
        for _ in range(count):
            child = await asyncio.create_subprocess_exec(sys.executable, *self.argv)
            self.children.append(child)
        await _eventually(lambda: len(self.events("ready")) == count, within=20)

    def events(self, kind: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [
            e for e in (line.split() for line in self.log.read_text().splitlines()) if e[0] == kind
        ]

    async def stop(self) -> None:
        for child in self.children:
            if child.returncode is None:
                child.kill()
            await child.wait()


@pytest.fixture
async def cluster(backend: Backend, lock_name: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    assert backend.url is not None
    made = Cluster(backend.url, lock_name, tmp_path / "events.log", ttl=1.0)
    yield made
    await made.stop()


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
async def test_failover_after_the_leader_is_killed(
    cluster: Cluster, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL the leader process: another process leads within one TTL plus one retry
    interval (plus scheduling margin), with a larger token."""
    ttl = 1.0
    await cluster.start(3)
    await _eventually(lambda: len(cluster.events("elected")) == 1)
    await asyncio.sleep(0.2)  # the followers have tried at least once
    [_, leader_pid, leader_token, _] = cluster.events("elected")[0]
    killed_at = time.monotonic()
    os.kill(int(leader_pid), signal.SIGKILL)
    await _eventually(lambda: len(cluster.events("elected")) == 2, within=10)
    [_, new_pid, new_token, elected_at] = cluster.events("elected")[1]
    failover = float(elected_at) - killed_at
    with capsys.disabled():
        print(f"\n[{backend.kind}] leader failover after SIGKILL: {failover:.3f} s (ttl {ttl} s)")
    assert new_pid != leader_pid
    assert int(new_token) > int(leader_token)
    assert failover < ttl + ttl / 3 * 1.2 + 0.5


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
async def test_sigterm_hands_over_at_once(
    cluster: Cluster, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM the leader process: it ends its job, releases the lock and exits; a
    follower leads at its next try, after the old job ended (never both at once)."""
    ttl = 1.0
    await cluster.start(2)
    await _eventually(lambda: len(cluster.events("elected")) == 1)
    [_, leader_pid, _, _] = cluster.events("elected")[0]
    await asyncio.sleep(0.5)  # mid-term, the follower's retries at their usual phase
    leader = next(c for c in cluster.children if str(c.pid) == leader_pid)
    stopped_at = time.monotonic()
    leader.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(leader.wait(), 5) == 0
    await _eventually(lambda: len(cluster.events("elected")) == 2, within=5)
    [_, _, _, ended_at] = cluster.events("ended")[0]
    [_, new_pid, _, elected_at] = cluster.events("elected")[1]
    handover = float(elected_at) - stopped_at
    with capsys.disabled():
        print(f"\n[{backend.kind}] leader hand-over after SIGTERM: {handover:.3f} s (ttl {ttl} s)")
    assert new_pid != leader_pid
    assert float(elected_at) >= float(ended_at)
    assert handover < ttl / 3 * 1.2 + 0.5
