"""One real HA cluster per test session: Patroni/etcd PostgreSQL, Redis, nginx, API nodes.

The programs come from ``paycore cluster tools install`` (Debian's nginx and etcd
unpacked, Patroni from PyPI), run here explicitly because the suite must start every
server it needs on a fresh machine; ``paycore cluster up`` itself installs nothing.
The cluster runs in a temporary directory on free ports and is stopped afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from paycore.chaos.local import NODE_SETTINGS
from paycore.tools.local_cluster.control import LocalCluster
from paycore.tools.local_cluster.spec import ClusterSpec
from paycore.tools.local_cluster.toolbox import default_tools_dir, install_tools


@pytest.fixture(scope="session")
def tools_dir() -> Path:
    return install_tools(default_tools_dir(), say=lambda m: print(f"[cluster tools] {m}"))


@pytest.fixture(scope="session")
def ha_cluster(tools_dir: Path) -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="paycore-ha-"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user under root
    cluster = LocalCluster(root / "cluster")
    # The chaos setup's node timings (short leases, quick payment resolution), so that a
    # chaos run's faults heal within its bounds.
    spec = ClusterSpec(
        data_dir=str(cluster.layout.root), tools_dir=str(tools_dir), node=dict(NODE_SETTINGS)
    )
    try:
        # watch_parent: if this test run is killed, the cluster stops by itself.
        cluster.up(spec, timeout=240, watch_parent=True)
        yield cluster
    finally:
        cluster.down(timeout=90, purge=True)
        shutil.rmtree(root, ignore_errors=True)
