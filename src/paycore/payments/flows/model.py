"""What the payment service takes and answers: requests, views, replies, routers."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from paycore.errors import PaycoreError
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.base import CardDetails, ProcessorResult
from paycore.storage.base import StoredResponse
from paycore.storage.payments import AttemptRow, PaymentRow, PayoutRow, RefundRow

__all__ = [
    "DEFAULT_AUTHORIZATION_SECONDS",
    "MAX_PAYMENT_AMOUNT",
    "FixedRouter",
    "NewPayment",
    "NewPayout",
    "PaymentRouter",
    "PaymentView",
    "PayoutView",
    "RefundView",
    "Reply",
    "ReplyOutcome",
    "ResolveReport",
    "RouteLike",
    "View",
]

DEFAULT_AUTHORIZATION_SECONDS: Final = 7 * 24 * 3600
# One payment or payout may move at most this many minor units (10 billion in a currency
# of two decimals). The ledger takes up to 2^63-1, but a processor's account (psp:...) is
# shared by every payment through it: one absurd amount would push its counters to the
# overflow limit and make every later payment on it fail.
MAX_PAYMENT_AMOUNT = 10**12


# -- routing ---------------------------------------------------------------------------------


class RouteLike(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def strategy(self) -> Any: ...
    @property
    def candidates(self) -> tuple[str, ...]: ...


class PaymentRouter(Protocol):
    """What the service needs of a router (``paycore.payments.routing.Router`` is one)."""

    def route(
        self, *, merchant: str | None = None, currency: str | None = None, brand: str | None = None
    ) -> RouteLike: ...

    def record_result(self, result: ProcessorResult) -> None: ...

    def in_flight(self, name: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class _FixedRoute:
    rule: str
    strategy: str
    candidates: tuple[str, ...]


class FixedRouter:
    """The same priority list for every payment; records nothing. The default when no
    routing is configured (and what tests use)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def route(
        self, *, merchant: str | None = None, currency: str | None = None, brand: str | None = None
    ) -> _FixedRoute:
        return _FixedRoute("default", "priority", self.names)

    def record_result(self, result: ProcessorResult) -> None:
        return None

    def in_flight(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


# -- requests, views, answers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment to make (the API checked the shape: ids, amount, currency)."""

    amount: int
    currency: str
    merchant_account_id: str
    capture: CaptureMethod = CaptureMethod.AUTOMATIC
    card: CardDetails | None = None
    wallet_account_id: str | None = None
    # The API caller's tenant: the accounts named must be its own (None: no check).
    tenant: str | None = None

    def __post_init__(self) -> None:
        if (self.card is None) == (self.wallet_account_id is None):
            raise ValueError("a payment has exactly one source: a card or a wallet")


@dataclass(frozen=True, slots=True)
class NewPayout:
    wallet_account_id: str
    amount: int
    currency: str
    destination: str
    tenant: str | None = None  # as NewPayment's


class PaymentView(msgspec.Struct, frozen=True):
    """A payment as stored, with its attempts, and the shard it lives on."""

    payment: PaymentRow
    attempts: tuple[AttemptRow, ...]
    shard: str


class RefundView(msgspec.Struct, frozen=True):
    refund: RefundRow
    attempts: tuple[AttemptRow, ...]
    shard: str


class PayoutView(msgspec.Struct, frozen=True):
    payout: PayoutRow
    attempts: tuple[AttemptRow, ...]
    shard: str


View = PaymentView | RefundView | PayoutView
ReplyOutcome = View | PaycoreError


@dataclass(frozen=True, slots=True)
class Reply:
    """What a request comes to: ``outcome`` (a view, or an error to answer with; None
    when replayed) and, for a keyed request, the exact ``response`` stored for it."""

    outcome: ReplyOutcome | None
    response: StoredResponse | None = None
    replayed: bool = False


@dataclass
class ResolveReport:
    """What one resolver pass did (the worker logs it; tests read it)."""

    resolved: list[str] = field(default_factory=list)
    still_open: list[str] = field(default_factory=list)
    failures: int = 0
