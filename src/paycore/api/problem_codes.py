"""Which problem ``code`` each operation of the API may answer: one declarative table.

``OPERATION_CODES`` maps an operation (``"POST /v1/transfers"``, the method and the path
template of the OpenAPI document) to every ``ErrorCode`` it may answer as
problem+json; the status of each follows from ``ERROR_SPECS``. The OpenAPI document
(``paycore.api.openapi``) lists them per operation and status, with an example each,
so a client knows ahead which refusals to handle where.

The table is checked against the product by tests (``tests/api/test_problem_codes.py``
and the scenario of every code in ``tests/api/test_error_codes.py``): its operations are
exactly the document's, every code is declared somewhere or named below as answered
outside any operation, and every code a scenario meets over HTTP is declared for the
operation it met it on.

``BATCH_ITEM_CODES`` are the codes an item of ``POST /v1/transfers/batch`` may carry in
its ``error`` (the batch itself answers 200).
"""

from __future__ import annotations

from typing import Final

from paycore.errors import ErrorCode

__all__ = [
    "BATCH_ITEM_CODES",
    "OPERATION_CODES",
    "UNROUTED_CODES",
    "WORKER_ONLY_CODES",
    "codes_for",
]

E = ErrorCode

# -- what many operations share -------------------------------------------------------------
# Any /v1 request: the rate limit, a store that does not answer, a bug.
_ANY: Final = (E.RATE_LIMITED, E.STORE_UNAVAILABLE, E.INTERNAL_ERROR)
# An operation that needs an API key (``security: BearerAuth``).
_KEYED: Final = (*_ANY, E.UNAUTHORIZED, E.FORBIDDEN_SCOPE)
# A GET with query parameters (limit, cursor, filters) or a path id to parse.
_READ: Final = (*_KEYED, E.INVALID_REQUEST)
# A POST whose JSON body is decoded, and which honours an Idempotency-Key.
_WRITE: Final = (
    *_KEYED,
    E.INVALID_REQUEST,
    E.UNSUPPORTED_MEDIA_TYPE,
    E.REQUEST_TOO_LARGE,
    E.IDEMPOTENCY_KEY_REUSED,
    E.IDEMPOTENCY_KEY_IN_USE,
    E.LOCK_UNAVAILABLE,
)
# A DELETE: no body, no key.
_DELETE: Final = _KEYED

# -- the ledger's refusals ---------------------------------------------------------------------
_NEW_TRANSFER: Final = (
    E.ACCOUNT_NOT_FOUND,
    E.ACCOUNT_CLOSED,
    E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    E.ACCOUNTS_MUST_BE_DIFFERENT,
    E.CURRENCY_MISMATCH,
    E.INSUFFICIENT_FUNDS,
    E.EXCEEDS_CREDIT_LIMIT,
    E.OVERFLOW,
    E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
)
_RESOLVE_PENDING: Final = (
    E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    E.PENDING_TRANSFER_NOT_FOUND,
    E.PENDING_TRANSFER_NOT_PENDING,
    E.PENDING_TRANSFER_ALREADY_POSTED,
    E.PENDING_TRANSFER_ALREADY_VOIDED,
    E.PENDING_TRANSFER_EXPIRED,
    E.AMOUNT_EXCEEDS_PENDING_AMOUNT,
    E.TRANSFER_IN_FLIGHT,
    E.ACCOUNT_CLOSED,
    E.OVERFLOW,
)
_MOVES_MONEY: Final = (
    E.ACCOUNT_NOT_FOUND,
    E.ACCOUNT_CLOSED,
    E.CURRENCY_MISMATCH,
    E.INSUFFICIENT_FUNDS,
    E.EXCEEDS_CREDIT_LIMIT,
    E.OVERFLOW,
)
_CARD: Final = (E.INVALID_CARD_NUMBER, E.INVALID_EXPIRY_DATE, E.CARD_EXPIRED, E.INVALID_CVC)

BATCH_ITEM_CODES: Final[frozenset[ErrorCode]] = frozenset(
    {
        *_NEW_TRANSFER,
        *_RESOLVE_PENDING,
        E.INVALID_REQUEST,
        E.LINKED_EVENT_FAILED,
        E.LINKED_EVENT_CHAIN_OPEN,
    }
)

