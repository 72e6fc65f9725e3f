"""What every payment outcome is built as: a ``Step`` (one transaction of payment work and
its answer), and the parts the outcomes of each flow family share (pure, no I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from paycore.errors import ErrorCode
from paycore.fx.settlement import capture_chain
from paycore.ledger.model import TransferRequest
from paycore.payments.accounts import psp_account_id
from paycore.payments.flows.model import PaymentView, ReplyOutcome, View
from paycore.payments.flows.rows import events, locked_rate
from paycore.storage.payments import AttemptRow, PaymentRow, PaymentWrite

__all__ = ["REQUEST_CODES", "Step", "fx_capture", "payment_step", "unknown"]

_E = ErrorCode

# What the ledger may refuse about the request itself (answered as a problem, nothing
# kept) rather than about money (a failed payment): see ``paycore.payments.service``.
REQUEST_CODES: Final = frozenset(
    {
        _E.ACCOUNT_NOT_FOUND,
        _E.ACCOUNT_CLOSED,
        _E.CURRENCY_MISMATCH,
        _E.ACCOUNTS_MUST_BE_DIFFERENT,
    }
)


@dataclass(frozen=True, slots=True)
class Step:
    """One transaction of payment work, and what the request is answered with once it
    commits (``answer``; None: this write answers nothing yet). The unit of work adds
    the Idempotency-Key record and the fence (``paycore.payments.flows.work``)."""

    write: PaymentWrite
    answer: ReplyOutcome | None = None
    # A payment settled through a conversion: the chain to book (``flows.fx``) before
    # ``write``, which cannot (the FX accounts live on any shard).
    settlement: tuple[TransferRequest, ...] | None = None


def unknown(view: View, done: AttemptRow) -> Step:
    """An AMBIGUOUS answer: the attempt is recorded, the work stays in flight."""
    return Step(PaymentWrite(shard=view.shard, attempts=(done,)), view)


def payment_step(
    shard: str,
    row: PaymentRow,
    new: PaymentRow,
    attempts: tuple[AttemptRow, ...],
    *,
    now: int,
    pairs: Sequence[tuple[str, PaymentRow]],
    transfers: tuple[TransferRequest, ...] = (),
    **write: Any,
) -> Step:
    """The step that replaces ``row`` by ``new`` (``attempts[-1]`` just finished)."""
    return Step(
        PaymentWrite(
            shard=shard,
            payment=new,
            payment_version=row.version,
            attempts=attempts[-1:],
            transfers=transfers,
            events=events(pairs, now),
            **write,
        ),
        PaymentView(new, attempts, shard),
    )


def fx_capture(
    row: PaymentRow, chain_id: str, shard: str, amount: int
) -> tuple[tuple[TransferRequest, ...], int]:
    """The chain settling a capture of ``amount`` of ``row``, and what it credits."""
    psp = psp_account_id(shard, row.processor or "", row.currency)
    chain = capture_chain(
        chain_id, locked_rate(row), psp, row.merchant_account_id, amount, payment=row.id
    )
    return chain, chain[1].amount or 0
