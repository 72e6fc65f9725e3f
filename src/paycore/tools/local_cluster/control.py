"""A local cluster as an object: bring it up and down, look at it, and break parts of it.

``paycore cluster up|down|status`` are thin commands over this; the HA tests and the
chaos nemesis use the same methods to kill a primary, an API node or Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from paycore.tools.local_cluster.layout import ClusterLayout
from paycore.tools.local_cluster.patroni import ShardStatus, shard_status
from paycore.tools.local_cluster.runtime import pid_exists, postmaster_pid, start_time
from paycore.tools.local_cluster.spec import ClusterSpec, PortPlan, port_free
from paycore.tools.local_cluster.toolbox import Toolbox, ToolMissingError

__all__ = ["ClusterStartError", "LocalCluster", "process_alive", "supervisor_alive"]


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message has the reason and the log to read."""


class LocalCluster:
    """The cluster whose files are in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.layout = ClusterLayout(data_dir.resolve())
        # The supervisor this object started (kept to reap it; it outlives a CLI 'up').
        self._launched: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def prepare(self, spec: ClusterSpec) -> tuple[ClusterSpec, PortPlan]:
        """Write the spec and port plan at the first up (after checking that the cluster
        can start here); later ups keep the stored ones, whose ports must be free."""
        root = self.layout.root
        if self.layout.exists():
            spec, ports = self.layout.load_spec(), self.layout.load_ports()
            busy = [p for p in ports.all() if not _free(p)]
            if busy:
                raise ClusterStartError(
                    f"ports of this cluster are in use by other processes: {busy}"
                )
            return spec, ports
        root.mkdir(parents=True, exist_ok=True)
        # The postgres user (under root) must be able to enter it.
        root.chmod(0o755)
        problems = self.check(spec)
        if problems:
            raise ToolMissingError("\n".join(problems))
        ports = PortPlan.allocate(spec)
        self.layout.spec_file.write_bytes(msgspec.json.encode(spec))
        self.layout.ports_file.write_bytes(msgspec.json.encode(ports))
        return spec, ports

    def check(self, spec: ClusterSpec) -> list[str]:
        """What stops this cluster from starting here (missing programs, permissions)."""
        toolbox = Toolbox(Path(spec.tools_dir) if spec.tools_dir else None)
        problems = toolbox.missing()
        if os.geteuid() == 0 and shutil.which("runuser"):
            probe = subprocess.run(  # noqa: S603
                [
                    shutil.which("runuser") or "runuser",
                    "-u",
                    "postgres",
                    "--",
                    "test",
                    "-x",
                    str(self.layout.root),
                ],
                check=False,
            )
            if probe.returncode != 0:
                problems.append(
                    f"the postgres user cannot enter {self.layout.root} (PostgreSQL runs as "
                    "that user under root): choose a data_dir outside directories only root "
                    "may enter, e.g. under /var/tmp"
                )
        return problems

    def up(
        self,
        spec: ClusterSpec,
        *,
        timeout: float = 300.0,
        progress: Callable[[str], None] | None = None,
        watch_parent: bool = False,
    ) -> dict[str, Any]:
        """Start the cluster's supervisor and wait until it says running; the state.

        ``watch_parent``: the cluster stops by itself when this process exits (tests);
        otherwise it outlives the command that started it."""
        state = self.state()
        if (
            state is not None
            and supervisor_alive(state)
            and state.get("status")
            not in (
                "starting",
                "running",
            )
        ):
            # A supervisor still stopping (or failing): let it finish before a new one.
            _wait_gone(state.get("supervisor_pid"), 120.0)
            state = self.state()
        if (
            state is not None
            and state.get("status") in ("starting", "running")
            and supervisor_alive(state)
        ):
            if state["status"] == "running":
                return state
        else:
            # Whatever a dead supervisor left running would hold the ports.
            self._stop_leftovers(state or {})
            spec, _ = self.prepare(spec)
            problems = self.check(spec)
            if problems:
                raise ToolMissingError("\n".join(problems))
            self.layout.logs.mkdir(exist_ok=True)
            self.layout.state_file.unlink(missing_ok=True)
            log = self.layout.log("supervisor").open("ab")
            self._launched = subprocess.Popen(  # noqa: S603 - our own module
                [
                    sys.executable,
                    "-m",
                    "paycore.tools.local_cluster.runtime",
                    str(self.layout.root),
                    *(["--watch-pid", str(os.getpid())] if watch_parent else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.layout.root,
            )
            log.close()
        deadline = time.monotonic() + timeout
        last_seen = ""
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None:
                status = state.get("status")
                started = ", ".join(p["name"] for p in state.get("processes", []) if p["alive"])
                if progress is not None and started != last_seen:
                    progress(f"{status}: {started}")
                    last_seen = started
                if status == "running":
                    return state
                if status in ("failed", "stopped"):
                    raise ClusterStartError(
                        f"cluster {status}: {state.get('reason')} (logs in {self.layout.logs})"
                    )
                if not supervisor_alive(state):
                    raise ClusterStartError(
                        f"the supervisor died; see {self.layout.log('supervisor')}"
                    )
            time.sleep(0.3)
        raise ClusterStartError(f"not running after {timeout:g} s; logs in {self.layout.logs}")

    def add_shard(
        self, *, timeout: float = 300.0, progress: Callable[[str], None] | None = None
    ) -> int:
        """Start one more shard (a Patroni group of ``postgres_per_shard`` members on free
        ports) in the running cluster: the spec and port plan grow, the supervisor starts
        it, migrates it and restarts the API nodes one at a time so that they know it
        (``ClusterRuntime._add_shards``). Returns its index (``s<index>`` in the nodes'
        settings); it holds no slot until ``paycore shards add`` moves it its share."""
        state = self.state()
        if state is None or state.get("status") != "running" or not supervisor_alive(state):
            raise ClusterStartError(f"no running cluster in {self.layout.root}")
        spec, ports = self.layout.load_spec(), self.layout.load_ports()
        grown = msgspec.structs.replace(spec, shards=spec.shards + 1)
        taken = set(ports.all())
        fresh = [p for p in range(max(taken) + 1, 65000) if p not in taken and _free(p)]
        n = spec.postgres_per_shard
        if len(fresh) < 2 * n:
            raise ClusterStartError("no free ports for the new shard")
        ports = msgspec.structs.replace(
            ports,
            postgres=(*ports.postgres, tuple(fresh[:n])),
            patroni_rest=(*ports.patroni_rest, tuple(fresh[n : 2 * n])),
        )
        self.layout.ports_file.write_bytes(msgspec.json.encode(ports))
        self.layout.spec_file.write_bytes(msgspec.json.encode(grown))
        os.kill(int(state["supervisor_pid"]), signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.state() or {}
            if progress is not None and now.get("status") != last:
                last = str(now.get("status"))
                progress(last)
            if now.get("shards") == grown.shards and now.get("status") == "running":
                return grown.shards - 1
            reason = str(now.get("reason") or "")
            if reason.startswith("add-shard failed") or not supervisor_alive(now):
                raise ClusterStartError(reason or "the supervisor died")
        raise ClusterStartError(
            f"shard not started after {timeout:g} s; logs in {self.layout.logs}"
        )

    def holds_cluster(self) -> bool:
        """The directory is a cluster's (made by ``up``), not just any directory."""
        return self.layout.exists() or self.layout.state_file.exists()

    def down(self, *, timeout: float = 120.0, purge: bool = False) -> bool:
        """Stop every process (the supervisor does it in order); whether any was running.
        ``purge``: also delete the data, only of a directory that holds a cluster."""
        state = self.state() or {}
        running = supervisor_alive(state)
        if running:
            pid = state["supervisor_pid"]
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        if self._launched is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._launched.wait(timeout=1.0)
        running = self._stop_leftovers(state) or running
        if purge and self.holds_cluster():
            shutil.rmtree(self.layout.root)
        return running

    def _stop_leftovers(self, state: dict[str, Any]) -> bool:
        """Stop what a killed (or unfinished) supervisor left behind: only the processes
        it recorded, recognised by pid *and* start time (a pid alone may be reused);
        whether there was any."""
        found = False
        for process in state.get("processes", []):
            if process_alive(process.get("pid"), process.get("start_time")):
                _terminate(process["pid"])
                found = True
        if self.layout.exists():
            spec = self.layout.load_spec()
            for shard in range(spec.shards):
                for member in range(spec.postgres_per_shard):
                    orphan = postmaster_pid(self.layout.member_dir(shard, member))
                    if orphan is not None:
                        _terminate(orphan, signal.SIGINT)
                        found = True
        return found

    # -- looking -------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return None
        return loaded

    @property
    def spec(self) -> ClusterSpec:
        return self.layout.load_spec()

    @property
    def ports(self) -> PortPlan:
        return self.layout.load_ports()

    @property
    def url(self) -> str:
        """The cluster's front door: nginx."""
        return f"http://127.0.0.1:{self.ports.nginx}"

    @property
    def api_key(self) -> str:
        """The operator key made at the first up (tenant ``default``, every scope)."""
        return self.layout.api_key_file.read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports.api]

    def process(self, name: str) -> dict[str, Any]:
        for process in (self.state() or {}).get("processes", []):
            if process["name"] == name:
                return dict(process)
        raise KeyError(name)

    def shard(self, shard: int) -> ShardStatus:
        return shard_status(self.ports, shard)

    def primary_member(self, shard: int) -> int | None:
        """The member index of ``shard``'s current leader (None: no leader now)."""
        leader = self.shard(shard).leader
        if leader is None or leader.port is None:
            return None
        return self.ports.postgres[shard].index(leader.port)

    # -- breaking ------------------------------------------------------------------

    def kill(self, name: str, signum: int = signal.SIGKILL) -> int:
        """Signal a supervised process by name; its pid."""
        pid = int(self.process(name)["pid"])
        os.kill(pid, signum)
        return pid

    def kill_primary_postgres(self, shard: int) -> tuple[int, int]:
        """SIGKILL the PostgreSQL server (postmaster) of ``shard``'s primary.

        Returns (member index, pid). Patroni on that member sees its server gone and,
        with primary_start_timeout = 0, lets the synchronous standby take over.
        """
        member = self.primary_member(shard)
        if member is None:
            raise RuntimeError(f"shard {shard} has no primary to kill")
        pid = postmaster_pid(self.layout.member_dir(shard, member))
        if pid is None:
            raise RuntimeError(f"shard {shard} member {member} runs no PostgreSQL")
        os.kill(pid, signal.SIGKILL)
        return member, pid

    def hold(self, name: str) -> None:
        """The supervisor stops restarting ``name`` (until ``release``)."""
        (self.layout.hold_dir / name).touch()

    def release(self, name: str) -> None:
        (self.layout.hold_dir / name).unlink(missing_ok=True)

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 30.0) -> int:
        """Wait until the supervisor has started ``name`` again; its new pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(KeyError):
                process = self.process(name)
                if process["pid"] != old_pid and process_alive(process["pid"]):
                    return int(process["pid"])
            time.sleep(0.1)
        raise TimeoutError(f"{name} was not restarted within {timeout:g} s")


def supervisor_alive(state: dict[str, Any]) -> bool:
    """The supervisor of this state file still runs: its pid and, when recorded (states
    written since it is), its start time, since the pid may have been reused (a reboot)."""
    return process_alive(state.get("supervisor_pid"), state.get("supervisor_start_time"))


def process_alive(pid: object, started: object = None) -> bool:
    """``pid`` runs (and, given ``started``, is the process that started then)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if isinstance(started, int) and start_time(pid) != started:
        return False
    if not pid_exists(pid):
        return False
    # A zombie child of a dead supervisor would still answer; /proc tells.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _terminate(pid: int, first: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pid: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _free(port: int) -> bool:
    return port_free(port)
