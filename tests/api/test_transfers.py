"""Transfers over HTTP: create, transfer-id idempotency, holds (capture, void, expiry), read."""

from __future__ import annotations

from typing import Any

import pytest

from api.support import NS, Api, ManualClock, assert_problem
from backends import AnyStore
from paycore.api.schemas import rfc3339
from paycore.errors import ErrorCode
from paycore.storage.base import ExpirePending


@pytest.fixture
def fund_amount() -> int:
    """These tests start with 1000 in the wallet (``funded`` in conftest.py)."""
    return 1000


async def test_create_transfer_returns_201_with_the_full_transfer(funded: Api) -> None:
    """A posted transfer comes back whole, with status posted and RFC 3339 created_at."""
    response = await funded.transfer("t1", "w", "shop", 250, code=3, metadata={"order": "o-1"})
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": "t1",
        "debit_account_id": "w",
        "credit_account_id": "shop",
        "amount": 250,
        "currency": "USD",
        "code": 3,
        "status": "posted",
        "pending_id": None,
        "flags": {
            "pending": False,
            "post_pending": False,
            "void_pending": False,
            "linked": False,
            "balancing": False,
        },
        "timeout_seconds": 0,
        "expires_at": None,
        "metadata": {"order": "o-1"},
        "timestamp": body["timestamp"],
        "created_at": rfc3339(body["timestamp"]),
    }
    assert (await funded.balance("w"))["available"] == 750
    assert (await funded.client.get("/v1/transfers/t1")).json() == body


async def test_same_transfer_id_and_fields_returns_the_original_with_200(funded: Api) -> None:
    """Retrying a transfer by id answers 200 with the first body and moves money once."""
    first = await funded.transfer("t1", "w", "shop", 100)
    again = await funded.transfer("t1", "w", "shop", 100)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (await funded.balance("w"))["available"] == 900


@pytest.mark.parametrize(
    "changed",
    [{"amount": 101}, {"credit_account_id": "bank"}, {"code": 9}, {"metadata": {"x": 1}},
     {"pending": True}],
)  # fmt: skip
async def test_same_transfer_id_with_other_fields_is_a_conflict(
    funded: Api, changed: dict[str, Any]
) -> None:
    """Reusing a transfer id with any field changed is 409 and changes nothing."""
    changed = dict(changed)  # the parameter is one dict shared by the runs of every backend
    await funded.ok_transfer("t1", "w", "shop", 100)
    fields: dict[str, Any] = {"debit": "w", "credit": "shop", "amount": 100}
    if "credit_account_id" in changed:
        fields["credit"] = changed.pop("credit_account_id")
    if "amount" in changed:
        fields["amount"] = changed.pop("amount")
    response = await funded.transfer("t1", **fields, **changed)
    assert_problem(response, ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS)
    assert (await funded.balance("w"))["available"] == 900


async def test_balancing_transfer_moves_at_most_what_is_available(funded: Api) -> None:
    """balancing=true caps the amount at the debit account's available balance."""
    body = await funded.ok_transfer("sweep", "w", "shop", 5000, balancing=True)
    assert body["amount"] == 1000
    assert body["flags"]["balancing"] is True
    assert (await funded.balance("w"))["available"] == 0


async def test_get_unknown_transfer_is_404(funded: Api) -> None:
    """Reading a transfer that does not exist is transfer_not_found."""
    assert_problem(await funded.client.get("/v1/transfers/nope"), ErrorCode.TRANSFER_NOT_FOUND)


# -- holds ---------------------------------------------------------------------------


async def test_pending_transfer_holds_funds_until_posted(funded: Api) -> None:
    """A hold reserves funds (available drops) and a full post turns it into a posted debit."""
    hold = await funded.ok_transfer("h1", "w", "shop", 300, pending=True, timeout_seconds=60)
    assert hold["status"] == "pending"
    assert hold["expires_at"] == rfc3339(hold["timestamp"] + 60 * NS)
    assert await funded.balance("w") == {
        "debits_posted": 0,
        "credits_posted": 1000,
        "debits_pending": 300,
        "credits_pending": 0,
        "available": 700,
    }
    response = await funded.client.post("/v1/transfers/h1/post", json={"id": "cap1"})
    assert response.status_code == 201
    capture = response.json()
    assert (capture["id"], capture["pending_id"], capture["amount"]) == ("cap1", "h1", 300)
    assert capture["flags"]["post_pending"] is True
    assert capture["status"] == "posted"
    assert (await funded.balance("w"))["debits_posted"] == 300
    assert (await funded.balance("w"))["debits_pending"] == 0
    assert (await funded.client.get("/v1/transfers/h1")).json()["status"] == "posted"


async def test_partial_capture_posts_part_and_releases_the_rest(funded: Api) -> None:
    """Posting with a smaller amount captures that amount; the remainder is available again."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True)
    response = await funded.client.post("/v1/transfers/h1/post", json={"amount": 120})
    assert response.status_code == 201
    assert response.json()["amount"] == 120
    assert await funded.balance("w") == {
        "debits_posted": 120,
        "credits_posted": 1000,
        "debits_pending": 0,
        "credits_pending": 0,
        "available": 880,
    }
    assert (await funded.balance("shop"))["credits_posted"] == 120


async def test_void_releases_the_hold(funded: Api) -> None:
    """Voiding a hold gives the funds back and marks the hold voided."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True)
    response = await funded.client.post("/v1/transfers/h1/void", json={"id": "v1"})
    assert response.status_code == 201
    assert response.json()["status"] == "voided"
    assert (await funded.balance("w"))["available"] == 1000
    assert (await funded.client.get("/v1/transfers/h1")).json()["status"] == "voided"


