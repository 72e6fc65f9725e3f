"""The lifecycles of payments, refunds and payouts: one transition table each, every edge
allowed and every other refused with a typed error (409 ``payment_unexpected_state``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import pytest

from paycore.errors import ERROR_SPECS, ErrorCode, RequestError
from paycore.payments.intents import (
    PAYMENT_TRANSITIONS,
    PAYOUT_TRANSITIONS,
    REFUND_TRANSITIONS,
    IllegalTransition,
    PaymentStatus,
    PayoutStatus,
    RefundStatus,
)

P = PaymentStatus
LEGAL_PAYMENT_EDGES = {
    (P.PROCESSING, P.REQUIRES_CAPTURE),  # authorized (manual), or a capture/void undone
    (P.PROCESSING, P.SUCCEEDED),  # captured (automatic, final capture, wallet transfer)
    (P.PROCESSING, P.FAILED),  # declined, no processor, ledger refused
    (P.PROCESSING, P.CANCELED),  # voided
    (P.REQUIRES_CAPTURE, P.PROCESSING),  # a capture or void goes out
    (P.REQUIRES_CAPTURE, P.SUCCEEDED),  # expired after a partial capture
    (P.REQUIRES_CAPTURE, P.CANCELED),  # expired, nothing captured
}


def test_the_payment_table_is_exactly_the_documented_edges() -> None:
    """The table holds these seven edges and no other."""
    edges = {(a, b) for a, targets in PAYMENT_TRANSITIONS.items() for b in targets}
    assert edges == LEGAL_PAYMENT_EDGES
    assert set(PAYMENT_TRANSITIONS) == set(PaymentStatus)


@pytest.mark.parametrize(
    ("current", "wanted"),
    sorted(LEGAL_PAYMENT_EDGES),
    ids=str,
)
def test_every_legal_payment_transition_is_allowed(
    current: PaymentStatus, wanted: PaymentStatus
) -> None:
    """``to`` returns the wanted state along an edge of the table."""
    assert current.to(wanted) is wanted


@pytest.mark.parametrize(
    ("current", "wanted"),
    [e for e in itertools.product(PaymentStatus, repeat=2) if e not in LEGAL_PAYMENT_EDGES],
    ids=str,
)
def test_every_other_payment_transition_is_refused(
    current: PaymentStatus, wanted: PaymentStatus
) -> None:
    """Any other pair (self-loops included) raises IllegalTransition, a 409 request error."""
    with pytest.raises(IllegalTransition) as raised:
        current.to(wanted)
    error = raised.value
    assert isinstance(error, RequestError)
    assert error.code is ErrorCode.PAYMENT_UNEXPECTED_STATE
    assert ERROR_SPECS[error.code].status == 409
    assert (error.current, error.wanted) == (current.value, wanted.value)
    assert current.value in error.detail
    assert wanted.value in error.detail


def test_final_payment_states_have_no_way_out() -> None:
    """succeeded, failed and canceled are final; the two others are not."""
    assert {s for s in PaymentStatus if s.final} == {P.SUCCEEDED, P.FAILED, P.CANCELED}


@pytest.mark.parametrize(
    ("table", "enum", "legal"),
    [
        (
            REFUND_TRANSITIONS,
            RefundStatus,
            {
                (RefundStatus.PENDING, RefundStatus.SUCCEEDED),
                (RefundStatus.PENDING, RefundStatus.FAILED),
            },
        ),
        (
            PAYOUT_TRANSITIONS,
            PayoutStatus,
            {
                (PayoutStatus.PROCESSING, PayoutStatus.PAID),
                (PayoutStatus.PROCESSING, PayoutStatus.FAILED),
            },
        ),
    ],
    ids=["refund", "payout"],
)
def test_refund_and_payout_tables(
    table: Mapping[Any, frozenset[Any]], enum: type[StrEnum], legal: set[tuple[Any, Any]]
) -> None:
    """Refunds and payouts: one state in flight, two final ones; nothing else moves."""
    assert {(a, b) for a, targets in table.items() for b in targets} == legal
    for current, wanted in itertools.product(enum, repeat=2):
        if (current, wanted) in legal:
            assert current.to(wanted) is wanted  # type: ignore[attr-defined]
        else:
            with pytest.raises(IllegalTransition):
                current.to(wanted)  # type: ignore[attr-defined]
