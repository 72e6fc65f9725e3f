"""The final state of a chaos run, as the API showed it once the system was quiet.

Everything is kept as the API's own JSON bodies (dicts), so that the checker judges what
a client sees and a doctored state is easy to write in a test.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["FinalState", "Json"]

Json = dict[str, Any]


class FinalState(msgspec.Struct, kw_only=True):
    """What the API answered after the run (see the module docstring).

    ``accounts``: every account read (the run's own and the system accounts the topology
    names: clearing and processor accounts; a 404 is absent); ``transfers``: each listed
    account's transfers, oldest first, as ``GET /v1/accounts/{id}/transfers`` gives them;
    ``balance_history``: the balance records of ``history`` accounts; ``payments``,
    ``refunds``, ``payouts``: every one whose id the run learned, by id (a 404 is absent).
    ``quiet_after``: seconds the run waited after the faults stopped until nothing was in
    flight (no saga, no ``processing`` payment); ``quiet``: whether it got there within
    its bound; ``still_open``: what was still open if not.
    """

    accounts: dict[str, Json] = msgspec.field(default_factory=dict)
    transfers: dict[str, list[Json]] = msgspec.field(default_factory=dict)
    balance_history: dict[str, list[Json]] = msgspec.field(default_factory=dict)
    payments: dict[str, Json] = msgspec.field(default_factory=dict)
    refunds: dict[str, Json] = msgspec.field(default_factory=dict)
    payouts: dict[str, Json] = msgspec.field(default_factory=dict)
    # The system accounts as they were before the run (a cluster that served earlier
    # runs or other clients starts with money in its clearing and processor accounts);
    # conservation is checked on what the run changed.
    baseline: dict[str, Json] = msgspec.field(default_factory=dict)
    quiet: bool = True
    quiet_after: float = 0.0
    still_open: list[str] = msgspec.field(default_factory=list)
