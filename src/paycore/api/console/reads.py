"""What the console's pages show, read through the same store and payment service as
the API, within one tenant's boundary (its own objects and paycore's system accounts,
as ``GET /v1/accounts/{id}`` lets an admin key read them).

Every read is bounded: a page of the store's listings, or a fixed number of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from paycore.api.tenancy import Namespace
from paycore.cluster.namespaces import FX_TRANSFER_PREFIX, PAYMENT_TRANSFER_PREFIX
from paycore.errors import PaycoreError
from paycore.ledger.model import SYSTEM_TENANT, Account, TransferView
from paycore.ledger.tenancy import id_prefix
from paycore.payments.flows.model import PaymentView
from paycore.payments.listing import list_payments
from paycore.payments.resilient import ResilientConnector
from paycore.payments.service import PaymentService
from paycore.redaction import redact_text
from paycore.storage.listing import AccountFilter, Page, PaymentFilter
from paycore.storage.store import Store

__all__ = [
    "ACCOUNTS_SCANNED",
    "Breaker",
    "CurrencyTotal",
    "ShardHealth",
    "breakers",
    "currency_totals",
    "owned_transfers",
    "payment_transfers",
    "readable_account",
    "readable_transfer",
    "search_accounts",
    "shard_health",
    "stuck_payments",
    "visible_transfers",
]

# At most this many of a tenant's accounts are summed or searched per page view.
ACCOUNTS_SCANNED: Final = 5000
_SCAN_PAGE: Final = 500
_PING_SECONDS: Final = 2.0
_NS: Final = 1_000_000_000


@dataclass(slots=True)
class CurrencyTotal:
    """A currency's money over a tenant's accounts (minor units)."""

    currency: str
    accounts: int = 0
    posted: int = 0  # credits_posted - debits_posted
    pending_in: int = 0
    pending_out: int = 0


@dataclass(frozen=True, slots=True)
class ShardHealth:
    name: str
    ok: bool
    detail: str | None = None
    # Where it answered from: a PostgreSQL shard's server (its primary), else None.
    server: str | None = None


@dataclass(frozen=True, slots=True)
class Breaker:
    processor: str
    state: str  # closed | open | half_open | "none" (a connector without a breaker)
    failure_rate: float | None = None
    buffered_calls: int = 0
    retry_after: float | None = None


@dataclass(slots=True)
class Scan:
    """A bounded walk over a tenant's accounts."""

    accounts: list[Account] = field(default_factory=list)
    truncated: bool = False


async def _scan(store: Store, tenant: str, limit: int) -> Scan:
    scan = Scan()
    after = None
    while True:
        page = await store.list_accounts(AccountFilter(tenant=tenant), Page(_SCAN_PAGE, after))
        scan.accounts.extend(page.items)
        after = page.next_after
        if after is None:
            return scan
        if len(scan.accounts) >= limit:
            scan.truncated = True
            return scan


async def currency_totals(store: Store, tenant: str) -> tuple[list[CurrencyTotal], bool]:
    """Money per currency over the tenant's accounts (the first ``ACCOUNTS_SCANNED``);
    and whether there were more."""
    scan = await _scan(store, tenant, ACCOUNTS_SCANNED)
    totals: dict[str, CurrencyTotal] = {}
    for a in scan.accounts:
        t = totals.setdefault(a.currency, CurrencyTotal(a.currency))
        t.accounts += 1
        t.posted += a.balance
        t.pending_in += a.credits_pending
        t.pending_out += a.debits_pending
    return [totals[c] for c in sorted(totals)], scan.truncated


async def _ping(name: str, shard: Store) -> ShardHealth:
    try:
        async with asyncio.timeout(_PING_SECONDS):
            server = await shard.ping()
    except PaycoreError as exc:
        return ShardHealth(name, ok=False, detail=redact_text(exc.detail))
    except TimeoutError:
        return ShardHealth(name, ok=False, detail=f"no answer within {_PING_SECONDS:g} s")
    return ShardHealth(name, ok=True, server=server)


