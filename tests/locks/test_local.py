"""What only the in-process backend has: tokens that keep growing across a restart of
the process (a new service), thread safety, and bounded memory."""

from __future__ import annotations

import asyncio
import threading
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.locks import HeldLease, Lease, LocalLockService, LockLost, LockUnavailable


async def test_tokens_grow_across_a_restart() -> None:
    """A new service (what a restarted process has) issues larger tokens than the old."""
    before = await LocalLockService().acquire("job", 5)
    after = await LocalLockService().acquire("job", 5)
    assert before is not None
    assert after is not None
    assert after.fencing_token > before.fencing_token


async def test_threads_with_their_own_loops_exclude_each_other() -> None:
    """Tasks on several threads' event loops share one service and never overlap."""
    locks = LocalLockService()
    inside: list[int] = []
    overlaps = 0
    guard = threading.Lock()

    async def contend(worker: int) -> None:
        nonlocal overlaps
        for _ in range(50):
            lease = await locks.acquire("shared", 5, wait=10)
            assert lease is not None
            with guard:
                inside.append(worker)
                overlaps += len(inside) > 1
            await asyncio.sleep(0)
            with guard:
                inside.remove(worker)
            assert await locks.release(lease)

    threads = [threading.Thread(target=asyncio.run, args=(contend(i),)) for i in range(4)]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join()

    await asyncio.to_thread(join_all)
    assert overlaps == 0


async def test_expired_grants_and_old_counters_are_forgotten() -> None:
    """Locks whose holders vanished without releasing, and counters unused for a minute,
    do not pile up in memory; tokens still grow afterwards."""
    now = [0.0]
    locks = LocalLockService(clock=lambda: now[0], wall_microseconds=lambda: int(now[0] * 1e6))
    first = await locks.acquire("idem:0", 1)
    assert first is not None
    for i in range(1, 3000):
        assert await locks.acquire(f"idem:{i}", 1) is not None
    now[0] = 120.0
    for i in range(1100):
        assert await locks.acquire(f"fresh:{i}", 1) is not None
    assert len(locks._grants) < 1200
    assert len(locks._last_tokens) < 1200
    again = await locks.acquire("idem:0", 1)
    assert again is not None
    assert again.fencing_token > first.fencing_token


class Step(NamedTuple):
    op: str
    who: int
    name: str
    seconds: float


STEPS = st.builds(
    Step,
    st.sampled_from(["acquire", "release", "extend", "advance"]),
    st.integers(0, 2),
    st.sampled_from(["a", "b"]),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0]),
)


@given(st.lists(STEPS, max_size=60))
def test_local_locks_match_a_model(steps: list[Step]) -> None:
    """Any sequence of grants, releases, extensions and clock moves by three nodes obeys
    the lease rules: one unexpired holder per name, owner-checked release and extend,
    no revival after expiry, strictly growing tokens per name."""
    now = [1000.0]
    locks = LocalLockService(clock=lambda: now[0], wall_microseconds=lambda: int(now[0] * 1e6))
    holder: dict[str, tuple[int, float]] = {}  # name -> (node, expires at)
    leases: dict[tuple[int, str], Lease] = {}  # each node's latest lease per name
    last_token: dict[str, int] = {}
    loop = asyncio.new_event_loop()
    try:
        for step in steps:
            live = step.name in holder and holder[step.name][1] > now[0]
            mine = live and holder[step.name][0] == step.who
            lease = leases.get((step.who, step.name))
            ttl = step.seconds or 0.25
            if step.op == "advance":
                now[0] += step.seconds
            elif step.op == "acquire":
                got = loop.run_until_complete(locks.acquire(step.name, ttl))
                assert (got is not None) == (not live)
                if got is not None:
                    assert got.fencing_token > last_token.get(step.name, 0)
                    last_token[step.name] = got.fencing_token
                    holder[step.name] = (step.who, now[0] + ttl)
                    leases[step.who, step.name] = got
            elif lease is None:
                continue
            elif step.op == "release":
                # ``mine``: this node's latest lease is the live one (older ones are stale)
                assert loop.run_until_complete(locks.release(lease)) == mine
                if mine:
                    del holder[step.name]
            elif mine:  # extend the live lease
                loop.run_until_complete(locks.extend(lease, ttl))
                holder[step.name] = (step.who, now[0] + ttl)
            else:  # extend an expired or superseded lease
                with pytest.raises(LockLost):
                    loop.run_until_complete(locks.extend(lease, ttl))
    finally:
        loop.close()


async def test_release_ends_renewal_even_when_the_backend_turns_the_cancel_into_an_error() -> None:
    """A backend client may answer the renewal task's cancellation with an error of its
    own (redis-py did, mid-command): the renewal took it for a failed renewal and went on,
    and ``release`` waited for it for ever (a keyed request that never answered; met
    once in CI). ``release`` must return at once."""
    locks = LocalLockService()
    lease = await locks.acquire("renewed", 5)
    assert lease is not None
    in_extend = asyncio.Event()

    class SwallowsCancel:
        async def acquire(self, name: str, ttl: float, *, wait: float = 0.0) -> Lease | None:
            return await locks.acquire(name, ttl, wait=wait)

        async def release(self, lease: Lease) -> bool:
            return await locks.release(lease)

        async def extend(self, lease: Lease, ttl: float) -> Lease:
            in_extend.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                raise LockUnavailable("renewed", "connection closed mid-command") from None
            raise AssertionError("unreachable")

    held = HeldLease(SwallowsCancel(), lease, 5, renew_every=0.01).start()
    await asyncio.wait_for(in_extend.wait(), 5)
    assert await asyncio.wait_for(held.release(), 5)  # hung for ever before
