"""Every error the client raises, one class per family of problem ``code``::

    PaycoreError                   root: catch this to catch everything below
    ├── APIConnectionError         no answer came (refused, reset, DNS): it may or may
    │   └── APITimeoutError        not have been done; a retry with the same
    │                              Idempotency-Key is safe
    └── APIError                   an HTTP answer: status, code, detail, raw body
        ├── InvalidRequestError    the request itself is wrong (422, 400, 405, 413, 415)
        ├── AuthenticationError    no valid API key, or a bad signature (401)
        ├── PermissionDeniedError  the key lacks the scope (403)
        ├── NotFoundError          no such account, transfer, payment... (404)
        ├── ConflictError          the state or an existing id forbids it (409)
        │   └── IdempotencyError   an Idempotency-Key reused or still in flight
        ├── InsufficientFundsError a balance limit refused the debit (409)
        ├── PaymentDeclinedError   the processor declined a capture (402)
        ├── RateLimitError         too many requests (429): ``retry_after``
        ├── ServiceUnavailableError a shard or processor is down (503): ``retry_after``
        └── InternalServerError    the server failed (500, or 502/504 from a proxy)

The class is chosen by the problem's ``code`` (``CODE_FAMILIES``), which is part of
paycore's contract; a code this client does not know yet falls back on the HTTP status,
so a newer server never breaks an older client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import msgspec

__all__ = [
    "CODE_FAMILIES",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "ConflictError",
    "IdempotencyError",
    "InsufficientFundsError",
    "InternalServerError",
    "InvalidRequestError",
    "NotFoundError",
    "PaycoreError",
    "PaymentDeclinedError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "error_from_response",
    "family_of",
    "parse_retry_after",
]


class PaycoreError(Exception):
    """Root of every error this client raises."""


class APIConnectionError(PaycoreError):
    """The server could not be reached or did not answer: the request may have been
    done or not, which only a retry under the same Idempotency-Key can settle."""


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout (the same uncertainty as any lost answer)."""


