"""paycore-client: the Python SDK of the paycore HTTP API.

    from paycore_client import Paycore

    client = Paycore("pk_live_...", base_url="http://127.0.0.1:8000")
    alice = client.accounts.create(id="alice", currency="USD")

``Paycore`` (sync) and ``AsyncPaycore`` (asyncio) have the same services:
``accounts``, ``transfers``, ``payments``, ``refunds``, ``payouts``, and for an
``admin`` key ``api_keys``, ``webhook_endpoints`` and (the operator's tenant)
``reconciliation``. Answers are
frozen models (``paycore_client.models``), money in ``int`` minor units; errors are
``PaycoreError``s, one class per family of the server's problem ``code``;
``paycore_client.webhooks`` verifies the ``Paycore-Signature`` of events.
"""

from paycore_client import models, params, webhooks
from paycore_client._async_client import AsyncPaycore
from paycore_client._base import VERSION as __version__
from paycore_client._client import Paycore
from paycore_client._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    IdempotencyError,
    InsufficientFundsError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PaycoreError,
    PaymentDeclinedError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from paycore_client._pagination import AsyncPage, Page
from paycore_client._retry import RetryPolicy
from paycore_client.models import (
    Account,
    ApiKey,
    BalanceRecord,
    BatchResult,
    Event,
    NewApiKey,
    NewWebhookEndpoint,
    Payment,
    Payout,
    QueuedEvent,
    Refund,
    RotatedApiKey,
    Transfer,
    WebhookDelivery,
    WebhookEndpoint,
)
from paycore_client.webhooks import SignatureVerificationError

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Account",
    "ApiKey",
    "AsyncPage",
    "AsyncPaycore",
    "AuthenticationError",
    "BalanceRecord",
    "BatchResult",
    "ConflictError",
    "Event",
    "IdempotencyError",
    "InsufficientFundsError",
    "InternalServerError",
    "InvalidRequestError",
    "NewApiKey",
    "NewWebhookEndpoint",
    "NotFoundError",
    "Page",
    "Paycore",
    "PaycoreError",
    "Payment",
    "PaymentDeclinedError",
    "Payout",
    "PermissionDeniedError",
    "QueuedEvent",
    "RateLimitError",
    "Refund",
    "RetryPolicy",
    "RotatedApiKey",
    "ServiceUnavailableError",
    "SignatureVerificationError",
    "Transfer",
    "WebhookDelivery",
    "WebhookEndpoint",
    "__version__",
    "models",
    "params",
    "webhooks",
]
