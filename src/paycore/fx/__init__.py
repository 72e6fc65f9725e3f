"""Currency exchange: quotes at a locked rate, and conversions that book them.

A quote (``quotes``) prices one exchange from a rate source (``rates``) with the
rounding rule of ``rounding``; a conversion (``conversion``) books it as one linked
chain of transfers through paycore's per-currency FX accounts (``accounts``); a card
payment in another currency than its merchant's settles its captures and refunds as such
chains at the rate it locked (``settlement``). Everything here is pure (no I/O) but
``rates.HttpRates`` and ``settlement.lock_rate``, which ask a rate source.
"""

from __future__ import annotations

from paycore.fx.accounts import liquidity_account_id, revenue_account_id
from paycore.fx.quotes import Price, price
from paycore.fx.rates import HttpRates, RateSource, StaticRates, rate_source_for

__all__ = [
    "HttpRates",
    "Price",
    "RateSource",
    "StaticRates",
    "liquidity_account_id",
    "price",
    "rate_source_for",
    "revenue_account_id",
]
