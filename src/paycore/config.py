"""Settings: one TOML file, overridable by ``PAYCORE_*`` environment variables.

With no file at all, paycore runs embedded: SQLite in ``./paycore-data``, no
servers. Environment variables name a setting in upper case, e.g.
``PAYCORE_DATA_DIR``, ``PAYCORE_SYNCHRONOUS``, ``PAYCORE_PORT``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Settings", "load_settings"]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every knob of a paycore node, with the embedded defaults."""

    data_dir: str = "paycore-data"
    # SQLite durability: FULL fsyncs every commit (acknowledged = durable); NORMAL
    # may lose the last commits on power loss and is logged loudly when chosen.
    synchronous: str = "FULL"
    host: str = "127.0.0.1"
    port: int = 8000
    # Limits that keep one request from hurting the others.
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_size: int = 8189
    max_page_size: int = 1000
    # How long an Idempotency-Key's answer is kept (hours).
    idempotency_retention_hours: int = 72
    # Background maintenance: expire timed-out holds, purge old idempotency records.
    maintenance_interval_seconds: float = 1.0
    # The embedded dev server runs without API keys until the security work lands;
    # it says so at start-up and in /readyz.
    auth: str = "open"

    @property
    def shard_path(self) -> Path:
        return Path(self.data_dir) / "shard-0.sqlite3"


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), then apply ``PAYCORE_*`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        with Path(path).open("rb") as fh:
            values.update(tomllib.load(fh))
    environ = os.environ if env is None else env
    for field in msgspec.structs.fields(Settings):
        raw = environ.get(f"PAYCORE_{field.name.upper()}")
        if raw is not None:
            values[field.name] = raw
    # strict=False lets "8000" from the environment become an int, but never a float
    # into an int field.
    return msgspec.convert(values, Settings, strict=False)
