"""The events of the stream, version 1: their envelope, ids, subjects and bytes.

Pure: a log row in, an ``Event`` (and its subject and JSON) out; the same bytes every
time it is built, so a re-published event is the very same message. Every event::

    {"version": 1, "id": "shard-0:transfer:42", "type": "transfer.posted",
     "shard": "shard-0", "seq": 42, "occurred_at": "<RFC 3339, ns>", "tenant": "default",
     "data": {...}}

- ``id``: stable, the de-duplication key (``Nats-Msg-Id``): ``<shard>:transfer:<seq>``
  for a ledger transfer; a payment event's own ``evt_...`` id, the one its webhooks
  carry (``Paycore-Event-Id``), so a consumer of both de-duplicates alike;
- ``seq``: the event's place in its shard's log, increasing: a transfer's ``chain_seq``
  (1, 2, ... with no gap), a payment event's shard timestamp (increasing, with gaps);
- ``data``: a transfer (``TransferData``: amounts in integer minor units, flags by name,
  its status when written) or the payment, refund or payout as its webhook shows it
  (a card by brand and last four digits only, never its number). Ids are shown as the
  event's ``tenant`` knows them.

Subjects (``docs/events.md``): ``<prefix>.ledger.<shard>.transfer`` and
``<prefix>.payments.<shard>.<type>`` (e.g. ``paycore.payments.shard-0.payment.succeeded``).
Every transfer touching an account is stored on one shard (a cross-shard transfer is a
local leg on each), and one publisher sends a shard's log in order, so the transfers of
an account arrive in their order on ``<prefix>.ledger.<shard>.transfer``, and the events
of a payment (which lives on one shard) in theirs under ``<prefix>.payments.<shard>.>``.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from paycore.ledger.model import Transfer
from paycore.ledger.tenancy import client_id
from paycore.payments.webhooks import event_body
from paycore.storage.event_stream import TransferRecord
from paycore.storage.payments import EventRow

__all__ = [
    "SCHEMA_VERSION",
    "TRANSFER_EVENT_TYPES",
    "Event",
    "TransferData",
    "encode_event",
    "payment_event",
    "subject_of",
    "transfer_event",
    "transfer_status",
]

SCHEMA_VERSION: Final = 1
TRANSFER_EVENT_TYPES: Final = ("transfer.pending", "transfer.posted", "transfer.voided")
_FLAG_NAMES: Final = ("pending", "post_pending", "void_pending", "linked", "balancing")


class TransferData(msgspec.Struct, frozen=True):
    """A transfer as a ledger event carries it (its fields never change once written)."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int  # minor units of ``currency``
    currency: str
    code: int
    flags: list[str]
    pending_id: str | None
    timeout_seconds: int
    status: str  # what this transfer did when written: pending, posted or voided
    metadata: dict[str, Any] | None
    timestamp: int  # the shard's timestamp (ns), unique per shard


class Event(msgspec.Struct, frozen=True):
    """The envelope of every event (see the module docstring)."""

    version: int
    id: str
    type: str
    shard: str
    seq: int
    occurred_at: str
    tenant: str
    data: Any  # TransferData, or the payment/refund/payout object as a dict


def transfer_status(t: Transfer) -> str:
    """What a transfer did when written: a hold is ``pending``, a void ``voided``, any
    other (a plain transfer, a capture of a hold) ``posted``. A hold's later fate is an
    event of its own: the posting or voiding transfer that names it in ``pending_id``."""
    if t.flags.pending:
        return "pending"
    if t.flags.void_pending:
        return "voided"
    return "posted"


def transfer_event(shard: str, record: TransferRecord) -> Event:
    """The event of a ledger log row."""
    t, tenant = record.transfer, record.tenant
    status = transfer_status(t)
    data = TransferData(
        id=client_id(tenant, t.id),
        debit_account_id=client_id(tenant, t.debit_account_id),
        credit_account_id=client_id(tenant, t.credit_account_id),
        amount=t.amount,
        currency=t.currency,
        code=t.code,
        flags=[name for name in _FLAG_NAMES if getattr(t.flags, name)],
        pending_id=None if t.pending_id is None else client_id(tenant, t.pending_id),
        timeout_seconds=t.timeout_seconds,
        status=status,
        metadata=t.metadata,
        timestamp=t.timestamp,
    )
    return Event(
        SCHEMA_VERSION,
        f"{shard}:transfer:{record.seq}",
        f"transfer.{status}",
        shard,
        record.seq,
        _rfc3339(t.timestamp),
        tenant,
        data,
    )


def payment_event(shard: str, row: EventRow) -> Event:
    """The event of a payment log row: its webhook's object, under the same id."""
    webhook = msgspec.json.decode(event_body(row))
    return Event(
        SCHEMA_VERSION,
        row.id,
        row.type,
        shard,
        row.timestamp,
        webhook["created_at"],
        row.tenant,
        webhook["data"]["object"],
    )


def subject_of(prefix: str, event: Event) -> str:
    """The NATS subject ``event`` is published on (see the module docstring)."""
    if event.type in TRANSFER_EVENT_TYPES:
        return f"{prefix}.ledger.{event.shard}.transfer"
    return f"{prefix}.payments.{event.shard}.{event.type}"


_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """The message body: compact JSON, integers for money."""
    return _encoder.encode(event)


def _rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
