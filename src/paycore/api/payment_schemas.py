"""Wire formats of the payment endpoints: strict request Structs in, response Structs out.

As in ``schemas``: amounts are integers in minor units or the request is refused,
unknown fields are refused, currencies are ISO 4217. A card's fields are checked for
shape here (strings and integers of sane size) and for meaning by
``paycore.payments.cards`` (Luhn, expiry, CVC), each with its own error code.

Card data never leaves a request: the responses carry the card's brand, last four
digits and expiry only, and an Idempotency-Key's fingerprint is taken over the body
with the card reduced to those (``PaymentIn.fingerprint_body``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from paycore.api.schemas import Amount, Currency, Id, decode_body, describe_pattern, rfc3339
from paycore.api.tenancy import Namespace
from paycore.money import is_currency
from paycore.payments.cards import brand_of
from paycore.payments.intents import CaptureMethod, PaymentStatus, PendingOp
from paycore.payments.processors.base import CardDetails
from paycore.payments.service import (
    MAX_PAYMENT_AMOUNT,
    NewPayment,
    NewPayout,
    PaymentView,
    PayoutView,
    RefundView,
)
from paycore.storage.payments import AttemptRow

# At most MAX_PAYMENT_AMOUNT per payment or payout (see there why).
PaymentAmount = Annotated[
    int, Meta(ge=1, le=MAX_PAYMENT_AMOUNT, description="Integer minor units, at most 10^12")
]

__all__ = [
    "AttemptOut",
    "CancelIn",
    "CaptureIn",
    "CardIn",
    "CardOut",
    "PaymentIn",
    "PaymentOut",
    "PaymentPageOut",
    "PaymentSourceIn",
    "PayoutIn",
    "PayoutOut",
    "PayoutPageOut",
    "RefundIn",
    "RefundOut",
    "RefundPageOut",
    "RefundSettlementOut",
    "SettlementOut",
    "SourceOut",
    "decode_payment_body",
    "payment_out",
    "payout_out",
    "refund_out",
]

# Shape only; meaning (Luhn, dates) is checked by paycore.payments.cards with its codes.
CardNumber = Annotated[str, Meta(min_length=1, max_length=64, description="12-19 digits")]
Cvc = Annotated[str, Meta(min_length=1, max_length=8, description="3 or 4 digits")]
Year = Annotated[int, Meta(ge=0, le=9999)]
Month = Annotated[int, Meta(ge=0, le=99)]
Destination = Annotated[
    str,
    Meta(
        pattern=describe_pattern(r"^[A-Z0-9]{8,34}$", "8-34 capital letters or digits"),
        description="A bank account (IBAN-like): 8-34 capital letters or digits",
    ),
]


def _known_currency(code: str) -> None:
    if not is_currency(code):
        raise ValueError(f"unknown ISO 4217 currency {code!r}")


class _In(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error."""


class CardIn(_In, frozen=True):
    """A card, as the client sends it; kept in memory for this request only."""

    number: CardNumber
    exp_month: Month
    exp_year: Year
    cvc: Cvc

    def __repr__(self) -> str:  # never the number or the CVC, even in a debug log
        return f"CardIn(****{self.number[-4:]})"

    def details(self) -> CardDetails:
        return CardDetails(self.number, self.exp_month, self.exp_year, self.cvc)


class PaymentSourceIn(_In, frozen=True):
    """Where the money comes from: ``{card: {...}}`` or ``{wallet_account_id}``."""

    card: CardIn | None = None
    wallet_account_id: Id | None = None

    def __post_init__(self) -> None:
        if (self.card is None) == (self.wallet_account_id is None):
            raise ValueError("source must hold either card or wallet_account_id")


class PaymentIn(_In, frozen=True):
    """Body of ``POST /v1/payments``."""

    amount: PaymentAmount
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
    merchant_account_id: Id
    source: PaymentSourceIn
    capture: Literal["automatic", "manual"] = "automatic"

    def __post_init__(self) -> None:
        _known_currency(self.currency)

    def to_new(self, tenant: str | None = None, account: Callable[[str], str] = str) -> NewPayment:
        """The payment to make; ``account`` maps a client's account id to the store's."""
        card = self.source.card
        wallet = self.source.wallet_account_id
        return NewPayment(
            amount=self.amount,
            currency=self.currency,
            merchant_account_id=account(self.merchant_account_id),
            capture=CaptureMethod(self.capture),
            card=None if card is None else card.details(),
            wallet_account_id=None if wallet is None else account(wallet),
            tenant=tenant,
        )

    def fingerprint_body(self) -> msgspec.Struct:
        """The body as an Idempotency-Key's fingerprint sees it: the card reduced to its
        brand, last four digits and expiry (no number, not even hashed; no CVC)."""
        card = self.source.card
        if card is None:
            return self
        return _PaymentFingerprint(
            amount=self.amount,
            currency=self.currency,
            merchant_account_id=self.merchant_account_id,
            capture=self.capture,
            card_brand=brand_of(card.number),
            card_last4=card.number[-4:],
            card_exp=f"{card.exp_month}/{card.exp_year}",
        )


