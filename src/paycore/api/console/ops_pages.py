"""The console's operations pages: failing webhook deliveries and stuck sagas.

Both are the logged-in tenant's only: its own events' deliveries, and the cross-shard
transfers touching one of its accounts (as its transfer page shows them). The whole
cluster's saga backlog is ``/metrics``' and ``paycore audit``'s (the saga check), which
an operator runs with access to every shard; a tenant's admin sees no other tenant's.
"""

from __future__ import annotations

import time
from typing import Any, Final

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery

from paycore.api.console import ops_reads
from paycore.api.console.frame import CONSOLE_PATH, PAGE_SIZE, PUBLIC, Console, to_login
from paycore.api.tenancy import Namespace

__all__ = ["bound_seconds", "ops_routes"]

_SAGA_DEFAULT: Final = 60
_SAGA_MAX: Final = 30 * 86400


def bound_seconds(text: str, default: int, most: int) -> int:
    """A bound in seconds from a form field: ASCII digits only (``str.isdigit`` also takes
    '²' or Arabic-Indic digits, which ``int`` then refuses or reads), else ``default``."""
    if text.isascii() and text.isdigit() and len(text) <= 8:
        return min(int(text), most)
    return default


def ops_routes(c: Console) -> list[HTTPRouteHandler]:
    """Failing webhook deliveries, stuck sagas."""

    @get(f"{CONSOLE_PATH}/webhooks", opt=PUBLIC, include_in_schema=False)
    async def webhooks(
        request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None
    ) -> Response[Any]:
        """Deliveries that failed for good or are being retried, latest change first."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        before = ops_reads.parse_delivery_cursor(cursor)
        page = await ops_reads.failing_deliveries(c.store, who[0].tenant, before, PAGE_SIZE)
        return c.page(
            request, "webhooks.html", who, rows=page.rows, next_cursor=page.next_cursor,
            first=before is None,
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/sagas", opt=PUBLIC, include_in_schema=False)
    async def sagas(
        request: Request[Any, Any, Any], older_than: FromQuery[str] = ""
    ) -> Response[Any]:
        """Cross-shard transfers whose saga stayed unfinished past a bound (60 s)."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        seconds = bound_seconds(older_than, _SAGA_DEFAULT, _SAGA_MAX)
        ns = Namespace(who[0].tenant)
        found, truncated = await ops_reads.stuck_sagas(c.store, ns, seconds, time.time_ns())
        return c.page(
            request, "sagas.html", who, rows=found, older_than=seconds, truncated=truncated,
            scanned=ops_reads.SAGAS_SCANNED,
        )  # fmt: skip

    return [webhooks, sagas]
