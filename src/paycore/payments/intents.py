"""The lifecycles of payments, refunds and payouts: enums with one transition table each.

A payment intent (Stripe's PaymentIntent, reduced to what a payment core needs)::

    processing ──────────► requires_capture ──► processing (a capture or a void in flight)
        │   (authorized,        │    ▲               │
        │    manual capture)    │    └───────────────┤ (partial capture: more may follow;
        │                       │                    │  declined/failed capture: unchanged)
        ├──► succeeded ◄────────┴────────────────────┤ (captured: all, or final; a cancel
        │    (captured)         │                    │  or expiry after a partial capture)
        ├──► failed             └──► canceled ◄──────┘ (voided, or expired, none captured)
        └──► canceled
    succeeded, failed, canceled are final.

``processing`` always means "something is in flight that we do not know the end of":
a processor call (``pending_op``: authorize, capture, void), or a cross-shard wallet
transfer (``transfer``). Crash or AMBIGUOUS answer: it stays so, and the resolver asks
the processor (``status``) and records the end (``paycore.payments.flows.resolver``).

Refunds: ``pending`` (sent; the money held on the merchant) -> ``succeeded`` | ``failed``.
Payouts: ``processing`` (sent; the money held on the wallet) -> ``paid`` | ``failed``.

Every change goes through ``PaymentStatus.to`` (or the refund/payout twins): an edge
the table lacks raises ``IllegalTransition`` (409 ``payment_unexpected_state``), never
a silent no-op. Pure: no I/O, tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, TypeVar

from paycore.errors import ErrorCode, RequestError

__all__ = [
    "PAYMENT_TRANSITIONS",
    "PAYOUT_TRANSITIONS",
    "REFUND_TRANSITIONS",
    "CancelReason",
    "CaptureMethod",
    "IllegalTransition",
    "PaymentStatus",
    "PayoutStatus",
    "PendingOp",
    "RefundStatus",
    "SourceType",
]


class IllegalTransition(RequestError):
    """A payment, refund or payout was asked to move along an edge its table lacks."""

    def __init__(self, kind: str, current: str, wanted: str) -> None:
        super().__init__(
            ErrorCode.PAYMENT_UNEXPECTED_STATE, f"a {kind} cannot go from {current} to {wanted}"
        )
        self.current = current
        self.wanted = wanted


S = TypeVar("S", bound=StrEnum)


def _move(kind: str, transitions: Mapping[S, frozenset[S]], current: S, wanted: S) -> S:
    """``wanted``, if ``transitions`` has the edge from ``current``; else ``IllegalTransition``."""
    if wanted not in transitions[current]:
        raise IllegalTransition(kind, current.value, wanted.value)
    return wanted


class PaymentStatus(StrEnum):
    """The states of a payment intent (see the module docstring).

    processing        a processor call or a cross-shard transfer is in flight
    requires_capture  authorized: the amount is held (psp -> merchant, pending) until
                      captured, canceled, or the authorization expires
    succeeded         money captured (all, or part with the rest released); refundable
    failed            declined, no processor could take it, or the ledger refused it
    canceled          released before any capture (by request, or expired)
    """

    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def to(self, wanted: PaymentStatus) -> PaymentStatus:
        return _move("payment", PAYMENT_TRANSITIONS, self, wanted)

    @property
    def final(self) -> bool:
        return not PAYMENT_TRANSITIONS[self]


_P = PaymentStatus
PAYMENT_TRANSITIONS: Final[dict[PaymentStatus, frozenset[PaymentStatus]]] = {
    # An authorization (or a capture, or a void) comes back: its result decides.
    _P.PROCESSING: frozenset({_P.REQUIRES_CAPTURE, _P.SUCCEEDED, _P.FAILED, _P.CANCELED}),
    # A capture or a void goes out (processing); or the authorization expires:
    # canceled, or succeeded when a part was captured before.
    _P.REQUIRES_CAPTURE: frozenset({_P.PROCESSING, _P.SUCCEEDED, _P.CANCELED}),
    _P.SUCCEEDED: frozenset(),
    _P.FAILED: frozenset(),
    _P.CANCELED: frozenset(),
}


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def to(self, wanted: RefundStatus) -> RefundStatus:
        return _move("refund", REFUND_TRANSITIONS, self, wanted)


REFUND_TRANSITIONS: Final[dict[RefundStatus, frozenset[RefundStatus]]] = {
    RefundStatus.PENDING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    RefundStatus.SUCCEEDED: frozenset(),
    RefundStatus.FAILED: frozenset(),
}


class PayoutStatus(StrEnum):
    PROCESSING = "processing"
    PAID = "paid"
    FAILED = "failed"

    def to(self, wanted: PayoutStatus) -> PayoutStatus:
        return _move("payout", PAYOUT_TRANSITIONS, self, wanted)


PAYOUT_TRANSITIONS: Final[dict[PayoutStatus, frozenset[PayoutStatus]]] = {
    PayoutStatus.PROCESSING: frozenset({PayoutStatus.PAID, PayoutStatus.FAILED}),
    PayoutStatus.PAID: frozenset(),
    PayoutStatus.FAILED: frozenset(),
}


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"  # authorize and capture in one processor call
    MANUAL = "manual"  # authorize now; capture (in parts) or cancel later


class SourceType(StrEnum):
    CARD = "card"
    WALLET = "wallet"


class PendingOp(StrEnum):
    """What a ``processing`` payment waits for."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    TRANSFER = "transfer"  # a wallet payment's cross-shard transfer, until it settles
    # The processor approved but the ledger refused (the merchant closed meanwhile): the
    # money goes back (void or refund) before the payment may fail; retried until done.
    GIVE_BACK = "give_back"


class CancelReason(StrEnum):
    REQUESTED = "requested"
    EXPIRED = "expired"  # the authorization ran out before (all of) it was captured
