"""Row codecs of the SQL backends: flags as bitmasks and JSON metadata round-trip exactly."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from paycore.ledger.model import Account, AccountFlags, Transfer, TransferFlags
from paycore.money import MAX_AMOUNT
from paycore.storage.codec import (
    account_flags_bits,
    account_from_row,
    decode_metadata,
    encode_metadata,
    transfer_flags_bits,
    transfer_from_row,
    transfer_row,
)
from strategies import valid_ids

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
metadata = st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4)
counters = st.integers(0, MAX_AMOUNT)

transfers = st.builds(
    Transfer,
    id=valid_ids,
    debit_account_id=valid_ids,
    credit_account_id=valid_ids,
    amount=st.integers(1, MAX_AMOUNT),
    currency=st.sampled_from(["USD", "JPY"]),
    code=st.integers(0, 2**31 - 1),
    flags=st.builds(TransferFlags),
    pending_id=st.none() | valid_ids,
    timeout_seconds=st.integers(0, 2**31 - 1),
    metadata=metadata,
    timestamp=st.integers(0, MAX_AMOUNT),
)


@given(transfers)
def test_a_transfer_survives_its_row(transfer: Transfer) -> None:
    """transfer_row then transfer_from_row, with encoded metadata, gives the same transfer."""
    assert transfer_from_row(transfer_row(transfer), encode_metadata(transfer.metadata)) == transfer


@given(
    flags=st.builds(
        AccountFlags,
        no_overdraft=st.booleans(),
        credit_limit=st.none() | counters,
        history=st.booleans(),
        closed=st.booleans(),
    ),
    values=st.tuples(counters, counters, counters, counters),
    meta=metadata,
)
def test_an_account_survives_its_row(
    flags: AccountFlags, values: tuple[int, int, int, int], meta: dict[str, Any] | None
) -> None:
    """An account's flags, limit, counters, tenant and metadata come back from its row unchanged."""
    account = Account("a", "USD", 3, flags, meta, 17, *values, tenant="t1")
    row = ("a", "USD", 3, account_flags_bits(flags), flags.credit_limit, 17, *values, "t1")
    assert account_from_row(row, encode_metadata(meta)) == account


def test_each_flag_has_its_own_bit() -> None:
    """Every transfer flag and account flag maps to a distinct bit."""
    names = ["pending", "post_pending", "void_pending", "linked", "balancing"]
    bits = [transfer_flags_bits(TransferFlags(**{n: True})) for n in names]
    assert sorted(bits) == [1, 2, 4, 8, 16]
    assert transfer_flags_bits(TransferFlags()) == 0
    account_bits = [
        account_flags_bits(AccountFlags(**{n: True})) for n in ("no_overdraft", "history", "closed")
    ]
    assert sorted(account_bits) == [1, 2, 4]


def test_missing_metadata_stays_missing() -> None:
    """None is stored as NULL, not as the JSON text null, and reads back as None."""
    assert encode_metadata(None) is None
    assert decode_metadata(None) is None
    assert decode_metadata(encode_metadata({})) == {}