class _PaymentFingerprint(msgspec.Struct, frozen=True):
    amount: int
    currency: str
    merchant_account_id: str
    capture: str
    card_brand: str
    card_last4: str
    card_exp: str


class CaptureIn(_In, frozen=True):
    """Body of ``POST /v1/payments/{id}/capture`` (may be empty): ``amount`` defaults to
    all that is left; ``final_capture`` releases what is left after this capture."""

    amount: Amount | None = None
    final_capture: bool = False


class RefundIn(_In, frozen=True):
    """Body of ``POST /v1/refunds``; ``amount`` defaults to all that is left to refund."""

    payment_id: Id
    amount: Amount | None = None


class PayoutIn(_In, frozen=True):
    """Body of ``POST /v1/payouts``: from a wallet to a bank account, via a processor."""

    wallet_account_id: Id
    amount: PaymentAmount
    currency: Currency
    destination: Destination

    def __post_init__(self) -> None:
        _known_currency(self.currency)

    def to_new(self, tenant: str | None = None, account: Callable[[str], str] = str) -> NewPayout:
        """The payout to make; ``account`` maps a client's account id to the store's."""
        return NewPayout(
            account(self.wallet_account_id), self.amount, self.currency, self.destination, tenant
        )


class CancelIn(_In, frozen=True):
    """Body of ``POST /v1/payments/{id}/cancel``: absent or ``{}``."""


In = TypeVar("In", bound=_In)


def decode_payment_body(
    decoder: msgspec.json.Decoder[In], body: bytes, *, empty: bytes = b""
) -> In:
    """Decode a request body strictly; any problem is a 422 ``invalid_request`` (exactly
    ``schemas.decode_body``: nesting bounded first; msgspec's messages name the field,
    never its value)."""
    return decode_body(decoder, body, empty=empty)


# -- responses -------------------------------------------------------------------------------


class _Out(msgspec.Struct, frozen=True):
    """Base of response bodies; every field is always present (null when unset)."""


class CardOut(_Out, frozen=True):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class SourceOut(_Out, frozen=True):
    type: str  # card | wallet
    wallet_account_id: str | None


class AttemptOut(_Out, frozen=True):
    """One call to a processor, with the routing decision that chose it."""

    operation: str
    processor: str
    reference: str
    amount: int
    outcome: str | None  # null while the call is in flight (or its end unknown yet)
    decline_code: str | None
    error: str | None
    latency_ms: float | None
    routing: dict[str, Any] | None
    created_at: str


class SettlementOut(_Out, frozen=True):
    """A card payment in another currency than its merchant account's, settled through
    a conversion at the rate locked when it was made: ``amount`` is what the merchant
    account was credited so far, in its ``currency`` (each capture at ``rate``, rounded
    down); ``rate`` (the customer's: ``mid_rate`` less the spread) and ``mid_rate`` are
    exact decimals of major units of ``currency`` per unit of the payment's."""

    currency: str
    amount: int
    rate: str
    mid_rate: str


class RefundSettlementOut(_Out, frozen=True):
    """A refund of a payment settled through a conversion: what it debits (or, failed,
    would have debited) the merchant account, in its ``currency``, at the payment's
    locked rate rounded up."""

    currency: str
    amount: int


class PaymentOut(_Out, frozen=True):
    """A payment intent: its status, the money it moved, and each processor attempt."""

    id: str
    status: PaymentStatus
    amount: int
    currency: str
    merchant_account_id: str
    capture: str
    processor: str | None
    source: SourceOut
    card: CardOut | None
    amount_capturable: int
    amount_captured: int
    amount_refunded: int
    amount_refund_pending: int
    capture_before: str | None
    failure_code: str | None
    failure_detail: str | None
    cancellation_reason: str | None
    attempts: list[AttemptOut]
    created_at: str
    updated_at: str
    # Shown by reads (``GET /v1/payments/{id}``, the list), oldest first; absent from
    # the answers of writes, which stay as they were before payments listed refunds.
    refunds: list[RefundOut] | msgspec.UnsetType = msgspec.UNSET
    # Only on a payment settled through a conversion (absent: the merchant's currency).
    settlement: SettlementOut | msgspec.UnsetType = msgspec.UNSET


class RefundOut(_Out, frozen=True):
    id: str
    payment_id: str
    status: str
    amount: int
    currency: str
    processor: str | None
    failure_code: str | None
    decline_code: str | None
    attempts: list[AttemptOut]
    created_at: str
    updated_at: str
    # Only on a refund of a payment settled through a conversion.
    settlement: RefundSettlementOut | msgspec.UnsetType = msgspec.UNSET


