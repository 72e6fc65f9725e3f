"""Every answer carries ``X-Request-Id`` (the API contract): the caller's own when it
sent a usable one, else a new one per request; on successes, refusals, problems of
unknown paths and methods, and the ops routes alike."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

NEW_ID = re.compile(r"req_[0-9a-f]{24}")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
        ("GET", "/docs/openapi.json", None),
        ("POST", "/v1/accounts", {"id": "rid-1", "currency": "USD"}),
        ("POST", "/v1/accounts", {"id": "rid-2", "currency": "usd"}),  # 422
        ("GET", "/v1/accounts/missing", None),  # 404 of the ledger
        ("GET", "/v1/no/such/route", None),  # 404 of the router
        ("DELETE", "/v1/accounts/rid-1", None),  # 405
    ],
)
async def test_every_answer_has_a_request_id(
    client: AsyncTestClient[Any], method: str, path: str, body: Any
) -> None:
    first = await client.request(method, path, json=body)
    second = await client.request(method, path, json=body)
    ids = [r.headers.get("x-request-id") for r in (first, second)]
    assert all(i is not None and NEW_ID.fullmatch(i) for i in ids), (first.status_code, ids)
    assert ids[0] != ids[1]


async def test_a_callers_request_id_is_echoed_and_a_hostile_one_replaced(
    client: AsyncTestClient[Any],
) -> None:
    mine = await client.get("/v1/accounts/missing", headers={"X-Request-Id": "trace-7.a:b"})
    assert mine.status_code == 404
    assert mine.headers["x-request-id"] == "trace-7.a:b"
    for hostile in ("a b", "x" * 129, "<script>", ""):
        answer = await client.get("/healthz", headers={"X-Request-Id": hostile})
        assert NEW_ID.fullmatch(answer.headers["x-request-id"]), hostile
        assert len(answer.headers.get_list("x-request-id")) == 1
