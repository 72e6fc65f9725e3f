"""``paycore audit`` of a run's shards, as one text line per violation for the checker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["audit_lines"]


async def audit_lines(config: Path) -> list[str]:
    """Audit the shards of the settings file ``config`` (straight to the databases)."""
    command = [sys.executable, "-m", "paycore", "audit", "--config", str(config), "--json"]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=False, timeout=300
    )
    if done.returncode not in (0, 1):
        return [f"paycore audit failed ({done.returncode}): {done.stderr[-500:]}"]
    report = json.loads(done.stdout)
    lines = [f"{v.get('kind')}: {v.get('detail')}" for v in report.get("violations", [])]
    for shard, sub in report.get("shards", {}).items():
        lines += [f"{shard}: {v.get('kind')}: {v.get('detail')}" for v in sub["violations"]]
    if not report.get("ok", False) and not lines:
        lines.append("paycore audit: not ok")
    return lines
