"""The ledger audit the console runs on request: ``paycore audit``'s checks (every
shard's, and the cross-shard ones), on this node, one at a time, bounded.

Bounds, because the audit replays the whole ledger: a ledger of more than
``MAX_TRANSFERS`` transfer rows is not audited here (``paycore audit`` from a shell is
the tool for it); an audit not done within ``SECONDS`` is reported as not finished (its
snapshot reads run in a worker thread, which ends on its own: only one runs at a time,
so they never pile up); a new one starts at most every ``COOLDOWN_SECONDS``.

What is kept is the outcome per shard and per kind of violation, never the violations'
details: those name accounts and transfers of every tenant, and any tenant's admin may
look at this page. The last outcome lives in this process (a restart forgets it).

The checks themselves are the operator tooling's (``paycore.ops.audit``), which a node
does not import: ``paycore serve`` hands the app an ``Auditor``
(``paycore.ops.console_audit``); an app built without one offers no audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from paycore.errors import PaycoreError
from paycore.redaction import redact_text
from paycore.storage.store import ShardStore, Store

__all__ = [
    "COOLDOWN_SECONDS",
    "MAX_TRANSFERS",
    "SECONDS",
    "AuditOutcome",
    "AuditRuns",
    "Auditor",
    "LedgerAudit",
    "ShardOutcome",
]

log = logging.getLogger(__name__)

MAX_TRANSFERS: Final = 200_000
SECONDS: Final = 60.0
COOLDOWN_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    shard: str
    ok: bool
    violations: int
    kinds: list[tuple[str, int]]  # kind, how many of those listed


@dataclass(frozen=True, slots=True)
class LedgerAudit:
    """What an ``Auditor`` found: per shard, and across shards (kind, how many)."""

    ok: bool
    shards: list[ShardOutcome]
    cross_shard: list[tuple[str, int]] = field(default_factory=list)
    sagas_open: int = 0


# Audits the shards (by name), a saga open longer than the float (seconds) a violation.
Auditor = Callable[[Mapping[str, ShardStore], float], Awaitable[LedgerAudit]]


@dataclass(frozen=True, slots=True)
class AuditOutcome:
    """An audit's end: ``ok`` None when it did not run to the end (``problem`` says why)."""

    started_at: int  # ns, wall clock
    finished_at: int
    ok: bool | None
    problem: str | None = None
    transfers: int = 0
    shards: list[ShardOutcome] = field(default_factory=list)
    cross_shard: list[tuple[str, int]] = field(default_factory=list)
    sagas_open: int = 0


class AuditRuns:
    """This node's console audits: the one running, the last outcome."""

    def __init__(
        self,
        store: Store,
        auditor: Auditor,
        *,
        stuck_seconds: float,
        max_transfers: int = MAX_TRANSFERS,
        seconds: float = SECONDS,
        cooldown_seconds: float = COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._auditor = auditor
        self.stuck_seconds = stuck_seconds
        self.max_transfers = max_transfers
        self.seconds = seconds
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self.last: AuditOutcome | None = None
        self.running_since: int | None = None  # ns, wall clock
        self._task: asyncio.Task[None] | None = None
        self._last_start: float | None = None

    def start(self) -> str | None:
        """Start an audit now; a reason when none starts (one runs, or one just did)."""
        if self._task is not None:
            return "An audit is running already."
        now = self._clock()
        if self._last_start is not None and now - self._last_start < self.cooldown_seconds:
            wait = int(self.cooldown_seconds - (now - self._last_start)) + 1
            return f"An audit ran moments ago; the next may start in {wait} s."
        self._last_start = now
        self.running_since = time.time_ns()
        self._task = asyncio.get_running_loop().create_task(self._run(self.running_since))
        return None

    async def wait(self, seconds: float) -> None:
        """Wait for the running audit at most ``seconds``."""
        task = self._task
        if task is not None:
            await asyncio.wait({task}, timeout=seconds)

    async def _run(self, started: int) -> None:
        try:
            outcome = await self._audit(started)
        except TimeoutError:
            outcome = self._unfinished(started, f"not done within {self.seconds:g} s")
        except PaycoreError as exc:
            outcome = self._unfinished(started, redact_text(exc.detail))
        except Exception as exc:  # a bug must not leave the page waiting forever
            log.exception("console audit failed")
            outcome = self._unfinished(started, f"failed ({type(exc).__name__}); see the log")
        finally:
            self._task = None
            self.running_since = None
        self.last = outcome

    @staticmethod
    def _unfinished(started: int, problem: str) -> AuditOutcome:
        return AuditOutcome(started, time.time_ns(), None, problem)

    async def _audit(self, started: int) -> AuditOutcome:
        shards = dict(self._store.shard_stores)
        async with asyncio.timeout(self.seconds):
            transfers = sum([(await s.usage()).transfers for s in shards.values()])
            if transfers > self.max_transfers:
                return AuditOutcome(
                    started, time.time_ns(), None,
                    f"{transfers:,} transfer rows: more than the console audits "
                    f"({self.max_transfers:,}); run `paycore audit`",
                    transfers,
                )  # fmt: skip
            found = await self._auditor(shards, self.stuck_seconds)
        return AuditOutcome(
            started, time.time_ns(), found.ok, None, transfers, found.shards,
            found.cross_shard, found.sagas_open,
        )  # fmt: skip
