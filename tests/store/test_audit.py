"""The auditor the store tests rely on notices each kind of broken ledger."""

from __future__ import annotations

import msgspec
import pytest

from paycore.ledger.model import (
    Account,
    AccountFlags,
    BalanceRecord,
    PendingStatus,
    Transfer,
    TransferFlags,
)
from store.support import LedgerState, audit


def _account(account_id: str, *counters: int, **flags: object) -> Account:
    return Account(account_id, "USD", 0, AccountFlags(**flags), None, 1, *counters)  # type: ignore[arg-type]


def _transfer(transfer_id: str, ts: int, amount: int = 10, **fields: object) -> Transfer:
    values: dict[str, object] = {
        "debit_account_id": "a",
        "credit_account_id": "b",
        "flags": TransferFlags(),
        "pending_id": None,
    }
    values.update(fields)
    return Transfer(
        transfer_id,
        values["debit_account_id"],  # type: ignore[arg-type]
        values["credit_account_id"],  # type: ignore[arg-type]
        amount,
        "USD",
        0,
        values["flags"],  # type: ignore[arg-type]
        values["pending_id"],  # type: ignore[arg-type]
        0,
        None,
        ts,
    )


def _good() -> LedgerState:
    """a pays b 10, then holds 5 for b, of which b captures 3."""
    return LedgerState(
        accounts={
            "a": _account("a", 0, 13, 0, 0),
            "b": _account("b", 0, 0, 0, 13),
        },
        transfers=[
            _transfer("t1", 1),
            _transfer("h1", 2, 5, flags=TransferFlags(pending=True)),
            _transfer("p1", 3, 3, flags=TransferFlags(post_pending=True), pending_id="h1"),
        ],
        pendings={"h1": (PendingStatus.POSTED, "p1")},
        history=[BalanceRecord("a", 1, 0, 10, 0, 0)],
    )


def test_a_consistent_ledger_passes() -> None:
    """A ledger whose counters replay from its transfers has no problem."""
    assert audit(_good()) == []


def _with_account(state: LedgerState, account: Account) -> LedgerState:
    return LedgerState({**state.accounts, account.id: account}, state.transfers, state.pendings, [])


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        pytest.param(
            lambda s: _with_account(s, _account("b", 0, 0, 0, 14)), "sum to", id="money-created"
        ),
        pytest.param(
            lambda s: _with_account(s, _account("a", 1, 13, 0, 0)),
            "pending balances",
            id="pending-unbalanced",
        ),
        pytest.param(
            lambda s: _with_account(s, _account("a", 0, 13, 0, 0, no_overdraft=True)),
            "below its limit",
            id="limit-broken",
        ),
        pytest.param(
            lambda s: LedgerState(
                {"a": _account("a", 0, 10, 0, 0), "b": _account("b", 0, 0, 0, 10)},
                s.transfers,
                s.pendings,
                [],
            ),
            "history replays",
            id="counters-off-history",
        ),
        pytest.param(
            lambda s: LedgerState(
                s.accounts, s.transfers, {"h1": (PendingStatus.PENDING, None)}, []
            ),
            "resolvers",
            id="hold-status-wrong",
        ),
        pytest.param(
            lambda s: LedgerState(s.accounts, s.transfers, {}, []),
            "without status rows",
            id="hold-row-missing",
        ),
        pytest.param(
            lambda s: LedgerState(
                s.accounts, [*s.transfers, _transfer("t9", 3, 0)], s.pendings, []
            ),
            "not after",
            id="timestamp-repeated",
        ),
        pytest.param(
            lambda s: LedgerState(
                s.accounts,
                [*s.transfers, _transfer("t9", 9, credit_account_id="zz")],
                s.pendings,
                [],
            ),
            "missing account",
            id="dangling-account",
        ),
        pytest.param(
            lambda s: _with_account(
                s, msgspec.structs.replace(_account("b", 0, 0, 0, 13), currency="EUR")
            ),
            "currencies differ",
            id="currency-mixed",
        ),
    ],
)
def test_each_broken_promise_is_reported(broken: object, expected: str) -> None:
    """Created money, unbalanced holds, broken limits and bad history are each reported."""
    problems = audit(broken(_good()))  # type: ignore[operator]
    assert any(expected in p for p in problems), problems
