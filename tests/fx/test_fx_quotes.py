"""The pure FX math: exact rates, the rounding rule (never in the customer's favour, by
less than one minor unit), conservation of a conversion's legs per currency, and partial
captures at the locked rate; for currencies of 0, 2 and 3 decimals."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypedDict, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.errors import ErrorCode, RequestError
from paycore.fx.conversion import capture_legs, captured_amounts, open_legs, void_legs
from paycore.fx.quotes import customer_rate, price
from paycore.fx.rounding import buy_for, minor_ratio, parse_rate, rate_text, sell_for
from paycore.money import CURRENCY_MINOR_UNITS
from paycore.storage.fx_quotes import FxQuoteRow

T = TypeVar("T")

# One currency per exponent: JPY 0, USD and EUR 2, KWD 3.
CURRENCIES = ["JPY", "USD", "EUR", "KWD"]
pairs = st.tuples(st.sampled_from(CURRENCIES), st.sampled_from(CURRENCIES)).filter(
    lambda p: p[0] != p[1]
)
# Decimal rates as a desk would quote them: up to 6 decimals, 0.000001 .. 1000.
rates = st.integers(1, 10**9).map(lambda n: Fraction(n, 10**6))
spreads = st.integers(0, 500)
amounts = st.integers(1, 10**12)


def _too_small_as_none(make: Callable[[], T]) -> T | None:
    """``make()``, or None when it refuses an amount that buys nothing (only that)."""
    try:
        return make()
    except RequestError as exc:
        if exc.code is not ErrorCode.FX_AMOUNT_TOO_SMALL:
            raise
        return None


def _value(amount: int, currency: str) -> Fraction:
    """An amount in major units, to compare across currencies."""
    return Fraction(amount, 10 ** CURRENCY_MINOR_UNITS[currency])


@given(pairs, rates, spreads, amounts)
def test_selling_never_pays_out_more_than_the_rate_and_loses_less_than_a_minor_unit(
    pair: tuple[str, str], mid: Fraction, bps: int, sell: int
) -> None:
    """Given the sold amount, what is bought is the exact value rounded down: never
    more, short by less than one minor unit of the bought currency."""
    p = _too_small_as_none(lambda: price(*pair, mid, spread_bps=bps, sell_amount=sell))
    if p is None:
        assert _value(sell, pair[0]) * customer_rate(mid, bps) < _value(1, pair[1])
        return
    exact = _value(sell, pair[0]) * p.rate
    assert _value(p.buy_amount, pair[1]) <= exact < _value(p.buy_amount + 1, pair[1])
    assert p.sell_amount == sell


@given(pairs, rates, spreads, amounts)
def test_buying_never_charges_less_than_the_rate_and_overcharges_less_than_a_minor_unit(
    pair: tuple[str, str], mid: Fraction, bps: int, buy: int
) -> None:
    """Given the bought amount, the price is the exact cost rounded up: never less, over
    by less than one minor unit of the sold currency."""
    p = price(*pair, mid, spread_bps=bps, buy_amount=buy)
    cost = _value(buy, pair[1]) / p.rate
    assert _value(p.sell_amount - 1, pair[0]) < cost <= _value(p.sell_amount, pair[0])
    assert p.buy_amount == buy


class _Amount(TypedDict, total=False):
    """What ``price`` is asked for: exactly one of the two amounts."""

    sell_amount: int
    buy_amount: int


@given(pairs, rates, spreads, amounts, st.booleans())
def test_a_conversion_conserves_each_currency_and_the_spread_is_never_negative(
    pair: tuple[str, str], mid: Fraction, bps: int, amount: int, selling: bool
) -> None:
    """The legs balance per currency (the customer's debit equals the liquidity credit;
    the liquidity debit equals what the customer and revenue get), the spread is at
    least zero, and nothing pays out more than the mid rate allows."""
    kwargs: _Amount = {"sell_amount": amount} if selling else {"buy_amount": amount}
    try:
        p = price(*pair, mid, spread_bps=bps, **kwargs)
    except RequestError:
        return
    assert p.spread_amount >= 0
    at_mid = _value(p.sell_amount, pair[0]) * mid
    assert _value(p.buy_amount + p.spread_amount, pair[1]) <= at_mid
    quote = _row(p.sell_currency, p.buy_currency, p.sell_amount, p.buy_amount, p.spread_amount)
    quote = FxQuoteRow(**{**_fields(quote), "rate": rate_text(p.rate), "mid_rate": rate_text(mid)})
    net: dict[tuple[str, str], int] = {}
    for leg in open_legs(quote, "wallet-a", "wallet-b"):
        assert leg.amount is not None
        assert leg.currency is not None
        assert leg.debit_account_id is not None
        assert leg.credit_account_id is not None
        net[leg.debit_account_id, leg.currency] = (
            net.get((leg.debit_account_id, leg.currency), 0) - leg.amount
        )
        net[leg.credit_account_id, leg.currency] = (
            net.get((leg.credit_account_id, leg.currency), 0) + leg.amount
        )
    for currency in pair:
        assert sum(v for (_, c), v in net.items() if c == currency) == 0
    assert net["wallet-a", pair[0]] == -p.sell_amount
    assert net["wallet-b", pair[1]] == p.buy_amount


@given(pairs, rates, spreads, st.integers(1, 10**9), st.integers(1, 10**9))
def test_more_sold_never_buys_less(
    pair: tuple[str, str], mid: Fraction, bps: int, a: int, b: int
) -> None:
    """Monotonic: selling more buys at least as much, buying more costs at least as much."""
    ratio = minor_ratio(customer_rate(mid, bps), *pair)
    low, high = sorted((a, b))
    assert buy_for(low, ratio) <= buy_for(high, ratio)
    assert sell_for(low, ratio) <= sell_for(high, ratio)


@given(pairs, rates, spreads, amounts, st.integers(1, 10**12))
def test_a_partial_capture_never_books_more_than_the_held_conversion(
    pair: tuple[str, str], mid: Fraction, bps: int, sell: int, part: int
) -> None:
    """Capturing part of a held conversion books at the locked rate, never more than
    held on any leg, and its spread stays at least zero."""
    try:
        p = price(*pair, mid, spread_bps=bps, sell_amount=sell)
    except RequestError:
        return
    quote = FxQuoteRow(
        **{
            **_fields(_row(*pair, p.sell_amount, p.buy_amount, p.spread_amount)),
            "rate": rate_text(p.rate),
            "mid_rate": rate_text(mid),
        }
    )
    part = min(part, sell)
    captured = _too_small_as_none(lambda: captured_amounts(quote, part))
    if captured is None:
        return
    s, b, spread = captured
    assert (s, b) == (part, buy_for(part, minor_ratio(p.rate, *pair)))
    assert b <= p.buy_amount
    assert 0 <= spread <= p.spread_amount + 1  # the mid rounding of a part may differ by 1
    assert b + spread <= p.buy_amount + p.spread_amount


def _row(sell: str, buy: str, s: int, b: int, spread: int) -> FxQuoteRow:
    return FxQuoteRow("fxq_" + "a" * 24, "default", sell, buy, s, b, spread, "1", "1", 0, 1)


def _fields(row: FxQuoteRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in row.__struct_fields__}


@pytest.mark.parametrize(
    ("pair", "rate", "sell", "buy"),
    [
        (("USD", "JPY"), "151.5", 100, 151),  # 2 -> 0 decimals: 151.5 JPY rounded down
        (("JPY", "USD"), "0.0066", 1000, 660),  # 0 -> 2: 1,000 JPY = 6.60 USD
        (("USD", "KWD"), "0.3075", 101, 310),  # 2 -> 3: 0.310575 KWD rounded down
        (("KWD", "USD"), "3.25", 1, 0),  # 0.001 KWD = 0.00325 USD: less than a cent
        (("KWD", "JPY"), "493.1", 1, 0),  # 3 -> 0: 0.4931 JPY
    ],
)
def test_exponents_0_2_and_3_are_honoured(
    pair: tuple[str, str], rate: str, sell: int, buy: int
) -> None:
    """Minor units follow each currency's ISO 4217 exponent."""
    assert buy_for(sell, minor_ratio(parse_rate(rate), *pair)) == buy


