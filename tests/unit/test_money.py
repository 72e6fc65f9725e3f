"""Money and currency helpers: integer minor units, ISO 4217 codes, no silent mixing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.money import (
    CURRENCY_MINOR_UNITS,
    MAX_AMOUNT,
    Money,
    format_minor,
    is_currency,
    is_valid_amount,
)


def test_max_amount_is_the_largest_signed_64_bit_integer() -> None:
    """MAX_AMOUNT is what a bigint column can hold, and no more."""
    assert MAX_AMOUNT == 2**63 - 1


def test_every_listed_currency_is_three_capitals_with_a_known_exponent() -> None:
    """The currency table lists only well-formed codes with 0, 2 or 3 minor digits."""
    assert len(CURRENCY_MINOR_UNITS) > 140
    for code, digits in CURRENCY_MINOR_UNITS.items():
        assert len(code) == 3
        assert code.isascii()
        assert code.isupper()
        assert digits in (0, 2, 3)
    assert (CURRENCY_MINOR_UNITS["USD"], CURRENCY_MINOR_UNITS["JPY"]) == (2, 0)
    assert CURRENCY_MINOR_UNITS["KWD"] == 3


@pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "KWD", "CHF"])
def test_is_currency_accepts_active_codes(code: str) -> None:
    """Active ISO 4217 alphabetic codes are currencies."""
    assert is_currency(code)


@pytest.mark.parametrize(
    "code",
    ["usd", "Usd", "US", "USDD", "XAU", "XXX", "ABC", "", " USD", "USD\n", None, 840, b"USD"],
)
def test_is_currency_rejects_everything_else(code: object) -> None:
    """Lower case, wrong length, metals, unknown codes and non-strings are not currencies."""
    assert not is_currency(code)


@pytest.mark.parametrize("amount", [1, 2, 10**12, MAX_AMOUNT])
def test_is_valid_amount_accepts_positive_int64(amount: int) -> None:
    """Every integer in 1..2^63-1 is a valid amount."""
    assert is_valid_amount(amount)


@pytest.mark.parametrize(
    "amount", [0, -1, MAX_AMOUNT + 1, 2**64, True, False, 1.0, 10.5, "10", None, float("inf")]
)
def test_is_valid_amount_rejects_non_positive_oversized_and_non_int(amount: object) -> None:
    """Zero, negatives, values past int64, bools, floats and strings are not amounts."""
    assert not is_valid_amount(amount)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1050, "USD", "10.50 USD"),
        (5, "USD", "0.05 USD"),
        (-5, "USD", "-0.05 USD"),
        (0, "EUR", "0.00 EUR"),
        (123456789, "USD", "1,234,567.89 USD"),
        (1234567, "JPY", "1,234,567 JPY"),
        (-1234, "KWD", "-1.234 KWD"),
        (1050, "ZZZ", "10.50 ZZZ"),  # unknown currencies render with two digits
    ],
)
def test_format_minor_renders_for_humans(amount: int, currency: str, text: str) -> None:
    """Minor units render with the currency's number of decimals and thousands separators."""
    assert format_minor(amount, currency) == text


@given(amount=st.integers(-(2**63), MAX_AMOUNT), currency=st.sampled_from(["USD", "JPY", "KWD"]))
def test_format_minor_loses_no_digit(amount: int, currency: str) -> None:
    """Stripping the separators from a rendered amount gives back the exact integer."""
    number, code = format_minor(amount, currency).split(" ")
    assert code == currency
    assert int(number.replace(",", "").replace(".", "")) == amount


def test_money_adds_and_subtracts_within_one_currency() -> None:
    """Money of one currency adds and subtracts exactly, as integers."""
    a, b = Money(1050, "USD"), Money(75, "USD")
    assert a + b == Money(1125, "USD")
    assert a - b == Money(975, "USD")
    assert str(b - a) == "-9.75 USD"


@pytest.mark.parametrize("op", ["add", "sub"])
def test_money_refuses_to_mix_currencies(op: str) -> None:
    """Adding or subtracting two currencies raises instead of guessing a rate."""
    usd, eur = Money(1, "USD"), Money(1, "EUR")
    with pytest.raises(ValueError, match="cannot combine USD with EUR"):
        _ = usd + eur if op == "add" else usd - eur


@pytest.mark.parametrize("amount", [1.5, 1.0, True, "5", None])
def test_money_amount_must_be_an_int(amount: object) -> None:
    """A float, bool or string amount is refused: money is integer minor units."""
    with pytest.raises(TypeError):
        Money(amount, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["usd", "XXX", ""])
def test_money_currency_must_be_iso_4217(currency: str) -> None:
    """An unknown currency code is refused."""
    with pytest.raises(ValueError, match="currency"):
        Money(1, currency)


def test_money_is_immutable() -> None:
    """A Money value cannot be changed in place."""
    money = Money(1, "USD")
    with pytest.raises(dataclasses.FrozenInstanceError):
        money.amount = 2  # type: ignore[misc]
