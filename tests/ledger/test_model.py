"""Ledger values: ids, flags, derived balances, hold lifecycle and read views."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given

from paycore.ledger.model import (
    PENDING_TRANSITIONS,
    Account,
    AccountFlags,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferStatus,
    TransferView,
    is_valid_id,
)
from strategies import invalid_ids, valid_ids

NS = 1_000_000_000


def _transfer(**changes: object) -> Transfer:
    fields: dict[str, object] = {
        "id": "t1",
        "debit_account_id": "a",
        "credit_account_id": "b",
        "amount": 10,
        "currency": "USD",
        "code": 0,
        "flags": TransferFlags(),
        "pending_id": None,
        "timeout_seconds": 0,
        "metadata": None,
        "timestamp": 5 * NS,
    }
    fields.update(changes)
    return Transfer(**fields)  # type: ignore[arg-type]


@given(valid_ids)
def test_ids_of_allowed_characters_are_valid(value: str) -> None:
    """Any 1-64 characters of [A-Za-z0-9_.:-] form a valid id."""
    assert is_valid_id(value)


@given(invalid_ids)
def test_ids_outside_the_contract_are_invalid(value: str) -> None:
    """Empty, longer than 64, or with any other character: not a valid id."""
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", [None, 7, b"abc", ["a"]])
def test_non_strings_are_not_ids(value: object) -> None:
    """Only strings can be ids."""
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", ["abc\n", "a" * 64 + "\n"])
def test_an_id_with_a_trailing_newline_is_invalid(value: str) -> None:
    """A trailing newline is a character outside the id alphabet, so the id is invalid."""
    assert not is_valid_id(value)


@pytest.mark.parametrize(
    ("flags", "limit"),
    [
        (AccountFlags(), None),
        (AccountFlags(no_overdraft=True), 0),
        (AccountFlags(credit_limit=0), 0),
        (AccountFlags(credit_limit=250), 250),
        (AccountFlags(history=True), None),
    ],
)
def test_debit_limit_follows_the_flags(flags: AccountFlags, limit: int | None) -> None:
    """no_overdraft floors the balance at 0, credit_limit at -limit, otherwise no floor."""
    assert flags.debit_limit() == limit


def test_balance_and_available_derive_from_the_counters() -> None:
    """Balance is posted credits minus posted debits; available also subtracts holds."""
    account = Account(
        id="a",
        currency="USD",
        code=0,
        flags=AccountFlags(),
        metadata=None,
        timestamp=1,
        debits_pending=30,
        debits_posted=100,
        credits_pending=7,
        credits_posted=500,
    )
    assert account.balance == 400
    assert account.available == 370


def test_a_hold_expires_timeout_seconds_after_its_timestamp() -> None:
    """A pending transfer with a timeout expires at timestamp + timeout seconds."""
    hold = _transfer(flags=TransferFlags(pending=True), timeout_seconds=3)
    assert hold.expires_at == 5 * NS + 3 * NS


@pytest.mark.parametrize(
    "transfer",
    [
        _transfer(flags=TransferFlags(pending=True), timeout_seconds=0),
        _transfer(timeout_seconds=3),
        _transfer(flags=TransferFlags(post_pending=True), timeout_seconds=3),
    ],
)
def test_only_a_hold_with_a_timeout_expires(transfer: Transfer) -> None:
    """A hold without timeout, or anything that is not a hold, never expires."""
    assert transfer.expires_at is None


def test_pending_transitions_leave_only_the_pending_state() -> None:
    """A hold moves from pending to posted, voided or expired, and never out of those."""
    assert PENDING_TRANSITIONS[PendingStatus.PENDING] == {
        PendingStatus.POSTED,
        PendingStatus.VOIDED,
        PendingStatus.EXPIRED,
    }
    for final in (PendingStatus.POSTED, PendingStatus.VOIDED, PendingStatus.EXPIRED):
        assert PENDING_TRANSITIONS[final] == frozenset()
    assert set(PENDING_TRANSITIONS) == set(PendingStatus)


@pytest.mark.parametrize("status", list(PendingStatus))
def test_a_hold_shows_its_pending_status(status: PendingStatus) -> None:
    """A hold's view carries its current status and who resolved it."""
    hold = _transfer(flags=TransferFlags(pending=True))
    view = TransferView.of(hold, status, "p1")
    assert (view.status.value, view.resolved_by) == (status.value, "p1")


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        (TransferFlags(), TransferStatus.POSTED),
        (TransferFlags(post_pending=True), TransferStatus.POSTED),
        (TransferFlags(void_pending=True), TransferStatus.VOIDED),
        (TransferFlags(balancing=True, linked=True), TransferStatus.POSTED),
    ],
)
def test_a_non_hold_shows_posted_or_voided(flags: TransferFlags, status: TransferStatus) -> None:
    """A plain transfer or a post reads as posted; a void reads as voided."""
    view = TransferView.of(_transfer(flags=flags), None, None)
    assert (view.status, view.resolved_by) == (status, None)


def test_values_are_frozen() -> None:
    """Transfers and accounts cannot be changed in place: history is immutable."""
    transfer = _transfer()
    with pytest.raises(AttributeError):
        transfer.amount = 11  # type: ignore[misc]
    with pytest.raises(AttributeError):
        AccountFlags().closed = True  # type: ignore[misc]


def test_values_round_trip_through_json() -> None:
    """A transfer view encodes to JSON and decodes to an equal value."""
    view = TransferView.of(
        _transfer(metadata={"order": "o-1", "n": [1, 2]}, flags=TransferFlags(pending=True)),
        PendingStatus.POSTED,
        "p-1",
    )
    assert msgspec.json.decode(msgspec.json.encode(view), type=TransferView) == view