class PayoutOut(_Out, frozen=True):
    id: str
    wallet_account_id: str
    status: str
    amount: int
    currency: str
    destination: str
    processor: str | None
    failure_code: str | None
    decline_code: str | None
    failure_detail: str | None
    attempts: list[AttemptOut]
    created_at: str
    updated_at: str


class PaymentPageOut(_Out, frozen=True):
    """One page of payments; pass ``next_cursor`` back for the next (null: the last)."""

    data: list[PaymentOut]
    next_cursor: str | None


class RefundPageOut(_Out, frozen=True):
    """One page of refunds; pass ``next_cursor`` back for the next (null: the last)."""

    data: list[RefundOut]
    next_cursor: str | None


class PayoutPageOut(_Out, frozen=True):
    """One page of payouts; pass ``next_cursor`` back for the next (null: the last)."""

    data: list[PayoutOut]
    next_cursor: str | None


_routing_decoder = msgspec.json.Decoder(dict[str, Any])


_DEFAULT = Namespace("default")


def _text(ns: Namespace, text: str | None) -> str | None:
    return None if text is None else ns.detail(text)


def _attempt_out(a: AttemptRow, ns: Namespace) -> AttemptOut:
    return AttemptOut(
        operation=a.operation,
        processor=a.processor,
        reference=a.reference,
        amount=a.amount,
        outcome=a.outcome,
        decline_code=a.decline_code,
        error=_text(ns, a.error),
        latency_ms=a.latency_ms,
        routing=None if a.routing is None else _routing_decoder.decode(a.routing),
        created_at=rfc3339(a.created_at),
    )


def payment_out(
    view: PaymentView, ns: Namespace = _DEFAULT, refunds: Sequence[RefundView] | None = None
) -> PaymentOut:
    """``view`` as its owner (``ns``: its tenant's namespace) sees it; with its
    ``refunds`` when given (a read's answer)."""
    p = view.payment
    holding = p.status == PaymentStatus.REQUIRES_CAPTURE.value or (
        p.status == PaymentStatus.PROCESSING.value
        and p.pending_op in (PendingOp.CAPTURE.value, PendingOp.VOID.value)
    )
    card = None
    if p.card_last4 is not None:
        card = CardOut(p.card_brand or "unknown", p.card_last4, p.card_exp_month or 0,
                       p.card_exp_year or 0)  # fmt: skip
    return PaymentOut(
        id=p.id,
        status=PaymentStatus(p.status),
        amount=p.amount,
        currency=p.currency,
        merchant_account_id=ns.out(p.merchant_account_id),
        capture=p.capture_method,
        processor=p.processor,
        source=SourceOut(p.source_type, ns.optional_out(p.source_account_id)),
        card=card,
        amount_capturable=p.amount_authorized - p.amount_captured if holding else 0,
        amount_captured=p.amount_captured,
        amount_refunded=p.amount_refunded,
        amount_refund_pending=p.amount_refund_pending,
        capture_before=None if not holding or p.authorized_until is None
        else rfc3339(p.authorized_until),
        failure_code=p.failure_code,
        failure_detail=_text(ns, p.failure_detail),
        cancellation_reason=p.cancel_reason,
        attempts=[_attempt_out(a, ns) for a in view.attempts],
        created_at=rfc3339(p.created_at),
        updated_at=rfc3339(p.updated_at),
        refunds=msgspec.UNSET if refunds is None else [refund_out(r, ns) for r in refunds],
        settlement=msgspec.UNSET if p.settlement_currency is None else SettlementOut(
            p.settlement_currency, p.settlement_amount, p.fx_rate or "", p.fx_mid_rate or ""
        ),
    )  # fmt: skip


def refund_out(view: RefundView, ns: Namespace = _DEFAULT) -> RefundOut:
    r = view.refund
    return RefundOut(
        id=r.id,
        payment_id=r.payment_id,
        status=r.status,
        amount=r.amount,
        currency=r.currency,
        processor=r.processor,
        failure_code=r.failure_code,
        decline_code=r.decline_code,
        attempts=[_attempt_out(a, ns) for a in view.attempts],
        created_at=rfc3339(r.created_at),
        updated_at=rfc3339(r.updated_at),
        settlement=msgspec.UNSET
        if r.settlement_currency is None
        else RefundSettlementOut(r.settlement_currency, r.settlement_amount),
    )


def payout_out(view: PayoutView, ns: Namespace = _DEFAULT) -> PayoutOut:
    p = view.payout
    return PayoutOut(
        id=p.id,
        wallet_account_id=ns.out(p.wallet_account_id),
        status=p.status,
        amount=p.amount,
        currency=p.currency,
        destination=p.destination,
        processor=p.processor,
        failure_code=p.failure_code,
        decline_code=p.decline_code,
        failure_detail=_text(ns, p.failure_detail),
        attempts=[_attempt_out(a, ns) for a in view.attempts],
        created_at=rfc3339(p.created_at),
        updated_at=rfc3339(p.updated_at),
    )
