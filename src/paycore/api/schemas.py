"""Wire formats of the HTTP API: strict request Structs in, response Structs out.

Requests are decoded straight from the body bytes by msgspec with its strict
rules, so an amount is an integer or the request is refused: no floats, no
numeric strings, no booleans, nothing outside ``1..2**63-1``. Unknown fields
are refused too, so a typo (``"pendng": true``) is an error instead of a
silently plain transfer. Responses are Structs encoded in one pass.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta

from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import (
    DEFAULT_TENANT,
    ID_PATTERN,
    Account,
    AccountFlags,
    AccountRequest,
    BalanceRecord,
    Transfer,
    TransferFlags,
    TransferRequest,
    TransferStatus,
)
from paycore.ledger.rules import MAX_TIMEOUT_SECONDS
from paycore.money import MAX_AMOUNT, is_currency

__all__ = [
    "AccountFlagsIn",
    "AccountIn",
    "AccountOut",
    "BalanceOut",
    "BalancePageOut",
    "BalanceRecordOut",
    "BatchIn",
    "BatchItemOut",
    "BatchOut",
    "BatchTransferIn",
    "EmptyIn",
    "ItemError",
    "PostPendingIn",
    "Problem",
    "TransferIn",
    "TransferOut",
    "TransferPageOut",
    "VoidPendingIn",
    "account_out",
    "balance_record_out",
    "canonical_json",
    "decode_body",
    "encode",
    "parse_rfc3339",
    "rfc3339",
    "transfer_out",
    "written_status",
]

# ID_PATTERN ends in "$", which in Python also matches just before a final "\n";
# the look-ahead refuses "abc\n" and is still a valid ECMA regex for OpenAPI.
_ID_REGEX: Final = ID_PATTERN.removesuffix("$") + r"(?!\n)$"

Id = Annotated[str, Meta(pattern=_ID_REGEX, description="1-64 chars of [A-Za-z0-9_.:-]")]
Amount = Annotated[int, Meta(ge=1, le=MAX_AMOUNT, description="Integer minor units")]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Code = Annotated[int, Meta(ge=0, le=2**31 - 1)]
TimeoutSeconds = Annotated[int, Meta(ge=0, le=MAX_TIMEOUT_SECONDS)]
CreditLimit = Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
Metadata = dict[str, Any]


def _known_currency(code: str | None) -> None:
    # Raised inside __post_init__, msgspec reports it as a ValidationError with a path.
    if code is not None and not is_currency(code):
        raise ValueError(f"unknown ISO 4217 currency {code!r}")


# -- requests ------------------------------------------------------------------------


class _Input(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error."""


class AccountFlagsIn(_Input, frozen=True):
    """Balance limits chosen at creation; ``closed`` is set only by closing."""

    no_overdraft: bool = False
    credit_limit: CreditLimit | None = None
    history: bool = False


class AccountIn(_Input, frozen=True):
    """Body of ``POST /v1/accounts``; ``id`` is generated when absent."""

    currency: Currency
    id: Id | None = None
    code: Code = 0
    flags: AccountFlagsIn = AccountFlagsIn()
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        _known_currency(self.currency)

    def to_request(self, account_id: str, tenant: str = DEFAULT_TENANT) -> AccountRequest:
        f = self.flags
        return AccountRequest(
            id=account_id,
            currency=self.currency,
            code=self.code,
            flags=AccountFlags(
                no_overdraft=f.no_overdraft, credit_limit=f.credit_limit, history=f.history
            ),
            metadata=self.metadata,
            tenant=tenant,
        )


class TransferIn(_Input, frozen=True):
    """Body of ``POST /v1/transfers``: a posted transfer or, with ``pending``, a hold."""

    id: Id
    debit_account_id: Id
    credit_account_id: Id
    amount: Amount
    currency: Currency
    code: Code = 0
    pending: bool = False
    timeout_seconds: TimeoutSeconds = 0
    balancing: bool = False
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        _known_currency(self.currency)

    def to_request(self) -> TransferRequest:
        return TransferRequest(
            id=self.id,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=self.amount,
            currency=self.currency,
            code=self.code,
            flags=TransferFlags(pending=self.pending, balancing=self.balancing),
            timeout_seconds=self.timeout_seconds,
            metadata=self.metadata,
        )


