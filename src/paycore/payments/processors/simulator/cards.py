"""The simulator's test cards and payout destinations, and card validation (pure).

A card number is checked (digits, length, Luhn), then its expiry and CVC, then looked
up in ``TEST_CARDS``; any other valid number is approved. Only ``mask`` of a number
(its last four digits) ever reaches a log line or an answer.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Final

# The card rules are those of a real network, the same ones paycore checks before it calls
# a processor: one definition of Luhn and of the brand prefixes.
from paycore.payments.cards import brand_of, luhn_valid

__all__ = [
    "TEST_CARDS",
    "TEST_DESTINATIONS",
    "CardBehaviour",
    "brand_of",
    "card_behaviour",
    "card_decline",
    "destination_behaviour",
    "luhn_valid",
    "mask",
]


class CardBehaviour(StrEnum):
    """What the simulator does with an authorization on a card."""

    APPROVE = "approve"
    INSUFFICIENT_FUNDS = "insufficient_funds"  # 402, recorded as declined
    DO_NOT_HONOR = "do_not_honor"  # 402, recorded as declined
    STOLEN_CARD = "stolen_card"  # 402, recorded as declined
    PROCESSING_ERROR = "processing_error"  # 500 before anything is done; nothing recorded
    TIMEOUT = "timeout"  # recorded as done, then the answer hangs (hang_seconds)
    SELECTIVE = "selective"  # approved, unless this simulator's ``selective_card`` says else


TEST_CARDS: Final[dict[str, CardBehaviour]] = {
    "4242424242424242": CardBehaviour.APPROVE,
    "5555555555554444": CardBehaviour.APPROVE,
    "378282246310005": CardBehaviour.APPROVE,
    "4000000000009995": CardBehaviour.INSUFFICIENT_FUNDS,
    "4000000000000002": CardBehaviour.DO_NOT_HONOR,
    "4000000000009979": CardBehaviour.STOLEN_CARD,
    "4000000000000119": CardBehaviour.PROCESSING_ERROR,
    "4000000000007775": CardBehaviour.TIMEOUT,
    "4000000000003337": CardBehaviour.SELECTIVE,
}

# Payout destinations (IBAN-like) with a behaviour; any other well-formed one is paid.
TEST_DESTINATIONS: Final[dict[str, CardBehaviour]] = {
    "GB00CLOSED00000000": CardBehaviour.DO_NOT_HONOR,  # declined: account_closed
    "GB00ERROR000000000": CardBehaviour.PROCESSING_ERROR,
    "GB00TIMEOUT0000000": CardBehaviour.TIMEOUT,
}


def mask(number: str) -> str:
    """The only form of a card number that may be logged or answered: ``****4242``."""
    return "****" + number[-4:]


def card_decline(number: str, exp_month: int, exp_year: int, cvc: str, today: date) -> str | None:
    """The decline code for a malformed or expired card, or None for a usable one."""
    if not (number.isascii() and number.isdigit() and 12 <= len(number) <= 19):
        return "invalid_card"
    if not luhn_valid(number):
        return "invalid_card"
    if not (1 <= exp_month <= 12 and 2000 <= exp_year <= 2100):
        return "invalid_expiry"
    if (exp_year, exp_month) < (today.year, today.month):
        return "expired_card"
    cvc_length = 4 if brand_of(number) == "amex" else 3
    if not (cvc.isascii() and cvc.isdigit() and len(cvc) == cvc_length):
        return "invalid_cvc"
    return None


def card_behaviour(number: str) -> CardBehaviour:
    return TEST_CARDS.get(number, CardBehaviour.APPROVE)


def destination_behaviour(destination: str) -> CardBehaviour:
    return TEST_DESTINATIONS.get(destination, CardBehaviour.APPROVE)
