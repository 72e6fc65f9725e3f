"""A small cluster on this machine for chaos runs, and its ``ClusterControl``.

``LocalCluster`` starts, in a directory of its own:

- one throwaway PostgreSQL server (``paycore.tools.local_postgres``) with a database per shard
  (no standby: ``kill_primary`` is skipped here, the HA cluster does it);
- a ``redis-server`` (no persistence) for locks and leader election;
- two simulated acquirers (``paycore acquirer-sim``);
- a ``TcpProxy`` per (API node, shard), in this process, that the node's DSN points at,
  so that the nemesis can delay or cut one node's traffic to one shard;
- N ``paycore serve --config`` processes (each also runs the elected background jobs:
  relay, maintenance, payments), with short leases and resolver delays so that a chaos
  run of a minute sees them fail over and heal.

Two processes cannot share SQLite shards across a TCP proxy, and the cluster's backend is
PostgreSQL anyway, so this setup is PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from paycore.chaos.auditing import audit_lines
from paycore.chaos.nemesis import FaultKind, Targets
from paycore.chaos.tcpproxy import TcpProxy
from paycore.locks.testing import RedisServer, free_port
from paycore.payments.processors.simulator.process import SimulatorProcess
from paycore.tools.local_postgres import LocalPostgres

__all__ = ["LocalCluster"]

PROCESSORS = ("acq-a", "acq-b")
# Short enough that a minute's run sees leaders replaced and payments resolved.
NODE_SETTINGS: dict[str, Any] = {
    "leader_ttl_seconds": 2.0,
    "idempotency_lock_seconds": 3.0,
    "relay_interval_seconds": 0.2,
    "relay_lease_seconds": 4.0,
    "maintenance_interval_seconds": 0.5,
    "payment_worker_interval_seconds": 0.5,
    "payment_resolve_after_seconds": 4.0,
    "lock_timeout_seconds": 3.0,
}
RESILIENCE: dict[str, Any] = {
    "timeout": 1.0,
    "breaker": {
        "failure_rate_threshold": 50.0,
        "slow_call_rate_threshold": 100.0,
        "slow_call_duration": 2.0,
        "window_type": "count_based",
        "window_size": 20,
        "minimum_calls": 10,
        "wait_in_open": 1.0,
        "permitted_calls_in_half_open": 3,
    },
    "bulkhead": {"max_concurrent": 64, "max_wait": 0.0},
    "retry": {
        "attempts": 2,
        "deadline": 2.0,
        "wait_initial": 0.02,
        "wait_max": 0.1,
        "wait_jitter": 0.02,
    },
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class LocalCluster:
    """See the module docstring; ``await start()``, ``await stop()``; it is its own
    ``ClusterControl``."""

    # The tenant of the workload's key: its ids live in this tenant's namespace.
    api_key_tenant = "chaos"

    def __init__(self, root: Path, *, nodes: int = 2, shards: int = 2, seed: int = 0) -> None:
        self.root = root
        self.n_nodes = nodes
        self.shard_names = tuple(f"s{i}" for i in range(shards))
        self.seed = seed
        self.pg: LocalPostgres | None = None
        self.redis: RedisServer | None = None
        self.sims: dict[str, SimulatorProcess] = {}
        self.proxies: dict[tuple[int, str], TcpProxy] = {}
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes] | None] = []
        self.dsns: dict[str, str] = {}
        self._http = httpx.AsyncClient(timeout=5.0)
        self.api_key = ""

    # -- life ----------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Its own temporary directory (the postgres user must reach it when run as root),
        # deleted when it stops.
        self.pg = LocalPostgres(settings={"shared_buffers": "128MB"})
        await asyncio.to_thread(self.pg.start)
        for name in self.shard_names:
            self.dsns[name] = await asyncio.to_thread(self.pg.create_database, f"chaos_{name}")
        self.redis = RedisServer()
        await asyncio.to_thread(self.redis.start)
        for i, name in enumerate(PROCESSORS):
            self.sims[name] = SimulatorProcess.spawn(
                name,
                "--latency-ms",
                "5",
                "--jitter-ms",
                "10",
                "--hang-seconds",
                "3",
                "--seed",
                str(self.seed + i),
                log_path=self.root / f"{name}.log",
                log_level="warning",
            )
        await asyncio.gather(*(asyncio.to_thread(s.wait_ready, 30.0) for s in self.sims.values()))
        for node in range(self.n_nodes):
            for shard in self.shard_names:
                proxy = TcpProxy("127.0.0.1", self.pg.port)
                self.proxies[node, shard] = await proxy.start()
            self.ports.append(free_port())
            self._write_config(node)
            self.procs.append(None)
        for node in range(self.n_nodes):  # one at a time: the first applies the migrations
            await self.restart_api_node(node)
        self.api_key = await self._make_api_key()

    async def _make_api_key(self) -> str:
        """An admin key for tenant ``chaos`` (admin: the checker reads paycore's own
        accounts too), made in the shards directly, as ``paycore keys create`` does."""
        from paycore.api.auth import ApiKeys, Scope  # noqa: PLC0415
        from paycore.cluster.topology import build_store  # noqa: PLC0415
        from paycore.config import load_settings  # noqa: PLC0415

        store = build_store(load_settings(self.audit_config_path(), env={}))
        await store.start()
        try:
            new = await ApiKeys(store).create(self.api_key_tenant, frozenset({Scope.ADMIN}))
        finally:
            await store.stop()
        return new.token

    async def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait)
        for proxy in self.proxies.values():
            await proxy.stop()
        for sim in self.sims.values():
            await asyncio.to_thread(sim.stop, 3.0)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.close)
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
        await self._http.aclose()

    def config_path(self, node: int) -> Path:
        return self.root / f"node-{node}.toml"

    def audit_config_path(self) -> Path:
        """A config naming the shards directly (no proxy), for ``paycore audit``."""
        return self.root / "audit.toml"

    def _write_config(self, node: int) -> None:
        assert self.redis is not None
        lines = [
            f"host = {_toml('127.0.0.1')}",
            f"port = {self.ports[node]}",
            f"locks_url = {_toml(self.redis.url)}",
            f"data_dir = {_toml(str(self.root))}",
        ]
        lines += [f"{k} = {_toml(v)}" for k, v in NODE_SETTINGS.items()]
        routing = {
            "seed": self.seed,
            "default": {
                "strategy": "weighted_round_robin",
                "processors": [{"name": p, "weight": 1} for p in PROCESSORS],
            },
        }
        lines.append(f"routing = {_toml(routing)}")
        audit = list(lines)
        for shard in self.shard_names:
            proxy = self.proxies[node, shard]
            dsn = (
                f"host=127.0.0.1 port={proxy.port} user=postgres dbname=chaos_{shard} "
                "connect_timeout=2"
            )
            for target, text in ((lines, dsn), (audit, self.dsns[shard])):
                target += [
                    "",
                    "[[shards]]",
                    f"name = {_toml(shard)}",
                    'backend = "postgres"',
                    f"dsn = {_toml(text)}",
                ]
        for target in (lines, audit):
            for name, sim in self.sims.items():
                target += [
                    "",
                    "[[processors]]",
                    f"name = {_toml(name)}",
                    f"url = {_toml(sim.url)}",
                    "timeout_seconds = 2.0",
                    f"resilience = {_toml(RESILIENCE)}",
                ]
        self.config_path(node).write_text("\n".join(lines) + "\n")
        if node == 0:
            self.audit_config_path().write_text("\n".join(audit) + "\n")

    # -- ClusterControl ------------------------------------------------------------

    def api_nodes(self) -> Sequence[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def targets(self) -> Targets:
        return Targets(
            nodes=self.n_nodes,
            shards=self.shard_names,
            processes=tuple(f"node-{i}" for i in range(self.n_nodes)),
            processors=PROCESSORS,
        )

    def unsupported(self, kind: FaultKind) -> str | None:
        if kind is FaultKind.KILL_PRIMARY:
            return "the local setup has no standby to fail over to (the HA cluster does it)"
        return None

    async def kill_api_node(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def restart_api_node(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            return
        self.procs[index] = await asyncio.to_thread(self._spawn_node, index)
        await self._wait_ready(index)

    def _spawn_node(self, index: int) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "paycore.cli",
            "serve",
            "--config",
            str(self.config_path(index)),
            "--log-level",
            "warning",
        ]
        with (self.root / f"node-{index}.log").open("ab") as log:
            return subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    async def _wait_ready(self, index: int, within: float = 60.0) -> None:
        url = f"{self.api_nodes()[index]}/healthz"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            proc = self.procs[index]
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"API node {index} exited; see {self.root}/node-{index}.log")
            with contextlib.suppress(httpx.TransportError):
                if (await self._http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"API node {index} not ready in {within:.0f} s")

    async def kill_primary(self, shard: str) -> None:
        raise NotImplementedError(self.unsupported(FaultKind.KILL_PRIMARY))

    async def pause(self, process: str, seconds: float) -> None:
        proc = self.procs[int(process.removeprefix("node-"))]
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    async def restart_redis(self, down_for: float) -> None:
        assert self.redis is not None
        await asyncio.to_thread(self.redis.restart, down_for)

    async def set_processor(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.sims[name].url}/admin/config"
        before: dict[str, Any] = (await self._http.get(url)).json()
        response = await self._http.put(url, json=patch)
        response.raise_for_status()
        return before

    def proxy(self, node: int, shard: str) -> TcpProxy | None:
        return self.proxies.get((node, shard))

    async def audit(self) -> list[str] | None:
        """``paycore audit`` of the shards (straight to the databases), as text lines."""
        return await audit_lines(self.audit_config_path())
