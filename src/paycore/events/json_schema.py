"""The events' schema, version 1, as a contract a consumer in any language can check.

``event_json_schema()`` is a JSON Schema (2020-12) of every message body the stream
carries: one variant per kind of event (transfer, payment, refund, payout), each with its
``type`` values, its fields, their types and which may be null or absent; unknown fields
are refused, so a change of the bytes is a change of this schema (and, if it breaks a
consumer, of ``SCHEMA_VERSION``). ``docs/events.schema.json`` is this schema as
``paycore events schema`` prints it (a test keeps them equal).

``validate_event`` checks one message body against the same types, strictly (a float
amount, a missing or an unknown field is refused), the way the tests check every event
the publisher sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from paycore.payments.intents import PaymentStatus, PayoutStatus, RefundStatus

__all__ = ["EVENT_TYPES_BY_KIND", "event_json_schema", "validate_event"]

_ID = Annotated[str, msgspec.Meta(min_length=1)]
_CURRENCY = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
_MINOR_UNITS = Annotated[int, msgspec.Meta(ge=0, description="integer minor units")]
# The event types of each kind: an event's ``type`` and its object's are the same one.
_PaymentType = Literal[
    "payment.requires_capture",
    "payment.captured",
    "payment.succeeded",
    "payment.failed",
    "payment.canceled",
]
_RefundType = Literal["refund.succeeded", "refund.failed"]
_PayoutType = Literal["payout.paid", "payout.failed"]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class TransferObject(_Strict, frozen=True, forbid_unknown_fields=True):
    """A ledger transfer as written (immutable): ``status`` is what it did then."""

    id: _ID
    debit_account_id: _ID
    credit_account_id: _ID
    amount: _MINOR_UNITS
    currency: _CURRENCY
    code: int
    flags: list[Literal["pending", "post_pending", "void_pending", "linked", "balancing"]]
    pending_id: _ID | None
    timeout_seconds: Annotated[int, msgspec.Meta(ge=0)]
    status: Literal["pending", "posted", "voided"]
    metadata: dict[str, Any] | None
    timestamp: Annotated[int, msgspec.Meta(ge=0, description="the shard's time, ns")]


class Card(_Strict, frozen=True, forbid_unknown_fields=True):
    """A card as paycore keeps it: never its number."""

    brand: str
    last4: Annotated[str, msgspec.Meta(pattern="^[0-9]{4}$")]


class PaymentSettlement(_Strict, frozen=True, forbid_unknown_fields=True):
    """A payment settled in the merchant's currency through a conversion."""

    currency: _CURRENCY
    amount: _MINOR_UNITS
    rate: str | None
    mid_rate: str | None


class RefundSettlement(_Strict, frozen=True, forbid_unknown_fields=True):
    """A refund's amount in the merchant's currency, for a converted payment."""

    currency: _CURRENCY
    amount: _MINOR_UNITS


class PaymentObject(_Strict, frozen=True, forbid_unknown_fields=True):
    """A payment as its webhook carries it (``docs/payments.md``)."""

    type: _PaymentType
    object: Literal["payment"]
    id: _ID
    status: PaymentStatus
    amount: _MINOR_UNITS
    currency: _CURRENCY
    merchant_account_id: _ID
    amount_captured: _MINOR_UNITS
    processor: str | None
    card: Card | None
    failure_code: str | None
    cancellation_reason: str | None
    settlement: PaymentSettlement | msgspec.UnsetType = msgspec.UNSET  # converted only


class RefundObject(_Strict, frozen=True, forbid_unknown_fields=True):
    """A refund as its webhook carries it."""

    type: _RefundType
    object: Literal["refund"]
    id: _ID
    payment_id: _ID
    status: RefundStatus
    amount: _MINOR_UNITS
    currency: _CURRENCY
    failure_code: str | None
    settlement: RefundSettlement | msgspec.UnsetType = msgspec.UNSET  # converted only


