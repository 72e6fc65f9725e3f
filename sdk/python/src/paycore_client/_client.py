"""``Paycore``: the synchronous client. Its async twin is ``_async_client.AsyncPaycore``;
both are a short loop around the I/O-free ``_base``."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import httpx

from paycore_client._base import (
    DEFAULT_TIMEOUT_SECONDS,
    Attempts,
    ClientSettings,
    body_bytes,
    connection_error,
    decode_success,
    error_of_response,
    new_idempotency_key,
    request_headers,
)
from paycore_client._call import Call
from paycore_client._errors import PaycoreError
from paycore_client._resources.accounts import Accounts
from paycore_client._resources.api_keys import ApiKeys
from paycore_client._resources.payments import Payments
from paycore_client._resources.payouts import Payouts
from paycore_client._resources.reconciliation import Reconciliation
from paycore_client._resources.refunds import Refunds
from paycore_client._resources.transfers import Transfers
from paycore_client._resources.webhook_endpoints import WebhookEndpoints
from paycore_client._retry import RetryPolicy

__all__ = ["Paycore"]

T = TypeVar("T")


class Paycore:
    """A paycore API client: ``client.accounts``, ``.transfers``, ``.payments``,
    ``.refunds``, ``.payouts``; with an ``admin`` key, ``.api_keys`` and
    ``.webhook_endpoints``, and (the operator's tenant) ``.reconciliation``.

    ``api_key``: a key from ``paycore keys create`` (default: ``$PAYCORE_API_KEY``; none
    for a server run with ``--open``). ``base_url``: default ``$PAYCORE_BASE_URL`` or
    ``http://127.0.0.1:8000``. ``timeout``: seconds per attempt.
    ``max_network_retries``: retries of what is safe to retry (``_retry``), each POST
    under one Idempotency-Key for all its attempts; ``retry`` sets the backoff in full.
    ``http_client`` (kept open: it is the caller's) or ``transport`` replace httpx's
    defaults; ``sleep`` is how retries wait (tests pass a recorder).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_SECONDS,
        max_network_retries: int = 2,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        self._settings = ClientSettings.of(api_key, base_url, timeout, max_network_retries, retry)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport)
        self._sleep = sleep
        self.accounts = Accounts(self)
        self.transfers = Transfers(self)
        self.payments = Payments(self)
        self.refunds = Refunds(self)
        self.payouts = Payouts(self)
        self.api_keys = ApiKeys(self)
        self.webhook_endpoints = WebhookEndpoints(self)
        self.reconciliation = Reconciliation(self)

    def __repr__(self) -> str:
        return f"Paycore(base_url={self._settings.base_url!r})"

    def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying what is safe, and decode its answer (or raise)."""
        settings = self._settings
        key = new_idempotency_key(call)
        headers = request_headers(settings, call, key)
        content = body_bytes(call)
        attempts = Attempts(settings.retry)
        while True:
            error: PaycoreError
            cause: BaseException | None = None
            try:
                response = self._http.request(
                    call.method,
                    settings.url(call),
                    params=call.query,
                    content=content,
                    headers=headers,
                    timeout=settings.timeout,
                )
            except httpx.RequestError as exc:
                error, cause = connection_error(exc, call), exc
            else:
                if response.is_success:
                    return decode_success(
                        call, response.status_code, response.headers, response.content
                    )
                error = error_of_response(response.status_code, response.headers, response.content)
            self._sleep(attempts.after_failure(error, cause))

    def close(self) -> None:
        """Close the connections (not those of an ``http_client`` the caller gave)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Paycore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
