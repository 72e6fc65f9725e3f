"""Pricing a quote: the pure arithmetic behind ``POST /v1/fx/quotes``.

The customer's rate is the mid rate less the spread (``spread_bps`` basis points), and
amounts follow the rule of ``rounding`` (never in the customer's favour). The spread
booked as revenue is what the mid rate would have paid out (rounded down) less what the
customer gets; it is never negative, and the conversion's legs balance per currency.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from fractions import Fraction

from paycore.errors import ErrorCode, RequestError
from paycore.fx.rounding import buy_for, minor_ratio, sell_for
from paycore.money import MAX_AMOUNT, is_currency

__all__ = ["BPS", "Price", "check_usable", "customer_rate", "new_quote_id", "price"]

BPS = 10_000


@dataclass(frozen=True, slots=True)
class Price:
    """A priced exchange: the customer sells ``sell_amount`` and gets ``buy_amount``
    (minor units); ``spread_amount`` (in the bought currency) is the house's margin."""

    sell_currency: str
    buy_currency: str
    sell_amount: int
    buy_amount: int
    spread_amount: int
    rate: Fraction
    mid_rate: Fraction


def customer_rate(mid_rate: Fraction, spread_bps: int) -> Fraction:
    """The mid rate less ``spread_bps`` basis points."""
    return mid_rate * (BPS - spread_bps) / BPS


def new_quote_id() -> str:
    """``fxq_`` and 24 random hex digits: a quote id no one can guess or collide with."""
    return f"fxq_{secrets.token_hex(12)}"


def _invalid(detail: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, detail)


def price(
    sell_currency: str,
    buy_currency: str,
    mid_rate: Fraction,
    *,
    spread_bps: int = 0,
    sell_amount: int | None = None,
    buy_amount: int | None = None,
) -> Price:
    """Price selling ``sell_amount`` or (exclusive) buying ``buy_amount``.

    Refuses (``RequestError``): both or neither amount, unknown or equal currencies,
    an amount that converts to nothing (``fx_amount_too_small``) or beyond the largest
    amount.
    """
    if (sell_amount is None) == (buy_amount is None):
        raise _invalid("give exactly one of sell_amount and buy_amount")
    for currency in (sell_currency, buy_currency):
        if not is_currency(currency):
            raise _invalid(f"unknown ISO 4217 currency {currency!r}")
    if sell_currency == buy_currency:
        raise _invalid("sell_currency and buy_currency must differ")
    if not 0 <= spread_bps < BPS or mid_rate <= 0:
        raise ValueError("a positive mid rate and a spread of 0-9999 bps are needed")
    rate = customer_rate(mid_rate, spread_bps)
    ratio = minor_ratio(rate, sell_currency, buy_currency)
    if sell_amount is not None:
        buy = buy_for(sell_amount, ratio)
        if buy < 1:
            raise RequestError(
                ErrorCode.FX_AMOUNT_TOO_SMALL,
                f"selling {sell_amount} minor units of {sell_currency} buys less than one "
                f"minor unit of {buy_currency}",
            )
        sell = sell_amount
    else:
        assert buy_amount is not None
        buy, sell = buy_amount, sell_for(buy_amount, ratio)
    at_mid = buy_for(sell, minor_ratio(mid_rate, sell_currency, buy_currency))
    if max(sell, at_mid) > MAX_AMOUNT:
        raise _invalid(f"the exchange exceeds the largest amount ({MAX_AMOUNT})")
    return Price(sell_currency, buy_currency, sell, buy, at_mid - buy, rate, mid_rate)


def check_usable(quote_id: str, expires_at: int, now: int, *, used: bool) -> None:
    """Refuse (``fx_quote_expired``) a quote whose lock ran out (``now`` at or past
    ``expires_at``, ns) unless it was used in time: then a conversion of it is a retry,
    answered as the first time."""
    if now >= expires_at and not used:
        raise RequestError(
            ErrorCode.FX_QUOTE_EXPIRED, f"FX quote {quote_id!r} expired; ask for a new one"
        )
