"""Bad input is a precise 422 (or 413) and changes nothing: never a 500, never a partial write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.support import Api, assert_problem
from paycore.errors import ErrorCode

GOOD = {
    "id": "t1",
    "debit_account_id": "w",
    "credit_account_id": "shop",
    "amount": 10,
    "currency": "USD",
}

BAD_TRANSFERS: dict[str, dict[str, Any]] = {
    "float amount": {"amount": 10.0},
    "fractional amount": {"amount": 10.5},
    "string amount": {"amount": "10"},
    "bool amount": {"amount": True},
    "null amount": {"amount": None},
    "zero amount": {"amount": 0},
    "negative amount": {"amount": -10},
    "amount 2^63": {"amount": 2**63},
    "amount 2^64": {"amount": 2**64},
    "huge amount": {"amount": 10**40},
    "exponent amount": {"amount": 1e3},
    "unknown field": {"memo": "hi"},
    "typo of a flag": {"pendng": True},
    "linked on the single endpoint": {"linked": True},
    "lower-case currency": {"currency": "usd"},
    "unknown currency": {"currency": "XXX"},
    "numeric currency": {"currency": 840},
    "empty id": {"id": ""},
    "id with a space": {"id": "t 1"},
    "id with a slash": {"id": "t/1"},
    "id with a newline": {"id": "t1\n"},
    "id of 65 chars": {"id": "t" * 65},
    "non-ascii id": {"id": "t\u00e9"},
    "numeric id": {"id": 1},
    "bad account id": {"credit_account_id": "shop!"},
    "negative timeout": {"timeout_seconds": -1},
    "timeout 2^31": {"timeout_seconds": 2**31},
    "float timeout": {"timeout_seconds": 1.5},
    "negative code": {"code": -1},
    "code 2^31": {"code": 2**31},
    "string pending": {"pending": "true"},
    "metadata not an object": {"metadata": ["a"]},
}
MISSING = ["id", "debit_account_id", "credit_account_id", "amount", "currency"]


@pytest.mark.parametrize("change", BAD_TRANSFERS.values(), ids=list(BAD_TRANSFERS))
async def test_bad_transfer_field_is_refused_and_changes_nothing(
    funded: Api, change: dict[str, Any]
) -> None:
    """Each malformed field is 422 invalid_request naming the field; balances are untouched."""
    before = await funded.balances("w", "shop")
    response = await funded.client.post("/v1/transfers", json={**GOOD, **change})
    body = assert_problem(response, ErrorCode.INVALID_REQUEST)
    if "unknown" not in body["detail"]:
        assert "$." in body["detail"] or "currency" in body["detail"], body["detail"]
    assert await funded.balances("w", "shop") == before
    assert_problem(await funded.client.get("/v1/transfers/t1"), ErrorCode.TRANSFER_NOT_FOUND)


@pytest.mark.parametrize("field", MISSING)
async def test_missing_required_transfer_field_is_refused(funded: Api, field: str) -> None:
    """Leaving out a required field is 422 and names it."""
    body = {k: v for k, v in GOOD.items() if k != field}
    response = await funded.client.post("/v1/transfers", json=body)
    problem = assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert field in problem["detail"]


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b"{", b'{"id": "t1",}', b"\xff\xfe", b'"text"', b"12"],
    ids=["empty", "null", "array", "truncated", "trailing comma", "not utf-8", "string", "int"],
)
async def test_body_that_is_not_a_json_object_is_refused(funded: Api, raw: bytes) -> None:
    """Anything but a JSON object is 422 invalid_request, never a 500."""
    response = await funded.client.post(
        "/v1/transfers", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert (await funded.balance("w"))["available"] == 100


BAD_ACCOUNTS: dict[str, dict[str, Any]] = {
    "missing currency": {"id": "a1"},
    "unknown currency": {"id": "a1", "currency": "ABC"},
    "bad id": {"id": "a 1", "currency": "USD"},
    "closed flag": {"id": "a1", "currency": "USD", "flags": {"closed": True}},
    "unknown flag": {"id": "a1", "currency": "USD", "flags": {"overdraft": True}},
    "negative credit limit": {"id": "a1", "currency": "USD", "flags": {"credit_limit": -1}},
    "float credit limit": {"id": "a1", "currency": "USD", "flags": {"credit_limit": 1.0}},
    "credit limit 2^63": {"id": "a1", "currency": "USD", "flags": {"credit_limit": 2**63}},
    "string code": {"id": "a1", "currency": "USD", "code": "1"},
    "unknown field": {"id": "a1", "currency": "USD", "balance": 100},
}


@pytest.mark.parametrize("body", BAD_ACCOUNTS.values(), ids=list(BAD_ACCOUNTS))
async def test_bad_account_is_refused_and_not_created(
    client: AsyncTestClient[Any], body: dict[str, Any]
) -> None:
    """A malformed account creation is 422 and no account appears."""
    assert_problem(await client.post("/v1/accounts", json=body), ErrorCode.INVALID_REQUEST)
    assert_problem(await client.get("/v1/accounts/a1"), ErrorCode.ACCOUNT_NOT_FOUND)


async def test_oversized_body_is_413_and_changes_nothing(api: Api, open_client: Any) -> None:
    """A body over max_body_bytes is 413 request_too_large, however it is sent."""
    await api.account("bank")
    await api.account("shop")
    big = {**GOOD, "debit_account_id": "bank", "metadata": {"blob": "x" * 9 * 1024 * 1024}}
    response = await api.client.post("/v1/transfers", json=big)
    assert_problem(response, ErrorCode.REQUEST_TOO_LARGE)
    assert (await api.balance("shop"))["credits_posted"] == 0


async def test_oversized_chunked_body_is_413(open_client: Any) -> None:
    """Without a Content-Length, the limit is enforced while the body streams in."""

    async def chunks() -> Any:
        for _ in range(4):
            yield b" " * 1024

    async with open_client(max_body_bytes=2048) as client:
        # The test client only sends bodies it can measure; go to the app directly.
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as direct:
            response = await direct.post("/v1/accounts", content=chunks())
    assert "content-length" not in response.request.headers
    assert_problem(response, ErrorCode.REQUEST_TOO_LARGE)


async def test_post_or_void_of_a_strange_path_id_is_not_found(funded: Api) -> None:
    """A pending id in the path that could not exist is simply pending_transfer_not_found."""
    response = await funded.client.post("/v1/transfers/%20nope%0A/post")
    assert_problem(response, ErrorCode.PENDING_TRANSFER_NOT_FOUND)
