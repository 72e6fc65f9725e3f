"""Ledger values: accounts, transfers, their flags and states (TigerBeetle's model, extended).

Values are frozen msgspec Structs: slotted, immutable, cheap to build by the
thousand in a batch, and encoded to JSON without a copy. Amounts are ``int``
minor units; timestamps are ``int`` nanoseconds since the epoch, unique and
strictly increasing per shard, so they double as a sequence number.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "DEFAULT_TENANT",
    "ID_PATTERN",
    "SETTLEMENT_METADATA_KEY",
    "SYSTEM_HOLD_PREFIX",
    "SYSTEM_TENANT",
    "Account",
    "AccountFlags",
    "AccountRequest",
    "BalanceRecord",
    "PendingStatus",
    "Transfer",
    "TransferFlags",
    "TransferRequest",
    "TransferStatus",
    "TransferView",
    "is_valid_client_id",
    "is_valid_id",
    "is_valid_tenant",
]

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
# fullmatch, not ID_PATTERN: "$" would also accept a trailing newline.
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# What the store keeps: a client id, prefixed with "<tenant>/" for every tenant but the
# default one (``paycore.ledger.tenancy``); "/" is in neither charset, so no client id can
# spell another tenant's.
_INTERNAL_ID = re.compile(r"(?:[A-Za-z0-9_.\-]{1,64}/)?[A-Za-z0-9_.:\-]{1,64}")

Metadata = dict[str, Any]


SETTLEMENT_METADATA_KEY = "paycore:xs"
# Holds that paycore's own workflows create (payments: authorizations, refunds, payouts)
# carry ids with this prefix; only those workflows may post or void them.
SYSTEM_HOLD_PREFIX = "pm."
"""Marks the transfers of a cross-shard saga; only the settlement may post or void them."""


# Tenants (API keys are bound to one): every client account belongs to exactly one, set at
# creation and never changed. Accounts created before tenants existed belong to
# ``DEFAULT_TENANT``; paycore's own accounts (clearing, processors) to ``SYSTEM_TENANT``,
# a name no client tenant can take (client names match ``_TENANT``).
DEFAULT_TENANT = "default"
SYSTEM_TENANT = ""
_TENANT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def is_valid_tenant(value: object) -> bool:
    """Client tenant names: 1-64 chars of ``[A-Za-z0-9_.-]`` (never the system tenant)."""
    return isinstance(value, str) and _TENANT.fullmatch(value) is not None


def is_valid_id(value: object) -> bool:
    """An id as the store keeps it: a client id (1-64 chars of ``[A-Za-z0-9_.:-]``, the
    API contract), or one in a tenant's namespace, ``<tenant>/<client id>``."""
    return isinstance(value, str) and _INTERNAL_ID.fullmatch(value) is not None


def is_valid_client_id(value: object) -> bool:
    """Client ids are 1-64 chars of ``[A-Za-z0-9_.:-]`` (the API contract)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class AccountFlags(msgspec.Struct, frozen=True, omit_defaults=False):
    """Balance limits and lifecycle of an account.

    ``no_overdraft``: debits (posted + pending) may never exceed posted credits.
    ``credit_limit``: like no_overdraft, but the balance may go down to ``-credit_limit``.
    ``history``: keep a balance snapshot after every transfer touching the account.
    ``closed``: no new transfers; set by closing, never by creation.
    """

    no_overdraft: bool = False
    credit_limit: int | None = None
    history: bool = False
    closed: bool = False

    def debit_limit(self) -> int | None:
        """How far below zero the balance may go, or None when unlimited."""
        if self.no_overdraft:
            return 0
        return self.credit_limit


class AccountRequest(msgspec.Struct, frozen=True):
    """What a client asks for when it creates an account."""

    id: str
    currency: str
    code: int = 0
    flags: AccountFlags = AccountFlags()
    metadata: Metadata | None = None
    # Who owns it (immutable); the API sets the caller's, paycore its own SYSTEM_TENANT.
    tenant: str = DEFAULT_TENANT


class Account(msgspec.Struct, frozen=True):
    """An account with its four balance counters as of one committed state."""

    id: str
    currency: str
    code: int
    flags: AccountFlags
    metadata: Metadata | None
    timestamp: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    tenant: str = DEFAULT_TENANT

    @property
    def balance(self) -> int:
        """Posted balance, credit-normal: what a wallet holder owns."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """Posted balance minus outgoing holds: what may still be spent."""
        return self.credits_posted - self.debits_posted - self.debits_pending


class TransferFlags(msgspec.Struct, frozen=True):
    """How a transfer behaves; at most one of pending, post_pending, void_pending."""

    pending: bool = False
    post_pending: bool = False
    void_pending: bool = False
    linked: bool = False
    balancing: bool = False


class TransferRequest(msgspec.Struct, frozen=True):
    """One item of a create-transfers call.

    For ``post_pending`` and ``void_pending`` only ``id``, ``pending_id`` and
    optionally ``amount`` (a partial capture) are needed; accounts and currency
    are taken from the pending transfer, and must match it when given.
    """

    id: str
    debit_account_id: str | None = None
    credit_account_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    code: int = 0
    flags: TransferFlags = TransferFlags()
    pending_id: str | None = None
    timeout_seconds: int = 0
    metadata: Metadata | None = None


class Transfer(msgspec.Struct, frozen=True):
    """A posted fact of the ledger; never updated once written."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    code: int
    flags: TransferFlags
    pending_id: str | None
    timeout_seconds: int
    metadata: Metadata | None
    timestamp: int

    @property
    def expires_at(self) -> int | None:
        """When a pending transfer times out (ns), or None if it never does."""
        if not self.flags.pending or self.timeout_seconds <= 0:
            return None
        return self.timestamp + self.timeout_seconds * 1_000_000_000


class PendingStatus(StrEnum):
    """Lifecycle of a pending transfer (a hold).

    pending -> posted   a post_pending transfer captured all or part of it
    pending -> voided   a void_pending transfer released it
    pending -> expired  its timeout passed and the expiry job released it
    The three end states are final.
    """

    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


PENDING_TRANSITIONS: dict[PendingStatus, frozenset[PendingStatus]] = {
    PendingStatus.PENDING: frozenset(
        {PendingStatus.POSTED, PendingStatus.VOIDED, PendingStatus.EXPIRED}
    ),
    PendingStatus.POSTED: frozenset(),
    PendingStatus.VOIDED: frozenset(),
    PendingStatus.EXPIRED: frozenset(),
}


class TransferStatus(StrEnum):
    """What the API shows for a transfer record."""

    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"
    EXPIRED = "expired"
    IN_FLIGHT = "in_flight"


class BalanceRecord(msgspec.Struct, frozen=True):
    """An account's counters right after the transfer with this timestamp."""

    account_id: str
    timestamp: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int


class TransferView(msgspec.Struct, frozen=True):
    """A transfer as read back: the fact plus, for a hold, its current status."""

    transfer: Transfer
    status: TransferStatus
    resolved_by: str | None = None

    @classmethod
    def of(
        cls, transfer: Transfer, pending: PendingStatus | None, resolved_by: str | None
    ) -> TransferView:
        if pending is not None:
            return cls(transfer, TransferStatus(pending.value), resolved_by)
        if transfer.flags.void_pending:
            return cls(transfer, TransferStatus.VOIDED)
        return cls(transfer, TransferStatus.POSTED)
