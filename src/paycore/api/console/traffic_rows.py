"""This node's last minutes (``paycore.api.traffic``) as the overview's table shows them:
rates and shares computed in integers (tenths), formatted without float arithmetic."""

from __future__ import annotations

import time
from dataclasses import dataclass

from paycore.api.traffic import RecentTraffic

__all__ = ["TrafficRow", "per_second", "share", "traffic_rows"]


@dataclass(frozen=True, slots=True)
class TrafficRow:
    minute: str  # the minute's start, UTC: YYYY-MM-DD HH:MM
    current: bool  # the minute still running: its rate is over the seconds so far
    requests: int
    per_second: str
    client_errors: int
    server_errors: int
    error_share: str
    transfer_writes: int
    payments_created: int


def _tenths(tenths: int) -> str:
    return f"{tenths // 10:,}.{tenths % 10}"


def per_second(count: int, seconds: int) -> str:
    """``count`` over ``seconds`` (> 0) per second, to a tenth, rounded down."""
    return _tenths(count * 10 // max(seconds, 1))


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` in percent, to a tenth, rounded down; a dash for nothing."""
    return "\u2013" if whole <= 0 else f"{_tenths(part * 1000 // whole)} %"


def traffic_rows(traffic: RecentTraffic, now: float) -> list[TrafficRow]:
    """The last minutes, newest (the current one) first."""
    rows = []
    for m in traffic.minutes():
        current = m.start <= now < m.start + 60
        seconds = max(1, int(now) - m.start) if current else 60
        rows.append(
            TrafficRow(
                minute=time.strftime("%Y-%m-%d %H:%M", time.gmtime(m.start)),
                current=current,
                requests=m.requests,
                per_second=per_second(m.requests, seconds),
                client_errors=m.client_errors,
                server_errors=m.server_errors,
                error_share=share(m.errors, m.requests),
                transfer_writes=m.transfer_writes,
                payments_created=m.payments_created,
            )
        )
    return rows
