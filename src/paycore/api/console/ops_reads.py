"""What the console's operations pages show: failing webhook deliveries and stuck sagas,
read shard by shard within one tenant's boundary, each read bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from paycore.api.tenancy import Namespace
from paycore.redaction import redact_text
from paycore.storage.base import OutboxRow
from paycore.storage.deliveries import FailingDelivery
from paycore.storage.store import Store
from paycore.storage.usage import OPEN_OUTBOX_STATES

__all__ = [
    "SAGAS_SCANNED",
    "STUCK_SAGA_STATES",
    "DeliveryPage",
    "FailingRow",
    "StuckSaga",
    "failing_deliveries",
    "parse_delivery_cursor",
    "stuck_sagas",
]

# A client's cross-shard hold (``open``) waits for the client to post or void it, as
# long as it likes: not stuck (as ``paycore audit``'s saga check). The other open
# states are steps the request or the relay should finish within seconds.
STUCK_SAGA_STATES: Final = tuple(s for s in OPEN_OUTBOX_STATES if s != "open")
# The oldest this many unfinished sagas per shard are read, then the tenant's kept.
SAGAS_SCANNED: Final = 500
_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class FailingRow:
    """A failing delivery as the page shows it: its endpoint named and its URL, if an
    endpoint made over HTTP, with any password in it masked."""

    failing: FailingDelivery
    endpoint: str
    url: str | None


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    rows: list[FailingRow]
    next_cursor: str | None


def parse_delivery_cursor(cursor: str | None) -> tuple[int, str, str] | None:
    """A cursor this page handed out, ``<updated_at>.<event id>.<endpoint>``; None for
    none or one that is not such (the first page then)."""
    if not cursor or len(cursor) > 600:
        return None
    updated, _, rest = cursor.partition(".")
    event_id, sep, endpoint = rest.partition(".")
    if not (sep and 1 <= len(updated) <= 19 and updated.isascii() and updated.isdigit()):
        return None
    return int(updated), event_id, endpoint


async def failing_deliveries(
    store: Store, tenant: str, before: tuple[int, str, str] | None, limit: int
) -> DeliveryPage:
    """The tenant's deliveries that failed or are being retried, latest change first,
    over every shard: ``limit`` + 1 from each, merged, so the cursor misses none."""
    found: list[FailingDelivery] = []
    for shard in store.shard_stores.values():
        found += await shard.deliveries.failing(tenant, before=before, limit=limit + 1)
    found.sort(
        key=lambda f: (f.delivery.updated_at, f.delivery.event_id, f.delivery.endpoint),
        reverse=True,
    )
    page = found[:limit]
    endpoints = store.key_store.webhook_endpoints
    urls: dict[str, str | None] = {}
    rows = []
    for f in page:
        name = f.delivery.endpoint
        if name not in urls:  # an HTTP endpoint's id; a config file's is its URL itself
            row = await endpoints.get(tenant, name)
            urls[name] = None if row is None else redact_text(row.url)
        rows.append(FailingRow(f, redact_text(name), urls[name]))
    last = page[-1].delivery if page else None
    cursor = None
    if last is not None and len(found) > limit:
        cursor = f"{last.updated_at}.{last.event_id}.{last.endpoint}"
    return DeliveryPage(rows, cursor)


@dataclass(frozen=True, slots=True)
class StuckSaga:
    """An unfinished cross-shard transfer as the tenant names it."""

    shard: str
    row: OutboxRow
    transfer_id: str
    debit: str
    credit: str
    age_seconds: int


async def stuck_sagas(
    store: Store, ns: Namespace, older_than_seconds: int, now: int
) -> tuple[list[StuckSaga], bool]:
    """The tenant's cross-shard transfers whose saga began over ``older_than_seconds``
    ago and is not finished (a client's open hold aside), oldest first; and whether a
    shard had more than ``SAGAS_SCANNED`` such sagas (of any tenant) to look at."""
    before = now - older_than_seconds * _NS
    rows: list[tuple[str, OutboxRow]] = []
    truncated = False
    for name, shard in store.shard_stores.items():
        found = await shard.open_sagas(
            STUCK_SAGA_STATES, created_before=before, limit=SAGAS_SCANNED
        )
        truncated = truncated or len(found) >= SAGAS_SCANNED
        rows += [(name, r) for r in found]
    ids = sorted({i for _, r in rows for i in (r.debit_account_id, r.credit_account_id)})
    accounts = await store.get_accounts(ids)
    own = {i for i, a in accounts.items() if a.tenant == ns.tenant}
    out = [
        StuckSaga(name, r, ns.out(r.transfer_id), ns.out(r.debit_account_id),
                  ns.out(r.credit_account_id), max(0, (now - r.created_at) // _NS))
        for name, r in rows
        if r.debit_account_id in own or r.credit_account_id in own
    ]  # fmt: skip
    out.sort(key=lambda s: (s.row.created_at, s.row.transfer_id))
    return out, truncated
