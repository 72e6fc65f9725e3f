"""Idempotency-Key on every POST: replays, reuse with another body, errors replayed verbatim."""

from __future__ import annotations

from typing import Any

import pytest

from api.support import Api, assert_problem
from backends import AnyStore
from paycore.errors import ErrorCode, UnavailableError


def transfer_body(transfer_id: str = "t1", amount: int = 30, **fields: Any) -> dict[str, Any]:
    return {
        "id": transfer_id,
        "debit_account_id": "w",
        "credit_account_id": "shop",
        "amount": amount,
        "currency": "USD",
        **fields,
    }


def key(value: str = "key-1") -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_replay_returns_the_first_answer_with_the_replayed_header(funded: Api) -> None:
    """The same key and body answer with the first status and body, marked replayed."""
    first = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    again = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert (await funded.balance("w"))["available"] == 70


async def test_replay_ignores_key_order_and_spelled_out_defaults(funded: Api) -> None:
    """A retry whose JSON differs only in key order or explicit defaults is the same request."""
    first = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    reordered = dict(reversed(list(transfer_body(pending=False, code=0).items())))
    again = await funded.client.post("/v1/transfers", json=reordered, headers=key())
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


async def test_key_reused_with_another_body_is_refused(funded: Api) -> None:
    """The same key with a different body is 409 idempotency_key_reused and changes nothing."""
    await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    response = await funded.client.post(
        "/v1/transfers", json=transfer_body("t2", 10), headers=key()
    )
    assert_problem(response, ErrorCode.IDEMPOTENCY_KEY_REUSED)
    assert_problem(await funded.client.get("/v1/transfers/t2"), ErrorCode.TRANSFER_NOT_FOUND)
    assert (await funded.balance("w"))["available"] == 70


async def test_key_reused_on_another_path_is_refused(funded: Api) -> None:
    """The path is part of the request: one key cannot serve two endpoints."""
    await funded.client.post("/v1/transfers", json=transfer_body(pending=True), headers=key())
    response = await funded.client.post("/v1/transfers/t1/void", headers=key())
    assert_problem(response, ErrorCode.IDEMPOTENCY_KEY_REUSED)
    assert (await funded.client.get("/v1/transfers/t1")).json()["status"] == "pending"


async def test_failed_request_is_replayed_identically(funded: Api) -> None:
    """A refused transfer's problem is stored: a retry gets it again even after funds arrive."""
    first = await funded.client.post("/v1/transfers", json=transfer_body(amount=500), headers=key())
    assert_problem(first, ErrorCode.INSUFFICIENT_FUNDS)
    await funded.ok_transfer("topup", "bank", "w", 1000)
    again = await funded.client.post("/v1/transfers", json=transfer_body(amount=500), headers=key())
    assert again.status_code == 409
    assert again.content == first.content
    assert again.headers["content-type"] == "application/problem+json"
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(await funded.client.get("/v1/transfers/t1"), ErrorCode.TRANSFER_NOT_FOUND)


async def test_keys_are_independent(funded: Api) -> None:
    """Two keys are two requests: the second one meets the transfer id's own idempotency."""
    first = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key("k1"))
    second = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key("k2"))
    assert (first.status_code, second.status_code) == (201, 200)
    assert "idempotent-replayed" not in second.headers
    assert second.json() == first.json()


async def test_account_creation_without_id_replays_the_generated_id(api: Api) -> None:
    """Under a key, retrying an id-less account creation returns the same account, not a second."""
    body = {"currency": "USD"}
    first = await api.client.post("/v1/accounts", json=body, headers=key())
    again = await api.client.post("/v1/accounts", json=body, headers=key())
    assert first.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"


async def test_every_post_endpoint_replays(funded: Api) -> None:
    """Batch, post, void and close all honour the key."""
    client = funded.client
    await funded.ok_transfer("h1", "w", "shop", 10, pending=True)
    await funded.ok_transfer("h2", "w", "shop", 10, pending=True)
    await funded.account("spare")
    calls: list[tuple[str, dict[str, Any] | None]] = [
        ("/v1/transfers/batch", {"transfers": [transfer_body("b1", 1)]}),
        ("/v1/transfers/h1/post", {"amount": 5}),
        ("/v1/transfers/h2/void", None),
        ("/v1/accounts/spare/close", None),
        ("/v1/accounts", {"id": "new", "currency": "EUR"}),
    ]
    for n, (path, body) in enumerate(calls):
        first = await client.post(path, json=body, headers=key(f"k{n}"))
        again = await client.post(path, json=body, headers=key(f"k{n}"))
        assert first.status_code in (200, 201), (path, first.text)
        assert (again.status_code, again.content) == (first.status_code, first.content), path
        assert again.headers["idempotent-replayed"] == "true", path


@pytest.mark.parametrize("bad_key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_malformed_key_is_refused(funded: Api, bad_key: str) -> None:
    """Keys are 1-255 printable ASCII characters; anything else is 422 and changes nothing."""
    headers = {b"Idempotency-Key": bad_key.encode()}
    response = await funded.client.post("/v1/transfers", json=transfer_body(), headers=headers)
    assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert (await funded.balance("w"))["available"] == 100


async def test_longest_key_is_accepted(funded: Api) -> None:
    """A 255-character key is valid."""
    response = await funded.client.post(
        "/v1/transfers", json=transfer_body(), headers=key("k" * 255)
    )
    assert response.status_code == 201


async def test_invalid_body_is_not_stored_under_the_key(funded: Api) -> None:
    """A body refused by validation stores nothing, so the corrected body may use the key."""
    bad = await funded.client.post("/v1/transfers", json=transfer_body(amount=-5), headers=key())
    assert_problem(bad, ErrorCode.INVALID_REQUEST)
    good = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    assert good.status_code == 201
    assert "idempotent-replayed" not in good.headers


async def test_key_is_released_when_the_store_fails(
    funded: Api, store: AnyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 under a key stores nothing and frees the key, so the retry runs and succeeds."""
    execute_idempotent = store.execute_idempotent

    async def down(command: Any, idempotency: Any) -> Any:
        raise UnavailableError("shard shard-0: disk I/O error")

    monkeypatch.setattr(store, "execute_idempotent", down)
    failed = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    assert_problem(failed, ErrorCode.STORE_UNAVAILABLE)
    monkeypatch.setattr(store, "execute_idempotent", execute_idempotent)
    retried = await funded.client.post("/v1/transfers", json=transfer_body(), headers=key())
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
