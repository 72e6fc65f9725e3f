"""The keyword arguments of each service method, as ``TypedDict``s.

They name exactly the fields and query parameters the server takes (``README.md`` of
paycore, section "API"), so a type checker catches a typo or a float amount before the
server would refuse it. A body is sent as given: the server fills in its defaults
and validates with precise details (422 ``invalid_request``).

Amounts are ``int`` minor units. ``created_gte``/``created_lt`` take an aware
``datetime`` or an RFC 3339 string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Required, TypedDict

__all__ = [
    "AccountCreateParams",
    "AccountFlagsParams",
    "AccountListParams",
    "AccountTransfersParams",
    "ApiKeyCreateParams",
    "ApiKeyListParams",
    "ApiKeyRotateParams",
    "BalanceHistoryParams",
    "BatchTransferParams",
    "CaptureParams",
    "CardParams",
    "CloseAccountParams",
    "PaymentCreateParams",
    "PaymentListParams",
    "PaymentSourceParams",
    "PayoutCreateParams",
    "PayoutListParams",
    "PostPendingParams",
    "ReconciliationExceptionListParams",
    "ReconciliationReportListParams",
    "RefundCreateParams",
    "RefundListParams",
    "ReportImportParams",
    "ResolveExceptionParams",
    "TransferCreateParams",
    "TransferListParams",
    "VoidPendingParams",
    "WebhookDeliveryListParams",
    "WebhookEndpointCreateParams",
    "WebhookEndpointListParams",
    "WebhookSecretRotateParams",
]

Order = Literal["asc", "desc"]
Instant = datetime | str


class _PageParams(TypedDict, total=False):
    limit: int  # 1..max_page_size (1000 by default); 100 when absent
    cursor: str  # start after this page's end (a ``next_cursor``)
    order: Order  # oldest first by default


class _CreatedRange(_PageParams, total=False):
    created_gte: Instant
    created_lt: Instant


# -- accounts -------------------------------------------------------------------------


class AccountFlagsParams(TypedDict, total=False):
    no_overdraft: bool  # debits (posted + pending) never exceed posted credits
    credit_limit: int  # the balance may go down to -credit_limit
    history: bool  # keep a balance snapshot after every transfer


class AccountCreateParams(TypedDict, total=False):
    currency: Required[str]
    id: str  # generated when absent (derived from the Idempotency-Key, so a retry opens one)
    code: int
    flags: AccountFlagsParams
    metadata: dict[str, Any]


class AccountListParams(_CreatedRange, total=False):
    currency: str
    code: int
    no_overdraft: bool
    history: bool
    closed: bool
    metadata: dict[str, str]  # top-level keys that must hold these strings (up to 10)


class CloseAccountParams(TypedDict, total=False):
    # an account (same currency, any shard) that takes the balance, or pays the debt
    transfer_balance_to: str


class AccountTransfersParams(_PageParams, total=False):
    side: Literal["both", "debits", "credits"]


class BalanceHistoryParams(TypedDict, total=False):
    at: Instant  # the balance in force then (one record, or none before the account)
    limit: int
    cursor: str


# -- transfers ------------------------------------------------------------------------


class TransferCreateParams(TypedDict, total=False):
    id: Required[str]  # the client's id; also what makes a retry safe
    debit_account_id: Required[str]
    credit_account_id: Required[str]
    amount: Required[int]
    currency: Required[str]
    code: int
    pending: bool  # a hold, to post (in full or part) or void later
    timeout_seconds: int  # a hold's expiry; 0: none
    balancing: bool  # move at most what is available
    metadata: dict[str, Any]


class BatchTransferParams(TypedDict, total=False):
    """One item of a batch; posts and voids of holds name a ``pending_id``."""

    id: Required[str]
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    code: int
    pending: bool
    post_pending: bool
    void_pending: bool
    pending_id: str
    linked: bool  # this item and the next succeed or fail as one
    timeout_seconds: int
    balancing: bool
    metadata: dict[str, Any]


class PostPendingParams(TypedDict, total=False):
    id: str  # the post's own id; derived from the hold's when absent
    amount: int  # a partial capture; the rest of the hold is released
    code: int
    metadata: dict[str, Any]


class VoidPendingParams(TypedDict, total=False):
    id: str
    code: int
    metadata: dict[str, Any]


class TransferListParams(_CreatedRange, total=False):
    account_id: str  # either side
    status: str  # posted, pending, voided, expired, in_flight


# -- payments, refunds, payouts --------------------------------------------------------


class CardParams(TypedDict):
    number: str
    exp_month: int
    exp_year: int
    cvc: str


class PaymentSourceParams(TypedDict, total=False):
    """Exactly one of ``card`` and ``wallet_account_id``."""

    card: CardParams
    wallet_account_id: str


class PaymentCreateParams(TypedDict, total=False):
    amount: Required[int]
    currency: Required[str]
    merchant_account_id: Required[str]
    source: Required[PaymentSourceParams]
    capture: Literal["automatic", "manual"]  # manual: authorize now, capture later


class CaptureParams(TypedDict, total=False):
    amount: int  # all that is left when absent
    final_capture: bool  # release what is left after this capture


class PaymentListParams(_CreatedRange, total=False):
    merchant_account_id: str
    status: str  # processing, requires_capture, succeeded, failed, canceled


class RefundCreateParams(TypedDict, total=False):
    payment_id: Required[str]
    amount: int  # all that is left to refund when absent


class RefundListParams(_CreatedRange, total=False):
    payment_id: str
    status: str  # pending, succeeded, failed


class PayoutCreateParams(TypedDict):
    wallet_account_id: str
    amount: int
    currency: str
    destination: str  # a bank account: 8-34 capital letters or digits


class PayoutListParams(_CreatedRange, total=False):
    wallet_account_id: str
    status: str  # processing, paid, failed


# -- the admin API ----------------------------------------------------------------------


class _AdminPageParams(TypedDict, total=False):
    limit: int  # 1..max_page_size; 100 when absent
    cursor: str  # a ``next_cursor``


class ApiKeyCreateParams(TypedDict, total=False):
    scopes: Required[list[Literal["read", "write", "admin"]]]  # admin implies the others
    name: str  # what the key is for, 1-100 characters
    expires_in_seconds: int  # else it never expires


class ApiKeyRotateParams(TypedDict, total=False):
    grace_seconds: int  # how long the old key keeps working (0: refused at once)


class ApiKeyListParams(_AdminPageParams, total=False):
    pass


class WebhookEndpointCreateParams(TypedDict, total=False):
    url: Required[str]  # http:// or https://
    events: list[str]  # patterns ("*", "payment.*", "refund.succeeded"); every event by default
    description: str


class WebhookSecretRotateParams(TypedDict, total=False):
    grace_seconds: int  # how long the old secret signs too (0: not at all)


class WebhookEndpointListParams(_AdminPageParams, total=False):
    pass


class WebhookDeliveryListParams(_AdminPageParams, total=False):
    pass


# -- reconciliation (an admin key of the operator's tenant) --------------------------------


class ReportImportParams(TypedDict):
    processor: str  # as in the server's settings
    report: str  # the settlement report's CSV text, as the processor sent it


class ReconciliationReportListParams(_AdminPageParams, total=False):
    processor: str
    order: Order


class ReconciliationExceptionListParams(_AdminPageParams, total=False):
    processor: str
    status: Literal["open", "resolved"]
    order: Order


class ResolveExceptionParams(TypedDict):
    note: str  # what the operator did or found, 1-1000 characters
