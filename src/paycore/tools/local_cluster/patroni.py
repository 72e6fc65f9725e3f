"""Patroni: the configuration of one PostgreSQL member, and what its REST API says.

Why Patroni (docs/ha.md has the longer answer): it keeps the leader in a consensus
store (etcd here), so a partitioned old primary demotes itself when it cannot renew the
leader key; its ``synchronous_mode`` only ever promotes a standby that was in sync, so a
commit that was acknowledged survives the failover; and it rejoins a failed primary as
a standby with ``pg_rewind``. pg_auto_failover was the alternative: its monitor is one
more PostgreSQL to keep highly available, and its extension must be installed into the
server's own tree.

The file is JSON, which is YAML too: no YAML writer needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from paycore.tools.local_cluster.layout import write_private
from paycore.tools.local_cluster.spec import ClusterSpec, PortPlan

__all__ = [
    "DATABASE",
    "MemberStatus",
    "ShardStatus",
    "member_name",
    "patroni_config",
    "scope",
    "shard_status",
]

# The database every shard's ledger lives in (created on the leader after bootstrap).
DATABASE = "paycore"

# The server settings of every member. Durability is the production one: an
# acknowledged commit is flushed here and (synchronous_commit=on with a synchronous
# standby) on the standby before the client hears of it.
_PARAMETERS: Mapping[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "wal_log_hints": "on",  # pg_rewind needs it (or data checksums) to rejoin an old primary
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "256MB",
    "synchronous_commit": "on",
    "fsync": "on",
    "full_page_writes": "on",
    "max_connections": 200,
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    # A node frozen mid-transaction (SIGSTOP, a stalled VM, a GC pause) would keep its
    # shard's write turn (the shard_meta row lock) for as long as it is frozen, and every
    # other node's writes to that shard would wait. A writer's transaction is never idle
    # for more than milliseconds, so after 3 s the server ends the frozen one: its
    # request fails (the client retries with its key) and the shard writes again.
    "idle_in_transaction_session_timeout": "3s",
}


def scope(shard: int) -> str:
    """The Patroni cluster (one per shard) of ``shard``."""
    return f"paycore-s{shard}"


def member_name(shard: int, member: int) -> str:
    return f"s{shard}-pg{member}"


def patroni_config(
    spec: ClusterSpec,
    ports: PortPlan,
    *,
    shard: int,
    member: int,
    member_dir: Path,
    bindir: Path,
) -> dict[str, Any]:
    """The Patroni configuration of ``member`` of ``shard`` (its files live in member_dir)."""
    pg_port = ports.postgres[shard][member]
    rest_port = ports.patroni_rest[shard][member]
    return {
        "scope": scope(shard),
        "namespace": "/paycore/",
        "name": member_name(shard, member),
        "log": {"level": "WARNING"},
        "restapi": {
            "listen": f"127.0.0.1:{rest_port}",
            "connect_address": f"127.0.0.1:{rest_port}",
        },
        "etcd3": {"hosts": [f"127.0.0.1:{ports.etcd_client}"]},
        "bootstrap": {
            "dcs": {
                "ttl": spec.patroni_ttl_seconds,
                "loop_wait": spec.patroni_loop_wait_seconds,
                "retry_timeout": spec.patroni_retry_timeout_seconds,
                # A primary whose PostgreSQL crashed is failed over at once rather than
                # restarted in place (300 s by default): the standby is in sync.
                "primary_start_timeout": 0,
                "synchronous_mode": spec.postgres_per_shard > 1,
                # false: with its standby gone the primary keeps accepting writes (then
                # on one machine only); true: it refuses them until a standby is back.
                "synchronous_mode_strict": spec.synchronous_strict,
                "synchronous_node_count": 1,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": dict(_PARAMETERS),
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": str(member_dir / "data"),
            "bin_dir": str(bindir),
            "pgpass": str(member_dir / "pgpass"),
            # Loopback only, trusted: a local cluster. docs/ha.md shows the
            # scram-sha-256 setup for machines that talk over a network.
            "authentication": {
                "superuser": {"username": "postgres", "password": "postgres"},
                "replication": {"username": "replicator", "password": "replicator"},
                "rewind": {"username": "postgres", "password": "postgres"},
            },
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
            "parameters": {"unix_socket_directories": str(member_dir)},
        },
    }


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    """Write ``config`` readable by its owner only (it names the database's users)."""
    write_private(path, json.dumps(config, indent=2) + "\n")


class MemberStatus:
    """One member as its shard's Patroni cluster reports it."""

    __slots__ = ("lag", "name", "port", "role", "state", "timeline")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.name = str(raw.get("name", "?"))
        self.role = str(raw.get("role", "?"))
        self.state = str(raw.get("state", "?"))
        lag = raw.get("lag", raw.get("receive_lag"))
        self.lag: int | None = lag if isinstance(lag, int) else None
        timeline = raw.get("timeline")
        self.timeline: int | None = timeline if isinstance(timeline, int) else None
        port = raw.get("port")
        self.port: int | None = port if isinstance(port, int) else None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "lag_bytes": self.lag,
            "timeline": self.timeline,
            "port": self.port,
        }


class ShardStatus:
    """A shard's members, its leader, and which member answered (None: none did)."""

    __slots__ = ("members", "shard", "source")

    def __init__(self, shard: int, members: list[MemberStatus], source: int | None) -> None:
        self.shard = shard
        self.members = members
        self.source = source

    @property
    def leader(self) -> MemberStatus | None:
        return next((m for m in self.members if m.role in ("leader", "master")), None)

    def as_dict(self) -> dict[str, object]:
        leader = self.leader
        return {
            "shard": self.shard,
            "leader": leader.name if leader else None,
            "members": [m.as_dict() for m in self.members],
        }


def shard_status(ports: PortPlan, shard: int, *, timeout: float = 2.0) -> ShardStatus:
    """``GET /cluster`` from the first member of ``shard`` that answers."""
    for rest_port in ports.patroni_rest[shard]:
        try:
            answer = httpx.get(f"http://127.0.0.1:{rest_port}/cluster", timeout=timeout)
            answer.raise_for_status()
            members = [MemberStatus(m) for m in answer.json().get("members", [])]
        except (httpx.HTTPError, ValueError):
            continue
        return ShardStatus(shard, members, rest_port)
    return ShardStatus(shard, [], None)
