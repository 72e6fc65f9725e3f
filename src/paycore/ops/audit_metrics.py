"""An audit's outcome in node_exporter's textfile format (``paycore audit --metrics-file``).

``paycore audit`` runs from cron or a systemd timer, not inside the server, so nothing
could scrape what it found; node_exporter's textfile collector reads ``*.prom`` files
from a directory and exports them with the node's metrics. The file is written whole
(a temporary file renamed over it), so the collector never reads half of one::

    paycore_audit_violations{shard}             violations found; shard="all": the
                                                cross-shard checks (conservation, clearing)
    paycore_audit_ok                            1 when the audit found nothing
    paycore_audit_last_run_timestamp_seconds    when it ran (Unix time)
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from paycore.ops.audit import AuditReport

__all__ = ["CROSS_SHARD", "audit_metrics_text", "export_audit", "write_metrics_file"]

# The ``shard`` label of the checks that span shards.
CROSS_SHARD = "all"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def audit_metrics_text(
    reports: Mapping[str, AuditReport], *, cross_shard: int | None, ok: bool, now: float
) -> str:
    """The exposition of one audit: ``reports`` per shard, ``cross_shard`` violations
    (None: one shard, no cross-shard checks), ``ok`` overall, ``now`` in Unix seconds."""
    counts = {name: report.violation_count for name, report in sorted(reports.items())}
    if cross_shard is not None:
        counts[CROSS_SHARD] = cross_shard
    lines = [
        "# HELP paycore_audit_violations Violations the last paycore audit found, by shard",
        "# TYPE paycore_audit_violations gauge",
        *(f'paycore_audit_violations{{shard="{_escape(n)}"}} {c}' for n, c in counts.items()),
        "# HELP paycore_audit_ok 1 when the last paycore audit found nothing, else 0",
        "# TYPE paycore_audit_ok gauge",
        f"paycore_audit_ok {1 if ok else 0}",
        "# HELP paycore_audit_last_run_timestamp_seconds When the last paycore audit ran",
        "# TYPE paycore_audit_last_run_timestamp_seconds gauge",
        f"paycore_audit_last_run_timestamp_seconds {now:.3f}",
    ]
    return "\n".join(lines) + "\n"


def write_metrics_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a reader sees the old file or the new)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def export_audit(
    path: Path | None,
    reports: Mapping[str, AuditReport],
    *,
    cross_shard: int | None,
    ok: bool,
) -> None:
    """Write the audit's metrics to ``path`` (None: nothing to do), stamped now."""
    if path is not None:
        text = audit_metrics_text(reports, cross_shard=cross_shard, ok=ok, now=time.time())
        write_metrics_file(path, text)
