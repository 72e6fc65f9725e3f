"""A lock's grant and what can go wrong with it: ``Lease``, the lock errors, and
``LeaseGrants`` (the three calls that keep a lease: acquire, extend, release).

They live apart from ``base`` (the ``LockService`` protocol) because ``renewal`` needs
them and ``LockService.hold`` returns renewal's ``HeldLease``: with them here, ``renewal``
imports this module only and no import cycle remains. ``base`` re-exports every name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from paycore.errors import ErrorCode, UnavailableError

__all__ = ["Lease", "LeaseGrants", "LockBusy", "LockError", "LockLost", "LockUnavailable"]


class LockError(UnavailableError):
    """A lock could not be had or kept; whatever needed it must not run."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"lock {name!r}: {detail}")
        self.name = name


class LockUnavailable(LockError):
    """The lock backend is unreachable or too slow: fail safe, hold nothing.

    Its code is ``lock_unavailable`` (503, retryable), so a client can tell "the lock
    service is down" from "a shard is down" (``store_unavailable``)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(name, detail)
        self.code = ErrorCode.LOCK_UNAVAILABLE


class LockBusy(LockError):
    """Another owner holds the lock and the caller's ``wait`` ran out."""


class LockLost(LockError):
    """The lease expired or another owner took the lock: the holder must stop writing."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One grant of a lock: who holds it, its fencing token and until when.

    ``expires_at`` is on this process's ``time.monotonic()`` clock, measured from just
    before the request was sent and shortened by a drift margin, so it never lies past
    the backend's own expiry. ``owner`` is unique per grant; it is what release and
    extend compare.
    """

    name: str
    owner: str
    fencing_token: int
    expires_at: float

    def remaining(self) -> float:
        """Seconds left before this lease must be taken as expired (negative when past)."""
        return self.expires_at - time.monotonic()

    @property
    def expired(self) -> bool:
        """True once the local deadline has passed."""
        return self.remaining() <= 0


class LeaseGrants(Protocol):
    """What keeping a lease needs from a lock service (``LockService`` is one)."""

    async def acquire(self, name: str, ttl: float, *, wait: float = 0.0) -> Lease | None:
        """Take ``name`` for ``ttl`` seconds; None if another owner kept it for ``wait`` s."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give the lock back; False if ``lease`` no longer holds it."""
        ...

    async def extend(self, lease: Lease, ttl: float) -> Lease:
        """Push the expiry to ``ttl`` seconds from now; ``LockLost`` if no longer held."""
        ...
