"""Webhook signatures: what we send verifies with the documented recipe, and every
tampering, a wrong secret, a stale timestamp or a malformed header is refused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.payments.webhooks import (
    RETRY_SCHEDULE,
    SignatureError,
    next_attempt_delay,
    sign,
    signature_header,
    verify_signature,
)

NOW = 1_800_000_000
BODY = b'{"id":"evt_1","type":"payment.succeeded"}'


def test_a_signed_body_verifies_and_returns_its_timestamp() -> None:
    header = signature_header(["whsec_a"], BODY, now=NOW)
    assert header == f"t={NOW},v1={sign('whsec_a', NOW, BODY)}"
    assert verify_signature(header, BODY, "whsec_a", now=NOW + 10) == NOW


def test_during_a_rotation_either_secret_verifies() -> None:
    header = signature_header(["old", "new"], BODY, now=NOW)
    assert verify_signature(header, BODY, "old", now=NOW) == NOW
    assert verify_signature(header, BODY, "new", now=NOW) == NOW


@pytest.mark.parametrize(
    ("header", "body", "secret", "now", "why"),
    [
        (None, BODY, "s", NOW, "missing"),
        ("", BODY, "s", NOW, "missing"),
        ("garbage", BODY, "s", NOW, "malformed"),
        (f"t={NOW}", BODY, "s", NOW, "lacks"),
        ("v1=abc", BODY, "s", NOW, "lacks"),
        (f"t=-{NOW},v1=ab", BODY, "s", NOW, "timestamp"),
        (signature_header(["s"], BODY, now=NOW), BODY + b" ", "s", NOW, "does not match"),
        (signature_header(["s"], BODY, now=NOW), BODY, "other", NOW, "does not match"),
        (signature_header(["s"], BODY, now=NOW), BODY, "s", NOW + 301, "tolerance"),
        (signature_header(["s"], BODY, now=NOW), BODY, "s", NOW - 301, "tolerance"),
    ],
)
def test_bad_signatures_are_refused_with_a_reason(
    header: str | None, body: bytes, secret: str, now: int, why: str
) -> None:
    with pytest.raises(SignatureError, match=why):
        verify_signature(header, body, secret, now=now)


@given(st.binary(max_size=200), st.integers(0, len(BODY) - 1), st.integers(1, 255))
def test_any_single_byte_change_breaks_the_signature(
    prefix: bytes, position: int, flip: int
) -> None:
    body = prefix + BODY
    header = signature_header(["s"], body, now=NOW)
    tampered = bytearray(body)
    tampered[len(prefix) + position] ^= flip
    with pytest.raises(SignatureError):
        verify_signature(header, bytes(tampered), "s", now=NOW)


def test_retries_back_off_for_about_a_day_then_give_up() -> None:
    rng = random.Random(7)
    delays = [next_attempt_delay(n, rng) for n in range(1, len(RETRY_SCHEDULE) + 2)]
    assert delays[-1] is None
    waits = [d for d in delays if d is not None]
    assert all(0.9 * RETRY_SCHEDULE[i] <= w <= 1.1 * RETRY_SCHEDULE[i] for i, w in enumerate(waits))
    assert 20 * 3600 <= sum(waits) <= 26 * 3600
    assert next_attempt_delay(0) is None
