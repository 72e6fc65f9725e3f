"""``ScriptedConnector``: an in-memory processor that does what a test tells it.

It keeps a book like a real acquirer (idempotent by reference: a repeated reference
gets the first answer and changes nothing) and answers each call by the next scripted
``Behaviour`` for that operation (``APPROVE`` when none is left)::

    APPROVE     done; APPROVED
    DECLINE     recorded as declined; DECLINED (``decline_code``)
    FAIL        nothing done; FAILED (a 5xx before processing, a refused connection)
    AMBIGUOUS   done, but the answer is lost; AMBIGUOUS (a timeout after sending)
    LOST        nothing done, and no answer; AMBIGUOUS (a timeout before it arrived)

``status`` answers from the book (as the simulator does: an authorization is
``authorized``, ``captured``, ``refunded``, ``voided`` or ``declined``; a capture
``captured``; a refund ``refunded``; a payout ``paid_out``; unknown ``not_found``).
``charged()`` says how much money really moved, so a test can prove nothing was taken
twice. Used by the payment tests and usable by a demo without any network.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from paycore.payments.processors.base import (
    AuthorizeRequest,
    Operation,
    Outcome,
    PayoutRequest,
    ProcessorResult,
)

__all__ = ["Behaviour", "ScriptedConnector"]


class Behaviour(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    FAIL = "fail"
    AMBIGUOUS = "ambiguous"
    LOST = "lost"


@dataclass
class _Record:
    operation: Operation
    reference: str
    amount: int
    declined: str | None = None
    parent: str | None = None  # the authorization of a capture or refund
    captured: int = 0  # authorizations
    refunded: int = 0  # authorizations
    voided: bool = False  # authorizations

    def state(self) -> str:
        if self.declined is not None:
            return "declined"
        if self.operation is Operation.AUTHORIZE:
            if self.captured:
                return "refunded" if self.refunded >= self.captured else "captured"
            return "voided" if self.voided else "authorized"
        return {
            Operation.CAPTURE: "captured",
            Operation.REFUND: "refunded",
            Operation.PAYOUT: "paid_out",
        }[self.operation]


class ScriptedConnector:
    """An in-memory processor named ``name`` (see the module docstring)."""

    def __init__(self, name: str, *, decline_code: str = "do_not_honor") -> None:
        self.name = name
        self.decline_code = decline_code
        self.book: dict[str, _Record] = {}
        self.calls: list[tuple[Operation, str]] = []
        self._plans: dict[Operation, deque[Behaviour]] = defaultdict(deque)
        # Set to an unset Event to hold every call until the test sets it.
        self.gate: asyncio.Event | None = None

    def plan(self, operation: Operation, *behaviours: Behaviour) -> ScriptedConnector:
        """Answer the next calls of ``operation`` so, in order."""
        self._plans[operation].extend(behaviours)
        return self

    def charged(self) -> int:
        """Money the processor moved for us: captured minus refunded, over every card."""
        auths = [r for r in self.book.values() if r.operation is Operation.AUTHORIZE]
        return sum(r.captured - r.refunded for r in auths)

    def paid_out(self) -> int:
        return sum(
            r.amount
            for r in self.book.values()
            if r.operation is Operation.PAYOUT and r.declined is None
        )

    def count(self, operation: Operation) -> int:
        return sum(1 for op, _ in self.calls if op is operation)

    # -- the connector protocol --------------------------------------------------------

    async def authorize(self, request: AuthorizeRequest) -> ProcessorResult:
        def act() -> _Record | str:
            record = _Record(Operation.AUTHORIZE, request.reference, request.amount)
            if request.capture:
                record.captured = request.amount
            return record

        return await self._run(Operation.AUTHORIZE, request.reference, act)

    async def capture(self, reference: str, amount: int, capture_reference: str) -> ProcessorResult:
        def act() -> _Record | str:
            parent = self.book.get(reference)
            if parent is None or parent.declined or parent.voided:
                return "authorization_not_found"
            if parent.captured + amount > parent.amount:
                return "amount_exceeds_authorized"
            parent.captured += amount
            return _Record(Operation.CAPTURE, capture_reference, amount, parent=reference)

        return await self._run(Operation.CAPTURE, capture_reference, act)

    async def void(self, reference: str) -> ProcessorResult:
        await self._wait()
        self.calls.append((Operation.VOID, reference))
        behaviour = self._next(Operation.VOID)
        parent = self.book.get(reference)
        if behaviour in (Behaviour.FAIL, Behaviour.LOST):
            outcome = Outcome.FAILED if behaviour is Behaviour.FAIL else Outcome.AMBIGUOUS
            return self._result(outcome, Operation.VOID, reference, error=behaviour.value)
        if behaviour is Behaviour.DECLINE or parent is None or parent.declined:
            return self._result(
                Outcome.DECLINED, Operation.VOID, reference, decline_code="authorization_not_found"
            )
        parent.voided = True
        outcome = Outcome.AMBIGUOUS if behaviour is Behaviour.AMBIGUOUS else Outcome.APPROVED
        return self._result(outcome, Operation.VOID, reference)

    async def refund(self, reference: str, amount: int, refund_reference: str) -> ProcessorResult:
        def act() -> _Record | str:
            parent = self.book.get(reference)
            if parent is None or parent.captured - parent.refunded < amount:
                return "amount_exceeds_captured"
            parent.refunded += amount
            return _Record(Operation.REFUND, refund_reference, amount, parent=reference)

        return await self._run(Operation.REFUND, refund_reference, act)

    async def payout(self, request: PayoutRequest) -> ProcessorResult:
        return await self._run(
            Operation.PAYOUT,
            request.reference,
            lambda: _Record(Operation.PAYOUT, request.reference, request.amount),
        )

    async def status(self, reference: str) -> ProcessorResult:
        await self._wait()
        self.calls.append((Operation.STATUS, reference))
        behaviour = self._next(Operation.STATUS)
        if behaviour in (Behaviour.FAIL, Behaviour.LOST, Behaviour.AMBIGUOUS):
            outcome = Outcome.FAILED if behaviour is Behaviour.FAIL else Outcome.AMBIGUOUS
            return self._result(outcome, Operation.STATUS, reference, error=behaviour.value)
        record = self.book.get(reference)
        state = "not_found" if record is None else record.state()
        return self._result(Outcome.APPROVED, Operation.STATUS, reference, status=state)

    async def aclose(self) -> None:
        return None

    # -- the book ------------------------------------------------------------------------

    async def _wait(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    def _next(self, operation: Operation) -> Behaviour:
        plan = self._plans[operation]
        return plan.popleft() if plan else Behaviour.APPROVE

    async def _run(
        self, operation: Operation, reference: str, act: Callable[[], _Record | str]
    ) -> ProcessorResult:
        await self._wait()
        self.calls.append((operation, reference))
        known = self.book.get(reference)
        if known is not None:  # idempotent by reference: the first answer, nothing redone
            return self._answer(known)
        behaviour = self._next(operation)
        if behaviour in (Behaviour.FAIL, Behaviour.LOST):
            outcome = Outcome.FAILED if behaviour is Behaviour.FAIL else Outcome.AMBIGUOUS
            return self._result(outcome, operation, reference, error=behaviour.value)
        if behaviour is Behaviour.DECLINE:
            record = _Record(operation, reference, 0, declined=self.decline_code)
        else:
            made = act()
            if isinstance(made, str):  # refused by the book itself
                record = _Record(operation, reference, 0, declined=made)
            else:
                record = made
        self.book[reference] = record
        if behaviour is Behaviour.AMBIGUOUS:
            return self._result(Outcome.AMBIGUOUS, operation, reference, error="timeout")
        return self._answer(record)

    def _answer(self, record: _Record) -> ProcessorResult:
        if record.declined is not None:
            return self._result(
                Outcome.DECLINED, record.operation, record.reference, decline_code=record.declined
            )
        return self._result(
            Outcome.APPROVED,
            record.operation,
            record.reference,
            processor_reference=f"{self.name}:{record.reference}",
            amount=record.amount,
        )

    def _result(
        self,
        outcome: Outcome,
        operation: Operation,
        reference: str,
        *,
        decline_code: str | None = None,
        error: str | None = None,
        status: str | None = None,
        processor_reference: str | None = None,
        amount: int | None = None,
    ) -> ProcessorResult:
        return ProcessorResult(
            outcome=outcome,
            processor=self.name,
            operation=operation,
            reference=reference,
            processor_reference=processor_reference,
            decline_code=decline_code,
            error=error,
            status=status,
            amount=amount,
            latency_ms=0.5,
        )
