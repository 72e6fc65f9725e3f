"""The access log: one line per request, with the id the answer's ``X-Request-Id`` gives,
and every line a request logs carries that id."""

from __future__ import annotations

import io
from typing import Any

from litestar.testing import AsyncTestClient

from fix_logs import parsed
from paycore import logs


def access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return parsed(buffer, "paycore.access")


async def test_each_request_has_one_access_line_with_its_id_and_tenant(
    client: AsyncTestClient[Any], log_lines: io.StringIO
) -> None:
    created = await client.post("/v1/accounts", json={"id": "log-1", "currency": "USD"})
    refused = await client.post("/v1/accounts", json={"id": "log-2", "currency": "usd"})
    missing = await client.get("/v1/accounts/nope", headers={"X-Request-Id": "trace-9"})
    lines = access_lines(log_lines)
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/v1/accounts", 201),
        ("POST", "/v1/accounts", 422),
        ("GET", "/v1/accounts/nope", 404),
    ]
    answers = (created, refused, missing)
    assert [line["request_id"] for line in lines] == [a.headers["x-request-id"] for a in answers]
    assert lines[2]["request_id"] == "trace-9"
    assert all(line["tenant"] == "default" for line in lines)  # open mode's tenant
    assert all(isinstance(line["duration_ms"], float) for line in lines)


async def test_the_access_log_is_off_unless_asked_for(
    client: AsyncTestClient[Any], log_lines: io.StringIO
) -> None:
    """Without ``--access-log`` (``access_log=False``) a request writes no line at info:
    a server's stderr stays quiet under load unless its operator wants the lines."""
    logs.configure("info", "json", stream=log_lines, access_log=False)
    await client.get("/healthz")
    assert access_lines(log_lines) == []


async def test_warning_level_writes_no_access_line(
    client: AsyncTestClient[Any], log_lines: io.StringIO
) -> None:
    logs.configure("warning", "json", stream=log_lines)
    await client.get("/healthz")
    assert access_lines(log_lines) == []


async def test_a_payments_access_lines_name_it(
    client: AsyncTestClient[Any], log_lines: io.StringIO
) -> None:
    """The access lines of a payment's creation and capture carry its id (as the store
    keeps it); the next request's line does not."""
    created = await client.post("/v1/accounts", json={"id": "m-log", "currency": "USD"})
    assert created.status_code == 201, created.text
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    body = {
        "amount": 700,
        "currency": "USD",
        "merchant_account_id": "m-log",
        "capture": "manual",
        "source": {"card": card},
    }
    payment = await client.post("/v1/payments", json=body)
    assert payment.status_code == 201, payment.text
    payment_id = payment.json()["id"]
    captured = await client.post(f"/v1/payments/{payment_id}/capture", json={})
    assert captured.status_code == 200, captured.text
    await client.get("/healthz")
    lines = access_lines(log_lines)[1:]  # after the account's creation
    assert [line["status"] for line in lines] == [201, 200, 200]
    assert lines[0]["payment"].endswith(payment_id)
    assert lines[1]["payment"].endswith(payment_id)
    assert "payment" not in lines[2]
