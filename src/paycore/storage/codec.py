"""Row <-> value conversions shared by the SQL backends (flags as bitmasks, JSON metadata).

Metadata is stored as the JSON text msgspec made of it. Reads run on whatever stack the
caller has (a request handler, the writer thread), and msgspec, like every JSON decoder
and encoder, recurses once per nesting level: a row written before the API bounded
metadata's depth could then overflow the stack on every read, for ever. So
``decode_metadata`` measures the depth first (``json_depth``: linear, not recursive),
and a document deeper than ``SAFE_DECODE_DEPTH`` is decoded by a loop instead, into a
``DeepMetadata`` (a plain ``dict`` that says so), which ``encode_json`` (a loop too)
writes back byte for byte as msgspec would have. The values are all there, so
comparisons and the hash chain's sorted encoding see the same data as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Final

import msgspec

from paycore.errors import ErrorCode
from paycore.ledger.model import (
    SETTLEMENT_METADATA_KEY,
    Account,
    AccountFlags,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferView,
)
from paycore.ledger.refusals import Refusal

if TYPE_CHECKING:
    from paycore.storage.base import OutboxRow

__all__ = [
    "ACCOUNT_COLUMNS",
    "A_COLUMNS",
    "OUTBOX_COLUMNS",
    "REFUSAL_COLUMNS",
    "SAFE_DECODE_DEPTH",
    "SAGA_NOTE_PATTERN",
    "TRANSFER_COLUMNS",
    "T_COLUMNS",
    "DeepMetadata",
    "account_flags_bits",
    "account_from_row",
    "decode_metadata",
    "encode_json",
    "encode_metadata",
    "json_depth",
    "outbox_values",
    "refusal_from_row",
    "refusal_row",
    "transfer_flags_bits",
    "transfer_flags_from_bits",
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

# In ``Refusal`` field order (migration 0013).
REFUSAL_COLUMNS = "id, tenant, fingerprint, code, detail, created_at"


def refusal_row(f: Refusal) -> tuple[Any, ...]:
    """A ``Refusal`` as the values of ``REFUSAL_COLUMNS``."""
    return (f.id, f.tenant, f.fingerprint, f.code.value, f.detail, f.created_at)


def refusal_from_row(row: tuple[Any, ...]) -> Refusal:
    return Refusal(row[0], row[1], row[2], ErrorCode(row[3]), row[4], row[5])


# In ``OutboxRow`` field order.
OUTBOX_COLUMNS = (
    "transfer_id, target_shard, debit_account_id, credit_account_id, amount, currency, code, "
    "metadata, state, created_at, updated_at, claimed_by, claimed_until, attempts, flags, "
    "timeout_seconds"
)


def outbox_values(row: OutboxRow) -> tuple[Any, ...]:
    """An ``OutboxRow`` as the values of ``OUTBOX_COLUMNS``."""
    return (
        row.transfer_id, row.target_shard, row.debit_account_id, row.credit_account_id,
        row.amount, row.currency, row.code, row.metadata, row.state, row.created_at,
        row.updated_at, row.claimed_by, row.claimed_until, row.attempts, row.flags,
        row.timeout_seconds,
    )  # fmt: skip


_NO_OVERDRAFT, _HISTORY, _CLOSED = 1, 2, 4
_PENDING, _POST, _VOID, _LINKED, _BALANCING = 1, 2, 4, 8, 16

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


class DeepMetadata(dict[str, Any]):
    """Metadata of a stored row that nests deeper than ``SAFE_DECODE_DEPTH`` (written
    before the API bounded it): a dict like any other, except that it must be encoded
    with ``encode_json``, never msgspec's recursive encoder, on a stack one does not
    control (a request's)."""

    __slots__ = ()


def encode_metadata(metadata: dict[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    if isinstance(metadata, DeepMetadata):
        return encode_json(metadata).decode()
    return _encoder.encode(metadata).decode()


def decode_metadata(text: str | bytes | None) -> dict[str, Any] | None:
    """Stored metadata as a dict; never a ``RecursionError`` (module docstring)."""
    if text is None:
        return None
    data = text.encode() if isinstance(text, str) else text
    if json_depth(data, SAFE_DECODE_DEPTH) <= SAFE_DECODE_DEPTH:
        return _decoder.decode(data)
    return _decode_deep(data)


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


def transfer_flags_from_bits(bits: int) -> TransferFlags:
    """The flags ``transfer_flags_bits`` encoded (bits beyond the five known are ignored)."""
    return _TRANSFER_FLAGS[bits & 31]


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
# A LIKE pattern matching the stored metadata of a row that carries a saga's note (clients
# cannot send the key: it is reserved).
SAGA_NOTE_PATTERN: Final = f'%"{SETTLEMENT_METADATA_KEY}"%'
T_COLUMNS = ", ".join(f"t.{c.strip()}" for c in TRANSFER_COLUMNS.split(","))
A_COLUMNS = ", ".join(f"a.{c.strip()}" for c in ACCOUNT_COLUMNS.split(","))


def view_from_row(row: tuple[Any, ...]) -> TransferView:
    """A TransferView from ``T_COLUMNS, metadata, pending status, resolved_by``."""
    transfer = transfer_from_row(row, row[10])
    status = None if row[11] is None else PendingStatus(row[11])
    return TransferView.of(transfer, status, row[12])


# -- JSON depth, without recursion -------------------------------------------------------

SAFE_DECODE_DEPTH: Final = 64
"""Stored JSON nested deeper than this is decoded (and encoded) by a loop, not msgspec."""

# Escapes first, so that every quote left delimits a string: ``\\`` pairs (an escaped
# backslash), then ``\"`` (an escaped quote); left to right, as a JSON parser reads them.
_ESCAPED_BACKSLASH: Final = b"\\\\"
_ESCAPED_QUOTE: Final = b'\\"'
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
# A string once only brackets and quotes are left (unterminated: to the end).
_STRING: Final = re.compile(rb'"[^"]*"?')
_SIGNS: Final = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes, enough: int = 0) -> int:
    """How deep ``data`` nests arrays and objects (0 for a scalar), counting brackets
    outside strings; linear, never recursive. Exact for valid JSON; for invalid JSON a
    best effort (a parser refuses it anyway).

    When ``data`` has at most ``enough`` opening brackets in all, the answer can only be
    at most ``enough``, and that count is returned without further work: the cheap path
    of every small body.
    """
    openers = data.count(b"[") + data.count(b"{")
    if openers <= enough:
        return openers
    if b"\\" in data:
        data = data.replace(_ESCAPED_BACKSLASH, b"").replace(_ESCAPED_QUOTE, b"")
    # Only brackets and quotes matter now. Quotes strictly alternate (open, close), so an
    # adjacent pair is an empty string, or a close and an open with no bracket between
    # them: dropping it changes no bracket's side. What stays of strings is then only
    # those that hold brackets, few enough for a regular expression.
    skeleton = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRING.sub(b"", skeleton)
    signs = memoryview(skeleton.translate(_SIGNS, _NOT_BRACKET)).cast("b")
    return max(0, max(accumulate(signs), default=0))


_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]|[^\s\[\]{}:,"]+', re.DOTALL)
_OPEN: Final = frozenset(b"[{")
_CLOSE: Final = frozenset(b"]}")
_COLON, _COMMA, _BRACE = ord(":"), ord(","), ord("{")


def _decode_deep(data: bytes) -> DeepMetadata:
    """``data`` (a stored JSON object, valid: msgspec wrote it) decoded by a loop over its
    tokens; scalars by msgspec, so every value is the one msgspec would give."""
    root = DeepMetadata()
    frames: list[list[Any]] = []  # [container, the key awaiting its value (objects)]
    for match in _TOKEN.finditer(data):
        start, end = match.span()
        first = data[start]
        if first in _OPEN:
            if frames:
                container: Any = {} if first == _BRACE else []
                _place(frames[-1], container)
            elif first == _BRACE:
                container = root
            else:
                raise ValueError("stored metadata is not a JSON object")
            frames.append([container, None])
        elif first in _CLOSE:
            frames.pop()
        elif first not in (_COLON, _COMMA):
            value = msgspec.json.decode(data[start:end])
            frame = frames[-1]
            if isinstance(frame[0], dict) and frame[1] is None:
                frame[1] = value  # a key: its value follows the colon
            else:
                _place(frame, value)
    if frames:
        raise ValueError("stored metadata is not a whole JSON object")
    return root


def _place(frame: list[Any], value: Any) -> None:
    container = frame[0]
    if isinstance(container, list):
        container.append(value)
    else:
        container[frame[1]] = value
        frame[1] = None


_scalar = msgspec.json.encode


def encode_json(value: Any) -> bytes:
    """``value`` (what JSON decodes to) as compact JSON, exactly as ``msgspec.json.encode``
    writes it, but by a loop: no depth can overflow the stack."""
    parts: list[bytes] = []
    # Each frame: the (key, value) pairs left to write, the closing bracket, and whether
    # the next pair is the first (no comma before it).
    frames: list[tuple[Iterator[tuple[str | None, Any]], bytes, list[bool]]] = [
        (iter([(None, value)]), b"", [True])
    ]
    while frames:
        pairs, closing, first = frames[-1]
        pair = next(pairs, None)
        if pair is None:
            frames.pop()
            parts.append(closing)
            continue
        key, item = pair
        if not first[0]:
            parts.append(b",")
        first[0] = False
        if key is not None:
            parts += (_scalar(key), b":")
        if isinstance(item, dict):
            parts.append(b"{")
            frames.append((iter(item.items()), b"}", [True]))
        elif isinstance(item, list):
            parts.append(b"[")
            frames.append((((None, x) for x in item), b"]", [True]))
        else:
            parts.append(_scalar(item))
    return b"".join(parts)
