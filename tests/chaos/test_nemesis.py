"""The nemesis: the same seed gives the same schedule; the executor heals what it broke."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from paycore.chaos.nemesis import FaultKind, Nemesis, Targets, make_schedule
from paycore.chaos.tcpproxy import TcpProxy

TARGETS = Targets(
    nodes=3, shards=("s0", "s1"), processes=("node-0", "node-1"), processors=("acq-a", "acq-b")
)
ALL = tuple(FaultKind)


def test_same_seed_same_schedule() -> None:
    """Two schedules from one seed and targets are identical; another seed differs."""
    first = make_schedule(42, 600, ALL, TARGETS)
    assert first == make_schedule(42, 600, ALL, TARGETS)
    assert first != make_schedule(43, 600, ALL, TARGETS)


def test_schedule_covers_every_kind_without_overlap() -> None:
    """A long enough schedule has every kind; faults never overlap and end before the
    quiet tail."""
    schedule = make_schedule(7, 300, ALL, TARGETS, quiet_tail=5.0)
    assert {f.kind for f in schedule} == set(ALL)
    for before, after in itertools.pairwise(schedule):
        assert before.at + before.duration <= after.at
    assert schedule[-1].at + schedule[-1].duration <= 295
    assert all(f.node is None or 0 <= f.node < 3 for f in schedule)


def test_schedule_of_chosen_kinds_only() -> None:
    schedule = make_schedule(1, 120, (FaultKind.RESTART_REDIS,), TARGETS)
    assert schedule
    assert {f.kind for f in schedule} == {FaultKind.RESTART_REDIS}
    assert make_schedule(1, 120, (), TARGETS) == []


class FakeControl:
    """Records every call; kill_primary is unsupported."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.proxies = {(0, "s0"): TcpProxy("127.0.0.1", 9)}

    def api_nodes(self) -> Sequence[str]:
        return ["http://a", "http://b"]

    def targets(self) -> Targets:
        return TARGETS

    def auth_headers(self) -> dict[str, str]:
        return {}

    def unsupported(self, kind: FaultKind) -> str | None:
        return "no standby" if kind is FaultKind.KILL_PRIMARY else None

    async def kill_api_node(self, index: int) -> None:
        self.calls.append(("kill", index))

    async def restart_api_node(self, index: int) -> None:
        self.calls.append(("restart", index))

    async def kill_primary(self, shard: str) -> None:
        raise AssertionError("unsupported kinds are skipped")

    async def pause(self, process: str, seconds: float) -> None:
        self.calls.append(("pause", process))

    async def restart_redis(self, down_for: float) -> None:
        self.calls.append(("redis",))

    async def set_processor(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("processor", name, patch))
        return {"down": False, "latency": {"kind": "fixed", "ms": 5.0}}

    def proxy(self, node: int, shard: str) -> TcpProxy | None:
        return self.proxies.get((node, shard))

    async def audit(self) -> list[str] | None:
        return None


async def test_executor_injects_heals_and_skips() -> None:
    """Each fault is injected then healed; an unsupported kind is skipped with its note."""
    from paycore.chaos.nemesis import Fault

    control = FakeControl()
    k = FaultKind
    schedule = [
        Fault(kind=k.KILL_API_NODE, at=0, duration=0.01, node=1),
        Fault(kind=k.KILL_PRIMARY, at=0, duration=0.01, shard="s0"),
        Fault(kind=k.PROCESSOR_DOWN, at=0, duration=0.01, processor="acq-a"),
        Fault(kind=k.NET_PARTITION, at=0, duration=0.01, node=0, shard="s0"),
        Fault(kind=k.NET_LATENCY, at=0, duration=0.01, node=1, shard="s1"),
    ]
    records = await Nemesis(control, schedule).run(time.monotonic())
    assert control.calls == [
        ("kill", 1),
        ("restart", 1),
        ("processor", "acq-a", {"down": True}),
        ("processor", "acq-a", {"down": False}),
    ]
    assert [r.injected for r in records] == [True, False, True, True, False]
    assert records[1].note == "skipped: no standby"
    assert "no proxy" in records[4].note
    assert control.proxies[0, "s0"].mode == "forward"  # healed
