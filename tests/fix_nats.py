"""NATS servers for the tests (a pytest plugin, like ``fix_redis``): a real
``nats-server -js`` on a free port, its JetStream store in a directory of its own.

``nats_server`` is a server of one test alone, which it may stop and start again:
``restart()`` keeps the port and the store directory, so the stream, its messages and
its de-duplication ids survive, and clients reconnect by themselves.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paycore.locks.testing import free_port

__all__ = ["NatsServer"]


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, executable: str = "nats-server") -> None:
        found = shutil.which(executable) or shutil.which(executable, path="/usr/sbin")
        if found is None:
            raise FileNotFoundError(f"{executable} not found: install Debian's nats-server")
        self.executable = found
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="paycore-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it takes connections."""
        command = [self.executable, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                   "-sd", str(self.directory / "store")]  # fmt: skip
        with (self.directory / "nats.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: see {self.directory / 'nats.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server on port {self.port} did not start")
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                return conn.recv(5) == b"INFO "
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (SIGKILL, like a crash) and wait for it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port and store."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A ``nats-server -js`` of this test alone, which it may stop and restart."""
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
