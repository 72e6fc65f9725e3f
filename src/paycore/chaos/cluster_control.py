"""The nemesis's hands on a ``paycore cluster`` (Patroni/etcd PostgreSQL, Redis, nginx).

The workload goes through nginx, as real clients do; faults act on the supervised
processes by name. A killed API node or Redis is held down (the supervisor would
otherwise start it again at once) and released when the fault heals; a killed primary
PostgreSQL is healed by Patroni's failover, never by us. The cluster's nodes reach
PostgreSQL directly, so the TCP-proxy faults (latency, partitions) are the local
setup's (``paycore.chaos.local``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import httpx

from paycore.chaos.auditing import audit_lines
from paycore.chaos.nemesis import FaultKind, Targets
from paycore.chaos.tcpproxy import TcpProxy
from paycore.chaos.workload import Topology
from paycore.tools.local_cluster.control import LocalCluster, process_alive

__all__ = ["HaClusterControl"]


class HaClusterControl:
    """``ClusterControl`` over the running cluster of one data directory."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.spec = cluster.spec
        self._http = httpx.AsyncClient(timeout=5.0)

    async def aclose(self) -> None:
        """Release every hold this run may have left (a fault cut short by an error),
        so the supervisor brings those processes back."""
        for name in (*(f"api-{i}" for i in range(self.spec.api_nodes)), "redis"):
            self.cluster.release(name)
        await self._http.aclose()

    def topology(self) -> Topology:
        return Topology(
            shards=tuple(f"s{k}" for k in range(self.spec.shards)),
            processors=tuple(self.spec.acquirers),
        )

    # -- ClusterControl ------------------------------------------------------------

    def api_nodes(self) -> Sequence[str]:
        return [self.cluster.url]  # nginx: every request as a client sends it

    def auth_headers(self) -> dict[str, str]:
        return self.cluster.headers

    def targets(self) -> Targets:
        nodes = tuple(f"api-{i}" for i in range(self.spec.api_nodes))
        return Targets(
            nodes=self.spec.api_nodes,
            shards=self.topology().shards,
            processes=nodes,
            processors=tuple(self.spec.acquirers),
        )

    def unsupported(self, kind: FaultKind) -> str | None:
        if kind in (FaultKind.NET_LATENCY, FaultKind.NET_PARTITION):
            return "the cluster's nodes reach PostgreSQL directly (the local setup has proxies)"
        if kind is FaultKind.KILL_PRIMARY and self.spec.postgres_per_shard < 2:
            return "no standby to fail over to (postgres_per_shard = 1)"
        return None

    async def kill_api_node(self, index: int) -> None:
        name = f"api-{index}"
        self.cluster.hold(name)
        with contextlib.suppress(ProcessLookupError, KeyError):
            self.cluster.kill(name)

    async def restart_api_node(self, index: int) -> None:
        name = f"api-{index}"
        self.cluster.release(name)
        await self._wait_ready(self.cluster.api_urls[index])

    async def _wait_ready(self, url: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await self._http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{url} not ready within {within:g} s")

    async def kill_primary(self, shard: str) -> None:
        await asyncio.to_thread(self.cluster.kill_primary_postgres, int(shard.removeprefix("s")))

    async def pause(self, process: str, seconds: float) -> None:
        pid = int(self.cluster.process(process)["pid"])
        if not process_alive(pid):
            return
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    async def restart_redis(self, down_for: float) -> None:
        self.cluster.hold("redis")
        try:
            pid = self.cluster.kill("redis")
            await asyncio.sleep(down_for)
        finally:
            self.cluster.release("redis")
        await asyncio.to_thread(self.cluster.wait_restarted, "redis", pid, 30.0)

    async def set_processor(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        port = self.cluster.ports.acquirers[self.spec.acquirers.index(name)]
        url = f"http://127.0.0.1:{port}/admin/config"
        before: dict[str, Any] = (await self._http.get(url)).json()
        (await self._http.put(url, json=patch)).raise_for_status()
        return before

    def proxy(self, node: int, shard: str) -> TcpProxy | None:
        return None

    async def audit(self) -> list[str] | None:
        return await audit_lines(self.cluster.layout.node_config)
