"""What every lock backend promises (run on redis, postgres and local): mutual exclusion,
expiry and takeover with a larger fencing token, owner-checked release and extend,
all-or-nothing multi-name locks, TTLs required, and renewal while held."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from pathlib import Path

import pytest

from locks.conftest import Backend
from paycore.locks import HeldLease, Lease, LockBusy, LockLost

CONTENDER = Path(__file__).with_name("contender.py")


async def test_a_held_lock_is_refused_to_others(backend: Backend, lock_name: str) -> None:
    """While one node holds a lock, another node's acquire answers None."""
    one, other = await backend.make(), await backend.make()
    lease = await one.acquire(lock_name, 5)
    assert lease is not None
    assert lease.name == lock_name
    assert lease.fencing_token > 0
    assert 4.5 < lease.remaining() <= 5
    assert await other.acquire(lock_name, 5) is None
    assert await one.acquire(lock_name, 5) is None  # not re-entrant: a new grant is a new owner
    assert await one.release(lease)
    assert await other.acquire(lock_name, 5) is not None


async def test_expired_lease_is_taken_over_with_a_larger_token(
    backend: Backend, lock_name: str
) -> None:
    """A lease that ran out is granted to the next caller with a strictly larger token."""
    one, other = await backend.make(), await backend.make()
    first = await one.acquire(lock_name, 0.2)
    assert first is not None
    await asyncio.sleep(0.25)
    assert first.expired
    second = await other.acquire(lock_name, 5)
    assert second is not None
    assert second.fencing_token > first.fencing_token
    assert await one.acquire(lock_name, 5) is None


async def test_tokens_grow_strictly_over_many_grants(backend: Backend, lock_name: str) -> None:
    """Grant after grant of one name, by any node, the fencing token only goes up."""
    nodes = [await backend.make(), await backend.make()]
    tokens = []
    for i in range(20):
        lease = await nodes[i % 2].acquire(lock_name, 5)
        assert lease is not None
        tokens.append(lease.fencing_token)
        assert await nodes[i % 2].release(lease)
    assert tokens == sorted(set(tokens))


async def test_release_by_a_non_owner_is_refused(backend: Backend, lock_name: str) -> None:
    """A stale holder (or a forged lease) cannot release its successor's lock."""
    one, other = await backend.make(), await backend.make()
    stale = await one.acquire(lock_name, 0.2)
    assert stale is not None
    await asyncio.sleep(0.25)
    current = await other.acquire(lock_name, 5)
    assert current is not None
    assert not await one.release(stale)
    forged = Lease(lock_name, "someone-else", current.fencing_token, current.expires_at)
    assert not await one.release(forged)
    assert await one.acquire(lock_name, 5) is None  # still held by ``current``
    assert await other.release(current)
    assert not await other.release(current)  # twice is refused too


async def test_extend_after_expiry_fails(backend: Backend, lock_name: str) -> None:
    """An expired lease is never revived, even when nobody took the lock meanwhile."""
    service = await backend.make()
    lease = await service.acquire(lock_name, 0.2)
    assert lease is not None
    await asyncio.sleep(0.25)
    with pytest.raises(LockLost):
        await service.extend(lease, 5)
    assert not await service.release(lease)


async def test_extend_keeps_the_lock_past_its_first_ttl(backend: Backend, lock_name: str) -> None:
    """Extending pushes the expiry out; the token stays the same."""
    one, other = await backend.make(), await backend.make()
    lease = await one.acquire(lock_name, 0.3)
    assert lease is not None
    await asyncio.sleep(0.15)
    extended = await one.extend(lease, 0.6)
    assert extended.fencing_token == lease.fencing_token
    assert extended.expires_at > lease.expires_at
    await asyncio.sleep(0.3)  # past the first TTL
    assert await other.acquire(lock_name, 5) is None
    assert await one.release(extended)


async def test_acquire_waits_for_a_release(backend: Backend, lock_name: str) -> None:
    """With ``wait``, acquire retries until the holder releases, within the wait."""
    one, other = await backend.make(), await backend.make()
    lease = await one.acquire(lock_name, 5)
    assert lease is not None

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        await one.release(lease)

    releaser = asyncio.create_task(release_soon())
    started = time.monotonic()
    waited = await other.acquire(lock_name, 5, wait=2)
    await releaser
    assert waited is not None
    assert 0.09 < time.monotonic() - started < 1.0
    assert waited.fencing_token > lease.fencing_token
    started = time.monotonic()
    assert await one.acquire(lock_name, 5, wait=0.15) is None
    assert time.monotonic() - started >= 0.15


