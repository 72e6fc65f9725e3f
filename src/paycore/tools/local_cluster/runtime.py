"""The cluster's supervisor: starts every process in order, restarts the ones that die.

``paycore cluster up`` prepares the data directory and starts this module as a detached
process (``python -m paycore.tools.local_cluster.runtime DATA_DIR``). It brings the cluster up
stage by stage, each stage waiting until what it started answers:

1. etcd (Patroni's consensus store)            ready: ``/health``
2. Redis (locks, leader election)             ready: PING
3. the acquirer simulators                    ready: ``/admin/config``
4. Patroni + PostgreSQL, every shard member   ready: every shard has a leader; then the
   ledger database is created and migrated on each shard's leader, and (with standbys)
   each shard has a synchronous standby streaming
5. the API nodes (``paycore serve``)          ready: ``/readyz`` 200 on each
6. nginx                                      ready: ``/readyz`` through nginx

Then it watches: a process that exits is started again (backoff 0.5 s doubling to 8 s),
as systemd's ``Restart=always`` would on a real host, unless ``hold/<name>`` exists.
Patroni restarts PostgreSQL itself. SIGTERM stops everything in the reverse order.
``state.json`` is rewritten at every change: that is what ``cluster status`` and
``cluster down`` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import redis
import tomli_w

from paycore.config import Settings
from paycore.tools.local_cluster.layout import ClusterLayout, write_private
from paycore.tools.local_cluster.nginx import nginx_config
from paycore.tools.local_cluster.patroni import (
    DATABASE,
    member_name,
    patroni_config,
    shard_status,
    write_config,
)
from paycore.tools.local_cluster.spec import ClusterSpec, PortPlan
from paycore.tools.local_cluster.toolbox import Toolbox

__all__ = ["ClusterRuntime", "Process", "node_settings", "shard_dsn"]

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 8.0
_HEALTHY_AFTER = 30.0  # seconds up after which a process's backoff starts over
_TICK = 0.2


def shard_dsn(ports: PortPlan, shard: int, *, connect_timeout: int = 2) -> str:
    """The libpq DSN of ``shard``: every member listed, the writable one chosen.

    libpq tries the hosts in order and keeps the first that accepts writes, so a node
    follows a failover by reconnecting, without a restart or a new configuration.
    """
    members = ports.postgres[shard]
    return (
        f"host={','.join('127.0.0.1' for _ in members)} "
        f"port={','.join(str(p) for p in members)} "
        f"dbname={DATABASE} user=postgres target_session_attrs=read-write "
        f"connect_timeout={connect_timeout}"
    )


def node_settings(spec: ClusterSpec, ports: PortPlan, layout: ClusterLayout) -> dict[str, Any]:
    """The paycore settings every API node runs with (``node.toml``)."""
    settings: dict[str, Any] = {
        "data_dir": str(layout.root / "node-data"),
        "migrate_on_start": False,  # 'cluster up' migrates once, before any node starts
        "locks_url": f"redis://127.0.0.1:{ports.redis}/0",
        "embedded_processors": False,
        "leader_ttl_seconds": 2.0,
        # A node that dies mid-request leaves its keys' locks held until they expire,
        # and a retry of such a request (by nginx or the client) answers 409
        # idempotency_key_in_use until then. Renewed every third of it, so a live
        # request keeps its lock; 3 s bounds the wait after a crash.
        "idempotency_lock_seconds": 3.0,
        "shards": [
            {"name": f"s{shard}", "backend": "postgres", "dsn": shard_dsn(ports, shard)}
            for shard in range(spec.shards)
        ],
        "processors": [
            {"name": name, "url": f"http://127.0.0.1:{port}", "timeout_seconds": 5.0}
            for name, port in zip(spec.acquirers, ports.acquirers, strict=True)
        ],
    }
    settings.update(spec.node)
    return settings


@dataclass
class Process:
    """One supervised process."""

    name: str
    kind: str  # etcd | redis | acquirer | patroni | api | nginx
    argv: list[str]
    port: int | None = None
    user: str | None = None
    env: dict[str, str] | None = None
    stop_timeout: float = 15.0
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float | None = None
    failures_in_row: int = 0
    start_time: int | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class StageFailedError(RuntimeError):
    """A stage did not become ready in time; the message says which and why."""


class ClusterRuntime:
    """Runs the processes of one cluster data directory (see the module docstring)."""

    def __init__(
        self,
        layout: ClusterLayout,
        toolbox: Toolbox | None = None,
        *,
        watch_pid: int | None = None,
    ) -> None:
        # Stop the whole cluster when this process is gone (a test run that was killed
        # must not leave servers behind); None: the cluster outlives whoever started it.
        self.watch_pid = watch_pid
        self.layout = layout
        self.spec = layout.load_spec()
        self.ports = layout.load_ports()
        self.tools = toolbox or Toolbox(Path(self.spec.tools_dir) if self.spec.tools_dir else None)
        self.processes: list[Process] = []
        self.status = "starting"
        self.reason: str | None = None
        self._stopping = False
        self._grow = False  # SIGUSR1: the spec gained shards (``_add_shards``)
        self.shards_started = self.spec.shards
        self.as_postgres = os.geteuid() == 0

    # -- the processes -------------------------------------------------------------

    def _paycore(self) -> list[str]:
        return [sys.executable, "-m", "paycore"]

    def plan(self) -> list[list[Process]]:
        """Every process, in start stages (configs are written here too)."""
        spec, ports, layout = self.spec, self.ports, self.layout
        etcd = Process(
            "etcd",
            "etcd",
            [
                str(self.tools.find("etcd").path),
                "--name=etcd0",
                f"--data-dir={layout.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
                f"--initial-cluster=etcd0=http://127.0.0.1:{ports.etcd_peer}",
                "--log-level=warn",
            ],
            port=ports.etcd_client,
        )
        (layout.root / "redis").mkdir(exist_ok=True)
        redis_server = Process(
            "redis",
            "redis",
            [
                str(self.tools.find("redis-server").path),
                "--port",
                str(ports.redis),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(layout.root / "redis"),
            ],
            port=ports.redis,
        )
        acquirers = [
            Process(
                f"acquirer-{name}",
                "acquirer",
                [*self._paycore(), "acquirer-sim", "--name", name, "--port", str(port)],
                port=port,
            )
            for name, port in zip(spec.acquirers, ports.acquirers, strict=True)
        ]
        members = self._shard_members(range(spec.shards))
        self._write_node_config()
        api = [
            Process(
                f"api-{index}",
                "api",
                [
                    *self._paycore(),
                    "serve",
                    "--config",
                    str(layout.node_config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                port=port,
                stop_timeout=20.0,
            )
            for index, port in enumerate(ports.api)
        ]
        nginx_dir = layout.root / "nginx"
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (nginx_dir / "temp" / sub).mkdir(parents=True, exist_ok=True)
        conf = nginx_dir / "nginx.conf"
        error_log = layout.log("nginx-error")
        conf.write_text(
            nginx_config(
                spec,
                listen_port=ports.nginx,
                api_ports=ports.api,
                prefix=nginx_dir,
                error_log=error_log,
            )
        )
        nginx = Process(
            "nginx",
            "nginx",
            [
                str(self.tools.find("nginx").path),
                "-p",
                str(nginx_dir),
                "-c",
                str(conf),
                "-e",
                str(error_log),
            ],
            port=ports.nginx,
        )
        return [[etcd], [redis_server], acquirers, members, api, [nginx]]

    def _shard_members(self, shards: range) -> list[Process]:
        """The Patroni members of ``shards`` (their configs written)."""
        spec, ports, layout = self.spec, self.ports, self.layout
        patroni = self.tools.find("patroni").path
        bindir = self.tools.postgres_bindir()
        members = []
        for shard in shards:
            for member in range(spec.postgres_per_shard):
                member_dir = layout.member_dir(shard, member)
                member_dir.mkdir(exist_ok=True)
                config_file = member_dir / "patroni.json"
                write_config(
                    config_file,
                    patroni_config(
                        spec,
                        ports,
                        shard=shard,
                        member=member,
                        member_dir=member_dir,
                        bindir=bindir,
                    ),
                )
                if self.as_postgres:
                    _chown_tree(member_dir, "postgres")
                members.append(
                    Process(
                        member_name(shard, member),
                        "patroni",
                        [str(patroni), str(config_file)],
                        port=ports.postgres[shard][member],
                        user="postgres" if self.as_postgres else None,
                        env={**_clean_env(), "HOME": str(member_dir)},
                        stop_timeout=40.0,
                    )
                )
        return members

    def _write_node_config(self) -> None:
        # Settings files may hold secrets (paycore refuses one that others can read).
        write_private(
            self.layout.node_config,
            "# Generated by 'paycore cluster up'; edits are overwritten.\n"
            + tomli_w.dumps(node_settings(self.spec, self.ports, self.layout)),
        )

    # -- growing (paycore cluster add-shard) ----------------------------------------

    def _add_shards(self) -> None:
        """Start the shards the spec gained (``LocalCluster.add_shard`` wrote it, then sent
        SIGUSR1): their Patroni members, the ledger database, migrations; the nodes'
        settings name them, and the API nodes restart one at a time (nginx sends the
        requests to the others meanwhile). The slots move afterwards (``shards add``)."""
        had = self.spec.shards
        self.spec, self.ports = self.layout.load_spec(), self.layout.load_ports()
        if self.spec.shards <= had:
            return
        self.status = "growing"
        self._write_state()
        for process in self._shard_members(range(had, self.spec.shards)):
            self.processes.append(process)
            self._spawn(process)
        self._write_state()
        self._wait("postgres", self._postgres_ready, 180)
        self._write_node_config()
        self._prepare_databases()
        self._wait("synchronous standbys", self._sync_ready, 120)
        for process in [p for p in self.processes if p.kind == "api"]:
            self._restart(process)
            # nginx counted the restart as failed tries and sends the node nothing for
            # fail_timeout: the next node stops only once this one takes requests again.
            settle = time.monotonic() + self.spec.fail_timeout_seconds + 1.0
            while time.monotonic() < settle:
                self._tend()
                time.sleep(_TICK)
        self.shards_started = self.spec.shards
        self.status = "running"
        self._write_state()

    def _restart(self, process: Process) -> None:
        """Stop ``process`` and start it again at once; wait until it is ready."""
        assert process.popen is not None
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout=process.stop_timeout)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
        process.restarts += 1
        self._spawn(process)
        self._write_state()
        self._wait(
            process.name,
            lambda: _http_ok(f"http://127.0.0.1:{process.port}/readyz"),
            90,
        )

    def _on_grow(self, signum: int, _frame: object) -> None:
        self._grow = True

    def _grow_or_report(self) -> None:
        try:
            self._add_shards()
            self.reason = None
        except (StageFailedError, Exception) as error:  # noqa: BLE001 - reported in state
            self.reason = f"add-shard failed: {type(error).__name__}: {error}"
            print(self.reason, file=sys.stderr, flush=True)
        self.status = "running"
        self._write_state()

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        """Start, watch until SIGTERM, stop. 0: stopped cleanly; 1: a stage failed."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_grow)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        # A hold left by a run that crashed would keep its process down for good.
        shutil.rmtree(self.layout.hold_dir, ignore_errors=True)
        self.layout.hold_dir.mkdir(exist_ok=True)
        try:
            stages = self.plan()
            checks: list[tuple[str, Callable[[], str | None], float]] = [
                ("etcd", self._etcd_ready, 30),
                ("redis", self._redis_ready, 20),
                ("acquirers", self._acquirers_ready, 30),
                ("postgres", self._postgres_ready, 180),
                ("api nodes", self._api_ready, 90),
                ("nginx", self._nginx_ready, 30),
            ]
            for stage, (label, check, timeout) in zip(stages, checks, strict=True):
                for process in stage:
                    self.processes.append(process)
                    self._spawn(process)
                self._write_state()
                self._wait(label, check, timeout)
                if label == "postgres":
                    self._prepare_databases()
                    self._wait("synchronous standbys", self._sync_ready, 120)
            self.status = "running"
            self._write_state()
            while not self._stopping:
                self._tend()
                if self._grow:
                    self._grow = False
                    self._grow_or_report()
                time.sleep(_TICK)
        except (StageFailedError, Exception) as error:  # noqa: BLE001 - reported in state
            if not self._stopping:
                self.status = "failed"
                self.reason = f"{type(error).__name__}: {error}"
                self._write_state()
                print(f"cluster start failed: {self.reason}", file=sys.stderr, flush=True)
        self._stop_all()
        failed = self.status == "failed"
        self.status = "failed" if failed else "stopped"
        self._write_state()
        return 1 if failed else 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _wait(self, label: str, check: Callable[[], str | None], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        problem: str | None = "not checked yet"
        while time.monotonic() < deadline:
            if self._stopping:
                raise StageFailedError(f"stopped while waiting for {label}")
            self._tend()
            problem = check()
            if problem is None:
                return
            time.sleep(_TICK)
        raise StageFailedError(f"{label} not ready after {timeout:g} s: {problem}")

    def _spawn(self, process: Process) -> None:
        if process.log_file is None:
            process.log_file = self.layout.log(process.name).open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        process.log_file.write(f"--- {stamp} start: {' '.join(process.argv)}\n".encode())
        process.log_file.flush()
        process.popen = subprocess.Popen(  # noqa: S603 - our own argv
            process.argv,
            stdin=subprocess.DEVNULL,
            stdout=process.log_file,
            stderr=subprocess.STDOUT,
            env=process.env,
            user=process.user,
            group=process.user,
            extra_groups=[] if process.user else None,
            cwd=self.layout.root,
            # Its own session: a signal meant for the supervisor never reaches it.
            start_new_session=True,
        )
        process.started_at = time.monotonic()
        process.start_time = start_time(process.popen.pid)
        process.next_start = None

    def _tend(self) -> None:
        """Start again every process that exited (unless held), with backoff."""
        changed = False
        now = time.monotonic()
        for process in self.processes:
            if process.popen is None or process.alive:
                continue
            if (self.layout.hold_dir / process.name).exists():
                continue
            if process.next_start is None:
                uptime = now - process.started_at
                process.failures_in_row = (
                    0 if uptime > _HEALTHY_AFTER else process.failures_in_row + 1
                )
                backoff = min(
                    _BACKOFF_FIRST * 2 ** max(process.failures_in_row - 1, 0), _BACKOFF_MAX
                )
                process.next_start = now + backoff
                changed = True
            elif now >= process.next_start:
                process.restarts += 1
                try:
                    self._spawn(process)
                except OSError as error:  # EMFILE, EAGAIN...: try again later, keep the rest
                    print(f"restarting {process.name} failed: {error}", file=sys.stderr)
                    process.started_at = now
                    process.next_start = None
                changed = True
        if changed:
            self._write_state()
        if self.watch_pid is not None and not pid_exists(self.watch_pid):
            print(f"process {self.watch_pid} is gone: stopping the cluster", file=sys.stderr)
            self._stopping = True

    def _stop_all(self) -> None:
        self.status = "stopping"
        self._write_state()
        by_kind: dict[str, list[Process]] = {}
        for process in self.processes:
            by_kind.setdefault(process.kind, []).append(process)
        for kind in ("nginx", "api", "acquirer", "patroni", "redis", "etcd"):
            group = by_kind.get(kind, [])
            for process in group:
                if process.alive and process.popen is not None:
                    process.popen.send_signal(signal.SIGTERM)
            for process in group:
                if process.popen is None:
                    continue
                try:
                    process.popen.wait(timeout=process.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait()
                if process.log_file is not None:
                    process.log_file.close()
                    process.log_file = None
        self._stop_orphaned_postgres()

    def _stop_orphaned_postgres(self) -> None:
        """A PostgreSQL whose Patroni was killed keeps running; stop it as Patroni would."""
        for shard in range(self.spec.shards):
            for member in range(self.spec.postgres_per_shard):
                pid = postmaster_pid(self.layout.member_dir(shard, member))
                if pid is not None:
                    _signal(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
                    _wait_gone(pid, 20.0)

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            # With the pid, names this process: ``down`` after a reboot must not signal
            # whatever reused the pid since.
            "supervisor_start_time": start_time(os.getpid()),
            "status": self.status,
            "reason": self.reason,
            "shards": self.shards_started,
            "updated": time.time(),
            "processes": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "pid": p.popen.pid if p.popen is not None else None,
                    "alive": p.alive,
                    "port": p.port,
                    "restarts": p.restarts,
                    "start_time": p.start_time,
                    "held": (self.layout.hold_dir / p.name).exists(),
                    "log": str(self.layout.log(p.name)),
                }
                for p in self.processes
            ],
        }
        temporary = self.layout.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(self.layout.state_file)

    # -- readiness -----------------------------------------------------------------

    def _etcd_ready(self) -> str | None:
        return _http_ok(f"http://127.0.0.1:{self.ports.etcd_client}/health")

    def _redis_ready(self) -> str | None:
        try:
            client = redis.Redis(port=self.ports.redis, socket_timeout=1, socket_connect_timeout=1)
            try:
                client.ping()
            finally:
                client.close()
        except redis.RedisError as error:
            return str(error)
        return None

    def _acquirers_ready(self) -> str | None:
        for port in self.ports.acquirers:
            problem = _http_ok(f"http://127.0.0.1:{port}/admin/config")
            if problem:
                return problem
        return None

    def _postgres_ready(self) -> str | None:
        for shard in range(self.spec.shards):
            if shard_status(self.ports, shard).leader is None:
                return f"shard {shard} has no leader yet"
        return None

    def _sync_ready(self) -> str | None:
        if self.spec.postgres_per_shard < 2:
            return None
        for shard in range(self.spec.shards):
            members = shard_status(self.ports, shard).members
            if not any(m.role == "sync_standby" and m.state == "streaming" for m in members):
                return f"shard {shard} has no synchronous standby streaming yet"
        return None

    def _api_ready(self) -> str | None:
        for port in self.ports.api:
            problem = _http_ok(f"http://127.0.0.1:{port}/readyz")
            if problem:
                return f"api node on port {port}: {problem}"
        return None

    def _nginx_ready(self) -> str | None:
        return _http_ok(f"http://127.0.0.1:{self.ports.nginx}/readyz")

    def _prepare_databases(self) -> None:
        """Create the ledger database on each shard's leader, then migrate every shard."""
        from paycore.config import load_settings, shard_specs  # noqa: PLC0415
        from paycore.ops.migrate import migrate_shards  # noqa: PLC0415

        for shard in range(self.spec.shards):
            leader = shard_status(self.ports, shard).leader
            if leader is None or leader.port is None:
                raise StageFailedError(f"shard {shard} lost its leader during start-up")
            with psycopg.connect(
                f"host=127.0.0.1 port={leader.port} user=postgres dbname=postgres "
                "connect_timeout=5",
                autocommit=True,
            ) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                ).fetchone()
                if exists is None:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
        settings = load_settings(self.layout.node_config, env={})
        results = migrate_shards(shard_specs(settings))
        failed = [f"{r.shard}: {r.error}" for r in results if not r.ok]
        if failed:
            raise StageFailedError("migration failed: " + "; ".join(failed))
        if not self.layout.api_key_file.exists():
            self._make_api_key(settings)

    def _make_api_key(self, settings: Settings) -> None:
        """The first up makes one key for tenant ``default`` with every scope, kept in
        ``api-key`` (mode 600) for the operator, the drills and the chaos runs; more keys:
        ``paycore keys create --config DATA_DIR/node.toml``."""
        from paycore.api.auth import ApiKeys, Scope  # noqa: PLC0415
        from paycore.cluster.topology import build_store  # noqa: PLC0415

        async def make() -> str:
            store = build_store(settings)
            await store.start()
            try:
                new = await ApiKeys(store).create("default", frozenset(Scope))
            finally:
                await store.stop()
            return new.token

        token = asyncio.run(make())
        path = self.layout.api_key_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")


