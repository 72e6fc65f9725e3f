"""What the API answers, as typed, frozen values.

Amounts are ``int`` minor units (cents for USD) with their ISO 4217 ``currency``:
the API never sends floats for money, and these models never hold one. Statuses are
plain strings so that a value a newer server adds does not break this client; the
values known today are listed on each field.

Unknown fields in an answer are ignored for the same reason. Request bodies are not
models: each service method takes keyword arguments (typed by ``params``) and sends
them as they are, so the server's own validation, with its precise error details,
is the one that applies.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Account",
    "AccountFlags",
    "ApiKey",
    "Attempt",
    "Balance",
    "BalanceRecord",
    "BatchItemError",
    "BatchItemResult",
    "BatchResult",
    "Card",
    "Event",
    "EventData",
    "NewApiKey",
    "NewWebhookEndpoint",
    "Payment",
    "PaymentSettlement",
    "PaymentSource",
    "Payout",
    "QueuedEvent",
    "ReconciliationException",
    "Refund",
    "RefundSettlement",
    "ReportImport",
    "RotatedApiKey",
    "SettlementReport",
    "Transfer",
    "TransferFlags",
    "WebhookDelivery",
    "WebhookEndpoint",
]


class _Model(msgspec.Struct, frozen=True, kw_only=True):
    """Base of answers: immutable, compared by value."""


class AccountFlags(_Model, frozen=True):
    """Balance limits chosen at creation; ``closed`` is set only by closing."""

    no_overdraft: bool = False
    credit_limit: int | None = None
    history: bool = False
    closed: bool = False


class Balance(_Model, frozen=True):
    """An account's four counters and what may still be spent:
    ``available = credits_posted - debits_posted - debits_pending``."""

    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    available: int


class Account(_Model, frozen=True):
    id: str
    currency: str
    code: int
    flags: AccountFlags
    metadata: dict[str, Any] | None
    timestamp: int  # nanoseconds since the epoch; unique per ledger event
    created_at: str  # RFC 3339, nanosecond precision
    balance: Balance


class TransferFlags(_Model, frozen=True):
    pending: bool = False
    post_pending: bool = False
    void_pending: bool = False
    linked: bool = False
    balancing: bool = False


class Transfer(_Model, frozen=True):
    """A transfer; for a hold, ``status`` is its current state."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    code: int
    status: str  # posted, pending, voided, expired, in_flight
    pending_id: str | None  # the hold a post or void resolves
    flags: TransferFlags
    timeout_seconds: int
    expires_at: str | None
    metadata: dict[str, Any] | None
    timestamp: int
    created_at: str


class BatchItemError(_Model, frozen=True):
    code: str
    detail: str


class BatchItemResult(_Model, frozen=True):
    """One item of a batch: ``status`` when applied, ``error`` when refused."""

    id: str
    status: str | None = None
    error: BatchItemError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchResult(_Model, frozen=True):
    """One result per item, in the order sent."""

    results: list[BatchItemResult]

    @property
    def errors(self) -> list[BatchItemResult]:
        return [r for r in self.results if r.error is not None]


class BalanceRecord(_Model, frozen=True):
    """An account's balance right after the transfer with this timestamp."""

    timestamp: int
    recorded_at: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    available: int


