"""Webhook signatures, the retry schedule, and one delivery over HTTP.

Every event paycore sends is signed with the endpoint's secret, Stripe-style::

    Paycore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

How a receiver verifies (``verify_signature`` does exactly this):

1. split the header on ``,``, take ``t`` and every ``v1`` (several during a secret
   rotation);
2. compute HMAC-SHA256 with the endpoint secret over the bytes ``<t>.<raw body>`` (the
   body exactly as received, before any JSON parsing);
3. compare with each ``v1`` in constant time (``hmac.compare_digest``); one must match;
4. refuse if ``|now - t|`` exceeds the tolerance (300 s by default): a captured request
   replayed later is refused even with a valid signature;
5. deduplicate by the event's ``id``: delivery is at least once, so the same event may
   come twice (after a timeout whose answer was lost).

Every event is POSTed with ``Paycore-Event-Id: <id>`` and this JSON body, the same bytes
on every attempt and to every endpoint (``event_body``)::

    {"id": "evt_...", "object": "event", "type": "payment.succeeded",
     "created_at": "<RFC 3339>", "data": {"object": {<the payment, refund or payout>}}}

Incoming processor notifications are verified the same way with the processor's
secret, and deduplicated by their event id (a duplicate is answered 200, not an error).

Delivery is retried with exponential backoff and jitter for up to a day
(``RETRY_SCHEDULE``): 2xx is delivered; 4xx other than 408/429 is a receiver that
will not change its mind (given up after the schedule anyway, but logged as such);
anything else (5xx, timeout, connection error) is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

import httpx
import msgspec

from paycore.ledger.tenancy import client_id
from paycore.storage.payments import EventRow

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPES",
    "RETRY_SCHEDULE",
    "SIGNATURE_HEADER",
    "DeliveryOutcome",
    "DeliveryResult",
    "SignatureError",
    "deliver",
    "event_body",
    "event_matches",
    "next_attempt_delay",
    "sign",
    "signature_header",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "Paycore-Signature"
EVENT_ID_HEADER: Final = "Paycore-Event-Id"
DEFAULT_TOLERANCE_SECONDS: Final = 300

# Every event type paycore sends (``paycore.payments.service`` writes them).
EVENT_TYPES: Final[tuple[str, ...]] = (
    "payment.requires_capture",
    "payment.captured",
    "payment.succeeded",
    "payment.failed",
    "payment.canceled",
    "refund.succeeded",
    "refund.failed",
    "payout.paid",
    "payout.failed",
)

# Seconds to wait before each retry: about a day in all (85,355 s, 23.7 h).
RETRY_SCHEDULE: Final[tuple[int, ...]] = (
    5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 6 * 3600, 7 * 3600,
)  # fmt: skip


class SignatureError(ValueError):
    """A signature header that is missing, malformed, too old, or does not match."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], body: bytes, *, now: int | None = None) -> str:
    """The ``Paycore-Signature`` value: one ``v1`` per secret (old and new while rotating)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    timestamp = int(time.time()) if now is None else now
    parts = [f"t={timestamp}"] + [f"v1={sign(s, timestamp, body)}" for s in secrets]
    return ",".join(parts)


def verify_signature(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> int:
    """Check ``header`` against ``body`` (see the module docstring); returns its timestamp.

    Raises ``SignatureError`` saying what is wrong, never which signature was expected.
    """
    if not header:
        raise SignatureError("missing signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature header")
        if key == "t":
            if not value.isdigit() or len(value) > 12:
                raise SignatureError("malformed signature timestamp")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("signature header lacks t= or v1=")
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError("signature timestamp outside the tolerance window")
    expected = sign(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match")
    return timestamp


def next_attempt_delay(
    attempts: int,
    rng: random.Random | None = None,
    *,
    schedule: Sequence[float] = RETRY_SCHEDULE,
) -> float | None:
    """Seconds before retry number ``attempts`` (1 = the first retry), jittered by up to
    +-10% so that many failed deliveries do not come back in one burst; None when the
    schedule is over (give up). ``schedule``: another one (tests shrink it)."""
    if attempts < 1 or attempts > len(schedule):
        return None
    base = schedule[attempts - 1]
    jitter = (rng or random).uniform(-0.1, 0.1)
    return base * (1 + jitter)


def event_matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to ``patterns`` wants ``event_type``: ``*`` is every
    event, ``payment.*`` every ``payment.`` event, anything else an exact type."""
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def _rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


# The ids of an event's object that name accounts (``payments.flows.rows.payload``).
_ACCOUNT_FIELDS: Final = ("merchant_account_id", "wallet_account_id")


def event_body(event: EventRow) -> bytes:
    """The JSON an event is sent as (see the module docstring): the same bytes whenever
    it is built, so a receiver sees one body per event id, retries included. The stored
    payload holds a card's brand and last four digits at most, never its number; its
    account ids are the store's, shown here as the event's tenant knows them."""
    obj = msgspec.json.decode(event.payload)
    if isinstance(obj, dict):
        for field in _ACCOUNT_FIELDS:
            value = obj.get(field)
            if isinstance(value, str):
                obj[field] = client_id(event.tenant, value)
    envelope = {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "created_at": _rfc3339(event.created_at),
        "data": {"object": obj},
    }
    return msgspec.json.encode(envelope)


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # 5xx, 408, 429, timeout, connection error
    REJECTED = "rejected"  # another 4xx: the receiver refuses this event


class DeliveryResult(msgspec.Struct, frozen=True):
    outcome: DeliveryOutcome
    status: int | None
    error: str | None
    latency_ms: float


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    event_id: str,
    body: bytes,
    secrets: Sequence[str],
    *,
    now: int | None = None,
    timeout_seconds: float | None = None,
) -> DeliveryResult:
    """POST one signed event; classify the answer (never raises for network trouble).
    ``timeout_seconds``: for this request (else the client's own timeouts)."""
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secrets, body, now=now),
        EVENT_ID_HEADER: event_id,
        "User-Agent": "paycore-webhooks/1",
    }
    started = time.perf_counter()
    try:
        if timeout_seconds is None:
            response = await client.post(url, content=body, headers=headers)
        else:
            response = await client.post(
                url, content=body, headers=headers, timeout=timeout_seconds
            )
    except httpx.HTTPError as exc:
        took = (time.perf_counter() - started) * 1000
        return DeliveryResult(DeliveryOutcome.RETRY, None, type(exc).__name__, took)
    took = (time.perf_counter() - started) * 1000
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult(DeliveryOutcome.DELIVERED, status, None, took)
    if 400 <= status < 500 and status not in (408, 429):
        return DeliveryResult(DeliveryOutcome.REJECTED, status, f"HTTP {status}", took)
    return DeliveryResult(DeliveryOutcome.RETRY, status, f"HTTP {status}", took)
