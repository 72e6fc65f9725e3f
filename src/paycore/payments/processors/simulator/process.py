"""``SimulatorProcess``: a ``paycore acquirer-sim`` child process, for tests and the demo.

``SimulatorProcess.spawn("acq-a", "--latency-ms", "20")`` starts one on a free port
(``--port 0``), ``wait_ready()`` reads the port from the line it prints once listening
and waits for /healthz; ``start`` does both. Start several at once by spawning them all
before waiting. ``configure(**fields)`` changes its behaviour through
``PUT /admin/config``; ``stop()`` ends it (SIGTERM,
then SIGKILL after ``grace`` seconds).
"""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import httpx

__all__ = ["SimulatorProcess"]

_LISTENING: Final = " listening on "


class SimulatorProcess:
    """One simulator process; ``url`` is known once ``wait_ready`` returned."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path | None) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.url = ""

    @classmethod
    def spawn(
        cls, name: str, *args: str, log_path: Path | None = None, log_level: str = "info"
    ) -> Self:
        """Start the process (``args``: more ``paycore acquirer-sim`` flags); don't wait.

        Its log (stderr) goes to ``log_path``, or to this process's stderr."""
        command = [sys.executable, "-m", "paycore.cli", "acquirer-sim", "--name", name]
        command += ["--port", "0", "--log-level", log_level, *args]
        log: IO[bytes] | None = None
        try:
            if log_path is not None:
                log = log_path.open("ab")
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and argv
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        return cls(name, process, log_path)

    @classmethod
    def start(
        cls,
        name: str,
        *args: str,
        log_path: Path | None = None,
        log_level: str = "info",
        timeout: float = 20.0,
    ) -> Self:
        """``spawn`` then ``wait_ready``."""
        simulator = cls.spawn(name, *args, log_path=log_path, log_level=log_level)
        simulator.wait_ready(timeout)
        return simulator

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Wait until the simulator listens and answers /healthz; its base URL.

        Raises ``RuntimeError`` (and kills it) if it exits or takes longer."""
        deadline = time.monotonic() + timeout
        try:
            if not self.url:
                self.url = self._read_url(deadline)
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                        return self.url
                except httpx.TransportError:
                    pass
                self._check_alive()
                time.sleep(0.02)
        except BaseException:
            self.kill()
            raise
        self.kill()
        raise RuntimeError(f"acquirer-sim {self.name} did not answer in {timeout} s")

    def _read_url(self, deadline: float) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    line = stdout.readline().decode(errors="replace")
                    if _LISTENING in line:
                        return line.split(_LISTENING, 1)[1].split()[0]
                    self._check_alive()
        raise RuntimeError(f"acquirer-sim {self.name} did not start listening in time")

    def _check_alive(self) -> None:
        status = self.process.poll()
        if status is not None:
            where = f"; its log: {self.log_path}" if self.log_path else ""
            raise RuntimeError(f"acquirer-sim {self.name} exited with status {status}{where}")

    # -- admin ----------------------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """PUT ``changes`` (``SimulatorConfig`` fields) to /admin/config; the new config."""
        response = httpx.put(f"{self.url}/admin/config", json=changes, timeout=5.0)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        return config

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = httpx.get(f"{self.url}/admin/config", timeout=5.0).json()
        return config

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.url}/admin/stats", timeout=5.0).json()
        return stats

    # -- end ------------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._reap()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self._reap()

    def _reap(self) -> int:
        status = self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorProcess({self.name!r}, {self.url or 'starting'}, pid={self.process.pid})"
