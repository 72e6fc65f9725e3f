"""Headless Chromium for checking the API reference page (``/docs``) as a browser shows it.

Debian's ``chromium`` is found on ``PATH`` when installed; otherwise
``install_chromium`` fetches it as ``paycore cluster tools install`` fetches nginx and
etcd (``paycore.tools.local_cluster.toolbox``): ``apt-get download`` of Debian's
packages and ``dpkg-deb -x`` into the tools directory, no root and no package database
touched. Chromium needs shared libraries a server seldom has (GTK, PulseAudio, ...):
the packages fetched are those ``apt-get install --simulate --no-install-recommends
chromium`` says are missing on this machine, and the unpacked libraries are put on
``LD_LIBRARY_PATH`` when it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from paycore.tools.local_cluster.toolbox import ToolMissingError, default_tools_dir

__all__ = ["Chromium", "find_chromium", "install_chromium"]

_SUBDIR: Final = "chromium"
# Where Debian's packages put the browser and the libraries it loads.
_BINARY: Final = Path("usr/lib/chromium/chromium")
_LIBRARY_DIRS: Final = (
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/pulseaudio",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu/pulseaudio",
    "usr/lib/chromium",
)


@dataclass(frozen=True, slots=True)
class Chromium:
    """A Chromium program and the environment it runs in."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run the browser with ``args``; its output (stdout, stderr) as text."""
        return subprocess.run(  # noqa: S603 - our own browser, arguments from the caller
            [str(self.path), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _root(tools_dir: Path) -> Path:
    return tools_dir / _SUBDIR / "root"


def _unpacked(tools_dir: Path) -> Chromium | None:
    root = _root(tools_dir)
    binary = root / _BINARY
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return None
    libraries = [str(root / d) for d in _LIBRARY_DIRS if (root / d).is_dir()]
    inherited = os.environ.get("LD_LIBRARY_PATH")
    path = os.pathsep.join([*libraries, *([inherited] if inherited else [])])
    return Chromium(binary, {"LD_LIBRARY_PATH": path})


def find_chromium(tools_dir: Path | None = None) -> Chromium | None:
    """Chromium on ``PATH``, else the one ``install_chromium`` unpacked, else None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Chromium(Path(found))
    return _unpacked(tools_dir or default_tools_dir())


def _missing_packages(apt_get: str) -> list[str]:
    """The packages installing ``chromium`` here would add (its name included)."""
    simulated = subprocess.run(  # noqa: S603 - a fixed simulation
        [apt_get, "install", "--simulate", "--no-install-recommends", "chromium"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    return [line.split()[1] for line in simulated.stdout.splitlines() if line.startswith("Inst ")]


def install_chromium(
    tools_dir: Path | None = None, *, say: Callable[[str], None] = print
) -> Chromium:
    """Chromium, fetched into ``tools_dir`` when it is not found (idempotent)."""
    tools_dir = tools_dir or default_tools_dir()
    found = find_chromium(tools_dir)
    if found is not None:
        return found
    apt_get, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt_get is None or dpkg_deb is None:
        raise ToolMissingError("chromium not found: fetching Debian's packages needs apt (Debian)")
    wanted = _missing_packages(apt_get) or ["chromium", "chromium-common"]
    debs = tools_dir / _SUBDIR / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    say(f"downloading {len(wanted)} Debian packages for chromium into {debs}")
    subprocess.run(  # noqa: S603 - package names from apt's own simulation
        [apt_get, "download", *wanted], cwd=debs, check=True, capture_output=True
    )
    root = _root(tools_dir)
    for deb in sorted(debs.glob("*.deb")):
        if any(deb.name.startswith(f"{pkg}_") for pkg in wanted):
            subprocess.run([dpkg_deb, "-x", str(deb), str(root)], check=True)  # noqa: S603
    say(f"unpacked into {root}")
    unpacked = _unpacked(tools_dir)
    if unpacked is None:
        raise ToolMissingError(f"chromium not found in {root} after unpacking {wanted}")
    return unpacked
