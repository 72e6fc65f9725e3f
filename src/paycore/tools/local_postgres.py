"""A throwaway local PostgreSQL server: ``initdb`` + ``pg_ctl`` on a free port.

Used by ``paycore bench --local-postgres N`` (and meant for ``paycore cluster`` and the
tests): a fresh machine with the PostgreSQL server binaries (Debian's ``postgresql``
package) and nothing configured gets a private server in a temporary directory,
listening on 127.0.0.1 and on a Unix socket in that directory only, trusted local
logins as the superuser ``postgres``, stopped and deleted afterwards.

PostgreSQL refuses to run as root: as root the server's commands run as the
``postgres`` system user (``runuser -u postgres --``), which then owns the directory.

Durability: by default the server is as durable as a production one (``fsync=on``,
``synchronous_commit=on``, ``full_page_writes=on``), so a benchmark on it measures what
an acknowledged-means-durable service pays. ``fast=True`` turns the three off: commits
no longer wait for the disk (a power loss may lose acknowledged ones), which changes
what is measured; whoever uses it must say so beside the numbers.

Helpers for any server (local or not): ``admin_dsn`` (the same server's maintenance
database), ``server_settings`` (the durability settings a run was measured under),
``public_tables`` (is a database empty?), ``create_database``/``drop_database``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from paycore.locks.testing import free_port

__all__ = [
    "DURABLE_SETTINGS",
    "FAST_SETTINGS",
    "REPORTED_SETTINGS",
    "LocalPostgres",
    "PostgresNotFoundError",
    "admin_dsn",
    "create_database",
    "database_name",
    "drop_database",
    "find_bindir",
    "find_tool",
    "public_tables",
    "server_settings",
]

# What the server is started with, apart from the durability settings below.
BASE_SETTINGS: Mapping[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    # PostgreSQL's default (128MB) is sized for a laptop; a ledger of 10^6 accounts with
    # its indexes is larger, and every batch would then read pages back from the OS
    # cache. 1GB is a modest production setting (often 25% of RAM); pgbench runs under
    # the same settings.
    "shared_buffers": "1GB",
    "max_wal_size": "2GB",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
}
DURABLE_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
# What a benchmark reports about the server it measured on.
REPORTED_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "synchronous_standby_names",
    "shared_buffers",
    "max_connections",
)

_PACKAGE_HINT = "install Debian's 'postgresql' package (server binaries: initdb, pg_ctl, postgres)"


class PostgresNotFoundError(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: ``pg_config --bindir``, then the newest
    ``/usr/lib/postgresql/*/bin`` (Debian's layout), then ``initdb`` on ``PATH``."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)  # noqa: S603
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    for candidate in _debian_bindirs():
        if (candidate / "initdb").exists():
            return candidate
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    return None


def _debian_bindirs() -> list[Path]:
    def version(path: Path) -> tuple[int, str]:
        name = path.parent.name
        return (int(name), name) if name.isdigit() else (-1, name)

    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)


def find_tool(name: str, bindir: Path | None = None) -> Path | None:
    """A PostgreSQL program (e.g. ``pgbench``): in ``bindir`` if given, else on
    ``PATH``, else in the newest ``/usr/lib/postgresql/*/bin``."""
    if bindir is not None and (bindir / name).exists():
        return bindir / name
    found = shutil.which(name)
    if found:
        return Path(found)
    for candidate in _debian_bindirs():
        if (candidate / name).exists():
            return candidate / name
    return None


def admin_dsn(dsn: str, dbname: str = "postgres") -> str:
    """The DSN of another database (by default the maintenance one) on ``dsn``'s server,
    with the same host(s), port, user and credentials."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def database_name(dsn: str) -> str:
    """The database a DSN names (libpq's default: the user name)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    name = params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE")
    if not name:
        raise ValueError(f"the DSN names no database: {dsn!r}")
    return str(name)


def server_settings(dsn: str, names: tuple[str, ...] = REPORTED_SETTINGS) -> dict[str, str]:
    """``SHOW`` of each setting in ``names`` on ``dsn``'s server."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", (list(names),)
        ).fetchall()
        found = {name: f"{setting}{_unit(unit, setting)}" for name, setting, unit in rows}
        found["server_version"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        shared = conn.execute("SHOW shared_buffers").fetchone()
        if shared is not None:
            found["shared_buffers"] = str(shared[0])
    return {name: found[name] for name in names if name in found}


def _unit(unit: str | None, setting: str) -> str:
    return "" if not unit or not setting.lstrip("-").isdigit() else f" ({unit})"


def public_tables(dsn: str) -> list[str]:
    """The tables in the ``public`` schema of ``dsn``'s database (empty: a fresh one)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    return [str(row[0]) for row in rows]


def create_database(admin: str, name: str, *, template: str | None = None) -> None:
    """``CREATE DATABASE name`` through the maintenance DSN ``admin``."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(query)


def drop_database(admin: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)`` through the maintenance DSN ``admin``."""
    query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(query)


class LocalPostgres:
    """A private PostgreSQL server in a directory of its own (see the module docstring).

    ``with LocalPostgres() as pg: dsn = pg.create_database("s0")``; ``stop()`` shuts the
    server down and deletes its directory (unless ``keep=True`` or a ``root`` was given).
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        bindir: Path | None = None,
        port: int | None = None,
        fast: bool = False,
        settings: Mapping[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresNotFoundError(f"PostgreSQL server binaries not found: {_PACKAGE_HINT}")
        self.bindir = found
        self._own_root = root is None
        self.root = root
        self.port = port or free_port()
        self.fast = fast
        self.keep = keep
        self.settings: dict[str, str] = {
            **BASE_SETTINGS,
            **(FAST_SETTINGS if fast else DURABLE_SETTINGS),
            **(settings or {}),
        }
        self.as_postgres = os.geteuid() == 0
        self.user = "postgres"
        self.started = False

    @property
    def data(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "server.log"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)  # noqa: S603

    def start(self) -> None:
        """``initdb`` a new cluster and start it; raises with the server log on failure."""
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="paycore-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            try:
                shutil.chown(self.root, "postgres")
            except LookupError:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root, and there is no 'postgres' system "
                    f"user to run it as: {_PACKAGE_HINT} (it creates that user)"
                ) from None
        try:
            self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust",
                      "-E", "UTF8", "--no-instructions")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        lines = [f"{k} = {v}" for k, v in self.settings.items()]
        lines += [f"port = {self.port}", f"unix_socket_directories = '{self.root}'"]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# paycore.tools.local_postgres\n" + "\n".join(lines) + "\n")
        try:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w",
                      "-t", "60", "start")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            log = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise RuntimeError(f"pg_ctl start failed: {exc.stderr}\n{log}") from exc
        self.started = True
        self._wait_ready()

    def _wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown, immediate if that hangs) and delete its files."""
        if self.started:
            self.started = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        if self._own_root and not self.keep and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq DSN of a database on this server (TCP on 127.0.0.1)."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the ``postgres`` database."""
        return psycopg.connect(self.dsn(), autocommit=True)

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (empty, or a copy of ``template``); returns its DSN."""
        create_database(self.dsn(), name, template=template)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        drop_database(self.dsn(), name)

    def describe(self) -> str:
        durability = ", ".join(
            f"{k}={self.settings[k]}" for k in ("fsync", "synchronous_commit", "full_page_writes")
        )
        return f"local PostgreSQL ({self.bindir}) on 127.0.0.1:{self.port}, {durability}"
