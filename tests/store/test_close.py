"""Closing an account that holds money (or owes it): refused with ``account_has_balance``
unless ``transfer_balance_to`` names an account that takes the remainder, in the close's
own transaction. Before, such a close answered ok and stranded the balance for good:
a closed account refuses every transfer, and nothing reopens it."""

from __future__ import annotations

import pytest

from backends import AnyStore
from paycore.errors import ErrorCode
from paycore.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from paycore.storage.apply import remainder_transfer
from paycore.storage.base import CloseAccount, CreateAccounts, CreateTransfers
from store.support import audit, read_state


async def _accounts(store: AnyStore, *ids: str) -> dict[str, Account]:
    return await store.get_accounts(list(ids))


async def _move(store: AnyStore, transfer_id: str, debit: str, credit: str, amount: int) -> None:
    (result,) = await store.execute(
        CreateTransfers((TransferRequest(transfer_id, debit, credit, amount, "USD"),))
    )
    assert result.ok, result


async def _audit(store: AnyStore) -> None:
    assert audit(await store.with_snapshot(read_state)) == []


@pytest.fixture
async def ledger(store: AnyStore) -> AnyStore:
    """``bank`` (unlimited) funded ``w`` with 500; ``x`` is an empty no-overdraft wallet;
    ``h`` keeps balance history; ``eur`` is in another currency."""
    results = await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("w", "USD", flags=AccountFlags(no_overdraft=True)),
                AccountRequest("x", "USD", flags=AccountFlags(no_overdraft=True)),
                AccountRequest("h", "USD", flags=AccountFlags(history=True)),
                AccountRequest("eur", "EUR"),
            )
        )
    )
    assert all(r.ok for r in results), results
    await _move(store, "fund", "bank", "w", 500)
    return store


async def test_an_account_with_a_balance_is_not_closed(ledger: AnyStore) -> None:
    """Either sign: money held, or a debt (``bank`` is 500 below zero)."""
    for account_id, held in (("w", "holds 500 USD"), ("bank", "owes 500 USD")):
        refused = await ledger.execute(CloseAccount(account_id))
        assert refused.code is ErrorCode.ACCOUNT_HAS_BALANCE
        assert held in refused.detail
        assert "transfer_balance_to" in refused.detail
    found = await _accounts(ledger, "w", "bank")
    assert not found["w"].flags.closed
    assert not found["bank"].flags.closed
    await _move(ledger, "spend", "w", "x", 500)  # the wallet can still be emptied ...
    assert (await ledger.execute(CloseAccount("w"))).ok  # ... and closed then


async def test_the_balance_moves_to_the_named_account_in_the_same_transaction(
    ledger: AnyStore,
) -> None:
    closed = await ledger.execute(CloseAccount("w", transfer_balance_to="h"))
    assert (closed.ok, closed.exists) == (True, False)
    assert closed.account is not None
    assert closed.account.flags.closed
    assert closed.account.balance == 0
    found = await _accounts(ledger, "w", "h")
    assert found["w"].flags.closed
    assert (found["w"].debits_posted, found["w"].credits_posted) == (500, 500)
    assert found["h"].balance == 500
    moved = remainder_transfer(found["w"], "h")  # the same id: derived from the account
    view = await ledger.get_transfer(moved.id)
    assert view is not None
    stored = view.transfer
    assert (stored.debit_account_id, stored.credit_account_id, stored.amount) == ("w", "h", 500)
    assert view.status.value == "posted"
    (record,) = await ledger.balance_history("h")  # a history account records the move
    assert (record.timestamp, record.credits_posted) == (stored.timestamp, 500)
    again = await ledger.execute(CloseAccount("w", transfer_balance_to="h"))
    assert (again.ok, again.exists) == (True, True)  # a replay moves nothing more
    assert (await _accounts(ledger, "h"))["h"].balance == 500
    await _audit(ledger)


async def test_a_debt_is_paid_by_the_named_account(ledger: AnyStore) -> None:
    """``bank`` owes 500: ``h`` (no limit) pays it; ``x`` (no overdraft, empty) cannot."""
    refused = await ledger.execute(CloseAccount("bank", transfer_balance_to="x"))
    assert refused.code is ErrorCode.INSUFFICIENT_FUNDS
    assert "transfer_balance_to 'x'" in refused.detail
    closed = await ledger.execute(CloseAccount("bank", transfer_balance_to="h"))
    assert closed.ok, closed
    found = await _accounts(ledger, "bank", "h")
    assert found["bank"].flags.closed
    assert found["bank"].balance == 0
    assert found["h"].balance == -500
    await _audit(ledger)


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("ghost", ErrorCode.ACCOUNT_NOT_FOUND),
        ("eur", ErrorCode.CURRENCY_MISMATCH),
        ("w", ErrorCode.ACCOUNTS_MUST_BE_DIFFERENT),
        ("closed", ErrorCode.ACCOUNT_CLOSED),
    ],
)
async def test_a_target_that_cannot_take_the_balance_refuses_the_close(
    ledger: AnyStore, target: str, code: ErrorCode
) -> None:
    """The transfer's own refusal is the answer, and nothing changes: no transfer, no close."""
    (made,) = await ledger.execute(CreateAccounts((AccountRequest("closed", "USD"),)))
    assert made.ok
    assert (await ledger.execute(CloseAccount("closed"))).ok
    before = await ledger.with_snapshot(read_state)
    refused = await ledger.execute(CloseAccount("w", transfer_balance_to=target))
    assert refused.code is code
    assert refused.detail.startswith(f"transfer_balance_to {target!r}")
    assert await ledger.with_snapshot(read_state) == before


async def test_holds_still_refuse_a_close_with_a_target(ledger: AnyStore) -> None:
    hold = TransferRequest("hold", "w", "x", 5, "USD", flags=TransferFlags(pending=True))
    (held,) = await ledger.execute(CreateTransfers((hold,)))
    assert held.ok
    refused = await ledger.execute(CloseAccount("w", transfer_balance_to="h"))
    assert refused.code is ErrorCode.ACCOUNT_HAS_PENDING_TRANSFERS
    assert (await _accounts(ledger, "h"))["h"].balance == 0


async def test_a_target_of_another_tenant_is_a_missing_one(store: AnyStore) -> None:
    requests = (
        AccountRequest("bank", "USD", tenant="t1"),
        AccountRequest("mine", "USD", tenant="t1"),
        AccountRequest("theirs", "USD", tenant="t2"),
    )
    assert all(r.ok for r in await store.execute(CreateAccounts(requests)))
    await _move(store, "fund", "bank", "mine", 7)
    refused = await store.execute(CloseAccount("mine", "t1", transfer_balance_to="theirs"))
    assert refused.code is ErrorCode.ACCOUNT_NOT_FOUND
    assert (await _accounts(store, "theirs"))["theirs"].balance == 0


async def test_a_zero_balance_closes_without_using_the_target(ledger: AnyStore) -> None:
    closed = await ledger.execute(CloseAccount("x", transfer_balance_to="ghost"))
    assert closed.ok, closed
    assert closed.account is not None
    assert await ledger.get_transfer(remainder_transfer(closed.account, "ghost").id) is None
