"""The node ``paycore serve`` runs, in one process or in ``--workers N``.

``node_app`` builds the app a node serves from its settings (its own store, lock
client, payment service and console audit). With one worker (the default) the CLI
runs it in its own process, as always.

With ``--workers N`` (N > 1), uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``)
binds the listening socket once, spawns N worker processes that accept on it (the kernel
hands each new connection to one of them), restarts a worker that dies and stops them all
on SIGTERM. Each worker calls ``worker_app`` (an import-string factory) and so is a full
node of its own: its own shard connections, lock client, leader-election campaigns,
Idempotency-Keys in flight, metrics and console sessions. What a worker needs to build
its settings (the config file's path, the command line's overrides, the log options)
reaches it in one environment variable, ``WORKER_ENV``, as JSON; secrets never do: they
stay in the config file or the ``PAYCORE_*`` variables the workers inherit.

Several processes on one port are only safe where every worker sees the same state;
``worker_refusals`` says where they would not (each reason a sentence):

- a SQLite shard (the embedded default included) is written by one process: its writer
  keeps the shard's one total order in that process's queue;
- ``locks_url = "local"`` keeps locks in each process: every worker would elect itself
  leader of every background job and run it, and lock Idempotency-Keys for itself only;
- the embedded simulated acquirers live in each process: an authorization made through
  one worker would be unknown to the next.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from paycore import logs
from paycore.config import Settings, load_settings, shard_specs

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = [
    "WORKER_ENV",
    "WorkerSpec",
    "node_app",
    "serve_settings",
    "worker_app",
    "worker_refusals",
]

log = logging.getLogger(__name__)

# The environment variable that carries a ``WorkerSpec`` (JSON) to each worker process.
WORKER_ENV: Final = "PAYCORE_SERVE_WORKER"
# uvicorn's import string of the factory each worker calls.
WORKER_FACTORY: Final = "paycore.ops.serve:worker_app"


class WorkerSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a worker process needs to build the same settings as its parent (no secret)."""

    config: str | None
    overrides: dict[str, str | int]  # data_dir, host, port, auth: those the CLI set
    log_level: str = "info"
    log_format: str = "console"
    access_log: bool = False


def serve_settings(config: str | Path | None, overrides: dict[str, str | int]) -> Settings:
    """The settings of ``config`` (None: the embedded default) with ``overrides``."""
    settings = load_settings(config)
    return msgspec.structs.replace(settings, **overrides) if overrides else settings


def worker_refusals(settings: Settings) -> list[str]:
    """Why N worker processes of one node must not serve ``settings``; empty when they may."""
    # Imported here: the payment service loads the processor connectors.
    from paycore.payments.service import uses_embedded_processors  # noqa: PLC0415

    reasons = []
    sqlite = [spec.name for spec in shard_specs(settings) if spec.backend == "sqlite"]
    if sqlite:
        where = (
            "the embedded ledger is SQLite files"
            if not settings.shards
            else f"shard(s) {', '.join(sqlite)} are SQLite"
        )
        reasons.append(
            f"{where}, and a SQLite shard is written by one process (its writer keeps the "
            "shard's one order): every [[shards]] table needs backend = 'postgres'"
        )
    if settings.locks_url == "local":
        reasons.append(
            "locks_url is 'local' (locks inside each process): every worker would elect "
            "itself leader of every background job and run it twice, and lock "
            "Idempotency-Keys for itself only: set locks_url to redis://... or a "
            "PostgreSQL DSN"
        )
    if uses_embedded_processors(settings):
        reasons.append(
            "payments go to the simulated acquirers embedded in each process (no "
            "[[processors]]), which would keep a separate state per worker: list "
            "processors reachable over HTTP (e.g. `paycore acquirer-sim`) under "
            "[[processors]], or set embedded_processors = false"
        )
    return reasons


def node_app(settings: Settings) -> Litestar:
    """The app one node (or one worker of it) serves: its own store over the settings'
    shards, its own lock client, payment service and background jobs; the console may
    run the operator tooling's audit."""
    from paycore.api.app import create_app  # noqa: PLC0415
    from paycore.cluster.topology import build_store  # noqa: PLC0415
    from paycore.ops.console_audit import console_audit  # noqa: PLC0415

    return create_app(build_store(settings), settings, auditor=console_audit)


def worker_app() -> Litestar:
    """uvicorn's factory in each worker process of ``paycore serve --workers N``: the
    node's app from the ``WorkerSpec`` in ``WORKER_ENV``, its logging set up as the
    parent's (a spawned process starts with none)."""
    spec = msgspec.json.decode(os.environ[WORKER_ENV], type=WorkerSpec)
    logs.configure(spec.log_level, spec.log_format, access_log=spec.access_log)
    # As with one process, where uvicorn's own access_log=False comes after ``logs``:
    # uvicorn writes no access line (paycore writes its own, with the request id).
    logging.getLogger("uvicorn.access").propagate = False
    settings = serve_settings(spec.config, spec.overrides)
    app = node_app(settings)
    log.info(
        "worker process %d serves http://%s:%d (its own store, locks and elections)",
        os.getpid(),
        settings.host,
        settings.port,
    )
    return app