async def shard_health(store: Store) -> list[ShardHealth]:
    """Each shard's ping, at once, each bounded in time."""
    shards = store.shard_stores
    return list(await asyncio.gather(*(_ping(n, s) for n, s in shards.items())))


def breakers(connectors: Mapping[str, Any]) -> list[Breaker]:
    """Each processor's circuit breaker as it is now."""
    out = []
    for name in sorted(connectors):
        connector = connectors[name]
        if not isinstance(connector, ResilientConnector):
            out.append(Breaker(name, "none"))
            continue
        s = connector.snapshot()
        out.append(Breaker(name, s.state.value, s.failure_rate, s.buffered_calls, s.retry_after))
    return out


async def readable_account(store: Store, ns: Namespace, client: str) -> Account | None:
    """The tenant's account ``client``, or one of paycore's (the console is for admins);
    None for a missing one and for another tenant's alike."""
    internal = ns.account(client)
    account = (await store.get_accounts([internal])).get(internal)
    if account is not None and account.tenant in (ns.tenant, SYSTEM_TENANT):
        return account
    return None


async def search_accounts(
    store: Store, ns: Namespace, prefix: str, limit: int = 50
) -> tuple[list[Account], bool]:
    """Accounts whose client id starts with ``prefix``: the tenant's (among the first
    ``ACCOUNTS_SCANNED``) and a system account named exactly; whether the scan stopped."""
    found: dict[str, Account] = {}
    exact = await readable_account(store, ns, prefix) if prefix else None
    if exact is not None:
        found[exact.id] = exact
    scan = await _scan(store, ns.tenant, ACCOUNTS_SCANNED)
    for a in scan.accounts:
        if len(found) >= limit:
            break
        if ns.out(a.id).startswith(prefix):
            found.setdefault(a.id, a)
    return list(found.values()), scan.truncated


async def visible_transfers(
    store: Store, ns: Namespace, views: list[TransferView]
) -> list[TransferView]:
    """The views the tenant may see: those touching one of its accounts."""
    ids = {i for v in views for i in (v.transfer.debit_account_id, v.transfer.credit_account_id)}
    accounts = await store.get_accounts(sorted(ids))
    own = {i for i, a in accounts.items() if a.tenant == ns.tenant}
    return [
        v
        for v in views
        if v.transfer.debit_account_id in own or v.transfer.credit_account_id in own
    ]


async def readable_transfer(store: Store, ns: Namespace, client: str) -> TransferView | None:
    """A transfer touching one of the tenant's accounts (as ``GET /v1/transfers/{id}``)."""
    view = await store.get_transfer(ns.transfer(client))
    if view is None:
        return None
    return view if await visible_transfers(store, ns, [view]) else None


async def owned_transfers(
    store: Store, owner_id: str, account_id: str, created_at: int
) -> list[TransferView]:
    """The ledger transfers a payment, refund or payout made (``pm.<its id>.<step>``,
    or ``fx.<its id>.<step>.<leg>`` settled through a conversion), from ``account_id``'s
    transfers (the merchant's, the wallet's) since it began."""
    prefixes = (f"{PAYMENT_TRANSFER_PREFIX}{owner_id}.", f"{FX_TRANSFER_PREFIX}{owner_id}.")
    since = max(0, created_at - 60 * _NS)
    page = await store.account_transfers(account_id, limit=500, cursor=since)
    return [v for v in page.data if v.transfer.id.startswith(prefixes)]


async def payment_transfers(store: Store, view: PaymentView) -> list[TransferView]:
    """The ledger transfers a payment made, from its merchant account's."""
    p = view.payment
    return await owned_transfers(store, p.id, p.merchant_account_id, p.created_at)


async def stuck_payments(
    service: PaymentService, tenant: str, older_than_seconds: int, limit: int = 100
) -> list[PaymentView]:
    """The tenant's payments still ``processing`` that began over ``older_than_seconds`` ago."""
    f = PaymentFilter(
        owner=id_prefix(tenant),
        status="processing",
        created_lt=time.time_ns() - older_than_seconds * _NS,
    )
    listed = await list_payments(service, f, Page(limit))
    return [payment for payment, _refunds in listed.items]
