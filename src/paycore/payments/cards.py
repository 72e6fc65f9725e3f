"""Card numbers in: validated, then replaced by a token before anything is kept.

``check_card`` refuses a bad card with a stable code (all 422, nothing stored)::

    invalid_card_number   not 12-19 digits, or the Luhn check fails
    invalid_expiry_date   month outside 1-12, or a year that is not a plausible 4 digits
    card_expired          the last day of the expiry month has passed
    invalid_cvc           not 3 or 4 digits

and ``tokenize`` turns the card into what paycore keeps: brand, last four digits, expiry
and an opaque random token. The number and the CVC live only in the request's memory
and in the call to the processor; no error detail ever quotes them, and ``CardDetails``
prints as ``****4242``.
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Final

from paycore.errors import ErrorCode, RequestError
from paycore.payments.processors.base import CardDetails, CardToken

__all__ = ["brand_of", "check_card", "luhn_valid", "tokenize"]


def _span(first: int, last: int) -> tuple[str, ...]:
    return tuple(str(p) for p in range(first, last + 1))


_BRANDS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("34", "37"), "amex"),
    (("4",), "visa"),
    ((*_span(51, 55), *_span(2221, 2720)), "mastercard"),
    (("6011", "65", *_span(644, 649)), "discover"),
    (_span(3528, 3589), "jcb"),
    (("36", "38", "39", *_span(300, 305)), "diners"),
    (("62",), "unionpay"),
)
_MAX_YEARS_AHEAD: Final = 50


def luhn_valid(number: str) -> bool:
    """Whether ``number`` (ASCII digits only) passes the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def brand_of(number: str) -> str:
    """The card network a number belongs to, by its leading digits (``unknown`` if none)."""
    for prefixes, brand in _BRANDS:
        if number.startswith(prefixes):
            return brand
    return "unknown"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def check_card(card: CardDetails, *, today: date) -> None:
    """Refuse a card that cannot be charged (see the module docstring for the codes)."""
    number = card.number
    if not (_digits(number) and 12 <= len(number) <= 19 and luhn_valid(number)):
        raise RequestError(
            ErrorCode.INVALID_CARD_NUMBER, "a card number is 12-19 digits that pass the Luhn check"
        )
    month, year = card.exp_month, card.exp_year
    if not 1 <= month <= 12:
        raise RequestError(ErrorCode.INVALID_EXPIRY_DATE, "exp_month must be 1-12")
    if not 2000 <= year <= today.year + _MAX_YEARS_AHEAD:
        raise RequestError(
            ErrorCode.INVALID_EXPIRY_DATE,
            f"exp_year must be the 4-digit year, at most {today.year + _MAX_YEARS_AHEAD}",
        )
    if (year, month) < (today.year, today.month):
        raise RequestError(
            ErrorCode.CARD_EXPIRED, f"the card expired at the end of {month:02d}/{year}"
        )
    if not (_digits(card.cvc) and 3 <= len(card.cvc) <= 4):
        raise RequestError(ErrorCode.INVALID_CVC, "cvc must be 3 or 4 digits")


def tokenize(card: CardDetails) -> CardToken:
    """What paycore keeps of a (checked) card: never the number, never the CVC."""
    return CardToken(
        token=f"tok_{secrets.token_hex(12)}",
        last4=card.number[-4:],
        brand=brand_of(card.number),
        exp_month=card.exp_month,
        exp_year=card.exp_year,
    )