async def test_multi_name_acquire_is_all_or_nothing(backend: Backend, lock_name: str) -> None:
    """Several names are taken in sorted order, all or none: on a busy name the ones
    already taken are released."""
    one, other = await backend.make(), await backend.make()
    a, b, c = (f"{lock_name}:{suffix}" for suffix in "abc")
    blocker = await other.acquire(b, 5)
    assert blocker is not None
    assert await one.acquire_many([c, a, b], 5) is None
    # a was taken before b failed, and given back; c was never taken.
    for name in (a, c):
        lease = await other.acquire(name, 5)
        assert lease is not None
        assert await other.release(lease)
    assert await other.release(blocker)
    leases = await one.acquire_many([c, a, b], 5)
    assert leases is not None
    assert [lease.name for lease in leases] == [a, b, c]
    assert await other.acquire(b, 5) is None
    await one.release_many(leases)
    assert await other.acquire_many([a, b, c], 5) is not None


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, None, "5", True, 10**6])
async def test_a_lock_without_a_sane_ttl_is_refused(backend: Backend, ttl: object) -> None:
    """Every grant and extension needs a finite, positive TTL of at most a day."""
    service = await backend.make()
    with pytest.raises(ValueError, match="TTL"):
        await service.acquire("test:ttl", ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TTL"):
        await service.acquire_many(["test:ttl"], ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("names", [[], ["x", "x"], [""], ["a\x00b"], ["n" * 513]])
async def test_malformed_names_are_refused(backend: Backend, names: list[str]) -> None:
    """Empty, duplicate, NUL-holding or over-long names are a ValueError, not a lock."""
    service = await backend.make()
    with pytest.raises(ValueError, match="lock name"):
        await service.acquire_many(names, 5)


async def test_hold_renews_while_the_block_runs(backend: Backend, lock_name: str) -> None:
    """``hold`` keeps the lock for three TTLs by renewing it, then releases it."""
    one, other = await backend.make(), await backend.make()
    async with one.hold(lock_name, 0.2) as held:
        token = held.fencing_token
        await asyncio.sleep(0.6)
        assert not held.lost
        assert held.renewals >= 2
        assert held.fencing_token == token
        assert await other.acquire(lock_name, 5) is None
    lease = await other.acquire(lock_name, 5)
    assert lease is not None
    assert lease.fencing_token > token


async def test_hold_raises_busy_when_the_lock_is_taken(backend: Backend, lock_name: str) -> None:
    """``hold`` on a lock held elsewhere gives LockBusy after ``wait``."""
    one, other = await backend.make(), await backend.make()
    assert await other.acquire(lock_name, 5) is not None
    with pytest.raises(LockBusy):
        async with one.hold(lock_name, 1, wait=0.05):
            pytest.fail("entered a held lock")


async def test_a_lost_lease_cancels_the_holder(backend: Backend, lock_name: str) -> None:
    """When renewal is refused (the lease was taken away), the block is cancelled and
    ends with LockLost; ``lost`` is set before."""
    service = await backend.make()
    seen: list[HeldLease] = []

    async def hold_while_taken_away() -> None:
        async with service.hold(lock_name, 0.3) as held:
            held.on_lost(seen.append)
            await service.release(held.lease)  # what an expiry plus takeover looks like
            await asyncio.sleep(5)

    started = time.monotonic()
    with pytest.raises(LockLost, match="renewal refused"):
        await hold_while_taken_away()
    assert time.monotonic() - started < 0.5  # cancelled at the first renewal (ttl/3)
    [held] = seen
    assert held.lost
    with pytest.raises(LockLost):
        held.check()


async def test_a_stalled_holder_sees_its_lease_lost(backend: Backend, lock_name: str) -> None:
    """A holder whose event loop stalled past the lease finds ``lost`` True at its next
    check, before any renewal ran, and another node may take the lock."""
    one, other = await backend.make(), await backend.make()
    async with one.hold(lock_name, 0.2, cancel_on_loss=False) as held:
        time.sleep(0.25)  # noqa: ASYNC251 - the stall under test: no renewal can run
        assert held.lost
        assert "expired" in (held.lost_reason or "")
        successor = await other.acquire(lock_name, 5)
        assert successor is not None
        assert successor.fencing_token > held.fencing_token


async def test_tasks_exclude_each_other(backend: Backend, lock_name: str) -> None:
    """Many tasks (on several clients) contending for one lock never overlap, and every
    one gets its turn."""
    services = [await backend.make() for _ in range(3)]
    inside: list[int] = []
    overlaps = 0
    tokens: list[int] = []

    async def contend(worker: int) -> None:
        nonlocal overlaps
        service = services[worker % len(services)]
        for _ in range(5):
            lease = await service.acquire(lock_name, 5, wait=20)
            assert lease is not None
            inside.append(worker)
            overlaps += len(inside) > 1
            tokens.append(lease.fencing_token)
            await asyncio.sleep(0.001)
            inside.remove(worker)
            assert await service.release(lease)

    await asyncio.gather(*(contend(worker) for worker in range(8)))
    assert overlaps == 0
    assert len(tokens) == 40
    assert tokens == sorted(set(tokens))


@pytest.mark.parametrize(
    "backend", ["redis", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_processes_exclude_each_other(
    backend: Backend, lock_name: str, tmp_path: Path
) -> None:
    """Four processes taking one lock in turn and appending to one file while they hold
    it never overlap, and the tokens grow in the order of the file."""
    assert backend.url is not None
    log = tmp_path / "critical.log"
    rounds = 10
    argv = [str(CONTENDER), "exclusion", backend.url, lock_name, str(log), str(rounds)]
    children = [await asyncio.create_subprocess_exec(sys.executable, *argv) for _ in range(4)]
    codes = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 60)
    assert codes == [0, 0, 0, 0]
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 2 * 4 * rounds
    tokens = []
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter[0] == "enter"
        assert leave[0] == "leave"
        assert enter[1:] == leave[1:], "another process entered before the holder left"
        tokens.append(int(enter[2]))
    assert tokens == sorted(set(tokens))
    assert len({line[1] for line in lines}) == 4
