"""Wire formats of the HTTP API: strict request Structs in, response Structs out.

Requests are decoded straight from the body bytes by msgspec with its strict
rules, so an amount is an integer or the request is refused: no floats, no
numeric strings, no booleans, nothing outside ``1..2**63-1``. Unknown fields
are refused too, so a typo (``"pendng": true``) is an error instead of a
silently plain transfer. Responses are Structs encoded in one pass.

``metadata`` (accounts, transfers, batch items, posts and voids of holds) is the
client's own small JSON object, bounded when it is decoded (``METADATA_RULES``): every
answer that shows it is then cheap and safe to render, and no stored row can break a
read. The whole body nests at most ``bodies.MAX_BODY_DEPTH`` levels.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar, cast

import msgspec
from msgspec import Meta

from paycore.api.bodies import MAX_BODY_DEPTH, check_depth
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
from paycore.storage.codec import DeepMetadata, encode_json

__all__ = [
    "ID_RULE",
    "METADATA_RULES",
    "AccountFlagsIn",
    "AccountIn",
    "AccountOut",
    "AccountPageOut",
    "BalanceOut",
    "BalancePageOut",
    "BalanceRecordOut",
    "BatchIn",
    "BatchItemOut",
    "BatchOut",
    "BatchTransferIn",
    "EmptyIn",
    "ItemError",
    "MetadataIn",
    "PostPendingIn",
    "Problem",
    "TransferIn",
    "TransferListOut",
    "TransferOut",
    "TransferPageOut",
    "VoidPendingIn",
    "account_out",
    "balance_record_out",
    "canonical_json",
    "check_metadata",
    "decode_body",
    "describe_pattern",
    "encode",
    "in_words",
    "metadata_out",
    "parse_rfc3339",
    "rfc3339",
    "transfer_out",
    "written_status",
]

# ID_PATTERN ends in "$", which in Python also matches just before a final "\n";
# the look-ahead refuses "abc\n" and is still a valid ECMA regex for OpenAPI.
_ID_REGEX: Final = ID_PATTERN.removesuffix("$") + r"(?!\n)$"
_CURRENCY_REGEX: Final = r"^[A-Z]{3}$"
ID_RULE: Final = "1-64 characters: letters, digits, '_', '.', ':', '-'"

Id = Annotated[str, Meta(pattern=_ID_REGEX, description=ID_RULE)]
Amount = Annotated[int, Meta(ge=1, le=MAX_AMOUNT, description="Integer minor units")]
Currency = Annotated[str, Meta(pattern=_CURRENCY_REGEX, description="ISO 4217 code")]
Code = Annotated[int, Meta(ge=0, le=2**31 - 1)]
TimeoutSeconds = Annotated[int, Meta(ge=0, le=MAX_TIMEOUT_SECONDS)]
CreditLimit = Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
Metadata = dict[str, Any]

# -- metadata bounds ---------------------------------------------------------------------

MAX_METADATA_KEYS: Final = 50  # per object (and items per array)
MAX_METADATA_KEY_LENGTH: Final = 40
MAX_METADATA_STRING_LENGTH: Final = 500
MAX_METADATA_DEPTH: Final = 5  # the metadata object itself is level 1
MAX_METADATA_BYTES: Final = 8192  # as compact JSON (UTF-8)
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1

METADATA_RULES: Final = (
    "Your own JSON object, kept and returned as sent, within bounds checked on every "
    f"request (else 422 invalid_request): at most {MAX_METADATA_KEYS} keys per object and "
    f"{MAX_METADATA_KEYS} items per array; keys of at most {MAX_METADATA_KEY_LENGTH} "
    f"characters; strings of at most {MAX_METADATA_STRING_LENGTH} characters; integers "
    f"within 64 bits (-2^63..2^63-1); objects and arrays nested at most "
    f"{MAX_METADATA_DEPTH} levels (the metadata object is the first); at most "
    f"{MAX_METADATA_BYTES} bytes as compact JSON."
)

MetadataIn = Annotated[
    dict[str, Any],
    Meta(
        description=METADATA_RULES,
        extra_json_schema={
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"maxLength": MAX_METADATA_KEY_LENGTH},
        },
    ),
]

_metadata_encoder = msgspec.json.Encoder()


def _at(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if text.isidentifier():
        return f"{path}.{text}"
    return f"{path}[{_metadata_encoder.encode(text).decode()}]"


def check_metadata(metadata: dict[str, Any] | None) -> None:
    """``ValueError`` naming the place and the bound when ``metadata`` breaks one of
    ``METADATA_RULES``; iterative, so even a hostile value costs no recursion."""
    if metadata is None:
        return
    stack: list[tuple[dict[str, Any] | list[Any], int, str]] = [(metadata, 1, "metadata")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(
                f"{path}: nests deeper than {MAX_METADATA_DEPTH} levels of objects and arrays"
            )
        if len(node) > MAX_METADATA_KEYS:
            kind = "keys" if isinstance(node, dict) else "items"
            raise ValueError(f"{path}: {len(node)} {kind}; at most {MAX_METADATA_KEYS}")
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            if isinstance(key, str) and len(key) > MAX_METADATA_KEY_LENGTH:
                raise ValueError(
                    f"{path}: a key of {len(key)} characters "
                    f"({key[:20]!r}...); at most {MAX_METADATA_KEY_LENGTH}"
                )
            if isinstance(value, str):
                if len(value) > MAX_METADATA_STRING_LENGTH:
                    raise ValueError(
                        f"{_at(path, key)}: a string of {len(value)} characters; "
                        f"at most {MAX_METADATA_STRING_LENGTH}"
                    )
            elif isinstance(value, int) and not isinstance(value, bool):
                if not _MIN_INT <= value <= _MAX_INT:
                    raise ValueError(f"{_at(path, key)}: an integer outside -2^63..2^63-1")
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1, _at(path, key)))
    size = len(_metadata_encoder.encode(metadata))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata: {size} bytes as JSON; at most {MAX_METADATA_BYTES}")


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
    metadata: MetadataIn | None = None

    def __post_init__(self) -> None:
        _known_currency(self.currency)
        check_metadata(self.metadata)

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
    metadata: MetadataIn | None = None

    def __post_init__(self) -> None:
        _known_currency(self.currency)
        check_metadata(self.metadata)

    def to_request(self) -> TransferRequest:
        return _transfer_request(
            self, TransferFlags(pending=self.pending, balancing=self.balancing)
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
    metadata: MetadataIn | None = None

    def __post_init__(self) -> None:
        _known_currency(self.currency)
        check_metadata(self.metadata)

    def to_request(self) -> TransferRequest:
        flags = TransferFlags(
            pending=self.pending,
            post_pending=self.post_pending,
            void_pending=self.void_pending,
            linked=self.linked,
            balancing=self.balancing,
        )
        return _transfer_request(self, flags, self.pending_id)


def _transfer_request(
    body: TransferIn | BatchTransferIn, flags: TransferFlags, pending_id: str | None = None
) -> TransferRequest:
    """The ledger's request for a transfer body (single or batch item)."""
    return TransferRequest(
        id=body.id,
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        amount=body.amount,
        currency=body.currency,
        code=body.code,
        flags=flags,
        pending_id=pending_id,
        timeout_seconds=body.timeout_seconds,
        metadata=body.metadata,
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
    metadata: MetadataIn | None = None

    def __post_init__(self) -> None:
        check_metadata(self.metadata)

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
    metadata: MetadataIn | None = None

    def __post_init__(self) -> None:
        check_metadata(self.metadata)

    def to_request(self, transfer_id: str, pending_id: str) -> TransferRequest:
        return TransferRequest(
            id=transfer_id,
            code=self.code,
            flags=TransferFlags(void_pending=True),
            pending_id=pending_id,
            metadata=self.metadata,
        )


S = TypeVar("S", bound=msgspec.Struct)

# msgspec names a broken pattern by its regex; the API says it in words.
_PATTERN_WORDS: dict[str, str] = {
    _ID_REGEX: ID_RULE,
    _CURRENCY_REGEX: "3 capital letters (an ISO 4217 code)",
}


def describe_pattern(regex: str, words: str) -> str:
    """Have validation errors say ``words`` rather than ``regex``; returns ``regex``."""
    _PATTERN_WORDS[regex] = words
    return regex


def in_words(message: str) -> str:
    """A msgspec validation message with each known pattern said in words."""
    for regex, words in _PATTERN_WORDS.items():
        message = message.replace(f"matching regex {regex!r}", f"of {words}")
    return message


def decode_body(decoder: msgspec.json.Decoder[S], body: bytes, *, empty: bytes = b"") -> S:
    """Decode a request body strictly; any problem is a 422 ``invalid_request``.

    ``empty`` is what an empty body stands for (``b"{}"`` where every field is optional).
    The body's nesting is measured first (``bodies.check_depth``), so neither this
    decoder nor anything after it recurses deeper than ``MAX_BODY_DEPTH`` levels.
    """
    body = body or empty
    check_depth(body)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, in_words(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec's, for bytes that are not UTF-8 inside a string
        raise RequestError(ErrorCode.INVALID_REQUEST, "body is not valid UTF-8 JSON") from None
    except RecursionError:  # not reached after check_depth; the last line of defence
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"the body nests arrays and objects deeper than {MAX_BODY_DEPTH} levels",
        ) from None


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


class AccountPageOut(_Output, frozen=True):
    """One page of accounts; pass ``next_cursor`` back for the next (null: the last)."""

    data: list[AccountOut]
    next_cursor: str | None


class TransferListOut(_Output, frozen=True):
    """One page of transfers; pass ``next_cursor`` back for the next (null: the last)."""

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


def metadata_out(metadata: Metadata | None) -> Metadata | None:
    """Metadata as an answer shows it. Metadata the API took is bounded and encodes
    as is; a row stored before it was bounded may nest deeper than any stack allows
    (``storage.codec.DeepMetadata``): that one is encoded by a loop, to the same bytes,
    and passed on pre-encoded (``msgspec.Raw``, which the encoder writes verbatim)."""
    if isinstance(metadata, DeepMetadata):
        return cast(Metadata, msgspec.Raw(encode_json(metadata)))
    return metadata


def account_out(a: Account) -> AccountOut:
    return AccountOut(
        id=a.id,
        currency=a.currency,
        code=a.code,
        flags=a.flags,
        metadata=metadata_out(a.metadata),
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
        metadata=metadata_out(t.metadata),
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
