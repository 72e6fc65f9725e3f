"""Helpers for the API tests: a hand-driven clock and a thin client for common calls."""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from clocks import NS, ManualClock
from paycore.api.problem_codes import OPERATION_CODES
from paycore.errors import ERROR_SPECS, ErrorCode

__all__ = [
    "NS",
    "Api",
    "ManualClock",
    "asgi_transport",
    "assert_problem",
    "operation_of",
    "resolve_refs",
]


def asgi_transport(app: Litestar) -> httpx.ASGITransport:
    """An httpx transport that calls ``app`` in this event loop (no portal thread)."""
    # Litestar's ASGI types and httpx's describe the same callable differently.
    return httpx.ASGITransport(app=app)  # type: ignore[arg-type]


def resolve_refs(node: Any, document: dict[str, Any]) -> Any:
    """``node`` of the OpenAPI ``document`` with every local ``$ref`` replaced by what
    it points at (the API's types are not recursive, so this ends)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = document
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            return resolve_refs(target, document)
        return {key: resolve_refs(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve_refs(value, document) for value in node]
    return node


def operation_of(method: str, path: str) -> str | None:
    """The operation of ``paycore.api.problem_codes`` (``"POST /v1/transfers/{transfer_id}/post"``)
    that a request to ``method path`` reaches, or None: no route takes it. A literal
    segment wins over a path parameter, as in the router (``/v1/transfers/batch``)."""
    segments = path.rstrip("/").split("/")
    found: list[tuple[int, str]] = []
    for operation in OPERATION_CODES:
        verb, template = operation.split(" ", 1)
        parts = template.split("/")
        if verb != method.upper() or len(parts) != len(segments):
            continue
        if all(
            p == s or (p.startswith("{") and p.endswith("}"))
            for p, s in zip(parts, segments, strict=True)
        ):
            found.append((sum(p.startswith("{") for p in parts), operation))
    return min(found)[1] if found else None


def assert_problem(response: httpx.Response, code: ErrorCode) -> dict[str, Any]:
    """``response`` is the problem+json for ``code``, with the status its spec gives."""
    spec = ERROR_SPECS[code]
    assert response.status_code == spec.status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code.value
    assert body["status"] == spec.status
    assert body["title"] == spec.title
    assert body["type"] == f"https://paycore.dev/problems/{code.value}"
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


class Api:
    """The calls most tests make, over an in-process client."""

    def __init__(self, client: AsyncTestClient[Any]) -> None:
        self.client = client

    async def account(self, account_id: str, currency: str = "USD", **fields: Any) -> None:
        response = await self.client.post(
            "/v1/accounts", json={"id": account_id, "currency": currency, **fields}
        )
        assert response.status_code == 201, response.text

    async def transfer(
        self,
        transfer_id: str,
        debit: str,
        credit: str,
        amount: int,
        currency: str = "USD",
        **fields: Any,
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/transfers",
            json={
                "id": transfer_id,
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": amount,
                "currency": currency,
                **fields,
            },
        )

    async def ok_transfer(
        self, transfer_id: str, debit: str, credit: str, amount: int, **fields: Any
    ) -> dict[str, Any]:
        response = await self.transfer(transfer_id, debit, credit, amount, **fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def balance(self, account_id: str) -> dict[str, int]:
        response = await self.client.get(f"/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        balance: dict[str, int] = response.json()["balance"]
        return balance

    async def balances(self, *account_ids: str) -> list[dict[str, int]]:
        return [await self.balance(a) for a in account_ids]
