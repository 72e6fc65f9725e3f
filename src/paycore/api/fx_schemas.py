"""Request and response bodies of ``/v1/fx`` (``paycore.api.routes.fx``)."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

from paycore.api.schemas import Amount, Currency, Id, TimeoutSeconds, rfc3339
from paycore.ledger.model import TransferStatus
from paycore.money import is_currency
from paycore.storage.fx_quotes import FxQuoteRow

__all__ = [
    "CaptureConversionIn",
    "ConversionIn",
    "ConversionOut",
    "ConversionPageOut",
    "QuoteIn",
    "QuoteOut",
    "QuotePageOut",
    "VoidConversionIn",
    "quote_out",
]

QUOTE_ID_PATTERN: Final = r"^fxq_[0-9a-f]{24}$"
QuoteId = Annotated[str, Meta(pattern=QUOTE_ID_PATTERN, description="A quote's id, fxq_...")]


def _known(*codes: str) -> None:
    # Raised inside __post_init__, msgspec reports it as a ValidationError with a path.
    for code in codes:
        if not is_currency(code):
            raise ValueError(f"unknown ISO 4217 currency {code!r}")


class _Input(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error."""


class QuoteIn(_Input, frozen=True):
    """Body of ``POST /v1/fx/quotes``: sell ``sell_amount`` of ``sell_currency``, or buy
    ``buy_amount`` of ``buy_currency`` (exactly one of the two), in minor units."""

    sell_currency: Currency
    buy_currency: Currency
    sell_amount: Amount | None = None
    buy_amount: Amount | None = None

    def __post_init__(self) -> None:
        _known(self.sell_currency, self.buy_currency)
        if self.sell_currency == self.buy_currency:
            raise ValueError("sell_currency and buy_currency must differ")
        if (self.sell_amount is None) == (self.buy_amount is None):
            raise ValueError("give exactly one of sell_amount and buy_amount")


class ConversionIn(_Input, frozen=True):
    """Body of ``POST /v1/fx/conversions``: book quote ``quote_id``, debiting the sold
    currency from ``debit_account_id`` and crediting the bought one to
    ``credit_account_id``; with ``pending``, as holds (capture or void them later)."""

    quote_id: QuoteId
    debit_account_id: Id
    credit_account_id: Id
    pending: bool = False
    timeout_seconds: TimeoutSeconds = 0


class CaptureConversionIn(_Input, frozen=True):
    """Body of ``POST /v1/fx/conversions/{id}/capture``: ``sell_amount`` (at most the
    held one; absent: all of it) converted at the quote's locked rate."""

    sell_amount: Amount | None = None


class VoidConversionIn(_Input, frozen=True):
    """Body of ``POST /v1/fx/conversions/{id}/void``: nothing (``{}`` or empty)."""


class QuoteOut(msgspec.Struct, frozen=True):
    """A quote: its rate is locked until ``expires_at``. ``rate`` is the customer's
    (``mid_rate`` less the spread), both exact decimals of major units of
    ``buy_currency`` per unit of ``sell_currency``. Amounts in minor units, rounded
    against the customer; ``spread_amount`` (bought currency) is the house's margin."""

    id: str
    sell_currency: str
    buy_currency: str
    sell_amount: int
    buy_amount: int
    spread_amount: int
    rate: str
    mid_rate: str
    created_at: str
    expires_at: str


class QuotePageOut(msgspec.Struct, frozen=True):
    """The caller's quotes, oldest first; pass ``next_cursor`` back for the next page."""

    data: list[QuoteOut]
    next_cursor: str | None


class ConversionOut(msgspec.Struct, frozen=True):
    """A conversion of a quote, booked as a linked chain of transfers
    (``transfer_ids``); ``status`` as a transfer's (``pending`` while held)."""

    id: str
    quote_id: str
    status: TransferStatus
    debit_account_id: str
    credit_account_id: str
    sell_currency: str
    sell_amount: int
    buy_currency: str
    buy_amount: int
    spread_amount: int
    rate: str
    transfer_ids: list[str]


class ConversionPageOut(msgspec.Struct, frozen=True):
    """The caller's conversions, by their quotes' creation (oldest first), each as it
    stands now; pass ``next_cursor`` back for the next page (None: no more). A page may
    hold fewer than ``limit`` when many unused quotes lie between conversions."""

    data: list[ConversionOut]
    next_cursor: str | None


def quote_out(row: FxQuoteRow) -> QuoteOut:
    return QuoteOut(
        id=row.id,
        sell_currency=row.sell_currency,
        buy_currency=row.buy_currency,
        sell_amount=row.sell_amount,
        buy_amount=row.buy_amount,
        spread_amount=row.spread_amount,
        rate=row.rate,
        mid_rate=row.mid_rate,
        created_at=rfc3339(row.created_at),
        expires_at=rfc3339(row.expires_at),
    )
