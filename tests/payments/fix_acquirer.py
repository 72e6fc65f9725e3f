"""Real ``paycore acquirer-sim`` processes for the payments tests.

``acquirer_pool`` (session) starts simulators on demand, each its own process on a
free port (``--port 0``; the port is read from the line it prints once listening),
logging at debug level to a file, and stops them all at the end of the session.
``acquirer`` (per test) is a factory: ``acquirer("acq-a", error_rate=0.5)`` gives the
running simulator ``acq-a`` (started if needed) with exactly that behaviour: the
defaults of ``SimulatorConfig`` plus the given fields, PUT to its admin endpoint.
Simulators are shared by the tests of a session, so a test uses fresh references
(``new_ref``), never a fixed one.

An ``Acquirer`` is a ``str``: its base URL (``SimulatorConnector(name, acquirer)``),
with the admin endpoint as methods.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import msgspec
import pytest

from paycore.payments.processors.simulator import SimulatorConfig
from paycore.payments.processors.simulator.process import SimulatorProcess

__all__ = ["Acquirer", "AcquirerFactory", "AcquirerPool", "new_ref"]


def new_ref(prefix: str = "ref") -> str:
    """A reference no other test (or run against the same simulator) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class Acquirer(str):
    """A running simulator; the string is its base URL, ``http://127.0.0.1:PORT``."""

    name: str
    process: SimulatorProcess

    def __new__(cls, process: SimulatorProcess) -> Self:
        self = super().__new__(cls, process.url)
        self.name, self.process = process.name, process
        return self

    @property
    def url(self) -> str:
        return str(self)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """PUT ``changes`` (fields of ``SimulatorConfig``) to /admin/config; the new config."""
        return self.process.configure(**changes)

    def config(self) -> dict[str, Any]:
        return self.process.config()

    def stats(self) -> dict[str, Any]:
        return self.process.stats()

    def operation(self, reference: str) -> dict[str, Any]:
        """The simulator's raw status answer for ``reference`` (404 bodies included)."""
        body: dict[str, Any] = httpx.get(f"{self}/v1/operations/{reference}", timeout=5.0).json()
        return body

    def log_text(self) -> str:
        """Everything the process wrote to stderr so far (its log)."""
        assert self.process.log_path is not None
        return self.process.log_path.read_text(errors="replace")


class AcquirerPool:
    """Simulator processes by name, started on demand, stopped by ``stop_all``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, Acquirer] = {}

    def start(self, *specs: str | tuple[str, ...]) -> list[Acquirer]:
        """Start (in parallel) the simulators not running yet; each spec is a name or
        ``(name, *extra_cli_args)``; returns them all, in order."""
        spawned = []
        for spec in specs:
            name, *args = (spec,) if isinstance(spec, str) else spec
            if name not in self.running:
                log_path = self.log_dir / f"{name}.log"
                spawned.append(
                    SimulatorProcess.spawn(name, *args, log_path=log_path, log_level="debug")
                )
        for process in spawned:
            process.wait_ready()
            self.running[process.name] = Acquirer(process)
        names = [spec if isinstance(spec, str) else spec[0] for spec in specs]
        return [self.running[name] for name in names]

    def stop_all(self) -> None:
        for acquirer in self.running.values():
            acquirer.process.process.terminate()
        for acquirer in self.running.values():
            acquirer.process.stop()
        self.running.clear()


class AcquirerFactory:
    """``factory(name="acq", **behaviour)``: the simulator ``name`` with that behaviour."""

    _DEFAULTS: dict[str, Any] = msgspec.to_builtins(SimulatorConfig())

    def __init__(self, pool: AcquirerPool) -> None:
        self.pool = pool

    def __call__(self, name: str = "acq", **behaviour: Any) -> Acquirer:
        (acquirer,) = self.pool.start(name)
        acquirer.configure(**(self._DEFAULTS | behaviour))
        return acquirer

    def start(self, *names: str) -> None:
        """Start several simulators at once (saves the start-up time of each)."""
        self.pool.start(*names)


@pytest.fixture(scope="session")
def acquirer_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcquirerPool]:
    """The session's simulator processes (stopped at the end of the session)."""
    pool = AcquirerPool(tmp_path_factory.mktemp("acquirers"))
    yield pool
    pool.stop_all()


@pytest.fixture
def acquirer(acquirer_pool: AcquirerPool) -> AcquirerFactory:
    """Gives running simulators with the behaviour a test asks for (see the module)."""
    return AcquirerFactory(acquirer_pool)