def postmaster_pid(member_dir: Path) -> int | None:
    """The pid of the PostgreSQL server of a member, if one runs."""
    try:
        pid = int((member_dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    # A file left by a killed server may name a pid reused since by something else.
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"postgres" not in command:
        return None
    return pid if pid_exists(pid) else None


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def pid_exists(pid: int) -> bool:
    """A process ``pid`` runs (one of another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): with the pid, it
    names one process, whereas a pid alone may have been reused since."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(") ", 1)[1].split()
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _http_ok(url: str) -> str | None:
    try:
        answer = httpx.get(url, timeout=2.0)
    except httpx.HTTPError as error:
        return f"{url}: {type(error).__name__}"
    if answer.status_code != 200:
        return f"{url}: HTTP {answer.status_code}"
    return None


def _clean_env() -> dict[str, str]:
    """The environment minus our virtualenv's, for a program with its own Python."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for child in path.rglob("*"):
        if not child.is_symlink():
            shutil.chown(child, user, user)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    watch: int | None = None
    if len(args) == 3 and args[1] == "--watch-pid":
        watch = int(args[2])
        args = args[:1]
    if len(args) != 1:
        print(
            "usage: python -m paycore.tools.local_cluster.runtime DATA_DIR [--watch-pid PID]",
            file=sys.stderr,
        )
        return 2
    return ClusterRuntime(ClusterLayout(Path(args[0]).resolve()), watch_pid=watch).run()


if __name__ == "__main__":
    sys.exit(main())
