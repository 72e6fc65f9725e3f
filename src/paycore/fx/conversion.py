"""A conversion as ledger transfers: the pure plan behind ``POST /v1/fx/conversions``.

Quote ``q`` (the customer sells S of SELL, gets B of BUY, the house keeps spread P of
BUY) is booked as one linked chain, all or nothing, across shards too::

    fx.q.sell    customer's debit account  -> fx:liquidity:SELL    S SELL
    fx.q.buy     fx:liquidity:BUY          -> customer's credit     B BUY
    fx.q.spread  fx:liquidity:BUY          -> fx:revenue:BUY        P BUY   (when P > 0)

Each transfer balances in its own currency, so money is conserved per currency. The
ids are derived from the quote, so a quote is used at most once: a second conversion
of it names the same ids (the same fields: the first answer again; other accounts:
``fx_quote_already_used``).

As a hold (``pending``), the legs are pending transfers; a capture posts them together
at the quote's locked rates (a partial capture of s <= S gets what s buys at that rate,
rounded as ``rounding`` says), a void releases them together.
"""

from __future__ import annotations

from fractions import Fraction

from msgspec.structs import replace

from paycore.cluster.namespaces import FX_TRANSFER_PREFIX
from paycore.errors import ErrorCode, RequestError
from paycore.fx.accounts import liquidity_account_id, revenue_account_id
from paycore.fx.rounding import buy_for, minor_ratio
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.storage.fx_quotes import FxQuoteRow

__all__ = [
    "LEGS",
    "capture_legs",
    "captured_amounts",
    "conversion_id",
    "leg_id",
    "linked",
    "open_legs",
    "quote_id_of",
    "void_legs",
]

LEGS = ("sell", "buy", "spread")
_CONVERSION_PREFIX = "fxc_"
_QUOTE_PREFIX = "fxq_"


def leg_id(quote_id: str, leg: str) -> str:
    return f"{FX_TRANSFER_PREFIX}{quote_id}.{leg}"


def conversion_id(quote_id: str) -> str:
    """A conversion is named after its quote: ``fxq_X`` -> ``fxc_X``."""
    return _CONVERSION_PREFIX + quote_id.removeprefix(_QUOTE_PREFIX)


def quote_id_of(conversion: str) -> str | None:
    if not conversion.startswith(_CONVERSION_PREFIX):
        return None
    return _QUOTE_PREFIX + conversion.removeprefix(_CONVERSION_PREFIX)


def linked(items: list[TransferRequest]) -> tuple[TransferRequest, ...]:
    """Every item but the last carries ``linked``: the chain closes on the last."""
    last = len(items) - 1
    return tuple(
        item if i == last else replace(item, flags=replace(item.flags, linked=True))
        for i, item in enumerate(items)
    )


def open_legs(
    quote: FxQuoteRow,
    debit_account_id: str,
    credit_account_id: str,
    *,
    pending: bool = False,
    timeout: int = 0,
) -> tuple[TransferRequest, ...]:
    """The chain booking ``quote`` (module docstring); holds when ``pending``, each
    released after ``timeout`` seconds (0: never) unless captured or voided first."""
    flags = TransferFlags(pending=pending)
    q, sell, buy = quote.id, quote.sell_currency, quote.buy_currency
    items = [
        TransferRequest(
            leg_id(q, "sell"), debit_account_id, liquidity_account_id(sell),
            quote.sell_amount, sell, flags=flags, timeout_seconds=timeout,
        ),
        TransferRequest(
            leg_id(q, "buy"), liquidity_account_id(buy), credit_account_id,
            quote.buy_amount, buy, flags=flags, timeout_seconds=timeout,
        ),
    ]  # fmt: skip
    if quote.spread_amount > 0:
        items.append(
            TransferRequest(
                leg_id(q, "spread"), liquidity_account_id(buy), revenue_account_id(buy),
                quote.spread_amount, buy, flags=flags, timeout_seconds=timeout,
            )
        )  # fmt: skip
    return linked(items)


def captured_amounts(quote: FxQuoteRow, sell_amount: int | None) -> tuple[int, int, int]:
    """``(sell, buy, spread)`` that capturing ``sell_amount`` (None: all) of a held
    conversion books, at the quote's locked rates; refuses what buys nothing."""
    if sell_amount is None or sell_amount == quote.sell_amount:
        return quote.sell_amount, quote.buy_amount, quote.spread_amount
    if sell_amount > quote.sell_amount:
        raise RequestError(
            ErrorCode.AMOUNT_EXCEEDS_PENDING_AMOUNT,
            f"sell_amount {sell_amount} exceeds the held {quote.sell_amount}",
        )
    sell, buy = quote.sell_currency, quote.buy_currency
    got = buy_for(sell_amount, minor_ratio(Fraction(quote.rate), sell, buy))
    at_mid = buy_for(sell_amount, minor_ratio(Fraction(quote.mid_rate), sell, buy))
    if got < 1:
        raise RequestError(
            ErrorCode.FX_AMOUNT_TOO_SMALL,
            f"capturing {sell_amount} minor units of {sell} buys less than one of {buy}",
        )
    return sell_amount, got, at_mid - got


def capture_legs(quote: FxQuoteRow, sell_amount: int | None) -> tuple[TransferRequest, ...]:
    """The chain posting a held conversion's legs (in part: ``captured_amounts``); a
    spread hold whose part rounds to nothing is voided rather than posted."""
    s, b, p = captured_amounts(quote, sell_amount)
    q = quote.id
    items = [
        TransferRequest(
            leg_id(q, "sell.post"), pending_id=leg_id(q, "sell"), amount=s,
            flags=TransferFlags(post_pending=True),
        ),
        TransferRequest(
            leg_id(q, "buy.post"), pending_id=leg_id(q, "buy"), amount=b,
            flags=TransferFlags(post_pending=True),
        ),
    ]  # fmt: skip
    if quote.spread_amount > 0:
        spread = TransferFlags(post_pending=True) if p > 0 else TransferFlags(void_pending=True)
        items.append(
            TransferRequest(
                leg_id(q, "spread.post"), pending_id=leg_id(q, "spread"),
                amount=p if p > 0 else None, flags=spread,
            )
        )  # fmt: skip
    return linked(items)


def void_legs(quote: FxQuoteRow) -> tuple[TransferRequest, ...]:
    """The chain releasing every hold of a held conversion."""
    legs = LEGS if quote.spread_amount > 0 else LEGS[:2]
    return linked(
        [
            TransferRequest(
                leg_id(quote.id, f"{leg}.void"),
                pending_id=leg_id(quote.id, leg),
                flags=TransferFlags(void_pending=True),
            )
            for leg in legs
        ]
    )
