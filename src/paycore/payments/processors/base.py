"""The processor connector protocol: how paycore talks to an acquirer or PSP.

A connector turns one operation into one call to one processor and classifies the
answer, which is all the payment logic needs to decide what to do next::

    APPROVED    the processor did it (authorized, captured, refunded, paid out)
    DECLINED    the processor refused for good (insufficient funds, stolen card...):
                final for this card; never retried, never sent elsewhere
    FAILED      the processor definitely did NOT do it and may do it later (5xx before
                processing, connection refused, circuit open): retry or fall back
    AMBIGUOUS   we cannot know (timeout after sending, connection reset mid-answer):
                never retried elsewhere; the payment stays ``processing`` until a status
                lookup by ``reference`` tells what happened

Every call carries our ``reference`` (unique per attempt or per refund/payout), and
processors are idempotent by it, so repeating a call after an ambiguous outcome or a
crash can never charge twice. Card data reaches a connector only as ``CardDetails``
and leaves it only as ``CardToken`` (last four digits and a token): the number itself
is never stored or logged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import msgspec

__all__ = [
    "AuthorizeRequest",
    "CardDetails",
    "CardToken",
    "Operation",
    "Outcome",
    "PayoutRequest",
    "ProcessorConnector",
    "ProcessorResult",
]


class Outcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"


class Operation(StrEnum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    PAYOUT = "payout"
    STATUS = "status"


class CardDetails(msgspec.Struct, frozen=True):
    """A card as the client sent it; lives in memory for one request only.

    ``repr`` never shows the number or the CVC, so it cannot leak through a log line.
    """

    number: str
    exp_month: int
    exp_year: int
    cvc: str

    def __repr__(self) -> str:
        return f"CardDetails(****{self.number[-4:]}, {self.exp_month:02d}/{self.exp_year})"

    __str__ = __repr__


class CardToken(msgspec.Struct, frozen=True):
    """What paycore keeps of a card: its brand, last four digits and a token."""

    token: str
    last4: str
    brand: str
    exp_month: int
    exp_year: int


class AuthorizeRequest(msgspec.Struct, frozen=True):
    reference: str  # ours, unique per attempt; the processor is idempotent by it
    amount: int
    currency: str
    card: CardDetails
    capture: bool = False  # authorize and capture in one call (automatic capture)


class PayoutRequest(msgspec.Struct, frozen=True):
    reference: str
    amount: int
    currency: str
    destination: str  # a bank account reference (IBAN-like), never a card number


class ProcessorResult(msgspec.Struct, frozen=True):
    """One call's classified answer (see the module docstring)."""

    outcome: Outcome
    processor: str
    operation: Operation
    reference: str
    # The processor's id for the operation, when it gave one.
    processor_reference: str | None = None
    # For DECLINED: the processor's reason (insufficient_funds, do_not_honor, stolen_card...).
    decline_code: str | None = None
    # For FAILED / AMBIGUOUS: what went wrong, for the attempt's record.
    error: str | None = None
    # For STATUS: the processor's state of the operation named by ``reference``
    # (authorized, captured, voided, refunded, paid_out, declined, failed, not_found).
    status: str | None = None
    amount: int | None = None
    latency_ms: float = 0.0


class ProcessorConnector(Protocol):
    """One processor. Methods never raise for a processor's answer or a network
    failure: they classify it as a ``ProcessorResult``; they raise only for bugs."""

    name: str

    async def authorize(self, request: AuthorizeRequest) -> ProcessorResult: ...

    async def capture(self, reference: str, amount: int, capture_reference: str) -> ProcessorResult:
        """Capture ``amount`` of the authorization ``reference``; several partial captures
        are allowed up to the authorized amount, each idempotent by ``capture_reference``."""

    async def void(self, reference: str) -> ProcessorResult:
        """Release the uncaptured remainder of the authorization ``reference``."""

    async def refund(self, reference: str, amount: int, refund_reference: str) -> ProcessorResult:
        """Refund ``amount`` of what was captured under ``reference``."""

    async def payout(self, request: PayoutRequest) -> ProcessorResult: ...

    async def status(self, reference: str) -> ProcessorResult:
        """What the processor knows of the operation ``reference`` (any kind)."""

    async def aclose(self) -> None: ...
