"""Where a local cluster keeps its files, in one data directory.

<data_dir>/spec.json      the [cluster] spec of the first 'up' (later ups reuse it)
<data_dir>/ports.json     the port plan chosen then
<data_dir>/state.json     the supervisor's view: every process, pid, restarts
<data_dir>/node.toml      the API nodes' paycore settings
<data_dir>/api-key        an API key made at the first up (mode 600)
<data_dir>/etcd/  redis/  nginx/  s<k>-pg<m>/  logs/<process>.log
<data_dir>/hold/<process> present: the supervisor does not restart that process
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from paycore.tools.local_cluster.spec import ClusterSpec, PortPlan

__all__ = ["ClusterLayout", "write_private"]


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.json"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def node_config(self) -> Path:
        return self.root / "node.toml"

    @property
    def api_key_file(self) -> Path:
        """The operator's API key (tenant ``default``, every scope), mode 600."""
        return self.root / "api-key"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def hold_dir(self) -> Path:
        return self.root / "hold"

    def log(self, process: str) -> Path:
        return self.logs / f"{process}.log"

    def member_dir(self, shard: int, member: int) -> Path:
        return self.root / f"s{shard}-pg{member}"

    def load_spec(self) -> ClusterSpec:
        return msgspec.json.decode(self.spec_file.read_bytes(), type=ClusterSpec)

    def load_ports(self) -> PortPlan:
        return msgspec.json.decode(self.ports_file.read_bytes(), type=PortPlan)

    def exists(self) -> bool:
        return self.spec_file.exists() and self.ports_file.exists()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the moment it exists
    (a chmod after writing would leave a moment when others can read it), and made so
    if an older file was not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
