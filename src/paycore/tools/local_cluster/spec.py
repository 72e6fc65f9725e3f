"""What a local cluster is made of: one ``[cluster]`` TOML table, and its port plan.

Example (every key optional; the defaults give the issue's cluster: 2 shards of 2
PostgreSQL nodes each, 3 API nodes behind nginx, one Redis, one etcd, two simulated
acquirers)::

    [cluster]
    data_dir = "paycore-cluster"   # configs, data, logs and pid files of every process
    base_port = 0                  # 0: the first free range of ports from 20000 up
    shards = 2
    postgres_per_shard = 2         # 1 primary + N-1 streaming standbys (3 for HA+sync)
    api_nodes = 3
    balance = "round_robin"        # round_robin | weighted | least_conn | random_two
    weights = [1, 1, 1]            # with balance = "weighted"
    max_fails = 2                  # nginx passive health check, per fail_timeout
    fail_timeout_seconds = 5
    acquirers = ["sim-a", "sim-b"]
    synchronous_strict = false     # true: refuse writes while no standby is in sync

    [cluster.node]                 # any paycore setting for the API nodes
    leader_ttl_seconds = 2.0

Ports are assigned in a fixed order from ``base_port`` (see ``PortPlan``) and written to
the data directory at the first ``up``, so later commands find the same cluster.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "BALANCE_METHODS",
    "BalanceMethod",
    "ClusterSpec",
    "PortPlan",
    "load_cluster_spec",
]

BalanceMethod = Literal["round_robin", "weighted", "least_conn", "random_two"]
BALANCE_METHODS: tuple[BalanceMethod, ...] = ("round_robin", "weighted", "least_conn", "random_two")


class ClusterSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``[cluster]`` table."""

    data_dir: str = "paycore-cluster"
    base_port: Annotated[int, msgspec.Meta(ge=0, le=65000)] = 0
    shards: Annotated[int, msgspec.Meta(ge=1, le=16)] = 2
    postgres_per_shard: Annotated[int, msgspec.Meta(ge=1, le=5)] = 2
    api_nodes: Annotated[int, msgspec.Meta(ge=1, le=16)] = 3
    balance: BalanceMethod = "round_robin"
    weights: tuple[Annotated[int, msgspec.Meta(ge=1, le=100)], ...] = ()
    max_fails: Annotated[int, msgspec.Meta(ge=0, le=100)] = 2
    fail_timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 5
    acquirers: tuple[str, ...] = ("sim-a", "sim-b")
    synchronous_strict: bool = False
    # Patroni's timing: the leader key's TTL (Patroni's minimum is 20), its loop period,
    # and how long it retries etcd/PostgreSQL before demoting itself.
    patroni_ttl_seconds: Annotated[int, msgspec.Meta(ge=20, le=300)] = 20
    patroni_loop_wait_seconds: Annotated[int, msgspec.Meta(ge=1, le=60)] = 1
    patroni_retry_timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5
    tools_dir: str | None = None
    node: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.balance == "weighted" and self.weights and len(self.weights) != self.api_nodes:
            raise ValueError(
                f"weights has {len(self.weights)} entries for {self.api_nodes} API nodes"
            )
        if (
            self.patroni_loop_wait_seconds + 2 * self.patroni_retry_timeout_seconds
            > self.patroni_ttl_seconds
        ):
            raise ValueError("Patroni needs loop_wait + 2 * retry_timeout <= ttl")
        if not self.acquirers:
            raise ValueError("acquirers: at least one simulated acquirer")


def load_cluster_spec(path: Path | None, **overrides: Any) -> ClusterSpec:
    """The spec from ``path``'s ``[cluster]`` table (no file: the defaults), then overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as file:
            raw = dict(tomllib.load(file).get("cluster", {}))
        # A relative data_dir is relative to the config file, as a deploy would expect.
        if "data_dir" in raw and not Path(raw["data_dir"]).is_absolute():
            raw["data_dir"] = str(path.parent / raw["data_dir"])
    raw.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return msgspec.convert(raw, ClusterSpec)
    except (msgspec.ValidationError, ValueError) as error:
        raise ValueError(f"[cluster]: {error}") from error


class PortPlan(msgspec.Struct, frozen=True):
    """Every listening port of the cluster, from one base, in a fixed order."""

    etcd_client: int
    etcd_peer: int
    redis: int
    nginx: int
    acquirers: tuple[int, ...]
    api: tuple[int, ...]
    # postgres[shard][member] and patroni_rest[shard][member]
    postgres: tuple[tuple[int, ...], ...]
    patroni_rest: tuple[tuple[int, ...], ...]

    @staticmethod
    def count(spec: ClusterSpec) -> int:
        return 4 + len(spec.acquirers) + spec.api_nodes + 2 * spec.shards * spec.postgres_per_shard

    @classmethod
    def from_base(cls, spec: ClusterSpec, base: int) -> PortPlan:
        ports = iter(range(base, base + cls.count(spec)))
        etcd_client, etcd_peer, redis, nginx = next(ports), next(ports), next(ports), next(ports)
        acquirers = tuple(next(ports) for _ in spec.acquirers)
        api = tuple(next(ports) for _ in range(spec.api_nodes))
        n = spec.postgres_per_shard
        postgres = tuple(tuple(next(ports) for _ in range(n)) for _ in range(spec.shards))
        rest = tuple(tuple(next(ports) for _ in range(n)) for _ in range(spec.shards))
        return cls(etcd_client, etcd_peer, redis, nginx, acquirers, api, postgres, rest)

    def all(self) -> list[int]:
        """Every port of the plan."""
        return [
            self.etcd_client, self.etcd_peer, self.redis, self.nginx, *self.acquirers,
            *self.api, *(p for shard in self.postgres for p in shard),
            *(p for shard in self.patroni_rest for p in shard),
        ]  # fmt: skip

    @classmethod
    def allocate(cls, spec: ClusterSpec) -> PortPlan:
        """The spec's ``base_port`` range, or the first free one from 20000 up."""
        count = cls.count(spec)
        if spec.base_port:
            busy = [p for p in range(spec.base_port, spec.base_port + count) if not _free(p)]
            if busy:
                raise ValueError(f"ports in use in the configured range: {busy}")
            return cls.from_base(spec, spec.base_port)
        for base in range(20000, 60000, 100):
            if all(_free(port) for port in range(base, base + count)):
                return cls.from_base(spec, base)
        raise ValueError(f"no free range of {count} ports between 20000 and 60000")


def port_free(port: int) -> bool:
    """Nothing listens on (or holds) 127.0.0.1:``port``."""
    return _free(port)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
