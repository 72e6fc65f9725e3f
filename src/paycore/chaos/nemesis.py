"""The nemesis: faults as data, a seeded schedule of them, and an executor.

``FaultKind`` names what can go wrong; a ``Fault`` is one of them at a time offset, for a
duration, on a target. ``make_schedule`` draws a schedule from a seed (the same seed and
targets give the same schedule), one fault at a time with quiet gaps between, none in the
run's last stretch (so that the end shows the system healing). ``Nemesis`` plays a schedule
against a ``ClusterControl`` (what the lead's ``paycore cluster`` and ``LocalControl``
implement), healing each fault when its duration is over, and records what it did.

Faults and what heals them:

| kind | does | heals |
|---|---|---|
| ``kill_api_node`` | SIGKILL an API node | restart it |
| ``kill_primary`` | SIGKILL a shard's PostgreSQL primary (failover) | the cluster's own failover |
| ``pause_process`` | SIGSTOP a process (longer than a lock lease) | SIGCONT |
| ``restart_redis`` | kill Redis (no persistence) | start it again |
| ``processor_down`` | a simulator answers 503 to everything | up again |
| ``processor_slow`` | a simulator answers after ``latency_ms`` | its former latency |
| ``net_latency`` | node -> shard traffic delayed by ``latency_ms`` | latency 0 |
| ``net_partition`` | node -> shard connections cut, new ones refused | forwarding again |
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import msgspec

from paycore.chaos.tcpproxy import TcpProxy

__all__ = [
    "ClusterControl",
    "Fault",
    "FaultKind",
    "FaultRecord",
    "Nemesis",
    "Targets",
    "make_schedule",
]

log = logging.getLogger(__name__)


class FaultKind(StrEnum):
    KILL_API_NODE = "kill_api_node"
    KILL_PRIMARY = "kill_primary"
    PAUSE_PROCESS = "pause_process"
    RESTART_REDIS = "restart_redis"
    PROCESSOR_DOWN = "processor_down"
    PROCESSOR_SLOW = "processor_slow"
    NET_LATENCY = "net_latency"
    NET_PARTITION = "net_partition"


class Fault(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fault: ``kind`` at ``at`` seconds from the start, for ``duration`` seconds."""

    kind: FaultKind
    at: float
    duration: float
    node: int | None = None  # API node index (kill, net faults)
    shard: str | None = None  # shard name (kill_primary, net faults)
    process: str | None = None  # pause_process
    processor: str | None = None  # processor faults
    latency_ms: float | None = None  # processor_slow, net_latency


class FaultRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the nemesis did: the fault, when (monotonic and wall), and a note if skipped
    or failed."""

    fault: Fault
    start_mono: float
    start_wall: float
    end_mono: float = 0.0
    end_wall: float = 0.0
    injected: bool = False
    note: str = ""


class Targets(msgspec.Struct, frozen=True, kw_only=True):
    """What faults may hit: API nodes (count), shards, processes, processors."""

    nodes: int
    shards: tuple[str, ...]
    processes: tuple[str, ...]
    processors: tuple[str, ...]


@runtime_checkable
class ClusterControl(Protocol):
    """How the nemesis acts on a running cluster. ``unsupported(kind)`` says why a kind
    cannot be done here (None: it can); the executor skips such faults with that note."""

    def api_nodes(self) -> Sequence[str]:
        """Base URLs of the API nodes, in index order (each one a node to kill)."""
        ...

    def targets(self) -> Targets: ...

    def auth_headers(self) -> dict[str, str]:
        """What every request carries to be let in (an admin API key: the checker reads
        paycore's own clearing and processor accounts too)."""
        ...

    def unsupported(self, kind: FaultKind) -> str | None: ...

    async def kill_api_node(self, index: int) -> None: ...

    async def restart_api_node(self, index: int) -> None: ...

    async def kill_primary(self, shard: str) -> None: ...

    async def pause(self, process: str, seconds: float) -> None:
        """SIGSTOP ``process``, wait ``seconds``, SIGCONT it."""
        ...

    async def restart_redis(self, down_for: float) -> None:
        """Kill Redis, keep it down ``down_for`` seconds, start it again."""
        ...

    async def set_processor(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """``PUT /admin/config`` on simulator ``name``; its config before the change."""
        ...

    def proxy(self, node: int, shard: str) -> TcpProxy | None:
        """The TCP proxy between API node ``node`` and ``shard`` (None: there is none)."""
        ...

    async def audit(self) -> list[str] | None:
        """``paycore audit`` of the store, one line per violation (None: no DB access)."""
        ...


# How long each kind lasts (seconds, drawn uniformly) and its latency where it has one.
_DURATION: dict[FaultKind, tuple[float, float]] = {
    FaultKind.KILL_API_NODE: (2.0, 5.0),
    FaultKind.KILL_PRIMARY: (5.0, 10.0),
    FaultKind.PAUSE_PROCESS: (4.0, 7.0),  # above the chaos setup's 2 s leases
    FaultKind.RESTART_REDIS: (1.0, 4.0),
    FaultKind.PROCESSOR_DOWN: (2.0, 6.0),
    FaultKind.PROCESSOR_SLOW: (2.0, 6.0),
    FaultKind.NET_LATENCY: (2.0, 6.0),
    FaultKind.NET_PARTITION: (1.0, 4.0),
}


def make_schedule(
    seed: int,
    duration: float,
    kinds: Sequence[FaultKind],
    targets: Targets,
    *,
    gap: tuple[float, float] = (1.0, 3.0),
    quiet_tail: float = 3.0,
    lead_in: float = 2.0,
) -> list[Fault]:
    """A schedule of faults over ``duration`` seconds (see the module docstring): kinds
    taken in a seeded shuffled rotation, so that every kind comes up before any repeats."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    if not kinds:
        return []
    faults: list[Fault] = []
    order: list[FaultKind] = []
    t = lead_in
    end = duration - quiet_tail
    while True:
        if not order:
            order = list(dict.fromkeys(kinds))
            rng.shuffle(order)
        kind = order.pop()
        lo, hi = _DURATION[kind]
        length = round(rng.uniform(lo, hi), 2)
        if t + length > end:
            break
        faults.append(_fault(rng, kind, round(t, 2), length, targets))
        t += length + rng.uniform(*gap)
    return faults


def _fault(rng: random.Random, kind: FaultKind, at: float, length: float, t: Targets) -> Fault:
    node = rng.randrange(t.nodes) if t.nodes else None
    shard = rng.choice(t.shards) if t.shards else None
    if kind is FaultKind.KILL_API_NODE:
        return Fault(kind=kind, at=at, duration=length, node=node)
    if kind is FaultKind.KILL_PRIMARY:
        return Fault(kind=kind, at=at, duration=length, shard=shard)
    if kind is FaultKind.PAUSE_PROCESS:
        process = rng.choice(t.processes) if t.processes else None
        return Fault(kind=kind, at=at, duration=length, process=process)
    if kind is FaultKind.RESTART_REDIS:
        return Fault(kind=kind, at=at, duration=length)
    processor = rng.choice(t.processors) if t.processors else None
    if kind is FaultKind.PROCESSOR_DOWN:
        return Fault(kind=kind, at=at, duration=length, processor=processor)
    if kind is FaultKind.PROCESSOR_SLOW:
        latency = float(rng.choice([800, 1500, 3000]))
        return Fault(kind=kind, at=at, duration=length, processor=processor, latency_ms=latency)
    if kind is FaultKind.NET_LATENCY:
        latency = float(rng.choice([50, 200, 500]))
        return Fault(kind=kind, at=at, duration=length, node=node, shard=shard, latency_ms=latency)
    return Fault(kind=kind, at=at, duration=length, node=node, shard=shard)


class Nemesis:
    """Plays a schedule against a ``ClusterControl`` (see the module docstring)."""

    def __init__(self, control: ClusterControl, schedule: Sequence[Fault]) -> None:
        self.control = control
        self.schedule = list(schedule)
        self.records: list[FaultRecord] = []

    async def run(self, t0: float) -> list[FaultRecord]:
        """Inject each fault at ``t0 + fault.at`` (monotonic), heal it after its duration;
        cancelled, it heals the fault in progress first."""
        for fault in self.schedule:
            wait = t0 + fault.at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            record = FaultRecord(fault=fault, start_mono=time.monotonic(), start_wall=time.time())
            self.records.append(record)
            reason = self.control.unsupported(fault.kind)
            if reason is not None:
                record.note = f"skipped: {reason}"
            else:
                try:
                    await asyncio.shield(self._play(fault, record))
                except Exception as exc:  # noqa: BLE001 - a failed fault is recorded, not fatal
                    record.note = f"failed: {type(exc).__name__}: {exc}"
                    log.warning("fault %s failed: %s", fault.kind, exc)
            record.end_mono, record.end_wall = time.monotonic(), time.time()
        return self.records

    async def _play(self, fault: Fault, record: FaultRecord) -> None:
        c, kind = self.control, fault.kind
        if kind is FaultKind.KILL_API_NODE:
            assert fault.node is not None
            await c.kill_api_node(fault.node)
            record.injected = True
            await asyncio.sleep(fault.duration)
            await c.restart_api_node(fault.node)
        elif kind is FaultKind.KILL_PRIMARY:
            assert fault.shard is not None
            await c.kill_primary(fault.shard)
            record.injected = True
            await asyncio.sleep(fault.duration)
        elif kind is FaultKind.PAUSE_PROCESS:
            assert fault.process is not None
            record.injected = True
            await c.pause(fault.process, fault.duration)
        elif kind is FaultKind.RESTART_REDIS:
            record.injected = True
            await c.restart_redis(fault.duration)
        elif kind in (FaultKind.PROCESSOR_DOWN, FaultKind.PROCESSOR_SLOW):
            assert fault.processor is not None
            patch: dict[str, Any] = (
                {"down": True}
                if kind is FaultKind.PROCESSOR_DOWN
                else {"latency": {"kind": "fixed", "ms": fault.latency_ms}}
            )
            before = await c.set_processor(fault.processor, patch)
            record.injected = True
            await asyncio.sleep(fault.duration)
            await c.set_processor(fault.processor, {k: before[k] for k in patch if k in before})
        else:
            assert fault.node is not None
            assert fault.shard is not None
            proxy = c.proxy(fault.node, fault.shard)
            if proxy is None:
                record.note = "skipped: no proxy between that node and shard"
                return
            if kind is FaultKind.NET_LATENCY:
                proxy.set_latency((fault.latency_ms or 0.0) / 1000.0)
            else:
                proxy.cut()
            record.injected = True
            try:
                await asyncio.sleep(fault.duration)
            finally:
                proxy.restore()
