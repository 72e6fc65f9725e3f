"""Helpers of the cluster tests: accounts placed on chosen shards, quick requests."""

from __future__ import annotations

from paycore.cluster.router import ShardedStore
from paycore.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from paycore.storage.base import CreateAccounts

USD = "USD"


def ids_on(store: ShardedStore, shard: str, n: int, prefix: str = "acct") -> list[str]:
    """``n`` account ids that the store places on ``shard``."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        candidate = f"{prefix}{i}"
        if store.shard_for(candidate) == shard:
            found.append(candidate)
        i += 1
    return found


async def open_accounts(
    store: ShardedStore, ids: list[str], *, no_overdraft: bool = True, currency: str = USD
) -> None:
    """Create ``ids`` (no_overdraft by default) and assert they were created."""
    flags = AccountFlags(no_overdraft=no_overdraft)
    results = await store.execute(
        CreateAccounts(tuple(AccountRequest(i, currency, flags=flags) for i in ids))
    )
    assert all(r.ok for r in results), results


def move(
    tid: str,
    debit: str,
    credit: str,
    amount: int,
    *,
    linked: bool = False,
    pending: bool = False,
    currency: str | None = USD,
) -> TransferRequest:
    return TransferRequest(
        tid, debit, credit, amount, currency, flags=TransferFlags(linked=linked, pending=pending)
    )


def counters(account: Account) -> tuple[int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted)."""
    return (
        account.debits_pending,
        account.debits_posted,
        account.credits_pending,
        account.credits_posted,
    )
