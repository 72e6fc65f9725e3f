"""The OpenAPI document lists every problem code each operation may answer, from one
table (``paycore.api.problem_codes``) that covers every ErrorCode; the scenarios of
``test_error_codes`` check over HTTP that a code met on an operation is declared for it."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.support import operation_of
from paycore.api.problem_codes import (
    BATCH_ITEM_CODES,
    OPERATION_CODES,
    UNROUTED_CODES,
    WORKER_ONLY_CODES,
)
from paycore.errors import ERROR_SPECS, ErrorCode

PROBLEM = "application/problem+json"


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_every_error_code_is_declared_somewhere() -> None:
    """Walking ErrorCode: each code is declared for an operation (or a batch item), or
    named as answered outside any operation (no route) or to workers only."""
    declared = set().union(*OPERATION_CODES.values(), BATCH_ITEM_CODES)
    missing = set(ErrorCode) - declared - UNROUTED_CODES - WORKER_ONLY_CODES
    assert not missing, sorted(missing)
    assert not WORKER_ONLY_CODES & declared


async def test_the_table_names_exactly_the_documented_operations(
    document: dict[str, Any],
) -> None:
    """No operation of the document lacks its codes, and the table names no other."""
    assert set(_operations(document)) == set(OPERATION_CODES)


async def test_each_operation_lists_its_codes_by_status_with_examples(
    document: dict[str, Any],
) -> None:
    """An operation answers each error status with the problem schema; the status's
    ``x-problem-codes``, description and examples name exactly the table's codes."""
    for name, operation in _operations(document).items():
        codes = OPERATION_CODES[name]
        responses = operation["responses"]
        assert "default" in responses, name
        by_status: dict[int, set[str]] = {}
        for code in codes:
            by_status.setdefault(ERROR_SPECS[code].status, set()).add(code.value)
        for status, expected in by_status.items():
            response = responses[str(status)]
            if PROBLEM not in response["content"]:  # /readyz keeps its own 503 body
                assert name == "GET /readyz", name
                continue
            assert set(response["x-problem-codes"]) == expected, (name, status)
            media = response["content"][PROBLEM]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
            assert set(media["examples"]) == expected, (name, status)
            for value in expected:
                assert f"`{value}`" in response["description"], (name, value)
                example = media["examples"][value]["value"]
                assert example["code"] == value
                assert example["status"] == status
                assert example["type"].endswith("/" + value)
        documented_errors = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
        assert documented_errors - set(by_status) <= ({503} if name == "GET /readyz" else set())


async def test_the_batch_names_its_items_codes(document: dict[str, Any]) -> None:
    """A batch answers 200 with an error per refused item: its 200 names those codes."""
    ok = document["paths"]["/v1/transfers/batch"]["post"]["responses"]["200"]
    assert set(ok["x-problem-codes"]) == {code.value for code in BATCH_ITEM_CODES}
    assert "`linked_event_failed`" in ok["description"]


async def test_retryable_statuses_declare_retry_after(document: dict[str, Any]) -> None:
    """A 429 or 503 problem says it comes with Retry-After."""
    for name, operation in _operations(document).items():
        for status in ("429", "503"):
            response = operation["responses"].get(status)
            if response is not None and PROBLEM in response.get("content", {}):
                assert "Retry-After" in response["headers"], (name, status)


def test_a_request_is_matched_to_its_operation() -> None:
    """The helper the scenarios use maps a concrete path to its template, literals first."""
    assert operation_of("POST", "/v1/transfers/batch") == "POST /v1/transfers/batch"
    assert operation_of("POST", "/v1/transfers/t1/post") == "POST /v1/transfers/{transfer_id}/post"
    assert operation_of("DELETE", "/v1/accounts/a") is None
    assert operation_of("GET", "/v1/nothing-here") is None


_TEXT = {"content-type": "text/plain"}
# More answers met over HTTP, beyond one scenario per code: (method, path, body or None,
# headers, the code). Each must be declared for the operation that answered it.
MORE_ANSWERS: list[tuple[str, str, bytes | None, dict[str, str], ErrorCode]] = [
    ("GET", "/v1/transfers?limit=0", None, {}, ErrorCode.INVALID_REQUEST),
    ("GET", "/v1/transfers?account_id=ghost", None, {}, ErrorCode.ACCOUNT_NOT_FOUND),
    ("GET", "/v1/accounts?cursor=nonsense", None, {}, ErrorCode.INVALID_REQUEST),
    ("GET", "/v1/accounts/ghost/transfers", None, {}, ErrorCode.ACCOUNT_NOT_FOUND),
    ("GET", "/v1/accounts/ghost/balances", None, {}, ErrorCode.ACCOUNT_NOT_FOUND),
    ("GET", "/v1/payments?merchant_account_id=ghost", None, {}, ErrorCode.ACCOUNT_NOT_FOUND),
    ("GET", "/v1/payouts?wallet_account_id=ghost", None, {}, ErrorCode.ACCOUNT_NOT_FOUND),
    ("GET", "/v1/refunds?payment_id=pay_ghost", None, {}, ErrorCode.PAYMENT_NOT_FOUND),
    ("POST", "/v1/accounts", b"{}", _TEXT, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    ("POST", "/v1/transfers/ghost/void", b"{}", {}, ErrorCode.PENDING_TRANSFER_NOT_FOUND),
    ("POST", "/v1/transfers/batch", b'{"transfers": 1}', {}, ErrorCode.INVALID_REQUEST),
    ("POST", "/v1/api_keys", b'{"scopes": []}', {}, ErrorCode.INVALID_REQUEST),
    ("POST", "/v1/api_keys/0123456789abcdef/rotate", b"{}", {}, ErrorCode.API_KEY_NOT_FOUND),
    ("DELETE", "/v1/api_keys/0123456789abcdef", None, {}, ErrorCode.API_KEY_NOT_FOUND),
    (
        "DELETE",
        "/v1/webhook_endpoints/we_000000000000000000000000",
        None,
        {},
        ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND,
    ),
    (
        "POST",
        "/v1/webhook_endpoints/we_000000000000000000000000/test",
        b"{}",
        {},
        ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND,
    ),
    (
        "GET",
        "/v1/webhook_endpoints/we_000000000000000000000000/deliveries",
        None,
        {},
        ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND,
    ),
    ("POST", "/v1/payments/pay_ghost/cancel", b"{}", {}, ErrorCode.PAYMENT_NOT_FOUND),
    ("POST", "/v1/processor_events/nobody", b"{}", {}, ErrorCode.NOT_FOUND),
]


Answer = tuple[str, str, bytes | None, dict[str, str], ErrorCode]


@pytest.mark.parametrize(
    "answer", MORE_ANSWERS, ids=[f"{m} {p} {c.value}" for m, p, _, _, c in MORE_ANSWERS]
)
async def test_answers_met_over_http_are_declared_for_their_operation(
    client: AsyncTestClient[Any], answer: Answer
) -> None:
    """The code a request meets is the one expected, and the document declares it for
    the operation that answered."""
    method, path, body, headers, code = answer
    sent = {"content-type": "application/json", **headers} if body is not None else headers
    response = await client.request(method, path, content=body, headers=sent)
    assert response.json()["code"] == code.value, response.text
    assert response.status_code == ERROR_SPECS[code].status
    operation = operation_of(method, path.split("?", maxsplit=1)[0])
    assert operation is not None, path
    assert code in OPERATION_CODES[operation], operation
