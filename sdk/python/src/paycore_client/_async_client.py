"""``AsyncPaycore``: the asyncio client, the twin of ``_client.Paycore`` line for line
(both are a short loop around the I/O-free ``_base``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
from paycore_client._resources.accounts import AsyncAccounts
from paycore_client._resources.api_keys import AsyncApiKeys
from paycore_client._resources.payments import AsyncPayments
from paycore_client._resources.payouts import AsyncPayouts
from paycore_client._resources.reconciliation import AsyncReconciliation
from paycore_client._resources.refunds import AsyncRefunds
from paycore_client._resources.transfers import AsyncTransfers
from paycore_client._resources.webhook_endpoints import AsyncWebhookEndpoints
from paycore_client._retry import RetryPolicy

__all__ = ["AsyncPaycore"]

T = TypeVar("T")


class AsyncPaycore:
    """``Paycore`` for asyncio: every method is awaited, pages are ``AsyncPage``
    objects (``async for item in page.auto_paging_iter()``); the arguments are the same.

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
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        self._settings = ClientSettings.of(api_key, base_url, timeout, max_network_retries, retry)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport)
        self._sleep = sleep
        self.accounts = AsyncAccounts(self)
        self.transfers = AsyncTransfers(self)
        self.payments = AsyncPayments(self)
        self.refunds = AsyncRefunds(self)
        self.payouts = AsyncPayouts(self)
        self.api_keys = AsyncApiKeys(self)
        self.webhook_endpoints = AsyncWebhookEndpoints(self)
        self.reconciliation = AsyncReconciliation(self)

    def __repr__(self) -> str:
        return f"AsyncPaycore(base_url={self._settings.base_url!r})"

    async def send(self, call: Call[T]) -> T:
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
                response = await self._http.request(
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
            await self._sleep(attempts.after_failure(error, cause))

    async def close(self) -> None:
        """Close the connections (not those of an ``http_client`` the caller gave)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncPaycore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
