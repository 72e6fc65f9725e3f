"""The access log: one line per request, with the id the answer's ``X-Request-Id`` gives,
and every line a request logs carries that id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from litestar.testing import AsyncTestClient

from paycore import logs


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    libraries = {n: logging.getLogger(n).level for n in (*logs.NOISY_LIBRARIES, "uvicorn")}
    buffer = io.StringIO()
    logs.configure("info", "json", stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in libraries.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()


def access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines() if line]
    return [p for p in parsed if p.get("logger") == "paycore.access"]


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


async def test_warning_level_writes_no_access_line(
    client: AsyncTestClient[Any], log_lines: io.StringIO
) -> None:
    logs.configure("warning", "json", stream=log_lines)
    await client.get("/healthz")
    assert access_lines(log_lines) == []