class Card(_Model, frozen=True):
    """A card as answers show it: never its number or CVC."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaymentSource(_Model, frozen=True):
    type: str  # card, wallet
    wallet_account_id: str | None


class Attempt(_Model, frozen=True):
    """One call to a processor and the routing decision behind it."""

    operation: str
    processor: str
    reference: str
    amount: int
    outcome: str | None  # None while the call's end is unknown
    decline_code: str | None
    error: str | None
    latency_ms: float | None  # a duration, not money
    routing: dict[str, Any] | None
    created_at: str


class PaymentSettlement(_Model, frozen=True):
    """A card payment in another currency than its merchant account's, settled through
    a conversion at the rate locked when it was made: ``amount`` is what the merchant
    account was credited so far, in its ``currency``; ``rate`` (the customer's) and
    ``mid_rate`` are exact decimal strings (never floats)."""

    currency: str
    amount: int
    rate: str
    mid_rate: str


class RefundSettlement(_Model, frozen=True):
    """What a refund of such a payment debits the merchant account, in its currency."""

    currency: str
    amount: int


class Refund(_Model, frozen=True):
    id: str
    payment_id: str
    status: str  # pending, succeeded, failed
    amount: int
    currency: str
    processor: str | None
    failure_code: str | None
    decline_code: str | None
    attempts: list[Attempt]
    created_at: str
    updated_at: str
    settlement: RefundSettlement | None = None  # a payment settled through a conversion


class Payment(_Model, frozen=True):
    """A payment intent. ``refunds`` is given by reads and lists, None in the answers
    of writes (create, capture, cancel)."""

    id: str
    status: str  # processing, requires_capture, succeeded, failed, canceled
    amount: int
    currency: str
    merchant_account_id: str
    capture: str  # automatic, manual
    processor: str | None
    source: PaymentSource
    card: Card | None
    amount_capturable: int
    amount_captured: int
    amount_refunded: int
    amount_refund_pending: int
    capture_before: str | None
    failure_code: str | None
    failure_detail: str | None
    cancellation_reason: str | None
    attempts: list[Attempt]
    created_at: str
    updated_at: str
    refunds: list[Refund] | None = None
    settlement: PaymentSettlement | None = None  # None: in the merchant's currency


class Payout(_Model, frozen=True):
    id: str
    wallet_account_id: str
    status: str  # processing, paid, failed
    amount: int
    currency: str
    destination: str
    processor: str | None
    failure_code: str | None
    decline_code: str | None
    failure_detail: str | None
    attempts: list[Attempt]
    created_at: str
    updated_at: str


class EventData(_Model, frozen=True):
    object: dict[str, Any]  # the payment, refund or payout, as its read shows it


class Event(_Model, frozen=True):
    """A webhook event (``webhooks.construct_event``); deduplicate by ``id``."""

    id: str
    object: str
    type: str  # payment.succeeded, refund.succeeded, payout.paid, ...
    created_at: str
    data: EventData


# -- the admin API (an API key with the ``admin`` scope) ------------------------------------


class ApiKey(_Model, frozen=True):
    """An API key of the caller's tenant, without its secret. ``revoked_at``: from when
    it is refused (in the future during a rotation's grace); ``replaced_by``: the id of
    the key that rotated it."""

    id: str
    object: str  # "api_key"
    tenant: str
    scopes: list[str]  # read, write, admin
    name: str | None
    status: str  # active, revoked, expired
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    replaced_by: str | None


class NewApiKey(ApiKey, frozen=True):
    """A key just made: ``token`` (``Authorization: Bearer <token>``) is in this answer
    only (None in a replay of the same Idempotency-Key): keep it now."""

    token: str | None


class RotatedApiKey(NewApiKey, frozen=True):
    """The new key of a rotation (its token shown once) and the old one, as it is now."""

    replaces: ApiKey


class WebhookEndpoint(_Model, frozen=True):
    """Where the tenant's events of the types in ``events`` are POSTed, signed.
    ``previous_secret_until``: while the old secret still signs too, after a rotation."""

    id: str
    object: str  # "webhook_endpoint"
    url: str
    events: list[str]  # patterns: "*", "payment.*", "refund.succeeded", ...
    description: str | None
    created_at: str
    previous_secret_until: str | None


class NewWebhookEndpoint(WebhookEndpoint, frozen=True):
    """An endpoint as made or given a new secret: ``secret`` (for
    ``webhooks.verify``) is in this answer only (None in a replay): keep it now."""

    secret: str | None


class QueuedEvent(_Model, frozen=True):
    """An event queued for one endpoint (a test event, or one sent again)."""

    event_id: str
    endpoint_id: str
    status: str  # "queued"


class WebhookDelivery(_Model, frozen=True):
    """What an endpoint made of one event; ``id`` is the event's id."""

    id: str
    event_type: str | None  # None once the event was purged
    status: str  # pending (retried later), delivered, failed (given up)
    outcome: str | None
    attempts: int
    last_response_code: int | None  # None: no answer (see last_error)
    last_error: str | None
    created_at: str
    updated_at: str


class ReportImport(_Model, frozen=True):
    """What importing a settlement report did: its lines, how many matched, the
    exceptions queued by reason, the ledger transfers of its bookings.
    ``already_imported``: the same report was imported before, nothing was done."""

    processor: str
    batch_id: str
    already_imported: bool
    lines: int
    matched: int
    exceptions: dict[str, int]
    transfers: int


class SettlementReport(_Model, frozen=True):
    """An imported settlement report."""

    processor: str
    batch_id: str
    settlement_date: str  # YYYY-MM-DD
    payout_date: str
    lines: int
    matched: int
    exceptions: int
    digest: str  # SHA-256 of its text
    imported_at: str


class ReconciliationException(_Model, frozen=True):
    """What a report did not match, until an operator resolves it (amounts in minor
    units of ``currency``)."""

    id: str
    processor: str
    batch_id: str
    reason: str  # chargeback, duplicate_line, unknown_reference, kind_mismatch,
    # amount_mismatch, batch_total_mismatch, missing_in_report
    reference: str | None
    line_no: int | None
    currency: str
    expected_amount: int | None
    reported_amount: int | None
    detail: str
    status: str  # open, resolved
    note: str | None
    created_at: str
    resolved_at: str | None
