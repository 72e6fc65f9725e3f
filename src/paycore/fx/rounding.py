"""Exact rates and the rounding rule of conversions, in minor units.

Rates are ``fractions.Fraction`` parsed from decimal strings: never floats, so a rate
of ``"0.1"`` is one tenth exactly. A rate is quoted in major units (``0.92`` EUR for one
USD); ``minor_ratio`` turns it into minor units of the bought currency per minor unit of
the sold one, using each currency's ISO 4217 exponent (JPY 0, USD 2, KWD 3).

The rule: **rounding never favours the customer**, and costs them less than one minor
unit of the rounded side.

- given what the customer sells, what they get is rounded *down* (``buy_for``);
- given what the customer wants to get, what they pay is rounded *up* (``sell_for``).

So ``buy * 1 <= sell * ratio`` always holds: no conversion pays out more than its rate
allows, and the fraction left over stays with the house (in its liquidity account).
"""

from __future__ import annotations

import decimal
import re
from fractions import Fraction
from typing import Final

from paycore.money import CURRENCY_MINOR_UNITS

__all__ = ["buy_for", "minor_ratio", "parse_rate", "rate_text", "sell_for"]

# Plain decimals only: no exponent, no sign, no "NaN"/"Infinity" that Decimal would take.
_DECIMAL: Final = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")


def parse_rate(text: str) -> Fraction:
    """An exchange rate from its decimal text; ``ValueError`` unless it is a plain
    positive decimal (``"0.92"``, ``"151.5"``)."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise ValueError(f"a rate is a plain decimal string such as '0.92', not {text!r}")
    rate = Fraction(text)
    if rate <= 0:
        raise ValueError(f"a rate must be positive, not {text!r}")
    return rate


def rate_text(rate: Fraction) -> str:
    """The exact decimal text of a rate whose denominator has no prime factor but 2 and 5
    (every rate parsed from a decimal, times a spread in basis points, is one)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        ctx.traps[decimal.Inexact] = True  # a rate shown must be the rate used
        value = decimal.Decimal(rate.numerator) / decimal.Decimal(rate.denominator)
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def minor_ratio(rate: Fraction, sell_currency: str, buy_currency: str) -> Fraction:
    """Minor units of ``buy_currency`` per minor unit of ``sell_currency`` at ``rate``
    (major units of buy per major unit of sell)."""
    shift = CURRENCY_MINOR_UNITS[buy_currency] - CURRENCY_MINOR_UNITS[sell_currency]
    return rate * Fraction(10) ** shift


def buy_for(sell_amount: int, ratio: Fraction) -> int:
    """What selling ``sell_amount`` buys: rounded down (never in the customer's favour)."""
    return (sell_amount * ratio.numerator) // ratio.denominator


def sell_for(buy_amount: int, ratio: Fraction) -> int:
    """What buying ``buy_amount`` costs: rounded up (never in the customer's favour)."""
    return -((-buy_amount * ratio.denominator) // ratio.numerator)
