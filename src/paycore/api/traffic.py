"""This node's traffic of the last minutes, minute by minute, for the console's overview.

``ApiMetrics.observe`` notes every answered request here as it counts it for
Prometheus: a ring of per-minute counts (requests, 4xx, 5xx, and the 2xx answers to the
requests that create transfers and payments), at most ``MINUTES`` of them. It is this
process's view only: behind a load balancer each node sees its share, and a restart
starts it empty (Prometheus over ``/metrics`` is the cluster's record).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["MINUTES", "Minute", "RecentTraffic"]

MINUTES: Final = 15
# Route templates whose 2xx answers to a POST make transfers (one a request: a batch
# counts once) or a payment.
_TRANSFER_ROUTES: Final = frozenset({"/v1/transfers", "/v1/transfers/batch"})
_PAYMENT_ROUTES: Final = frozenset({"/v1/payments"})


@dataclass(slots=True)
class Minute:
    """What this node answered in one wall-clock minute (``start``: Unix seconds)."""

    start: int
    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    transfer_writes: int = 0
    payments_created: int = 0

    @property
    def errors(self) -> int:
        return self.client_errors + self.server_errors


class RecentTraffic:
    """The ring of the last ``minutes`` minutes, the current one included."""

    def __init__(self, minutes: int = MINUTES, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ring: deque[Minute] = deque(maxlen=minutes)
        self._size = minutes

    def note(self, method: str, route: str, status: int) -> None:
        """Count one answered request now."""
        start = int(self._clock()) // 60 * 60
        if not self._ring or self._ring[-1].start != start:
            self._ring.append(Minute(start))
        m = self._ring[-1]
        m.requests += 1
        if 400 <= status < 500:
            m.client_errors += 1
        elif status >= 500:
            m.server_errors += 1
        elif 200 <= status < 300 and method == "POST":
            if route in _TRANSFER_ROUTES:
                m.transfer_writes += 1
            elif route in _PAYMENT_ROUTES:
                m.payments_created += 1

    def minutes(self) -> list[Minute]:
        """Each of the last minutes, newest first, the current one first (so far); a
        minute without a request is there with zeros."""
        now = int(self._clock()) // 60 * 60
        seen = {m.start: m for m in self._ring}
        return [seen.get(now - 60 * i, Minute(now - 60 * i)) for i in range(self._size)]