class PayoutObject(_Strict, frozen=True, forbid_unknown_fields=True):
    """A payout as its webhook carries it."""

    type: _PayoutType
    object: Literal["payout"]
    id: _ID
    status: PayoutStatus
    wallet_account_id: _ID
    amount: _MINOR_UNITS
    currency: _CURRENCY
    failure_code: str | None


_RFC3339_NS = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$",
        description="RFC 3339, UTC, nanoseconds",
    ),
]


class _Event(_Strict, frozen=True, forbid_unknown_fields=True):
    """The envelope of every event; each kind narrows its ``type`` and ``data`` (a
    field narrowed in a kind keeps its place here, so the field order is this one)."""

    version: Literal[1]
    id: _ID
    type: str
    shard: str
    seq: Annotated[int, msgspec.Meta(ge=1)]
    occurred_at: _RFC3339_NS
    tenant: str
    data: Any


class TransferEvent(_Event, frozen=True, forbid_unknown_fields=True):
    """A transfer of a shard's ledger log; ``id`` is ``<shard>:transfer:<seq>``."""

    id: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]+:transfer:[0-9]+$")]
    type: Literal["transfer.pending", "transfer.posted", "transfer.voided"]
    seq: Annotated[int, msgspec.Meta(ge=1, description="chain_seq: 1, 2, ... no gaps")]
    data: TransferObject


class PaymentEvent(_Event, frozen=True, forbid_unknown_fields=True):
    """A payment's change; ``id`` is its webhook's ``evt_...`` id."""

    type: _PaymentType
    data: PaymentObject


class RefundEvent(_Event, frozen=True, forbid_unknown_fields=True):
    """A refund's change."""

    type: _RefundType
    data: RefundObject


class PayoutEvent(_Event, frozen=True, forbid_unknown_fields=True):
    """A payout's change."""

    type: _PayoutType
    data: PayoutObject


_KINDS: Final[dict[str, type[_Strict]]] = {
    "transfer": TransferEvent,
    "payment": PaymentEvent,
    "refund": RefundEvent,
    "payout": PayoutEvent,
}


def _types_of(cls: type[_Strict]) -> tuple[str, ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    field = next(f for f in info.fields if f.name == "type")
    assert isinstance(field.type, msgspec.inspect.LiteralType)
    return tuple(str(value) for value in field.type.values)


EVENT_TYPES_BY_KIND: Final[dict[str, tuple[str, ...]]] = {
    kind: _types_of(cls) for kind, cls in _KINDS.items()
}
"""Every event ``type``, by the kind of object it is about (from the schema's types)."""


class _Head(msgspec.Struct):
    type: str


def validate_event(body: bytes) -> msgspec.Struct:
    """The message body decoded strictly by its kind's type (``msgspec.ValidationError``
    if it does not match the schema)."""
    kind = msgspec.json.decode(body, type=_Head).type.split(".", 1)[0]
    cls = _KINDS.get(kind)
    if cls is None:
        raise msgspec.ValidationError(f"unknown event type kind {kind!r}")
    decoded: msgspec.Struct = msgspec.json.decode(body, type=cls, strict=True)
    if isinstance(decoded, PaymentEvent | RefundEvent | PayoutEvent) and (
        decoded.data.type != decoded.type
    ):
        raise msgspec.ValidationError("data.type differs from the event's type")
    return decoded


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of every event's message body (see the module docstring)."""
    variants, components = msgspec.json.schema_components(
        list(_KINDS.values()), ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "paycore event, version 1",
        "description": "The body of every message of the paycore event stream "
        "(docs/events.md). De-duplicate by id; an account's transfers arrive in order on "
        "<prefix>.ledger.<shard>.transfer, a payment's events on <prefix>.payments.<shard>.>.",
        "oneOf": list(variants),
        "$defs": dict(sorted(components.items())),
    }
