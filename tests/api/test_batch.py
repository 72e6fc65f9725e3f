"""POST /v1/transfers/batch: a result per item in order, linked chains atomic, size limits."""

from __future__ import annotations

from typing import Any

import pytest

from api.support import Api, assert_problem
from paycore.errors import ErrorCode


def item(transfer_id: str, debit: str, credit: str, amount: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": transfer_id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        **fields,
    }


async def batch(api: Api, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await api.client.post("/v1/transfers/batch", json={"transfers": items})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def test_batch_returns_one_result_per_item_in_order(funded: Api) -> None:
    """Each item gets {id, status} or {id, error: {code, detail}}, in request order."""
    results = await batch(
        funded,
        [
            item("t1", "w", "shop", 30),
            item("t2", "w", "shop", 500),  # more than w has
            item("h1", "w", "shop", 20, pending=True),
            item("t3", "w", "ghost", 1),
        ],
    )
    assert results[0] == {"id": "t1", "status": "posted"}
    assert results[1]["id"] == "t2"
    assert results[1]["error"]["code"] == "insufficient_funds"
    assert results[1]["error"]["detail"]
    assert results[2] == {"id": "h1", "status": "pending"}
    assert results[3]["error"]["code"] == "account_not_found"
    assert (await funded.balance("w"))["available"] == 50


async def test_batch_items_see_earlier_items(funded: Api) -> None:
    """A later item may post or void a hold created earlier in the same batch."""
    results = await batch(
        funded,
        [
            item("h1", "w", "shop", 40, pending=True),
            {"id": "p1", "post_pending": True, "pending_id": "h1", "amount": 15},
            item("h2", "w", "shop", 10, pending=True),
            {"id": "v2", "void_pending": True, "pending_id": "h2"},
        ],
    )
    assert [r.get("status") for r in results] == ["pending", "posted", "pending", "voided"]
    assert await funded.balance("w") == {
        "debits_posted": 15,
        "credits_posted": 100,
        "debits_pending": 0,
        "credits_pending": 0,
        "available": 85,
    }


async def test_linked_chain_fails_as_one(funded: Api) -> None:
    """When one item of a linked chain fails, every item fails and no balance moves."""
    before = await funded.balances("w", "shop", "bank")
    results = await batch(
        funded,
        [
            item("t1", "w", "shop", 60, linked=True),
            item("t2", "bank", "w", 5, linked=True),
            item("t3", "w", "shop", 60),  # 60 + 60 > 100 + 5: breaks the chain
            item("t4", "bank", "shop", 1),  # outside the chain: applied
        ],
    )
    codes = [r.get("error", {}).get("code") for r in results]
    assert codes == ["linked_event_failed", "linked_event_failed", "insufficient_funds", None]
    after = await funded.balances("w", "shop", "bank")
    assert after[0] == before[0]
    assert after[1]["credits_posted"] == before[1]["credits_posted"] + 1
    for transfer_id in ("t1", "t2", "t3"):
        response = await funded.client.get(f"/v1/transfers/{transfer_id}")
        assert_problem(response, ErrorCode.TRANSFER_NOT_FOUND)


async def test_linked_chain_succeeds_as_one(funded: Api) -> None:
    """A linked chain whose items all pass is applied whole."""
    results = await batch(
        funded,
        [item("t1", "w", "shop", 60, linked=True), item("t2", "shop", "bank", 60)],
    )
    assert results == [{"id": "t1", "status": "posted"}, {"id": "t2", "status": "posted"}]
    assert (await funded.balance("bank"))["credits_posted"] == 60


async def test_chain_left_open_fails_every_item_of_it(funded: Api) -> None:
    """A batch ending inside a linked chain fails the chain with linked_event_chain_open."""
    results = await batch(
        funded,
        [item("t0", "bank", "w", 1), item("t1", "w", "shop", 1, linked=True)],
    )
    assert results[0] == {"id": "t0", "status": "posted"}
    assert results[1]["error"]["code"] == "linked_event_chain_open"


async def test_batch_at_the_size_limit_is_accepted(funded: Api) -> None:
    """Exactly max_batch_size items (8189) are applied in one call."""
    items = [item(f"t{i}", "bank", "shop", 1) for i in range(8189)]
    results = await batch(funded, items)
    assert len(results) == 8189
    assert all(r.get("status") == "posted" for r in results)
    assert (await funded.balance("shop"))["credits_posted"] == 8189


async def test_batch_over_the_size_limit_changes_nothing(funded: Api) -> None:
    """One item more than max_batch_size is 422 batch_too_large and nothing is applied."""
    before = await funded.balances("bank", "shop")
    items = [item(f"t{i}", "bank", "shop", 1) for i in range(8190)]
    response = await funded.client.post("/v1/transfers/batch", json={"transfers": items})
    assert_problem(response, ErrorCode.BATCH_TOO_LARGE)
    assert await funded.balances("bank", "shop") == before


@pytest.mark.parametrize(
    "body",
    [
        {"transfers": []},
        {},
        {"transfers": "t1"},
        {"transfers": [item("t1", "bank", "shop", 1)], "atomic": True},
    ],
)
async def test_malformed_batch_is_invalid_request(funded: Api, body: dict[str, Any]) -> None:
    """An empty, missing or mistyped transfers list, or an unknown field, is 422."""
    response = await funded.client.post("/v1/transfers/batch", json=body)
    assert_problem(response, ErrorCode.INVALID_REQUEST)


async def test_one_bad_item_rejects_the_whole_batch(funded: Api) -> None:
    """A malformed item (a float amount) refuses the batch before any item is applied."""
    before = await funded.balances("bank", "shop")
    items = [item("t1", "bank", "shop", 1), item("t2", "bank", "shop", 1.5)]  # type: ignore[arg-type]
    response = await funded.client.post("/v1/transfers/batch", json={"transfers": items})
    body = assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert "$.transfers[1].amount" in body["detail"]
    assert await funded.balances("bank", "shop") == before


async def test_unknown_currency_in_a_batch_item_is_refused(funded: Api) -> None:
    """Each item's currency must be a known ISO 4217 code."""
    items = [item("t1", "bank", "shop", 1, currency="XYZ")]
    response = await funded.client.post("/v1/transfers/batch", json={"transfers": items})
    body = assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert "XYZ" in body["detail"]


async def test_refused_items_resent_after_funding_get_the_same_refusals(funded: Api) -> None:
    """A batch resent once the wallet is funded: each refused item (a linked chain's too)
    gets its first answer again, nothing moves; accepted items answer as they were."""
    items = [
        item("t1", "w", "shop", 500),  # more than w has
        item("t2", "w", "shop", 30),
        item("c1", "w", "shop", 10, linked=True),  # a chain failing at its last item
        item("c2", "w", "shop", 300),
    ]
    first = await batch(funded, items)
    assert [r.get("error", {}).get("code") for r in first] == [
        "insufficient_funds",
        None,
        "linked_event_failed",
        "insufficient_funds",
    ]
    await funded.ok_transfer("fund-2", "bank", "w", 10_000)
    before = await funded.balances("w", "shop")
    assert await batch(funded, items) == first
    assert await funded.balances("w", "shop") == before
    changed = await batch(funded, [item("t1", "w", "shop", 400)])
    assert changed[0]["error"]["code"] == "transfer_exists_with_different_fields"
