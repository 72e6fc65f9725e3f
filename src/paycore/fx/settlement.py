"""A card payment settled through a conversion: the pure plan of its ledger chains.

The processor authorizes and captures in the presentment currency P (the card's); the
merchant account holds M. The rate is locked when the payment is made (a quote priced
as ``quotes.price`` does, kept on the payment); each capture ``s`` of P (all of an
automatic payment, or each partial capture) is booked at it as one linked chain, all
or nothing, across shards too::

    <id>.sell    psp:<shard>:<processor>:P -> fx:liquidity:P   s P
    <id>.buy     fx:liquidity:M            -> merchant          b M   (1)
    <id>.spread  fx:liquidity:M            -> fx:revenue:M      p M   (2)

(1) ``s`` at the locked rate, rounded down; (2) ``s`` at the locked mid rate, rounded
down, less ``b`` (booked only when positive), as ``quotes.price`` does.

A refund of ``r`` of P is the merchant buying ``r`` back at the same locked rate: it
pays ``c`` (``r`` at the rate, rounded *up*: never in its favour), first held, then
posted when the processor refunded (voided when it did not)::

    <id>.buy     merchant          -> fx:liquidity:M       c M
    <id>.sell    fx:liquidity:P    -> psp:<shard>:<processor>:P   r P

Every transfer balances in its own currency, so each currency sums to zero. The spread
a capture earned stays earned: the refund's rate is the customer's, so the house buys
back below the mid rate and that difference shows in its liquidity account.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from paycore.config import FxConfig
from paycore.errors import ErrorCode, RequestError
from paycore.fx.accounts import liquidity_account_id, revenue_account_id
from paycore.fx.conversion import linked
from paycore.fx.quotes import price
from paycore.fx.rates import RateSource
from paycore.fx.rounding import buy_for, minor_ratio, rate_text
from paycore.ledger.model import TransferFlags, TransferRequest

__all__ = [
    "LockedRate",
    "capture_chain",
    "lock_rate",
    "refund_chain",
    "settle_chain",
]


@dataclass(frozen=True, slots=True)
class LockedRate:
    """The rates a payment locked: ``rate`` (the customer's) and ``mid_rate``, major
    units of ``settlement`` per unit of ``presentment``, as exact decimal text."""

    presentment: str
    settlement: str
    rate: str
    mid_rate: str

    def _ratio(self, rate: str) -> Fraction:
        return minor_ratio(Fraction(rate), self.presentment, self.settlement)

    def captured(self, amount: int) -> tuple[int, int]:
        """``(credited, spread)`` in the settlement currency for capturing ``amount``;
        ``fx_amount_too_small`` when it would credit nothing."""
        credited = buy_for(amount, self._ratio(self.rate))
        if credited < 1:
            raise RequestError(
                ErrorCode.FX_AMOUNT_TOO_SMALL,
                f"{amount} minor units of {self.presentment} settle as less than one of "
                f"{self.settlement}",
            )
        return credited, buy_for(amount, self._ratio(self.mid_rate)) - credited

    def refund_cost(self, amount: int) -> int:
        """What refunding ``amount`` debits the merchant: ``amount`` at the rate,
        rounded up (the merchant buys it back: never in its favour)."""
        ratio = self._ratio(self.rate)
        return -((-amount * ratio.numerator) // ratio.denominator)


async def lock_rate(
    rates: RateSource, config: FxConfig, presentment: str, settlement: str, amount: int
) -> LockedRate:
    """Price ``amount`` of ``presentment`` into ``settlement`` as a quote would be (the
    spread of ``[fx]``), and lock its rates; refuses what a quote refuses
    (``fx_pair_unsupported``, ``fx_amount_too_small``, ``fx_rate_unavailable``)."""
    mid = await rates.rate(presentment, settlement)
    spread = config.spreads.get(f"{presentment}/{settlement}", config.spread_bps)
    priced = price(presentment, settlement, mid, spread_bps=spread, sell_amount=amount)
    return LockedRate(presentment, settlement, rate_text(priced.rate), rate_text(priced.mid_rate))


def capture_chain(
    chain_id: str, locked: LockedRate, psp: str, merchant: str, amount: int, **metadata: str
) -> tuple[TransferRequest, ...]:
    """The posted chain settling a capture of ``amount`` (module docstring)."""
    credited, spread = locked.captured(amount)
    p, m = locked.presentment, locked.settlement
    items = [
        TransferRequest(f"{chain_id}.sell", psp, liquidity_account_id(p), amount, p,
                        metadata=metadata),
        TransferRequest(f"{chain_id}.buy", liquidity_account_id(m), merchant, credited, m,
                        metadata=metadata),
    ]  # fmt: skip
    if spread > 0:
        items.append(
            TransferRequest(f"{chain_id}.spread", liquidity_account_id(m),
                            revenue_account_id(m), spread, m, metadata=metadata)
        )  # fmt: skip
    return linked(items)


def refund_chain(
    chain_id: str, locked: LockedRate, psp: str, merchant: str, amount: int, **metadata: str
) -> tuple[TransferRequest, ...]:
    """The held chain of a refund of ``amount`` (module docstring): post or void it
    with ``settle_chain``."""
    p, m = locked.presentment, locked.settlement
    held = TransferFlags(pending=True)
    return linked(
        [
            TransferRequest(
                f"{chain_id}.buy",
                merchant,
                liquidity_account_id(m),
                locked.refund_cost(amount),
                m,
                flags=held,
                metadata=metadata,
            ),
            TransferRequest(
                f"{chain_id}.sell",
                liquidity_account_id(p),
                psp,
                amount,
                p,
                flags=held,
                metadata=metadata,
            ),
        ]
    )


def settle_chain(
    chain_id: str, held_id: str, *, post: bool, **metadata: str
) -> tuple[TransferRequest, ...]:
    """Post (``post``) or void, as one, the holds of ``refund_chain(held_id, ...)``."""
    flags = TransferFlags(post_pending=True) if post else TransferFlags(void_pending=True)
    return linked(
        [
            TransferRequest(
                f"{chain_id}.{leg}", pending_id=f"{held_id}.{leg}", flags=flags, metadata=metadata
            )
            for leg in ("buy", "sell")
        ]
    )
