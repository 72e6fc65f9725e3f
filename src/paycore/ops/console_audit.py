"""The console's ``Auditor`` (``paycore.api.console.audit_runs``): ``paycore audit``'s
checks, reduced to counts per shard and per kind of violation, which is all the console
shows (the details name every tenant's accounts). ``paycore serve`` hands it to the app.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from paycore.api.console.audit_runs import LedgerAudit, ShardOutcome
from paycore.ops.audit import AuditReport, audit_cluster, audit_store
from paycore.storage.store import ShardStore

__all__ = ["console_audit"]

_LISTED: Final = 1000  # violations listed per shard (all are counted), for the kinds


def _kinds(kinds: Iterable[str]) -> list[tuple[str, int]]:
    return sorted(Counter(kinds).items())


def _shard(name: str, report: AuditReport) -> ShardOutcome:
    return ShardOutcome(
        name, report.ok, report.violation_count, _kinds(v.kind.value for v in report.violations)
    )


async def console_audit(shards: Mapping[str, ShardStore], stuck_seconds: float) -> LedgerAudit:
    """Audit ``shards``: one alone, or all with the cross-shard checks."""
    if len(shards) == 1:
        ((name, shard),) = shards.items()
        report = await audit_store(shard, max_violations=_LISTED)
        return LedgerAudit(report.ok, [_shard(name, report)])
    cluster = await audit_cluster(shards, stuck_seconds=stuck_seconds, max_violations=_LISTED)
    return LedgerAudit(
        cluster.ok,
        [_shard(n, r) for n, r in sorted(cluster.shards.items())],
        _kinds(v.kind.value for v in cluster.violations),
        cluster.sagas_open,
    )
