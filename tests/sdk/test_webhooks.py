"""``paycore_client.webhooks`` accepts exactly what paycore signs: signed here by the
server's own ``paycore.payments.webhooks``, verified by the SDK."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.payments.webhooks import SignatureError, signature_header, verify_signature
from paycore_client import webhooks
from paycore_client.webhooks import SignatureVerificationError

SECRET = "whsec_test_0123456789"
OLD_SECRET = "whsec_old_9876543210"
NOW = 1_767_225_600
BODY = json.dumps({
    "id": "evt_1", "object": "event", "type": "payment.succeeded",
    "created_at": "2026-01-01T00:00:00.000000000Z",
    "data": {"object": {"id": "pay_1", "amount": 1250, "currency": "USD"}},
}).encode()  # fmt: skip


def test_a_signed_event_verifies_and_reads() -> None:
    """The server's signature verifies; the event reads with its amount as an int."""
    header = signature_header([SECRET], BODY, now=NOW)
    assert webhooks.verify(BODY, header, SECRET, now=NOW) == NOW
    event = webhooks.construct_event(BODY.decode(), header, [SECRET], now=NOW + 299)
    assert (event.id, event.type) == ("evt_1", "payment.succeeded")
    assert event.data.object["amount"] == 1250


def test_during_a_rotation_either_secret_verifies() -> None:
    """Signed with old and new secrets, a receiver holding either one accepts it."""
    header = signature_header([OLD_SECRET, SECRET], BODY, now=NOW)
    webhooks.verify(BODY, header, [SECRET], now=NOW)
    webhooks.verify(BODY, header, [OLD_SECRET], now=NOW)
    one = signature_header([SECRET], BODY, now=NOW)
    webhooks.verify(BODY, one, [OLD_SECRET, SECRET], now=NOW)


@pytest.mark.parametrize(
    ("body", "secrets", "now", "reason"),
    [
        (BODY + b" ", [SECRET], NOW, "does not match"),
        (BODY.replace(b"1250", b"9250"), [SECRET], NOW, "does not match"),
        (BODY, ["whsec_another_secret"], NOW, "does not match"),
        (BODY, [SECRET], NOW + 301, "tolerance"),
        (BODY, [SECRET], NOW - 301, "tolerance"),
    ],
    ids=["body-changed", "amount-changed", "wrong-secret", "too-old", "from-the-future"],
)
def test_tampered_foreign_or_stale_requests_are_refused(
    body: bytes, secrets: list[str], now: int, reason: str
) -> None:
    """A changed body, another secret, or a timestamp outside 300 s is refused."""
    header = signature_header([SECRET], BODY, now=NOW)
    with pytest.raises(SignatureVerificationError, match=reason):
        webhooks.verify(body, header, secrets, now=now)


@pytest.mark.parametrize(
    "header", ["", "garbage", "t=abc,v1=00", f"t={NOW}", "v1=00", f"t={NOW},v1"]
)
def test_malformed_headers_are_refused(header: str) -> None:
    """Missing or malformed headers are refused, never an exception of another kind."""
    with pytest.raises(SignatureVerificationError):
        webhooks.verify(BODY, header, SECRET, now=NOW)


def test_a_wider_tolerance_accepts_an_older_request() -> None:
    """``tolerance`` widens the replay window."""
    header = signature_header([SECRET], BODY, now=NOW)
    assert webhooks.verify(BODY, header, SECRET, tolerance=900, now=NOW + 600) == NOW


_part = st.one_of(
    st.just(f"t={NOW}"),
    st.just(f"v1={signature_header([SECRET], BODY, now=NOW).split('v1=')[1]}"),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    st.builds(lambda n: f"t={n}", st.integers(0, 10**13)),
)


@given(st.lists(_part, min_size=0, max_size=4), st.booleans())
def test_the_sdk_accepts_exactly_what_the_server_accepts(parts: list[str], tamper: bool) -> None:
    """For any header built of valid and junk parts, the SDK and the server's own
    ``verify_signature`` agree on accept or refuse."""
    header = ",".join(parts)
    body = BODY + b"x" if tamper else BODY
    try:
        verify_signature(header, body, SECRET, now=NOW)
        server_accepts = True
    except SignatureError:
        server_accepts = False
    try:
        webhooks.verify(body, header, SECRET, now=NOW)
        sdk_accepts = True
    except SignatureVerificationError:
        sdk_accepts = False
    assert sdk_accepts == server_accepts
