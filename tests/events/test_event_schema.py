"""The event stream's schema, pure: ids, types, subjects and bytes from log rows, with no
NATS and no database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from paycore.cli import main
from paycore.events.json_schema import EVENT_TYPES_BY_KIND, event_json_schema, validate_event
from paycore.events.schema import (
    SCHEMA_VERSION,
    TRANSFER_EVENT_TYPES,
    encode_event,
    payment_event,
    subject_of,
    transfer_event,
)
from paycore.ledger.model import Transfer, TransferFlags
from paycore.payments.flows.rows import payload
from paycore.payments.webhooks import EVENT_TYPES
from paycore.storage.event_stream import TransferRecord
from paycore.storage.payments import EventRow, PaymentRow, PayoutRow, RefundRow

NS = 1_000_000_000
ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "events.schema.json"
DOC = ROOT / "docs" / "events.md"


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


# -- the JSON Schema (docs/events.schema.json) ----------------------------------------------


def _payment_event(kind: str, row: object, tenant: str = "acme") -> bytes:
    event_row = EventRow(
        id="evt_1",
        type=kind,
        object_id="x",
        payload=msgspec.json.encode(payload(kind, row)).decode(),
        created_at=1_700_000_000 * NS,
        timestamp=1_700_000_000 * NS + 3,
        tenant=tenant,
    )
    return encode_event(payment_event("shard-0", event_row))


PAYMENT = PaymentRow(
    "acme/pay_1", "acme/m1", 1000, "USD", "automatic", "succeeded", "card",
    card_brand="visa", card_last4="4242", card_token="tok_secret", processor="acq-a",
    amount_captured=1000,
)  # fmt: skip


def test_the_published_json_schema_is_the_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/events.schema.json is what ``paycore events schema`` prints: the schema of the
    types every event is checked against (regenerate the file with that command)."""
    assert main(["events", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == event_json_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == printed, (
        "docs/events.schema.json is stale: paycore events schema > docs/events.schema.json"
    )
    assert printed["$defs"]["TransferEvent"]["properties"]["version"] == {"enum": [SCHEMA_VERSION]}


def test_the_schema_names_every_event_type_and_the_docs_each() -> None:
    """Each transfer type and each webhook type is one kind's in the schema, and
    docs/events.md names every one."""
    by_kind = EVENT_TYPES_BY_KIND
    assert set(by_kind["transfer"]) == set(TRANSFER_EVENT_TYPES)
    payments = [t for kind in ("payment", "refund", "payout") for t in by_kind[kind]]
    assert sorted(payments) == sorted(EVENT_TYPES)
    doc = DOC.read_text()
    assert [t for kinds in by_kind.values() for t in kinds if f"`{t}`" not in doc] == []


@pytest.mark.parametrize(
    "row",
    [
        PAYMENT,
        msgspec.structs.replace(
            PAYMENT,
            card_brand=None,
            card_last4=None,
            source_type="wallet",
            status="requires_capture",
            amount_captured=0,
        ),
        msgspec.structs.replace(PAYMENT, status="failed", failure_code="card_declined"),
        msgspec.structs.replace(
            PAYMENT,
            settlement_currency="EUR",
            settlement_amount=920,
            fx_rate="0.92",
            fx_mid_rate="0.921",
        ),
    ],
)
def test_a_payment_event_matches_the_schema(row: PaymentRow) -> None:
    """A payment's event (a card, a wallet, a failure, a conversion) is valid, by the
    webhook's own payload."""
    kind = {"succeeded": "payment.succeeded", "failed": "payment.failed"}.get(
        row.status, "payment.requires_capture"
    )
    body = _payment_event(kind, row)
    assert isinstance(validate_event(body), msgspec.Struct)
    assert b"tok_secret" not in body


def test_refund_payout_and_transfer_events_match_the_schema() -> None:
    """A refund (plain and converted), a payout and a transfer of each kind are valid."""
    refund = RefundRow("acme/re_1", "acme/pay_1", 300, "USD", "succeeded")
    converted = msgspec.structs.replace(refund, settlement_currency="EUR", settlement_amount=276)
    payout = PayoutRow("acme/po_1", "acme/w1", 500, "USD", "DE89370400440532013000", "paid")
    for kind, row in (("refund.succeeded", refund), ("refund.succeeded", converted),
                      ("payout.paid", payout)):  # fmt: skip
        validate_event(_payment_event(kind, row))
    assert b"DE89" not in _payment_event("payout.paid", payout)  # no bank account
    for flags, pending_id in (
        (TransferFlags(), None),
        (TransferFlags(pending=True, linked=True), None),
        (TransferFlags(post_pending=True, balancing=True), "acme/h1"),
        (TransferFlags(void_pending=True), "acme/h1"),
    ):
        event = transfer_event("shard-0", record(flags=flags, pending_id=pending_id))
        validate_event(encode_event(event))
    validate_event(encode_event(transfer_event("shard-0", record(tenant="", metadata=None))))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda e: e["data"].update(amount=19.99), "float amount"),
        (lambda e: e["data"].update(card_number="4242424242424242"), "unknown field"),
        (lambda e: e["data"].pop("currency"), "missing field"),
        (lambda e: e.update(version=2), "another version"),
        (lambda e: e.update(type="transfer.reversed"), "unknown type"),
        (lambda e: e.update(occurred_at="2023-11-14T22:13:20Z"), "not nanoseconds"),
        (lambda e: e["data"].update(flags=["urgent"]), "unknown flag"),
    ],
)
def test_the_schema_refuses_what_no_event_is(change: Any, why: str) -> None:
    """A transfer event with a float amount, an unknown or a missing field, another
    version, an unknown type or flag, or a time without nanoseconds is refused."""
    event = json.loads(encode_event(transfer_event("shard-0", record())))
    validate_event(json.dumps(event).encode())  # valid before the change
    change(event)
    with pytest.raises(msgspec.ValidationError):
        validate_event(json.dumps(event).encode())


def test_a_payment_event_whose_data_has_another_type_is_refused() -> None:
    """The type of a payment event and of its object are the same."""
    event = json.loads(_payment_event("payment.succeeded", PAYMENT))
    event["data"]["type"] = "payment.failed"
    with pytest.raises(msgspec.ValidationError, match="differs"):
        validate_event(json.dumps(event).encode())
