"""The simulator's messages: the request bodies it takes (``*In``, validated as they are
decoded: an unknown field or a bad value is 400 ``invalid_request``) and the answers it
gives (``Answer``: a status and the JSON body, ``OperationOut`` or ``ErrorOut``)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paycore.payments.processors.simulator.cards import mask

__all__ = [
    "Amount",
    "Answer",
    "AuthorizeIn",
    "CaptureIn",
    "CardIn",
    "CardOut",
    "Currency",
    "Destination",
    "ErrorOut",
    "OperationOut",
    "PayoutIn",
    "Reference",
    "RefundIn",
    "SelectiveMode",
]

Reference = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]
Amount = Annotated[int, Meta(gt=0, le=10**15)]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
Destination = Annotated[str, Meta(pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{4,30}$")]
SelectiveMode = Literal["approve", "error", "decline", "timeout"]


class CardIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    number: str
    exp_month: int
    exp_year: int
    cvc: str

    def __repr__(self) -> str:
        return f"CardIn({mask(self.number)})"

    __str__ = __repr__


class AuthorizeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reference: Reference
    amount: Amount
    currency: Currency
    card: CardIn
    capture: bool = False


class CaptureIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    capture_reference: Reference
    amount: Amount


class RefundIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    refund_reference: Reference
    amount: Amount


class PayoutIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reference: Reference
    amount: Amount
    currency: Currency
    destination: Destination


class CardOut(msgspec.Struct, frozen=True):
    last4: str
    brand: str


class OperationOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of every answer about an operation (and of a status lookup)."""

    processor: str
    reference: str
    kind: str  # authorization | capture | refund | payout
    status: str  # authorized captured voided refunded paid_out declined not_found
    id: str | None = None  # the processor's own id of the operation
    amount: int | None = None
    currency: str | None = None
    decline_code: str | None = None
    authorization: str | None = None  # for captures and refunds: the authorization's reference
    captured_amount: int | None = None  # authorizations only
    refunded_amount: int | None = None  # authorizations only
    voided: bool = False  # authorizations only: the uncaptured remainder was released
    card: CardOut | None = None


class ErrorOut(msgspec.Struct, frozen=True, omit_defaults=True):
    processor: str
    error: str
    message: str = ""
    reference: str | None = None
    status: str | None = None  # "not_found" on a status lookup


class Answer(msgspec.Struct, frozen=True):
    status_code: int
    body: bytes
    hang: bool = False  # answer only after hang_seconds (the operation is done already)
