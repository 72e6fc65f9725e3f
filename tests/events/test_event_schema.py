"""The event stream's schema, pure: ids, types, subjects and bytes from log rows, with no
NATS and no database."""

from __future__ import annotations

import msgspec
import pytest

from paycore.events.schema import (
    SCHEMA_VERSION,
    encode_event,
    payment_event,
    subject_of,
    transfer_event,
)
from paycore.ledger.model import Transfer, TransferFlags
from paycore.storage.event_stream import TransferRecord
from paycore.storage.payments import EventRow

NS = 1_000_000_000


BASE = Transfer(
    id="acme/t1",
    debit_account_id="acme/w1",
    credit_account_id="acme/m1",
    amount=1999,
    currency="USD",
    code=3,
    flags=TransferFlags(),
    pending_id=None,
    timeout_seconds=0,
    metadata={"order": "o-1"},
    timestamp=1_700_000_000 * NS + 5,
)


def record(seq: int = 7, tenant: str = "acme", **fields: object) -> TransferRecord:
    return TransferRecord(seq, msgspec.structs.replace(BASE, **fields), tenant)


@pytest.mark.parametrize(
    ("flags", "pending_id", "kind"),
    [
        (TransferFlags(), None, "transfer.posted"),
        (TransferFlags(pending=True, linked=True), None, "transfer.pending"),
        (TransferFlags(post_pending=True), "acme/h1", "transfer.posted"),
        (TransferFlags(void_pending=True), "acme/h1", "transfer.voided"),
    ],
)
def test_a_transfer_event_says_what_the_transfer_did(
    flags: TransferFlags, pending_id: str | None, kind: str
) -> None:
    """The type follows the flags: a hold is pending, a void voided, the rest posted."""
    event = transfer_event("shard-1", record(flags=flags, pending_id=pending_id))
    assert event.type == kind
    assert event.data.status == kind.removeprefix("transfer.")
    assert event.data.pending_id == (None if pending_id is None else "h1")


def test_a_transfer_event_has_a_stable_id_integer_money_and_the_tenants_ids() -> None:
    """Id ``<shard>:transfer:<seq>``; amounts as JSON integers; ids without the tenant's
    internal prefix; flags by name; the same bytes every time it is built."""
    flags = TransferFlags(pending=True, linked=True)
    body = encode_event(transfer_event("shard-1", record(flags=flags)))
    assert body == encode_event(transfer_event("shard-1", record(flags=flags)))
    decoded = msgspec.json.decode(body)
    assert decoded == {
        "version": SCHEMA_VERSION,
        "id": "shard-1:transfer:7",
        "type": "transfer.pending",
        "shard": "shard-1",
        "seq": 7,
        "occurred_at": "2023-11-14T22:13:20.000000005Z",
        "tenant": "acme",
        "data": {
            "id": "t1",
            "debit_account_id": "w1",
            "credit_account_id": "m1",
            "amount": 1999,
            "currency": "USD",
            "code": 3,
            "flags": ["pending", "linked"],
            "pending_id": None,
            "timeout_seconds": 0,
            "status": "pending",
            "metadata": {"order": "o-1"},
            "timestamp": 1_700_000_000 * NS + 5,
        },
    }
    assert b'"amount":1999,' in body  # an integer, never a float


def test_a_payment_event_keeps_its_webhook_id_and_object() -> None:
    """A payment event is published under its own ``evt_`` id (the webhook's), its seq the
    shard timestamp, its data the object as the tenant knows it."""
    payload = {"id": "pay_1", "object": "payment", "amount": 400, "merchant_account_id": "acme/m1"}
    row = EventRow(
        id="evt_abc",
        type="payment.succeeded",
        object_id="pay_1",
        payload=msgspec.json.encode(payload).decode(),
        created_at=1_700_000_000 * NS,
        timestamp=1_700_000_000 * NS + 9,
        tenant="acme",
    )
    event = payment_event("shard-0", row)
    assert (event.id, event.type, event.seq, event.tenant) == (
        "evt_abc", "payment.succeeded", row.timestamp, "acme"
    )  # fmt: skip
    assert event.data == {**payload, "merchant_account_id": "m1"}
    assert event.occurred_at == "2023-11-14T22:13:20.000000000Z"


def test_subjects_keep_a_shards_transfers_on_one_subject_and_name_payment_types() -> None:
    """Ledger events of a shard share one subject (their order is the stream's); payment
    events carry their type in the subject, for filtering."""
    transfer = transfer_event("shard-1", record())
    assert subject_of("paycore", transfer) == "paycore.ledger.shard-1.transfer"
    row = EventRow("evt_1", "refund.succeeded", "re_1", "{}", 1, 2, tenant="default")
    assert subject_of("acme.prod", payment_event("shard-0", row)) == (
        "acme.prod.payments.shard-0.refund.succeeded"
    )
