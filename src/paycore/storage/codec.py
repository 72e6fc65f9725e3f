"""Row <-> value conversions shared by the SQL backends (flags as bitmasks, JSON metadata)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from paycore.ledger.model import (
    Account,
    AccountFlags,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferView,
)

if TYPE_CHECKING:
    from paycore.storage.base import OutboxRow

__all__ = [
    "ACCOUNT_COLUMNS",
    "A_COLUMNS",
    "OUTBOX_COLUMNS",
    "TRANSFER_COLUMNS",
    "T_COLUMNS",
    "account_flags_bits",
    "account_from_row",
    "decode_metadata",
    "encode_metadata",
    "outbox_values",
    "transfer_flags_bits",
    "transfer_from_row",
    "transfer_row",
    "view_from_row",
]

ACCOUNT_COLUMNS = (
    "id, currency, code, flags, credit_limit, timestamp, "
    "debits_pending, debits_posted, credits_pending, credits_posted, tenant"
)
TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, currency, code, flags, "
    "pending_id, timeout_seconds, timestamp"
)

# In ``OutboxRow`` field order.
OUTBOX_COLUMNS = (
    "transfer_id, target_shard, debit_account_id, credit_account_id, amount, currency, code, "
    "metadata, state, created_at, updated_at, claimed_by, claimed_until, attempts"
)


def outbox_values(row: OutboxRow) -> tuple[Any, ...]:
    """An ``OutboxRow`` as the values of ``OUTBOX_COLUMNS``."""
    return (
        row.transfer_id, row.target_shard, row.debit_account_id, row.credit_account_id,
        row.amount, row.currency, row.code, row.metadata, row.state, row.created_at,
        row.updated_at, row.claimed_by, row.claimed_until, row.attempts,
    )  # fmt: skip


_NO_OVERDRAFT, _HISTORY, _CLOSED = 1, 2, 4
_PENDING, _POST, _VOID, _LINKED, _BALANCING = 1, 2, 4, 8, 16

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def encode_metadata(metadata: dict[str, Any] | None) -> str | None:
    return None if metadata is None else _encoder.encode(metadata).decode()


def decode_metadata(text: str | bytes | None) -> dict[str, Any] | None:
    return None if text is None else _decoder.decode(text)


def account_flags_bits(flags: AccountFlags) -> int:
    return (
        (_NO_OVERDRAFT if flags.no_overdraft else 0)
        | (_HISTORY if flags.history else 0)
        | (_CLOSED if flags.closed else 0)
    )


# Flag values are immutable and few: share them instead of building one per row.
_account_flags_cache: dict[tuple[int, int | None], AccountFlags] = {}


def _account_flags(bits: int, credit_limit: int | None) -> AccountFlags:
    flags = _account_flags_cache.get((bits, credit_limit))
    if flags is None:
        flags = AccountFlags(
            no_overdraft=bool(bits & _NO_OVERDRAFT),
            credit_limit=credit_limit,
            history=bool(bits & _HISTORY),
            closed=bool(bits & _CLOSED),
        )
        if len(_account_flags_cache) < 4096:  # credit limits vary; keep the cache bounded
            _account_flags_cache[(bits, credit_limit)] = flags
    return flags


def account_from_row(row: tuple[Any, ...], metadata: str | bytes | None = None) -> Account:
    """Build an Account from ``ACCOUNT_COLUMNS`` order."""
    flags = _account_flags(row[3], row[4])
    return Account(
        id=row[0],
        currency=row[1],
        code=row[2],
        flags=flags,
        metadata=decode_metadata(metadata),
        timestamp=row[5],
        debits_pending=row[6],
        debits_posted=row[7],
        credits_pending=row[8],
        credits_posted=row[9],
        tenant=row[10],
    )


# The 32 possible flag combinations, built once: a batch decodes thousands of rows.
_TRANSFER_FLAGS = [
    TransferFlags(
        pending=bool(b & _PENDING),
        post_pending=bool(b & _POST),
        void_pending=bool(b & _VOID),
        linked=bool(b & _LINKED),
        balancing=bool(b & _BALANCING),
    )
    for b in range(32)
]


def transfer_flags_bits(f: TransferFlags) -> int:
    return (
        (_PENDING if f.pending else 0)
        | (_POST if f.post_pending else 0)
        | (_VOID if f.void_pending else 0)
        | (_LINKED if f.linked else 0)
        | (_BALANCING if f.balancing else 0)
    )


def transfer_from_row(row: tuple[Any, ...], metadata: str | bytes | None = None) -> Transfer:
    """Build a Transfer from ``TRANSFER_COLUMNS`` order."""
    return Transfer(
        id=row[0],
        debit_account_id=row[1],
        credit_account_id=row[2],
        amount=row[3],
        currency=row[4],
        code=row[5],
        flags=_TRANSFER_FLAGS[row[6]],
        pending_id=row[7],
        timeout_seconds=row[8],
        metadata=decode_metadata(metadata),
        timestamp=row[9],
    )


def transfer_row(t: Transfer) -> tuple[Any, ...]:
    """A Transfer in ``TRANSFER_COLUMNS`` order."""
    return (
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.currency,
        t.code,
        transfer_flags_bits(t.flags),
        t.pending_id,
        t.timeout_seconds,
        t.timestamp,
    )


# The same columns prefixed for joins: transfers as ``t``, accounts as ``a``.
T_COLUMNS = ", ".join(f"t.{c.strip()}" for c in TRANSFER_COLUMNS.split(","))
A_COLUMNS = ", ".join(f"a.{c.strip()}" for c in ACCOUNT_COLUMNS.split(","))


def view_from_row(row: tuple[Any, ...]) -> TransferView:
    """A TransferView from ``T_COLUMNS, metadata, pending status, resolved_by``."""
    transfer = transfer_from_row(row, row[10])
    status = None if row[11] is None else PendingStatus(row[11])
    return TransferView.of(transfer, status, row[12])