_TABLE: Final[dict[str, tuple[ErrorCode, ...]]] = {
    # accounts
    "GET /v1/accounts": _READ,
    "POST /v1/accounts": (*_WRITE, E.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS),
    "GET /v1/accounts/{account_id}": (*_READ, E.ACCOUNT_NOT_FOUND),
    "POST /v1/accounts/{account_id}/close": (
        *_WRITE,
        *_MOVES_MONEY,
        E.ACCOUNTS_MUST_BE_DIFFERENT,
        E.ACCOUNT_HAS_PENDING_TRANSFERS,
        E.ACCOUNT_HAS_BALANCE,
    ),
    "GET /v1/accounts/{account_id}/transfers": (*_READ, E.ACCOUNT_NOT_FOUND),
    "GET /v1/accounts/{account_id}/balances": (*_READ, E.ACCOUNT_NOT_FOUND),
    # transfers
    "GET /v1/transfers": (*_READ, E.ACCOUNT_NOT_FOUND),
    "POST /v1/transfers": (*_WRITE, *_NEW_TRANSFER),
    "POST /v1/transfers/batch": (*_WRITE, E.BATCH_TOO_LARGE),
    "POST /v1/transfers/{transfer_id}/post": (*_WRITE, *_RESOLVE_PENDING),
    "POST /v1/transfers/{transfer_id}/void": (*_WRITE, *_RESOLVE_PENDING),
    "GET /v1/transfers/{transfer_id}": (*_READ, E.TRANSFER_NOT_FOUND),
    # payments, refunds, payouts
    "GET /v1/payments": (*_READ, E.ACCOUNT_NOT_FOUND),  # merchant_account_id
    "POST /v1/payments": (
        *_WRITE,
        *_MOVES_MONEY,
        *_CARD,
        E.PROCESSOR_UNAVAILABLE,
        # a card payment in another currency than the merchant account's (its rate)
        E.FX_PAIR_UNSUPPORTED,
        E.FX_AMOUNT_TOO_SMALL,
        E.FX_RATE_UNAVAILABLE,
    ),
    "GET /v1/payments/{payment_id}": (*_READ, E.PAYMENT_NOT_FOUND),
    "POST /v1/payments/{payment_id}/capture": (
        *_WRITE,
        E.PAYMENT_NOT_FOUND,
        E.PAYMENT_UNEXPECTED_STATE,
        E.AMOUNT_EXCEEDS_CAPTURABLE,
        E.AUTHORIZATION_EXPIRED,
        E.CAPTURE_DECLINED,
        E.PROCESSOR_UNAVAILABLE,
        E.FX_AMOUNT_TOO_SMALL,  # a capture worth nothing in the merchant's currency
    ),
    "POST /v1/payments/{payment_id}/cancel": (
        *_WRITE,
        E.PAYMENT_NOT_FOUND,
        E.PAYMENT_UNEXPECTED_STATE,
        E.PROCESSOR_UNAVAILABLE,
    ),
    "GET /v1/refunds": (*_READ, E.PAYMENT_NOT_FOUND),
    "POST /v1/refunds": (
        *_WRITE,
        *_MOVES_MONEY,
        E.PAYMENT_NOT_FOUND,
        E.PAYMENT_UNEXPECTED_STATE,
        E.REFUND_EXCEEDS_CAPTURED,
        E.PROCESSOR_UNAVAILABLE,
    ),
    "GET /v1/refunds/{refund_id}": (*_READ, E.REFUND_NOT_FOUND),
    "GET /v1/payouts": (*_READ, E.ACCOUNT_NOT_FOUND),  # wallet_account_id
    "POST /v1/payouts": (*_WRITE, *_MOVES_MONEY, E.PROCESSOR_UNAVAILABLE),
    "GET /v1/payouts/{payout_id}": (*_READ, E.PAYOUT_NOT_FOUND),
    # the admin API: API keys
    "GET /v1/api_keys": _READ,
    "POST /v1/api_keys": _WRITE,
    "GET /v1/api_keys/{key_id}": (*_READ, E.API_KEY_NOT_FOUND),
    "DELETE /v1/api_keys/{key_id}": (*_DELETE, E.API_KEY_NOT_FOUND, E.LAST_ADMIN_KEY),
    "POST /v1/api_keys/{key_id}/rotate": (*_WRITE, E.API_KEY_NOT_FOUND),
    # the admin API: webhook endpoints and their deliveries
    "GET /v1/webhook_endpoints": _READ,
    "POST /v1/webhook_endpoints": _WRITE,
    "GET /v1/webhook_endpoints/{endpoint_id}": (*_READ, E.WEBHOOK_ENDPOINT_NOT_FOUND),
    "DELETE /v1/webhook_endpoints/{endpoint_id}": (*_DELETE, E.WEBHOOK_ENDPOINT_NOT_FOUND),
    "POST /v1/webhook_endpoints/{endpoint_id}/rotate_secret": (
        *_WRITE,
        E.WEBHOOK_ENDPOINT_NOT_FOUND,
    ),
    "POST /v1/webhook_endpoints/{endpoint_id}/test": (*_WRITE, E.WEBHOOK_ENDPOINT_NOT_FOUND),
    "GET /v1/webhook_endpoints/{endpoint_id}/deliveries": (
        *_READ,
        E.WEBHOOK_ENDPOINT_NOT_FOUND,
    ),
    "POST /v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver": (
        *_WRITE,
        E.WEBHOOK_ENDPOINT_NOT_FOUND,
        E.WEBHOOK_DELIVERY_NOT_FOUND,
        E.WEBHOOK_DELIVERY_IN_PROGRESS,
    ),
    # currency exchange: quotes, conversions (a linked chain; a held one posted or voided)
    "POST /v1/fx/quotes": (
        *_WRITE,
        E.FX_PAIR_UNSUPPORTED,
        E.FX_AMOUNT_TOO_SMALL,
        E.FX_RATE_UNAVAILABLE,
    ),
    "GET /v1/fx/quotes": _READ,
    "GET /v1/fx/quotes/{quote_id}": (*_READ, E.FX_QUOTE_NOT_FOUND),
    "POST /v1/fx/conversions": (
        *_WRITE,
        *_MOVES_MONEY,
        E.FX_QUOTE_NOT_FOUND,
        E.FX_QUOTE_EXPIRED,
        E.FX_QUOTE_ALREADY_USED,
        E.ACCOUNTS_MUST_BE_DIFFERENT,
        E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
        E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    ),
    "POST /v1/fx/conversions/{conversion_id}/capture": (
        *_WRITE,
        *_RESOLVE_PENDING,
        E.FX_CONVERSION_NOT_FOUND,
        E.FX_AMOUNT_TOO_SMALL,
    ),
    "POST /v1/fx/conversions/{conversion_id}/void": (
        *_WRITE,
        *_RESOLVE_PENDING,
        E.FX_CONVERSION_NOT_FOUND,
    ),
    "GET /v1/fx/conversions": _READ,
    "GET /v1/fx/conversions/{conversion_id}": (*_READ, E.FX_CONVERSION_NOT_FOUND),
    # reconciliation: the operator's admin keys only (another tenant's: forbidden_scope)
    "POST /v1/reconciliation/reports": (
        *_WRITE,
        E.INVALID_REPORT,
        E.UNKNOWN_PROCESSOR,
        E.REPORT_CONFLICT,
        E.IMPORT_IN_PROGRESS,
    ),
    "GET /v1/reconciliation/reports": _READ,
    "GET /v1/reconciliation/exceptions": _READ,
    "POST /v1/reconciliation/exceptions/{exception_id}/resolve": (
        *_WRITE,
        E.RECONCILIATION_EXCEPTION_NOT_FOUND,
    ),
    # a processor's signed notification: no API key, no Idempotency-Key (kept per event id)
    "POST /v1/processor_events/{processor}": (
        *_ANY,
        E.INVALID_REQUEST,
        E.UNSUPPORTED_MEDIA_TYPE,
        E.REQUEST_TOO_LARGE,
        E.INVALID_SIGNATURE,
        E.NOT_FOUND,
    ),
    # ops: never limited, no key; /readyz says "not ready" with its own 503 body
    "GET /healthz": (E.INTERNAL_ERROR,),
    "GET /readyz": (E.INTERNAL_ERROR,),
}

OPERATION_CODES: Final[dict[str, frozenset[ErrorCode]]] = {
    operation: frozenset(codes) for operation, codes in _TABLE.items()
}
"""Every problem code each operation may answer, by ``"METHOD /path/{template}"``."""

UNROUTED_CODES: Final[frozenset[ErrorCode]] = frozenset({E.NOT_FOUND, E.METHOD_NOT_ALLOWED})
"""Codes answered to a request that names no operation: a path the API does not have,
or a method the path does not take."""

WORKER_ONLY_CODES: Final[frozenset[ErrorCode]] = frozenset({E.FENCING_TOKEN_STALE})
"""Codes only paycore's own workers meet, never an API client."""


def codes_for(method: str, path: str) -> frozenset[ErrorCode]:
    """The codes the operation ``method path`` (a path template) may answer; KeyError if
    the API has no such operation."""
    return OPERATION_CODES[f"{method.upper()} {path}"]