@pytest.mark.parametrize("text", ["", "1e3", "-1", "0", "0.0", "NaN", "Infinity", "1,5", " 1"])
def test_a_rate_is_a_plain_positive_decimal(text: str) -> None:
    """Exponents, signs, zero and special values are not rates."""
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_a_rate_is_shown_exactly() -> None:
    """The spread applied to a decimal rate stays an exact decimal, shown in full."""
    assert rate_text(customer_rate(parse_rate("0.92"), 50)) == "0.9154"
    assert rate_text(parse_rate("151.50")) == "151.5"
    assert rate_text(Fraction(1)) == "1"


def test_a_held_conversion_opens_captures_and_voids_as_linked_chains() -> None:
    """Every leg but the last is linked; holds carry their timeout; a capture too small
    to earn a spread voids the spread's hold instead of posting nothing."""
    quote = FxQuoteRow("fxq_" + "b" * 24, "t", "USD", "EUR", 100_00, 91_54, 46, "0.9154",
                       "0.92", 0, 1)  # fmt: skip
    opened = open_legs(quote, "a", "b", pending=True, timeout=60)
    assert [t.flags.linked for t in opened] == [True, True, False]
    assert all(t.flags.pending and t.timeout_seconds == 60 for t in opened)
    captured = capture_legs(quote, 2)  # 1.83 EUR cents at the rate, 1.84 at mid: 1 and 1
    assert [t.flags.linked for t in captured] == [True, True, False]
    assert captured[2].flags.void_pending
    voided = void_legs(quote)
    assert [t.pending_id for t in voided] == [t.id for t in opened]
    with pytest.raises(RequestError) as raised:
        captured_amounts(quote, 100_01)
    assert raised.value.code is ErrorCode.AMOUNT_EXCEEDS_PENDING_AMOUNT
