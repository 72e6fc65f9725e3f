"""``SimulatorConnector`` without a simulator: how answers and network failures are classified.

The answers come from an ``httpx.MockTransport`` or from tiny raw TCP servers that
misbehave on purpose (refuse, close or reset after the request was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest

from paycore.locks.testing import free_port
from paycore.payments.processors.base import (
    AuthorizeRequest,
    CardDetails,
    Operation,
    Outcome,
    PayoutRequest,
)
from paycore.payments.processors.http_connector import (
    TRANSPORT_OUTCOMES,
    SimulatorConnector,
    classify_answer,
)

NUMBER = "4242424242424242"
CARD = CardDetails(number=NUMBER, exp_month=12, exp_year=2099, cvc="123")


def authorize_request(reference: str = "pay_1.a:1") -> AuthorizeRequest:
    return AuthorizeRequest(reference=reference, amount=1000, currency="EUR", card=CARD)


def mock(handler: Callable[[httpx.Request], httpx.Response]) -> SimulatorConnector:
    return SimulatorConnector("acq-mock", "http://acq.test", transport=httpx.MockTransport(handler))


def answer(status: int, **body: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (200, {"reference": "r", "status": "authorized", "id": "x1"}, Outcome.APPROVED, None),
        (
            402,
            {"status": "declined", "decline_code": "stolen_card"},
            Outcome.DECLINED,
            "stolen_card",
        ),
        (
            422,
            {"decline_code": "amount_exceeds_captured"},
            Outcome.DECLINED,
            "amount_exceeds_captured",
        ),
        (409, {"error": "reference_reused"}, Outcome.DECLINED, "reference_reused"),
        (404, {"error": "authorization_not_found"}, Outcome.DECLINED, "authorization_not_found"),
        (400, {"error": "invalid_request"}, Outcome.DECLINED, "invalid_request"),
        (404, {"status_code": 404, "detail": "Not Found"}, Outcome.FAILED, None),
        (500, {"error": "processing_error"}, Outcome.FAILED, None),
        (503, {"error": "service_unavailable"}, Outcome.FAILED, None),
        (429, {}, Outcome.FAILED, None),
        (401, {}, Outcome.FAILED, None),
        (502, {}, Outcome.AMBIGUOUS, None),
        (504, {}, Outcome.AMBIGUOUS, None),
        (200, {"reference": "other", "status": "authorized"}, Outcome.AMBIGUOUS, None),
    ],
)
def test_answers_are_classified(
    status: int, body: dict[str, Any], outcome: Outcome, code: str | None
) -> None:
    """Each kind of HTTP answer maps to its outcome (see the connector's table)."""
    result = classify_answer("acq", Operation.AUTHORIZE, "r", status, msgspec.json.encode(body))
    assert (result.outcome, result.decline_code) == (outcome, code)
    if outcome in (Outcome.FAILED, Outcome.AMBIGUOUS):
        assert result.error


def test_an_unreadable_success_is_ambiguous() -> None:
    """A 2xx whose body cannot be read means done, but unknown: AMBIGUOUS."""
    for content in (b"<html>", b"", b'{"reference": "r"}'):
        result = classify_answer("acq", Operation.CAPTURE, "r", 200, content)
        assert result.outcome is Outcome.AMBIGUOUS


def test_a_body_nested_too_deep_is_unreadable_not_an_exception() -> None:
    """A processor's answer nesting 100,000 levels (hostile or broken) is read as an
    unreadable body: AMBIGUOUS after a 2xx, FAILED after a 5xx, never a RecursionError
    escaping into the payment flow."""
    deep = b'{"id": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert classify_answer("acq", Operation.CAPTURE, "r", 200, deep).outcome is Outcome.AMBIGUOUS
    assert classify_answer("acq", Operation.CAPTURE, "r", 503, deep).outcome is Outcome.FAILED


def test_status_not_found_is_an_answer() -> None:
    """A status lookup's 404 not_found is APPROVED with status not_found; a bare 404 is not."""
    body = msgspec.json.encode({"error": "not_found", "status": "not_found"})
    found = classify_answer("acq", Operation.STATUS, "r", 404, body)
    assert (found.outcome, found.status) == (Outcome.APPROVED, "not_found")
    bare = classify_answer("acq", Operation.STATUS, "r", 404, b'{"detail": "Not Found"}')
    assert bare.outcome is Outcome.FAILED


def _subclasses(cls: type[object]) -> set[type[object]]:
    found: set[type[object]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_httpx_transport_error_is_mapped() -> None:
    """Every ``httpx.TransportError`` class has an outcome of its own in the table."""
    missing = {
        cls for cls in _subclasses(httpx.TransportError) if cls.__module__.startswith("httpx")
    }
    assert missing - set(TRANSPORT_OUTCOMES) == set()
    nothing_sent = {cls for cls, outcome in TRANSPORT_OUTCOMES.items() if outcome is Outcome.FAILED}
    assert {httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout} <= nothing_sent
    assert TRANSPORT_OUTCOMES[httpx.ReadTimeout] is Outcome.AMBIGUOUS


TRANSPORT_ERRORS = sorted(TRANSPORT_OUTCOMES, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("error", TRANSPORT_ERRORS)
async def test_transport_errors_become_results(error: type[httpx.TransportError]) -> None:
    """A network failure is a result (never an exception) with the table's outcome."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request) if _takes_request(error) else error("boom")

    async with mock(fail) as connector:
        result = await connector.authorize(authorize_request())
    assert result.outcome is TRANSPORT_OUTCOMES[error]
    assert result.error is not None
    assert NUMBER not in result.error


def _takes_request(error: type[httpx.TransportError]) -> bool:
    return issubclass(error, httpx.RequestError)


async def test_requests_carry_only_what_the_processor_needs() -> None:
    """Authorize sends the card in the body only; other calls name references in the path."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reference = "pay_1.a:1" if request.method == "GET" else None
        return httpx.Response(200, json={"reference": reference, "status": "ok"})

    async with mock(record) as connector:
        await connector.authorize(authorize_request())
        await connector.capture("pay_1.a:1", 400, "cap/1")
        await connector.void("pay_1.a:1")
        await connector.refund("pay_1.a:1", 100, "ref 1")
        await connector.payout(
            PayoutRequest(reference="po1", amount=5, currency="EUR", destination="DE893704")
        )
        await connector.status("pay_1.a:1")
    body = msgspec.json.decode(seen[0].content)
    assert set(body) == {"reference", "amount", "currency", "card", "capture"}
    assert body["card"] == {"number": NUMBER, "exp_month": 12, "exp_year": 2099, "cvc": "123"}
    paths = [request.url.raw_path.decode() for request in seen]
    assert paths == [
        "/v1/authorizations",
        "/v1/authorizations/pay_1.a%3A1/captures",
        "/v1/authorizations/pay_1.a%3A1/void",
        "/v1/authorizations/pay_1.a%3A1/refunds",
        "/v1/payouts",
        "/v1/operations/pay_1.a%3A1",
    ]
    assert msgspec.json.decode(seen[1].content) == {"capture_reference": "cap/1", "amount": 400}
    assert all(NUMBER not in str(request.url) for request in seen)
    assert all(NUMBER.encode() not in request.content for request in seen[1:])


async def test_connection_refused_is_failed_at_once() -> None:
    """Nobody listening: FAILED (nothing was sent), without waiting for any timeout."""
    url = f"http://127.0.0.1:{free_port()}"
    async with SimulatorConnector("acq-gone", url, timeout=5, connect_timeout=5) as connector:
        result = await connector.authorize(authorize_request())
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert "ConnectError" in result.error
    assert result.latency_ms < 1000


async def _serve_then(behaviour: str) -> AsyncIterator[str]:
    """A TCP server that reads a whole request, then closes or resets the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = [line.lower() for line in head.split(b"\r\n")]
        sizes = [int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")]
        length = sizes[0] if sizes else 0
        await reader.readexactly(length)
        if behaviour == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(params=["close", "reset"])
async def misbehaving_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    async for url in _serve_then(request.param):
        yield url


async def test_connection_lost_after_sending_is_ambiguous(
    misbehaving_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The request went out and the connection closed or reset: AMBIGUOUS, never FAILED."""
    caplog.set_level(logging.DEBUG)
    async with SimulatorConnector("acq-bad", misbehaving_url, timeout=5) as connector:
        result = await connector.authorize(authorize_request())
    assert result.outcome is Outcome.AMBIGUOUS, result
    assert NUMBER not in caplog.text
    assert "pay_1.a:1" in caplog.text  # the log does name the reference


async def test_calls_are_spread_over_several_keep_alive_pools() -> None:
    """With ``pools=4``, calls go out over four pools in turn: twelve calls one after
    the other travel on four kept-alive connections (one pool would reuse one)."""
    peers: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        writers.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            lines = [line.lower() for line in head.split(b"\r\n")]
            sizes = [int(ln.split(b":")[1]) for ln in lines if ln.startswith(b"content-length")]
            await reader.readexactly(sizes[0] if sizes else 0)
            body = b'{"id": "auth_1", "status": "authorized", "reference": "r"}'
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, SimulatorConnector("acq", url, pools=4, max_connections=4) as connector:
        for _ in range(12):
            result = await connector.status("r")
            assert result.outcome is Outcome.APPROVED, result
    for writer in writers:  # closed here, not by the garbage collector after the loop
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert len(peers) == 4
    with pytest.raises(ValueError, match="pools"):
        SimulatorConnector("acq", url, pools=0)
