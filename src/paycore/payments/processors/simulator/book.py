"""The simulator's books: what the acquirer has done, by our reference (pure, no I/O).

Every operation is keyed by the reference the client sends (an authorization's,
capture's, refund's or payout's), in one namespace. The first answer for a reference
is stored with an HMAC fingerprint of its request (under a key made per process, so
the fingerprint of a card number cannot be reversed by trying every number): the same
reference with the same request gets that answer again, byte for byte; with another
request it gets 409 ``reference_reused``. Answers that leave nothing done are not
stored (5xx, 404 ``authorization_not_found``, 400 ``invalid_request``), so a retry
is evaluated afresh.

Answers (``Answer.status_code``):

    200  done: authorized, captured, voided, refunded, paid out (or a status lookup)
    402  the card or account is declined (recorded: a status lookup says ``declined``)
    422  the operation is refused (capture over the authorized amount, refund over the
         captured amount, capture after void...): recorded as ``declined``
    404  ``authorization_not_found``, or a status lookup's ``not_found``
    409  ``reference_reused``: this reference was used with another request
    400  ``invalid_request``: the body is not the shape this endpoint takes
    500  ``processing_error``: nothing was done (the processing-error test card)

Amounts: captures of an authorization never exceed its amount in total, refunds
never exceed what was captured in total, a void releases the uncaptured remainder
and forbids later captures.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final, Literal, TypeVar

import msgspec

from paycore.payments.processors.simulator.cards import (
    CardBehaviour,
    brand_of,
    card_behaviour,
    card_decline,
    destination_behaviour,
)
from paycore.payments.processors.simulator.messages import (
    Answer,
    AuthorizeIn,
    CaptureIn,
    CardIn,
    CardOut,
    ErrorOut,
    OperationOut,
    PayoutIn,
    RefundIn,
    SelectiveMode,
)
from paycore.payments.processors.simulator.settlement import SettledItem

__all__ = [
    "AcquirerBook",
    "Answer",
    "AuthorizeIn",
    "CaptureIn",
    "CardIn",
    "OperationOut",
    "PayoutIn",
    "RefundIn",
    "SelectiveMode",
]

_JSON: Final = msgspec.json.Encoder()
_T = TypeVar("_T")


@dataclass(slots=True)
class _Record:
    kind: str
    reference: str
    fingerprint: bytes
    id: str
    amount: int
    currency: str
    answer: Answer
    declined: str | None = None  # the decline code of a declined operation
    parent: str | None = None
    card: CardOut | None = None
    captured: int = 0
    refunded: int = 0
    voided: bool = False
    void_answer: Answer | None = None
    hangs: bool = False  # the timeout test card: every answer about it hangs
    day: date | None = None  # the day it was done (settlement reports group by it)
    auto_captured: bool = False  # an authorization captured at once (capture: true)


class AcquirerBook:
    """The simulator's records and rules; every method answers at once, with no I/O."""

    def __init__(self, name: str, *, today: Callable[[], date] | None = None) -> None:
        self.name = name
        self._today = today or (lambda: datetime.now(UTC).date())
        self._key = secrets.token_bytes(32)
        self._records: dict[str, _Record] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        self._records.clear()

    # -- operations -----------------------------------------------------------------

    def authorize(self, raw: bytes, selective: SelectiveMode = "approve") -> Answer:
        request = self._decode(raw, AuthorizeIn)
        if isinstance(request, Answer):
            return request
        fingerprint = self._fingerprint("authorize", _JSON.encode(request))
        card = request.card
        behaviour = card_behaviour(card.number)
        if behaviour is CardBehaviour.SELECTIVE:
            behaviour = _SELECTIVE[selective]
        known = self._replay(request.reference, fingerprint)
        if known is not None:
            return known
        if behaviour is CardBehaviour.PROCESSING_ERROR:
            return self._error(500, "processing_error", "the acquirer failed; nothing was done")
        decline = card_decline(card.number, card.exp_month, card.exp_year, card.cvc, self._today())
        if decline is None and behaviour not in _PASS:
            decline = behaviour.value
        record = _Record(
            kind="authorization",
            reference=request.reference,
            fingerprint=fingerprint,
            id=self._new_id("au"),
            amount=request.amount,
            currency=request.currency,
            answer=_PLACEHOLDER,
            declined=decline,
            card=CardOut(last4=card.number[-4:], brand=brand_of(card.number)),
            captured=request.amount if request.capture and decline is None else 0,
            hangs=behaviour is CardBehaviour.TIMEOUT,
            day=self._today(),
            auto_captured=request.capture and decline is None,
        )
        return self._keep(record, 402 if decline else 200)

    def capture(self, authorization: str, raw: bytes) -> Answer:
        request = self._decode(raw, CaptureIn)
        if isinstance(request, Answer):
            return request
        return self._child("capture", authorization, request.capture_reference, request)

    def void(self, authorization: str) -> Answer:
        parent = self._authorization(authorization)
        if parent is None:
            return self._not_found(authorization)
        if parent.void_answer is not None:
            return parent.void_answer
        if parent.declined is not None:
            return self._refused(parent, "authorization_declined")
        if parent.captured >= parent.amount:
            return self._refused(parent, "authorization_fully_captured")
        parent.voided = True
        parent.void_answer = Answer(200, self._describe(parent))
        return parent.void_answer

    def refund(self, authorization: str, raw: bytes) -> Answer:
        request = self._decode(raw, RefundIn)
        if isinstance(request, Answer):
            return request
        return self._child("refund", authorization, request.refund_reference, request)

    def payout(self, raw: bytes) -> Answer:
        request = self._decode(raw, PayoutIn)
        if isinstance(request, Answer):
            return request
        fingerprint = self._fingerprint("payout", _JSON.encode(request))
        known = self._replay(request.reference, fingerprint)
        if known is not None:
            return known
        behaviour = destination_behaviour(request.destination)
        if behaviour is CardBehaviour.PROCESSING_ERROR:
            return self._error(500, "processing_error", "the acquirer failed; nothing was done")
        record = _Record(
            kind="payout",
            reference=request.reference,
            fingerprint=fingerprint,
            id=self._new_id("po"),
            amount=request.amount,
            currency=request.currency,
            answer=_PLACEHOLDER,
            declined="account_closed" if behaviour is CardBehaviour.DO_NOT_HONOR else None,
            hangs=behaviour is CardBehaviour.TIMEOUT,
        )
        return self._keep(record, 402 if record.declined else 200)

    def settled(self, day: date) -> list[SettledItem]:
        """What the acquirer settles for ``day``: every approved capture (an authorization
        captured at once included) and refund done that day, in the order they were done."""
        items: list[SettledItem] = []
        for record in self._records.values():
            if record.day != day or record.declined is not None:
                continue
            if record.kind == "capture" or (
                record.kind == "authorization" and record.auto_captured
            ):
                kind = "capture"
            elif record.kind == "refund":
                kind = "refund"
            else:
                continue
            items.append(
                SettledItem(kind, record.reference, record.id, record.currency, record.amount)
            )
        return items

    def status(self, reference: str) -> Answer:
        """The current state of the operation ``reference``: 200, or 404 ``not_found``."""
        record = self._records.get(reference)
        if record is None:
            body = ErrorOut(
                self.name, "not_found", "no operation with this reference", reference, "not_found"
            )
            return Answer(404, _JSON.encode(body))
        return Answer(200, self._describe(record))

    # -- helpers --------------------------------------------------------------------

    def _decode(self, raw: bytes, kind: type[_T]) -> _T | Answer:
        try:
            return msgspec.json.decode(raw, type=kind)
        except msgspec.DecodeError as exc:  # ValidationError included; it names no value
            return self._error(400, "invalid_request", str(exc))

    def _fingerprint(self, operation: str, *parts: bytes) -> bytes:
        mac = hmac.new(self._key, operation.encode(), digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    def _replay(self, reference: str, fingerprint: bytes) -> Answer | None:
        record = self._records.get(reference)
        if record is None:
            return None
        if hmac.compare_digest(record.fingerprint, fingerprint):
            return record.answer
        return self._error(
            409,
            "reference_reused",
            f"reference {reference} was used with another request",
            reference,
        )

    def _authorization(self, reference: str) -> _Record | None:
        record = self._records.get(reference)
        return record if record is not None and record.kind == "authorization" else None

    def _child(
        self,
        kind: Literal["capture", "refund"],
        authorization: str,
        reference: str,
        request: CaptureIn | RefundIn,
    ) -> Answer:
        """A capture or refund of ``authorization``: replayed, refused or recorded."""
        fingerprint = self._fingerprint(kind, authorization.encode(), _JSON.encode(request))
        known = self._replay(reference, fingerprint)
        if known is not None:
            return known
        parent = self._authorization(authorization)
        if parent is None:
            return self._not_found(authorization)
        refusal: str | None = None
        if parent.declined is not None:
            refusal = "authorization_declined"
        elif kind == "capture":
            if parent.voided:
                refusal = "authorization_voided"
            elif parent.captured + request.amount > parent.amount:
                refusal = "amount_exceeds_authorized"
            else:
                parent.captured += request.amount
        elif parent.refunded + request.amount > parent.captured:
            refusal = "amount_exceeds_captured"
        else:
            parent.refunded += request.amount
        record = _Record(
            kind=kind,
            reference=reference,
            fingerprint=fingerprint,
            id=self._new_id("ca" if kind == "capture" else "re"),
            amount=request.amount,
            currency=parent.currency,
            answer=_PLACEHOLDER,
            declined=refusal,
            parent=parent.reference,
            day=self._today(),
        )
        return self._keep(record, 422 if refusal else 200)

    def _keep(self, record: _Record, status: int) -> Answer:
        """Record ``record`` with its answer (one that hangs if the record hangs)."""
        record.answer = Answer(status, self._describe(record), hang=record.hangs)
        self._records[record.reference] = record
        return record.answer

    def _refused(self, record: _Record, code: str) -> Answer:
        body = msgspec.structs.replace(self._describe_struct(record), decline_code=code)
        return Answer(422, _JSON.encode(body))

    def _describe(self, record: _Record) -> bytes:
        return _JSON.encode(self._describe_struct(record))

    def _describe_struct(self, record: _Record) -> OperationOut:
        if record.kind == "authorization":
            return OperationOut(
                processor=self.name,
                reference=record.reference,
                kind=record.kind,
                status=_authorization_status(record),
                id=record.id,
                amount=record.amount,
                currency=record.currency,
                decline_code=record.declined,
                captured_amount=record.captured,
                refunded_amount=record.refunded,
                voided=record.voided,
                card=record.card,
            )
        done = {"capture": "captured", "refund": "refunded", "payout": "paid_out"}[record.kind]
        return OperationOut(
            processor=self.name,
            reference=record.reference,
            kind=record.kind,
            status="declined" if record.declined else done,
            id=record.id,
            amount=record.amount,
            currency=record.currency,
            decline_code=record.declined,
            authorization=record.parent,
        )

    def _not_found(self, authorization: str) -> Answer:
        return self._error(
            404, "authorization_not_found", "no authorization with this reference", authorization
        )

    def _error(self, status: int, code: str, message: str, reference: str | None = None) -> Answer:
        return Answer(status, _JSON.encode(ErrorOut(self.name, code, message, reference)))

    def _new_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{self.name}_{prefix}_{self._seq:08d}"


def _authorization_status(record: _Record) -> str:
    if record.declined is not None:
        return "declined"
    if record.captured > 0:
        return "refunded" if record.refunded >= record.captured else "captured"
    return "voided" if record.voided else "authorized"


_PLACEHOLDER: Final = Answer(0, b"")
# Card behaviours under which an authorization is approved (the timeout card too: it is
# done, only its answer hangs).
_PASS: Final = frozenset({CardBehaviour.APPROVE, CardBehaviour.TIMEOUT})
_SELECTIVE: Final[dict[str, CardBehaviour]] = {
    "approve": CardBehaviour.APPROVE,
    "error": CardBehaviour.PROCESSING_ERROR,
    "decline": CardBehaviour.DO_NOT_HONOR,
    "timeout": CardBehaviour.TIMEOUT,
}