class APIError(PaycoreError):
    """An error answer from the server: ``status``, the stable ``code`` (None when the
    body was not paycore's problem+json, e.g. a proxy's 502 page), ``detail``, and the
    raw ``body`` and ``headers`` as received."""

    def __init__(
        self,
        *,
        status: int,
        code: str | None,
        title: str,
        detail: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(f"{status} {code or 'http_error'}: {detail}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.body = body
        self.headers = dict(headers)
        self.request_id = self.headers.get("x-request-id")
        # Seconds the server asked us to wait (429 and 503), None when it did not say.
        self.retry_after = parse_retry_after(self.headers.get("retry-after"))


class InvalidRequestError(APIError):
    """The request is malformed or names values that can never work together; sending
    it again unchanged gives the same answer."""


class AuthenticationError(APIError):
    """The API key is missing, unknown, expired or revoked (``unauthorized``)."""


class PermissionDeniedError(APIError):
    """The API key is valid but lacks the scope (``read``, ``write``, ``admin``)."""


class NotFoundError(APIError):
    """The account, transfer, hold, payment, refund, payout, FX quote or conversion does
    not exist for this key's tenant (another tenant's objects are missing too)."""


class ConflictError(APIError):
    """The current state forbids the request: an id taken with other fields, a closed
    account, a hold already posted, a payment in the wrong status..."""


class IdempotencyError(ConflictError):
    """The Idempotency-Key was used with another body (``idempotency_key_reused``) or
    its first request is still running (``idempotency_key_in_use``, retried by the
    client itself)."""


class InsufficientFundsError(APIError):
    """The debit would take the account below what its flags allow (``no_overdraft`` or
    ``credit_limit``, holds included). The refusal is kept under the transfer's id."""


class PaymentDeclinedError(APIError):
    """The processor declined a capture (``capture_declined``). A declined *payment* is
    not an error: it is created with ``status="failed"`` and a ``failure_code``."""


class RateLimitError(APIError):
    """Too many requests from this key; ``retry_after`` says when to come back."""


class ServiceUnavailableError(APIError):
    """A shard, the lock service, every processor or the exchange rate source is
    unavailable; nothing was done and the request may be retried after ``retry_after``
    seconds."""


class InternalServerError(APIError):
    """The server (or a proxy in front of it) failed without a paycore code."""


_INVALID = InvalidRequestError
_CONFLICT = ConflictError
# Every code paycore answers (paycore.errors.ErrorCode), by family; the suite checks
# that none is missing.
CODE_FAMILIES: Final[Mapping[str, type[APIError]]] = {
    "invalid_request": _INVALID,
    "batch_too_large": _INVALID,
    "request_too_large": _INVALID,
    "unsupported_media_type": _INVALID,
    "method_not_allowed": _INVALID,
    "accounts_must_be_different": _INVALID,
    "currency_mismatch": _INVALID,
    "timeout_reserved_for_pending_transfer": _INVALID,
    "linked_event_chain_open": _INVALID,
    "invalid_card_number": _INVALID,
    "invalid_expiry_date": _INVALID,
    "card_expired": _INVALID,
    "invalid_cvc": _INVALID,
    "fx_pair_unsupported": _INVALID,
    "fx_amount_too_small": _INVALID,
    "invalid_report": _INVALID,
    "unknown_processor": _INVALID,
    "unauthorized": AuthenticationError,
    "invalid_signature": AuthenticationError,
    "forbidden_scope": PermissionDeniedError,
    "not_found": NotFoundError,
    "account_not_found": NotFoundError,
    "transfer_not_found": NotFoundError,
    "pending_transfer_not_found": NotFoundError,
    "payment_not_found": NotFoundError,
    "refund_not_found": NotFoundError,
    "payout_not_found": NotFoundError,
    "api_key_not_found": NotFoundError,
    "webhook_endpoint_not_found": NotFoundError,
    "webhook_delivery_not_found": NotFoundError,
    "fx_quote_not_found": NotFoundError,
    "fx_conversion_not_found": NotFoundError,
    "reconciliation_exception_not_found": NotFoundError,
    "last_admin_key": _CONFLICT,
    "webhook_delivery_in_progress": _CONFLICT,
    "account_exists_with_different_fields": _CONFLICT,
    "transfer_exists_with_different_fields": _CONFLICT,
    "account_closed": _CONFLICT,
    "account_has_pending_transfers": _CONFLICT,
    "account_has_balance": _CONFLICT,
    "overflow": _CONFLICT,
    "pending_transfer_not_pending": _CONFLICT,
    "pending_transfer_already_posted": _CONFLICT,
    "pending_transfer_already_voided": _CONFLICT,
    "pending_transfer_expired": _CONFLICT,
    "amount_exceeds_pending_amount": _CONFLICT,
    "linked_event_failed": _CONFLICT,
    "transfer_in_flight": _CONFLICT,
    "fencing_token_stale": _CONFLICT,
    "payment_unexpected_state": _CONFLICT,
    "amount_exceeds_capturable": _CONFLICT,
    "authorization_expired": _CONFLICT,
    "refund_exceeds_captured": _CONFLICT,
    "fx_quote_expired": _CONFLICT,
    "fx_quote_already_used": _CONFLICT,
    "report_conflict": _CONFLICT,
    "import_in_progress": _CONFLICT,
    "idempotency_key_reused": IdempotencyError,
    "idempotency_key_in_use": IdempotencyError,
    "insufficient_funds": InsufficientFundsError,
    "exceeds_credit_limit": InsufficientFundsError,
    "capture_declined": PaymentDeclinedError,
    "rate_limited": RateLimitError,
    "store_unavailable": ServiceUnavailableError,
    "lock_unavailable": ServiceUnavailableError,
    "processor_unavailable": ServiceUnavailableError,
    "fx_rate_unavailable": ServiceUnavailableError,
    "internal_error": InternalServerError,
}

_STATUS_FAMILIES: Final[Mapping[int, type[APIError]]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: PaymentDeclinedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: InvalidRequestError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


class _Problem(msgspec.Struct):
    """RFC 9457 problem details as paycore sends them; every field optional so that a
    partial or foreign body still yields what it has."""

    code: str | None = None
    title: str = ""
    detail: str = ""


def _problem_of(body: bytes) -> _Problem:
    try:
        return msgspec.json.decode(body, type=_Problem)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Problem()


def family_of(status: int, code: str | None) -> type[APIError]:
    """The class for an error answer: by code, else by status."""
    if code is not None and code in CODE_FAMILIES:
        return CODE_FAMILIES[code]
    if status in _STATUS_FAMILIES:
        return _STATUS_FAMILIES[status]
    if status >= 500:
        return InternalServerError
    return InvalidRequestError if 400 <= status < 500 else APIError


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> APIError:
    """The typed error for an HTTP error answer (``headers`` keyed in lower case)."""
    problem = _problem_of(body)
    family = family_of(status, problem.code)
    detail = problem.detail or problem.title or body[:200].decode("utf-8", "replace")
    return family(
        status=status,
        code=problem.code,
        title=problem.title,
        detail=detail,
        body=body,
        headers=headers,
    )


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds; paycore sends delta-seconds. An HTTP date (which a
    proxy might send) is not read: the client's own backoff applies then."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if math.isnan(seconds) or seconds < 0:  # meaningless
        return None
    return seconds
