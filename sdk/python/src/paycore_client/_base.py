"""What the sync and async clients share, without I/O: settings, the request each
attempt sends, and what each answer or failure means.

``Paycore`` and ``AsyncPaycore`` are thin loops around this: send, and on a failure
ask ``Attempts.after_failure`` whether to sleep and try again or raise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx
import msgspec

from paycore_client._call import Call
from paycore_client._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    PaycoreError,
    error_from_response,
)
from paycore_client._retry import RetryPolicy, is_retryable_answer

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_SECONDS",
    "Attempts",
    "ClientSettings",
    "body_bytes",
    "connection_error",
    "decode_success",
    "error_of_response",
    "new_idempotency_key",
    "request_headers",
]

T = TypeVar("T")

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
VERSION: Final = "0.1.0"
_USER_AGENT: Final = f"paycore-client-python/{VERSION}"
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """A client's settings, read once. ``api_key`` None: a server run with ``--open``."""

    api_key: str | None
    base_url: str
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def of(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout,
        max_network_retries: int,
        retry: RetryPolicy | None,
    ) -> ClientSettings:
        """Arguments first, then ``PAYCORE_API_KEY`` / ``PAYCORE_BASE_URL``, then defaults."""
        key = api_key if api_key is not None else os.environ.get("PAYCORE_API_KEY")
        url = base_url or os.environ.get("PAYCORE_BASE_URL") or DEFAULT_BASE_URL
        if retry is None:
            retry = RetryPolicy(max_network_retries=max_network_retries)
        return cls(
            api_key=key or None,
            base_url=url.rstrip("/"),
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            retry=retry,
        )

    def url(self, call: Call[Any]) -> str:
        return self.base_url + call.path


def request_headers(
    settings: ClientSettings, call: Call[Any], idempotency_key: str | None
) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    if call.method == "POST":
        headers["Content-Type"] = "application/json"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def body_bytes(call: Call[Any]) -> bytes | None:
    """A POST always carries a JSON object (``{}`` when it has no fields): the same bytes
    on every attempt, so the server's fingerprint of the key matches."""
    if call.method != "POST":
        return None
    return _encode(call.body or {})


def new_idempotency_key(call: Call[Any]) -> str | None:
    """The key every attempt of this call sends: the caller's, else a new one for a
    POST (each POST may change state), none for a GET (safe by itself)."""
    if call.idempotency_key is not None:
        return call.idempotency_key
    return str(uuid.uuid4()) if call.method == "POST" else None


def decode_success(call: Call[T], status: int, headers: Mapping[str, str], body: bytes) -> T:
    try:
        return call.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # A 2xx we cannot read (a proxy's page, a server of another version): the
        # request may well have been done, so say so rather than guess.
        raise APIError(
            status=status,
            code=None,
            title="Unreadable answer",
            detail=f"{call.method} {call.path} answered {status} with a body this client "
            f"cannot read ({exc}); the request may have been done",
            body=body,
            headers=headers,
        ) from None


def connection_error(exc: httpx.RequestError, call: Call[Any]) -> APIConnectionError:
    """httpx's failures, translated at this one boundary."""
    what = f"{call.method} {call.path}: {type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"no answer in time; {what}")
    return APIConnectionError(f"could not reach paycore; {what}")


# The failures a retry may cure; a bad URL or too many redirects stays as it is.
_NETWORK_FAILURES: Final = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


class Attempts:
    """The attempts of one call: each failure either waits for a retry or is final."""

    __slots__ = ("done_retries", "policy")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.done_retries = 0

    def after_failure(self, error: PaycoreError, cause: BaseException | None = None) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when it is final."""
        retry_after: float | None = None
        if isinstance(error, APIError):
            if not is_retryable_answer(error.status, error.code):
                raise error
            retry_after = error.retry_after
        elif not isinstance(cause, _NETWORK_FAILURES):
            raise error from cause
        delay = self.policy.delay_after(self.done_retries, retry_after)
        if delay is None:
            raise error from cause
        self.done_retries += 1
        return delay


def error_of_response(status: int, headers: Mapping[str, str], body: bytes) -> APIError:
    return error_from_response(status, {k.lower(): v for k, v in headers.items()}, body)