async def test_retried_capture_without_an_id_returns_the_first_capture(funded: Api) -> None:
    """/post without an id derives it from the hold, so a retry gets 200 and the same transfer."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True)
    first = await funded.client.post("/v1/transfers/h1/post", json={"amount": 100})
    again = await funded.client.post("/v1/transfers/h1/post", json={"amount": 100})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (await funded.balance("w"))["debits_posted"] == 100


async def test_void_after_post_is_already_posted(funded: Api) -> None:
    """A captured hold cannot be voided; the capture stands."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True)
    await funded.client.post("/v1/transfers/h1/post")
    response = await funded.client.post("/v1/transfers/h1/void")
    assert_problem(response, ErrorCode.PENDING_TRANSFER_ALREADY_POSTED)
    assert (await funded.balance("w"))["debits_posted"] == 300


async def test_expired_hold_cannot_be_posted_and_reads_expired(
    funded: Api, clock: ManualClock, store: AnyStore
) -> None:
    """Past its timeout a hold refuses capture, and once expired it reads expired, funds back."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True, timeout_seconds=30)
    clock.advance(31)
    response = await funded.client.post("/v1/transfers/h1/post")
    assert_problem(response, ErrorCode.PENDING_TRANSFER_EXPIRED)
    assert await store.execute(ExpirePending()) == ["h1"]
    assert (await funded.client.get("/v1/transfers/h1")).json()["status"] == "expired"
    assert (await funded.balance("w"))["available"] == 1000


async def test_post_body_is_optional_and_strict(funded: Api) -> None:
    """/post and /void accept no body, but refuse unknown fields or a bad amount."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True)
    for body in ({"amount": 0}, {"amount": "5"}, {"pending_id": "h2"}, {"id": "bad id"}):
        response = await funded.client.post("/v1/transfers/h1/post", json=body)
        assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert (await funded.client.get("/v1/transfers/h1")).json()["status"] == "pending"
    assert (await funded.client.post("/v1/transfers/h1/void")).status_code == 201


async def test_transfer_named_batch_is_readable(funded: Api) -> None:
    """ "batch" is a valid transfer id: GET /v1/transfers/batch reads it rather than a 405."""
    created = await funded.ok_transfer("batch", "w", "shop", 1)
    response = await funded.client.get("/v1/transfers/batch")
    assert response.status_code == 200
    assert response.json() == created


async def test_an_id_with_a_nul_byte_in_the_path_is_not_found(funded: Api) -> None:
    """A path id no row can have (a NUL byte, %00) answers 404 on every backend, never 500."""
    client = funded.client
    assert_problem(await client.get("/v1/transfers/t%00"), ErrorCode.TRANSFER_NOT_FOUND)
    assert_problem(await client.get("/v1/accounts/w%00"), ErrorCode.ACCOUNT_NOT_FOUND)
    assert_problem(await client.post("/v1/accounts/w%00/close"), ErrorCode.ACCOUNT_NOT_FOUND)
    response = await client.post("/v1/transfers/h%00/void")
    assert_problem(response, ErrorCode.PENDING_TRANSFER_NOT_FOUND)
    for read in ("transfers", "balances"):
        found = await client.get(f"/v1/accounts/w%00/{read}")
        assert_problem(found, ErrorCode.ACCOUNT_NOT_FOUND)


async def test_a_refused_transfer_resent_after_funding_gets_the_same_refusal(funded: Api) -> None:
    """The transfer id is an idempotency key, failures included: refused for lack of
    funds, resent unchanged once the wallet is funded, it is refused again (same problem),
    moves nothing, and is still not a transfer; with other fields it is a conflict."""
    first = await funded.transfer("t1", "w", "shop", 1_500)
    refused = assert_problem(first, ErrorCode.INSUFFICIENT_FUNDS)
    await funded.ok_transfer("fund-2", "bank", "w", 1_000)
    before = await funded.balances("w", "shop")
    again = await funded.transfer("t1", "w", "shop", 1_500)
    assert again.status_code == first.status_code
    assert again.json() == refused
    changed = await funded.transfer("t1", "w", "shop", 1_400)
    assert_problem(changed, ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS)
    assert await funded.balances("w", "shop") == before
    assert (await funded.client.get("/v1/transfers/t1")).status_code == 404
    assert (await funded.transfer("t2", "w", "shop", 1_500)).status_code == 201


@pytest.mark.parametrize("given_id", [True, False])
async def test_a_refused_capture_keeps_its_refusal(funded: Api, given_id: bool) -> None:
    """A capture refused for more than the hold keeps that answer under its id. Without an
    id in the body the capture's id is derived from the hold, so the refusal is kept under
    that one: a corrected capture then names an id of its own."""
    await funded.ok_transfer("h1", "w", "shop", 300, pending=True)
    body = {"id": "cap-1", "amount": 301} if given_id else {"amount": 301}
    first = await funded.client.post("/v1/transfers/h1/post", json=body)
    refused = assert_problem(first, ErrorCode.AMOUNT_EXCEEDS_PENDING_AMOUNT)
    again = await funded.client.post("/v1/transfers/h1/post", json=body)
    assert again.json() == refused
    corrected = await funded.client.post("/v1/transfers/h1/post", json={**body, "amount": 300})
    assert_problem(corrected, ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS)
    captured = await funded.client.post("/v1/transfers/h1/post", json={"id": "cap-2"})
    assert captured.status_code == 201