class BatchTransferIn(_Input, frozen=True):
    """One item of ``POST /v1/transfers/batch``; posts and voids name a ``pending_id``."""

    id: Id
    debit_account_id: Id | None = None
    credit_account_id: Id | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    code: Code = 0
    pending: bool = False
    post_pending: bool = False
    void_pending: bool = False
    pending_id: Id | None = None
    linked: bool = False
    timeout_seconds: TimeoutSeconds = 0
    balancing: bool = False
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        _known_currency(self.currency)

    def to_request(self) -> TransferRequest:
        return TransferRequest(
            id=self.id,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=self.amount,
            currency=self.currency,
            code=self.code,
            flags=TransferFlags(
                pending=self.pending,
                post_pending=self.post_pending,
                void_pending=self.void_pending,
                linked=self.linked,
                balancing=self.balancing,
            ),
            pending_id=self.pending_id,
            timeout_seconds=self.timeout_seconds,
            metadata=self.metadata,
        )


class EmptyIn(_Input, frozen=True):
    """A body that must be absent or ``{}`` (``POST /v1/accounts/{id}/close``)."""


class BatchIn(_Input, frozen=True):
    """Body of ``POST /v1/transfers/batch``."""

    transfers: Annotated[list[BatchTransferIn], Meta(min_length=1)]


class PostPendingIn(_Input, frozen=True):
    """Body of ``POST /v1/transfers/{id}/post``; no ``amount`` captures the whole hold."""

    id: Id | None = None
    amount: Amount | None = None
    code: Code = 0
    metadata: Metadata | None = None

    def to_request(self, transfer_id: str, pending_id: str) -> TransferRequest:
        return TransferRequest(
            id=transfer_id,
            amount=self.amount,
            code=self.code,
            flags=TransferFlags(post_pending=True),
            pending_id=pending_id,
            metadata=self.metadata,
        )


class VoidPendingIn(_Input, frozen=True):
    """Body of ``POST /v1/transfers/{id}/void`` (may be empty)."""

    id: Id | None = None
    code: Code = 0
    metadata: Metadata | None = None

    def to_request(self, transfer_id: str, pending_id: str) -> TransferRequest:
        return TransferRequest(
            id=transfer_id,
            code=self.code,
            flags=TransferFlags(void_pending=True),
            pending_id=pending_id,
            metadata=self.metadata,
        )


In = TypeVar("In", bound=_Input)


def decode_body(decoder: msgspec.json.Decoder[In], body: bytes, *, empty: bytes = b"") -> In:
    """Decode a request body strictly; any problem is a 422 ``invalid_request``.

    ``empty`` is what an empty body stands for (``b"{}"`` where every field is optional).
    """
    try:
        return decoder.decode(body or empty)
    except msgspec.ValidationError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec's, for bytes that are not UTF-8 inside a string
        raise RequestError(ErrorCode.INVALID_REQUEST, "body is not valid UTF-8 JSON") from None


_canonical = msgspec.json.Encoder(order="sorted")


def canonical_json(value: msgspec.Struct) -> bytes:
    """The decoded request with sorted keys and defaults filled in, for fingerprints.

    Two bodies that mean the same request (keys reordered, a default spelled out)
    give the same bytes.
    """
    return _canonical.encode(value)


# -- responses -----------------------------------------------------------------------


class _Output(msgspec.Struct, frozen=True):
    """Base of response bodies; every field is always present (null when unset)."""


class BalanceOut(_Output, frozen=True):
    """The four counters and what may still be spent (credits - debits - pending debits)."""

    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    available: int


class AccountOut(_Output, frozen=True):
    """An account with its balance."""

    id: str
    currency: str
    code: int
    flags: AccountFlags
    metadata: Metadata | None
    timestamp: int
    created_at: str
    balance: BalanceOut


