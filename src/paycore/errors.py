"""Stable error codes and the one exception root of paycore.

Every rejection paycore can give has a stable snake_case ``ErrorCode``. The ledger
returns codes as values (a batch has one result per item); everything else raises::

    PaycoreError                 code, HTTP status, retryable, detail
    ├── RequestError             the caller's input or the state it names is wrong (4xx)
    │   └── IdempotencyError     Idempotency-Key reused with another body, or still running
    ├── FencedError              a worker's write came from a lock holder whose lease ended
    └── UnavailableError         a shard or dependency cannot be reached (503, retryable)

Foreign exceptions (sqlite3, psycopg, network) are translated into these at the
storage and client boundaries, never further up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "ERROR_SPECS",
    "ErrorCode",
    "ErrorSpec",
    "FencedError",
    "IdempotencyError",
    "PaycoreError",
    "RequestError",
    "UnavailableError",
    "key_in_use",
]


class ErrorCode(StrEnum):
    """Every reason paycore may refuse something; values are part of the API contract."""

    # request shape
    INVALID_REQUEST = "invalid_request"
    BATCH_TOO_LARGE = "batch_too_large"
    REQUEST_TOO_LARGE = "request_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # accounts
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS = "account_exists_with_different_fields"
    ACCOUNT_CLOSED = "account_closed"
    ACCOUNT_HAS_PENDING_TRANSFERS = "account_has_pending_transfers"
    ACCOUNT_HAS_BALANCE = "account_has_balance"
    # transfers
    TRANSFER_NOT_FOUND = "transfer_not_found"
    TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS = "transfer_exists_with_different_fields"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    CURRENCY_MISMATCH = "currency_mismatch"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    EXCEEDS_CREDIT_LIMIT = "exceeds_credit_limit"
    OVERFLOW = "overflow"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    AMOUNT_EXCEEDS_PENDING_AMOUNT = "amount_exceeds_pending_amount"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    # sharding: a cross-shard hold whose second leg a fault interrupted (see
    # paycore.cluster.settlement); the recovery finishes it within a bounded time
    TRANSFER_IN_FLIGHT = "transfer_in_flight"
    # idempotency
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    FENCING_TOKEN_STALE = "fencing_token_stale"  # noqa: S105 - a code, not a secret
    # payments (see paycore.payments): cards, intents, refunds, payouts
    INVALID_CARD_NUMBER = "invalid_card_number"
    INVALID_EXPIRY_DATE = "invalid_expiry_date"
    CARD_EXPIRED = "card_expired"
    INVALID_CVC = "invalid_cvc"
    PAYMENT_NOT_FOUND = "payment_not_found"
    REFUND_NOT_FOUND = "refund_not_found"
    PAYOUT_NOT_FOUND = "payout_not_found"
    PAYMENT_UNEXPECTED_STATE = "payment_unexpected_state"
    AMOUNT_EXCEEDS_CAPTURABLE = "amount_exceeds_capturable"
    AUTHORIZATION_EXPIRED = "authorization_expired"
    CAPTURE_DECLINED = "capture_declined"
    REFUND_EXCEEDS_CAPTURED = "refund_exceeds_captured"
    PROCESSOR_UNAVAILABLE = "processor_unavailable"
    # webhooks: a processor's notification whose Paycore-Signature does not verify
    INVALID_SIGNATURE = "invalid_signature"
    # API keys (paycore.api.auth): no valid key; a valid key without the scope needed
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_SCOPE = "forbidden_scope"
    # the admin API (paycore.api.routes.api_keys, paycore.api.routes.webhook_endpoints)
    API_KEY_NOT_FOUND = "api_key_not_found"
    LAST_ADMIN_KEY = "last_admin_key"
    WEBHOOK_ENDPOINT_NOT_FOUND = "webhook_endpoint_not_found"
    WEBHOOK_DELIVERY_NOT_FOUND = "webhook_delivery_not_found"
    WEBHOOK_DELIVERY_IN_PROGRESS = "webhook_delivery_in_progress"
    # currency exchange (paycore.fx): quotes and the conversions that use them
    FX_PAIR_UNSUPPORTED = "fx_pair_unsupported"
    FX_AMOUNT_TOO_SMALL = "fx_amount_too_small"
    FX_QUOTE_NOT_FOUND = "fx_quote_not_found"
    FX_QUOTE_EXPIRED = "fx_quote_expired"
    FX_QUOTE_ALREADY_USED = "fx_quote_already_used"
    FX_CONVERSION_NOT_FOUND = "fx_conversion_not_found"
    FX_RATE_UNAVAILABLE = "fx_rate_unavailable"
    # reconciliation (paycore.reconciliation): settlement reports and their exceptions
    INVALID_REPORT = "invalid_report"
    UNKNOWN_PROCESSOR = "unknown_processor"
    REPORT_CONFLICT = "report_conflict"
    IMPORT_IN_PROGRESS = "import_in_progress"
    RECONCILIATION_EXCEPTION_NOT_FOUND = "reconciliation_exception_not_found"
    # infrastructure
    STORE_UNAVAILABLE = "store_unavailable"
    LOCK_UNAVAILABLE = "lock_unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """How a code is presented: HTTP status, a short title, and whether a retry may help."""

    status: int
    title: str
    retryable: bool = False


_E = ErrorCode
ERROR_SPECS: Final[dict[ErrorCode, ErrorSpec]] = {
    _E.INVALID_REQUEST: ErrorSpec(422, "The request is not valid"),
    _E.BATCH_TOO_LARGE: ErrorSpec(422, "The batch has too many items"),
    _E.REQUEST_TOO_LARGE: ErrorSpec(413, "The request body is too large"),
    _E.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(415, "The request body must be JSON"),
    _E.RATE_LIMITED: ErrorSpec(
        429, "Too many requests from this caller; retry after Retry-After seconds", retryable=True
    ),
    _E.NOT_FOUND: ErrorSpec(404, "No such resource"),
    _E.METHOD_NOT_ALLOWED: ErrorSpec(405, "Method not allowed"),
    _E.ACCOUNT_NOT_FOUND: ErrorSpec(404, "Account not found"),
    _E.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS: ErrorSpec(
        409, "An account with this id exists with different fields"
    ),
    _E.ACCOUNT_CLOSED: ErrorSpec(409, "The account is closed"),
    _E.ACCOUNT_HAS_PENDING_TRANSFERS: ErrorSpec(
        409, "The account has pending transfers and cannot be closed"
    ),
    _E.ACCOUNT_HAS_BALANCE: ErrorSpec(
        409, "The account holds a balance; close it with transfer_balance_to, or move it first"
    ),
    _E.TRANSFER_NOT_FOUND: ErrorSpec(404, "Transfer not found"),
    _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS: ErrorSpec(
        409, "A transfer with this id exists with different fields"
    ),
    _E.ACCOUNTS_MUST_BE_DIFFERENT: ErrorSpec(422, "Debit and credit accounts must differ"),
    _E.CURRENCY_MISMATCH: ErrorSpec(422, "Currencies do not match"),
    _E.INSUFFICIENT_FUNDS: ErrorSpec(409, "Insufficient funds"),
    _E.EXCEEDS_CREDIT_LIMIT: ErrorSpec(409, "The transfer exceeds the credit limit"),
    _E.OVERFLOW: ErrorSpec(409, "A balance counter would overflow"),
    _E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER: ErrorSpec(
        422, "A timeout is only allowed on a pending transfer"
    ),
    _E.PENDING_TRANSFER_NOT_FOUND: ErrorSpec(404, "Pending transfer not found"),
    _E.PENDING_TRANSFER_NOT_PENDING: ErrorSpec(409, "The transfer is not a pending transfer"),
    _E.PENDING_TRANSFER_ALREADY_POSTED: ErrorSpec(409, "The pending transfer is already posted"),
    _E.PENDING_TRANSFER_ALREADY_VOIDED: ErrorSpec(409, "The pending transfer is already voided"),
    _E.PENDING_TRANSFER_EXPIRED: ErrorSpec(409, "The pending transfer has expired"),
    _E.AMOUNT_EXCEEDS_PENDING_AMOUNT: ErrorSpec(
        409, "The amount exceeds the pending transfer's amount"
    ),
    _E.LINKED_EVENT_FAILED: ErrorSpec(409, "Another transfer of the linked chain failed"),
    _E.LINKED_EVENT_CHAIN_OPEN: ErrorSpec(422, "The linked chain is not closed"),
    _E.TRANSFER_IN_FLIGHT: ErrorSpec(
        409,
        "The hold is still being set up across shards after a fault; retry shortly",
        retryable=True,
    ),
    _E.IDEMPOTENCY_KEY_REUSED: ErrorSpec(
        409, "The Idempotency-Key was used with a different request"
    ),
    _E.IDEMPOTENCY_KEY_IN_USE: ErrorSpec(
        409, "A request with this Idempotency-Key is still running", retryable=True
    ),
    _E.FENCING_TOKEN_STALE: ErrorSpec(
        409, "A newer holder of this lock has written since; this holder's lease is gone"
    ),
    _E.INVALID_CARD_NUMBER: ErrorSpec(422, "The card number is not valid"),
    _E.INVALID_EXPIRY_DATE: ErrorSpec(422, "The card's expiry date is not valid"),
    _E.CARD_EXPIRED: ErrorSpec(422, "The card has expired"),
    _E.INVALID_CVC: ErrorSpec(422, "The card's security code is not valid"),
    _E.PAYMENT_NOT_FOUND: ErrorSpec(404, "Payment not found"),
    _E.REFUND_NOT_FOUND: ErrorSpec(404, "Refund not found"),
    _E.PAYOUT_NOT_FOUND: ErrorSpec(404, "Payout not found"),
    _E.PAYMENT_UNEXPECTED_STATE: ErrorSpec(409, "The payment's status does not allow this"),
    _E.AMOUNT_EXCEEDS_CAPTURABLE: ErrorSpec(
        409, "The amount exceeds what the authorization may still capture"
    ),
    _E.AUTHORIZATION_EXPIRED: ErrorSpec(409, "The payment's authorization has expired"),
    _E.CAPTURE_DECLINED: ErrorSpec(402, "The processor declined the capture"),
    _E.REFUND_EXCEEDS_CAPTURED: ErrorSpec(
        409, "The refunds would exceed the payment's captured amount"
    ),
    _E.PROCESSOR_UNAVAILABLE: ErrorSpec(
        503, "No payment processor could take the request", retryable=True
    ),
    _E.INVALID_SIGNATURE: ErrorSpec(
        401, "The Paycore-Signature header is missing, malformed, too old, or does not match"
    ),
    _E.UNAUTHORIZED: ErrorSpec(401, "A valid API key is needed (Authorization: Bearer <key>)"),
    _E.FORBIDDEN_SCOPE: ErrorSpec(403, "The API key lacks the scope this request needs"),
    _E.API_KEY_NOT_FOUND: ErrorSpec(404, "API key not found"),
    _E.LAST_ADMIN_KEY: ErrorSpec(
        409, "This is the tenant's last active admin key; make another admin key first"
    ),
    _E.WEBHOOK_ENDPOINT_NOT_FOUND: ErrorSpec(404, "Webhook endpoint not found"),
    _E.WEBHOOK_DELIVERY_NOT_FOUND: ErrorSpec(404, "Webhook delivery not found"),
    _E.WEBHOOK_DELIVERY_IN_PROGRESS: ErrorSpec(
        409, "The event is still being delivered on its retry schedule", retryable=True
    ),
    _E.FX_PAIR_UNSUPPORTED: ErrorSpec(422, "No exchange rate is offered for this currency pair"),
    _E.FX_AMOUNT_TOO_SMALL: ErrorSpec(
        422, "The amount converts to less than one minor unit of the other currency"
    ),
    _E.FX_QUOTE_NOT_FOUND: ErrorSpec(404, "FX quote not found"),
    _E.FX_QUOTE_EXPIRED: ErrorSpec(409, "The FX quote has expired; ask for a new one"),
    _E.FX_QUOTE_ALREADY_USED: ErrorSpec(
        409, "The FX quote was already used by another conversion; ask for a new one"
    ),
    _E.FX_CONVERSION_NOT_FOUND: ErrorSpec(404, "FX conversion not found"),
    _E.FX_RATE_UNAVAILABLE: ErrorSpec(
        503, "The exchange rate source cannot be reached", retryable=True
    ),
    _E.INVALID_REPORT: ErrorSpec(422, "The settlement report does not parse"),
    _E.UNKNOWN_PROCESSOR: ErrorSpec(422, "No processor of this name is configured"),
    _E.REPORT_CONFLICT: ErrorSpec(
        409, "This batch of the processor was imported before with other content"
    ),
    _E.IMPORT_IN_PROGRESS: ErrorSpec(
        409, "Another import of this processor's reports is running", retryable=True
    ),
    _E.RECONCILIATION_EXCEPTION_NOT_FOUND: ErrorSpec(404, "Reconciliation exception not found"),
    _E.STORE_UNAVAILABLE: ErrorSpec(503, "The ledger store is unavailable", retryable=True),
    _E.LOCK_UNAVAILABLE: ErrorSpec(503, "The lock service is unavailable", retryable=True),
    _E.INTERNAL_ERROR: ErrorSpec(500, "Internal error", retryable=True),
}


class PaycoreError(Exception):
    """Root of every error paycore raises on purpose; carries a stable code."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        spec = ERROR_SPECS[code]
        super().__init__(detail or spec.title)
        self.code = code
        self.detail = detail or spec.title
        self.status = spec.status
        self.retryable = spec.retryable


class RequestError(PaycoreError):
    """The request, or the state it refers to, makes it impossible; retrying won't help."""


class IdempotencyError(RequestError):
    """An Idempotency-Key was reused with another body or is still in flight."""


def key_in_use() -> IdempotencyError:
    """409 ``idempotency_key_in_use``: the key's first request is still running (on this
    node, on another, or as a payment's claimed work); the caller may retry."""
    return IdempotencyError(
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
        "a request with this Idempotency-Key is still running; retry later",
    )


class FencedError(PaycoreError):
    """A worker's write carried a fencing token older than one the store has seen: its
    lock passed to another holder, so the write was refused and changed nothing."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.FENCING_TOKEN_STALE, detail)


class UnavailableError(PaycoreError):
    """A store or dependency is down; the request changed nothing and may be retried."""

    def __init__(
        self, detail: str, retry_after: int = 1, code: ErrorCode = ErrorCode.STORE_UNAVAILABLE
    ) -> None:
        super().__init__(code, detail)
        self.retry_after = retry_after
