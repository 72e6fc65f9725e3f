"""What a lock is: the ``LockService`` protocol, the ``Lease`` value and the lock errors.

A lock guards *ownership of work* (a shard's relay, a job, an idempotency key in
flight), never a single transfer: the database transaction keeps balances right. A
lock alone is not safe either (a holder paused past its lease wakes up believing it
still holds it), so every lease carries a **fencing token**: an integer that grows
strictly per lock name with every grant, whoever the holder. A write made under a
lease carries the token, and the store refuses a token older than the newest it saw
for that name.

How tokens are issued (every backend, atomically with the grant)::

    token = max(last_token_of_name + 1, backend_clock_in_microseconds)

The counter makes tokens strictly increasing while the backend keeps its data; the
clock floor keeps them increasing when it does not (a Redis without persistence that
restarted, a failover to a replica that missed the last grant, the in-process backend
after a restart), as long as the backend's wall clock does not step back by more than
the outage lasted. Tokens fit a BIGINT (about 1.8e15 today).

Errors, all ``UnavailableError`` (503, retryable: no lock means no work, and the
request changed nothing)::

    UnavailableError
    └── LockError            base of lock failures
        ├── LockUnavailable  the backend cannot be reached or did not answer in time
        ├── LockBusy         held by another owner and ``wait`` ran out (``hold`` only;
        │                    ``acquire`` answers None)
        └── LockLost         the lease expired or was taken over: stop writing

A TTL is mandatory on every grant and extension (``check_ttl``): a holder that dies
must never keep a lock forever.

``Lease`` and the errors are defined in ``lease.py`` (re-exported here), so that
``renewal`` can use them without importing this module back.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

from paycore.locks.lease import Lease, LeaseGrants, LockBusy, LockError, LockLost, LockUnavailable

if TYPE_CHECKING:
    from paycore.locks.renewal import HeldLease

__all__ = [
    "CLOCK_DRIFT",
    "MAX_NAME_LENGTH",
    "MAX_TTL",
    "MIN_TTL",
    "Lease",
    "LeaseGrants",
    "LockBusy",
    "LockError",
    "LockLost",
    "LockService",
    "LockUnavailable",
    "check_names",
    "check_ttl",
    "check_wait",
    "local_deadline",
    "new_owner",
]

MIN_TTL = 0.001
# A TTL over a day is almost surely milliseconds passed as seconds.
MAX_TTL = 86_400.0
MAX_NAME_LENGTH = 512
# The local deadline of a lease is kept this much short of the backend's, so clock-rate
# drift between this host and the backend cannot make us trust an expired lease.
CLOCK_DRIFT = 0.01


def local_deadline(started: float, ttl: float) -> float:
    """The monotonic time until which a grant requested at ``started`` may be trusted."""
    return started + ttl * (1 - CLOCK_DRIFT) - 0.002


def new_owner() -> str:
    """A unique owner token that also says which process holds the lock (for operators)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


def check_ttl(ttl: object) -> float:
    """``ttl`` as seconds, or ValueError: every lock must expire by itself."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValueError(f"a lock TTL is a number of seconds, not {ttl!r}")
    if not math.isfinite(ttl) or not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"a lock TTL must be between {MIN_TTL} and {MAX_TTL} s, not {ttl!r}")
    return float(ttl)


def check_wait(wait: object) -> float:
    """``wait`` as seconds (0: try once), or ValueError."""
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise ValueError(f"a lock wait is a number of seconds, not {wait!r}")
    if not math.isfinite(wait) or wait < 0:
        raise ValueError(f"a lock wait must be finite and >= 0, not {wait!r}")
    return float(wait)


def check_names(names: Sequence[str]) -> list[str]:
    """The names sorted (the one order every caller takes them in, so none deadlocks),
    or ValueError for an empty list, a duplicate or a malformed name."""
    if isinstance(names, str):
        raise ValueError(f"pass a list of lock names, not the string {names!r}")
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or "\x00" in name:
            raise ValueError(f"a lock name is 1-{MAX_NAME_LENGTH} characters, no NUL: {name!r}")
    ordered = sorted(names)
    if not ordered:
        raise ValueError("no lock names given")
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"duplicate lock names: {ordered}")
    return ordered


class LockService(LeaseGrants, Protocol):
    """Named locks with TTLs and fencing tokens; Redis, PostgreSQL and in-process backends.

    Every method raises ``LockUnavailable`` when the backend cannot answer, and
    ``ValueError`` for a missing or absurd TTL.
    """

    async def acquire(self, name: str, ttl: float, *, wait: float = 0.0) -> Lease | None:
        """Take ``name`` for ``ttl`` seconds; retry for up to ``wait`` seconds while
        another owner holds it, then answer None."""
        ...

    async def acquire_many(
        self, names: Sequence[str], ttl: float, *, wait: float = 0.0
    ) -> tuple[Lease, ...] | None:
        """Take every name (in sorted order, which is also the order of the answer) or
        none: on any failure the ones already taken are released."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give the lock back; False (and nothing changed) if ``lease`` no longer holds
        it: expired, taken over, or never this owner's."""
        ...

    async def release_many(self, leases: Sequence[Lease]) -> None:
        """Release each lease (the ones no longer held are skipped)."""
        ...

    async def extend(self, lease: Lease, ttl: float) -> Lease:
        """Push the expiry to ``ttl`` seconds from now; ``LockLost`` if the lease is not
        held any more (an expired lease is never revived, even if nobody took it)."""
        ...

    def hold(
        self, name: str, ttl: float, *, wait: float = 0.0, cancel_on_loss: bool = True
    ) -> AbstractAsyncContextManager[HeldLease]:
        """Acquire (or ``LockBusy``), renew every ttl/3 while the block runs, release at
        the end; see ``paycore.locks.renewal``."""
        ...

    async def ping(self) -> None:
        """Return if the backend answers; ``LockUnavailable`` otherwise (for /readyz)."""
        ...

    async def aclose(self) -> None:
        """Release connections; leases still held expire by their TTL."""
        ...
