"""A shard's balance rows while a posted cross-shard transfer's hold is in flight
(``paycore.ledger.saga_history``): every row of the debit account shows that hold's
amount as posted, whichever transaction writes the row, and the audit replays it."""

from __future__ import annotations

import msgspec

from backends import AnyStore
from paycore.cluster.namespaces import clearing_account_id
from paycore.cluster.settlement import hold_request
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.ops.audit import audit_store
from paycore.storage.base import CreateAccounts, CreateTransfers, ExpirePending
from store.support import ManualClock


async def test_an_expiry_row_shows_a_hold_in_flight_as_posted(
    store: AnyStore, clock: ManualClock
) -> None:
    clearing = clearing_account_id("shard-0", "shard-1", "USD")
    opened = await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("a", "USD", flags=AccountFlags(no_overdraft=True, history=True)),
                AccountRequest("c", "USD", flags=AccountFlags(history=True)),
                AccountRequest(clearing, "USD"),
            )
        )
    )
    assert all(r.ok for r in opened), opened
    pending = TransferFlags(pending=True)
    step1, _ = hold_request(TransferRequest("x1", "a", "b", 100), "shard-0", "shard-1", "USD")
    done = await store.execute(
        CreateTransfers(
            (
                TransferRequest("fund", "bank", "a", 1000),
                TransferRequest("h1", "a", "c", 40, flags=pending, timeout_seconds=1),
                step1,  # the hold of a posted transfer to another shard, in flight
            )
        )
    )
    assert all(r.ok for r in done), done
    clock.advance(2)
    assert await store.execute(ExpirePending()) == ["h1"]
    rows = [msgspec.structs.astuple(h)[2:] for h in await store.balance_history("a")]
    # funded; the hold; the transfer (posted at once); the hold expired: x1 still posted.
    assert rows == [(0, 0, 0, 1000), (40, 0, 0, 1000), (40, 100, 0, 1000), (0, 100, 0, 1000)]
    report = await audit_store(store)
    assert report.ok, report
