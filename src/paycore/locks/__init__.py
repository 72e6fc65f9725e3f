"""Distributed locks with fencing tokens, and leader election on top of them.

::

    LockService (base.py)          acquire / acquire_many / release / extend / hold
    ├── RedisLockService           redis.py     SET NX PX + Lua compare-and-delete
    ├── PostgresLockService        postgres.py  a lease table, one upsert per grant
    └── LocalLockService           local.py     in-process, for the embedded mode
    Lease, LockError (lease.py)    a grant and its errors; renewal imports only these
    HeldLease, hold (renewal.py)   renew every ttl/3; ``lost`` / cancel on loss
    LeaderElection, WorkerRunner   election.py  one leader per (job, shard)

``open_lock_service(url)`` picks the backend from a URL. The Redis and PostgreSQL
backends are imported only when chosen, so the embedded mode loads no client library
it does not use.
"""

from __future__ import annotations

from paycore.locks._service import LockServiceBase
from paycore.locks.base import (
    Lease,
    LockBusy,
    LockError,
    LockLost,
    LockService,
    LockUnavailable,
)
from paycore.locks.election import (
    JobFunction,
    LeaderElection,
    WorkerRunner,
    leader_lock_name,
    stop_on_signals,
)
from paycore.locks.local import LocalLockService
from paycore.locks.renewal import HeldLease, hold
from paycore.redaction import redact_url

__all__ = [
    "HeldLease",
    "JobFunction",
    "LeaderElection",
    "Lease",
    "LocalLockService",
    "LockBusy",
    "LockError",
    "LockLost",
    "LockService",
    "LockServiceBase",
    "LockUnavailable",
    "WorkerRunner",
    "hold",
    "leader_lock_name",
    "open_lock_service",
    "stop_on_signals",
]


def open_lock_service(url: str | None = None, *, timeout: float = 1.0) -> LockServiceBase:
    """The lock service for ``url``: ``redis://``/``rediss://``/``unix://`` -> Redis,
    ``postgresql://``/``postgres://`` or a ``key=value`` DSN -> PostgreSQL, None or
    ``local`` -> in-process. Open it with ``async with`` (or ``open()``/``aclose()``)."""
    if url is None or url == "local":
        return LocalLockService()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in {"redis", "rediss", "unix"}:
        from paycore.locks.redis import RedisLockService  # noqa: PLC0415 - loaded when chosen

        return RedisLockService.from_url(url, timeout=timeout)
    if scheme in {"postgresql", "postgres"} or (not scheme and "=" in url):
        from paycore.locks.postgres import PostgresLockService  # noqa: PLC0415 - loaded when chosen

        return PostgresLockService(url, timeout=timeout)
    raise ValueError(
        f"no lock backend for {redact_url(url)!r}: use redis://, postgresql:// or 'local'"
    )