class TransferOut(_Output, frozen=True):
    """A transfer, with the status of a hold (pending, posted, voided, expired)."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    code: int
    status: TransferStatus
    pending_id: str | None
    flags: TransferFlags
    timeout_seconds: int
    expires_at: str | None
    metadata: Metadata | None
    timestamp: int
    created_at: str


class TransferPageOut(_Output, frozen=True):
    """One page of an account's transfers; pass ``next_cursor`` back for the next."""

    data: list[TransferOut]
    next_cursor: str | None


class BalanceRecordOut(_Output, frozen=True):
    """An account's balance right after the transfer with this timestamp."""

    timestamp: int
    recorded_at: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    available: int


class BalancePageOut(_Output, frozen=True):
    """Balance history, oldest first; pass ``next_cursor`` back for the next page."""

    data: list[BalanceRecordOut]
    next_cursor: str | None


class ItemError(_Output, frozen=True):
    """Why one batch item was refused."""

    code: ErrorCode
    detail: str


class BatchItemOut(_Output, frozen=True, omit_defaults=True):
    """One batch result: ``{id, status}`` when applied, ``{id, error}`` when refused."""

    id: str
    status: TransferStatus | None = None
    error: ItemError | None = None


class BatchOut(_Output, frozen=True):
    """One result per batch item, in request order."""

    results: list[BatchItemOut]


class Problem(_Output, frozen=True):
    """RFC 9457 problem details, plus paycore's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: ErrorCode


_encoder = msgspec.json.Encoder()
encode = _encoder.encode


def account_out(a: Account) -> AccountOut:
    return AccountOut(
        id=a.id,
        currency=a.currency,
        code=a.code,
        flags=a.flags,
        metadata=a.metadata,
        timestamp=a.timestamp,
        created_at=rfc3339(a.timestamp),
        balance=BalanceOut(
            debits_posted=a.debits_posted,
            credits_posted=a.credits_posted,
            debits_pending=a.debits_pending,
            credits_pending=a.credits_pending,
            available=a.available,
        ),
    )


def written_status(t: Transfer) -> TransferStatus:
    """The status a transfer has the moment it is written (see ``TransferView.of``)."""
    if t.flags.pending:
        return TransferStatus.PENDING
    if t.flags.void_pending:
        return TransferStatus.VOIDED
    return TransferStatus.POSTED


def transfer_out(t: Transfer, status: TransferStatus) -> TransferOut:
    expires_at = t.expires_at
    return TransferOut(
        id=t.id,
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=t.amount,
        currency=t.currency,
        code=t.code,
        status=status,
        pending_id=t.pending_id,
        flags=t.flags,
        timeout_seconds=t.timeout_seconds,
        expires_at=None if expires_at is None else rfc3339(expires_at),
        metadata=t.metadata,
        timestamp=t.timestamp,
        created_at=rfc3339(t.timestamp),
    )


def balance_record_out(r: BalanceRecord) -> BalanceRecordOut:
    return BalanceRecordOut(
        timestamp=r.timestamp,
        recorded_at=rfc3339(r.timestamp),
        debits_posted=r.debits_posted,
        credits_posted=r.credits_posted,
        debits_pending=r.debits_pending,
        credits_pending=r.credits_pending,
        available=r.credits_posted - r.debits_posted - r.debits_pending,
    )


# -- time ----------------------------------------------------------------------------

_NS = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC, keeping all nine fraction digits.

    Ledger timestamps are unique per nanosecond, so a coarser rendering would
    make two transfers look simultaneous.
    """
    seconds, fraction = divmod(ns, _NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def parse_rfc3339(text: str) -> int:
    """RFC 3339 date-time (any offset, up to nanoseconds) to nanoseconds since the epoch."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    datetime(year, month, day, hour, minute, second)  # range check only (raises ValueError)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(8) is None:
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    fraction = int((m.group(7) or "0").ljust(9, "0"))
    return seconds * _NS + fraction
