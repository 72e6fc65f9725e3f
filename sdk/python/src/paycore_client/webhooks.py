"""Check that a webhook request really comes from paycore, then read its event.

paycore signs every event it sends (and processors sign their notifications) as::

    Paycore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=...]

with one ``v1`` per endpoint secret while a secret is being rotated. A request is
genuine when some ``v1`` is the HMAC of ``<t>.<raw body>`` under one of the receiver's
secrets and ``t`` is within ``tolerance`` seconds of now (a captured request replayed
later is refused even with a valid signature). Verify the raw bytes as received,
before any JSON parsing: re-encoding changes them. Delivery is at least once, so
deduplicate events by ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Final

import msgspec

from paycore_client.models import Event

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "SIGNATURE_HEADER",
    "SignatureVerificationError",
    "construct_event",
    "verify",
]

SIGNATURE_HEADER: Final = "Paycore-Signature"
DEFAULT_TOLERANCE_SECONDS: Final = 300
# Twelve digits reach the year 33658: a longer "timestamp" is garbage, and refusing it
# keeps int() of a hostile header cheap.
_MAX_TIMESTAMP_DIGITS: Final = 12


class SignatureVerificationError(ValueError):
    """The signature header is missing, malformed, too old, or matches no secret. The
    message says which, never what signature was expected."""


def _signature(secret: str, timestamp: str, payload: bytes) -> str:
    message = timestamp.encode() + b"." + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[str, list[str]]:
    """The header's ``t`` (as sent, digits) and every ``v1``."""
    timestamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureVerificationError("malformed signature header")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > _MAX_TIMESTAMP_DIGITS:
                raise SignatureVerificationError("malformed signature timestamp")
            timestamp = value
        elif key == "v1":
            candidates.append(value)
        # Other schemes (a future v2) are skipped, as a receiver of a newer sender should.
    if timestamp is None or not candidates:
        raise SignatureVerificationError("signature header lacks t= or v1=")
    return timestamp, candidates


def verify(
    payload: bytes | str,
    header: str | None,
    secrets: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> int:
    """Check ``header`` (the ``Paycore-Signature`` value) against the raw ``payload``
    under any of ``secrets``; returns the signed timestamp (unix seconds).

    Raises ``SignatureVerificationError``. ``now``: the current unix time (tests).
    """
    if not header:
        raise SignatureVerificationError("missing signature header")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("at least one secret is needed to verify")
    body = payload.encode() if isinstance(payload, str) else payload
    timestamp, candidates = _parse(header)
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise SignatureVerificationError("signature timestamp outside the tolerance window")
    # Every comparison runs, in constant time each, whatever matches first.
    matched = False
    for secret in keys:
        expected = _signature(secret, timestamp, body)
        for candidate in candidates:
            matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    if not matched:
        raise SignatureVerificationError("signature does not match")
    return int(timestamp)


def construct_event(
    payload: bytes | str,
    header: str | None,
    secrets: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> Event:
    """``verify``, then the event the payload holds."""
    verify(payload, header, secrets, tolerance, now=now)
    try:
        return msgspec.json.decode(payload, type=Event)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"signed payload is not a paycore event: {exc}") from None
