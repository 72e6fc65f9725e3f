"""Accounts over HTTP: create, read, close, list transfers with cursors, balance history."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.support import NS, Api, ManualClock, assert_problem
from paycore.api.schemas import rfc3339
from paycore.errors import ErrorCode
from paycore.ledger.model import ID_PATTERN

RFC3339_NS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


async def test_create_account_returns_201_with_the_full_account(
    client: AsyncTestClient[Any], clock: ManualClock
) -> None:
    """A new account comes back whole: flags, metadata, timestamps and a zero balance."""
    response = await client.post(
        "/v1/accounts",
        json={
            "id": "alice",
            "currency": "EUR",
            "code": 7,
            "flags": {"no_overdraft": True, "history": True},
            "metadata": {"owner": "Alice", "tier": 2},
        },
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "id": "alice",
        "currency": "EUR",
        "code": 7,
        "flags": {"no_overdraft": True, "credit_limit": None, "history": True, "closed": False},
        "metadata": {"owner": "Alice", "tier": 2},
        "timestamp": body["timestamp"],
        "created_at": rfc3339(body["timestamp"]),
        "balance": {
            "debits_posted": 0,
            "credits_posted": 0,
            "debits_pending": 0,
            "credits_pending": 0,
            "available": 0,
        },
    }
    assert body["timestamp"] >= clock.now
    assert RFC3339_NS.fullmatch(body["created_at"])


async def test_account_without_id_gets_a_generated_one(client: AsyncTestClient[Any]) -> None:
    """Leaving out the id makes the server pick one in the id alphabet, readable afterwards."""
    response = await client.post("/v1/accounts", json={"currency": "USD"})
    assert response.status_code == 201
    account_id = response.json()["id"]
    assert re.match(ID_PATTERN, account_id)
    assert (await client.get(f"/v1/accounts/{account_id}")).json()["id"] == account_id


async def test_same_account_twice_returns_the_original_with_200(
    client: AsyncTestClient[Any],
) -> None:
    """Creating an existing account with identical fields is a no-op answered with 200."""
    body = {"id": "a", "currency": "USD", "flags": {"credit_limit": 50}, "metadata": {"k": 1}}
    first = await client.post("/v1/accounts", json=body)
    again = await client.post("/v1/accounts", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


@pytest.mark.parametrize(
    "changed",
    [{"currency": "EUR"}, {"code": 1}, {"flags": {"history": True}}, {"metadata": {"k": 2}}],
)
async def test_same_account_id_with_other_fields_is_a_conflict(
    client: AsyncTestClient[Any], changed: dict[str, Any]
) -> None:
    """An existing id with any field changed is 409 and the account stays as it was."""
    body = {"id": "a", "currency": "USD", "metadata": {"k": 1}}
    original = (await client.post("/v1/accounts", json=body)).json()
    response = await client.post("/v1/accounts", json={**body, **changed})
    assert_problem(response, ErrorCode.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS)
    assert (await client.get("/v1/accounts/a")).json() == original


async def test_account_balance_reflects_posted_and_pending(api: Api) -> None:
    """available = credits_posted - debits_posted - debits_pending, from the ledger counters."""
    await api.account("bank")
    await api.account("w")
    await api.account("shop")
    await api.ok_transfer("t1", "bank", "w", 1000)
    await api.ok_transfer("t2", "w", "shop", 300)
    await api.ok_transfer("h1", "w", "shop", 200, pending=True)
    assert await api.balance("w") == {
        "debits_posted": 300,
        "credits_posted": 1000,
        "debits_pending": 200,
        "credits_pending": 0,
        "available": 500,
    }
    assert (await api.balance("shop"))["credits_pending"] == 200


async def test_account_with_both_limits_is_refused(client: AsyncTestClient[Any]) -> None:
    """no_overdraft and credit_limit exclude each other: 422, and no account is created."""
    response = await client.post(
        "/v1/accounts",
        json={"id": "a", "currency": "USD", "flags": {"no_overdraft": True, "credit_limit": 5}},
    )
    assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert_problem(await client.get("/v1/accounts/a"), ErrorCode.ACCOUNT_NOT_FOUND)


async def test_close_account_marks_it_closed_and_refuses_new_transfers(api: Api) -> None:
    """A closed account shows flags.closed and new transfers to it fail with account_closed."""
    await api.account("bank")
    await api.account("w")
    await api.ok_transfer("t1", "bank", "w", 10)
    await api.ok_transfer("t2", "w", "bank", 10)
    response = await api.client.post("/v1/accounts/w/close")
    assert response.status_code == 200
    assert response.json()["flags"]["closed"] is True
    assert response.json()["balance"]["credits_posted"] == 10
    assert_problem(await api.transfer("t3", "bank", "w", 1), ErrorCode.ACCOUNT_CLOSED)
    assert (await api.client.post("/v1/accounts/w/close")).status_code == 200  # already closed


async def test_an_account_holding_money_is_not_closed(api: Api) -> None:
    """It used to close (200) and strand the money: every debit then account_closed."""
    await api.account("bank")
    await api.account("w", flags={"no_overdraft": True})
    await api.ok_transfer("t1", "bank", "w", 10)
    body: dict[str, object] | None
    for body in (None, {}):
        response = await api.client.post("/v1/accounts/w/close", json=body)
        problem = assert_problem(response, ErrorCode.ACCOUNT_HAS_BALANCE)
        assert (problem["status"], "holds 10 USD" in problem["detail"]) == (409, True)
    account = (await api.client.get("/v1/accounts/w")).json()
    assert account["flags"]["closed"] is False
    await api.ok_transfer("t2", "w", "bank", 10)  # the money can still leave


async def test_close_with_transfer_balance_to_moves_the_remainder_and_closes(api: Api) -> None:
    await api.account("bank")
    await api.account("w", flags={"no_overdraft": True})
    await api.account("savings")
    await api.ok_transfer("t1", "bank", "w", 25)
    body = {"transfer_balance_to": "savings"}
    response = await api.client.post("/v1/accounts/w/close", json=body)
    assert response.status_code == 200, response.text
    closed = response.json()
    assert closed["flags"]["closed"] is True
    assert closed["balance"]["available"] == 0
    assert (closed["balance"]["debits_posted"], closed["balance"]["credits_posted"]) == (25, 25)
    savings = (await api.client.get("/v1/accounts/savings")).json()
    assert savings["balance"]["available"] == 25
    page = (await api.client.get("/v1/accounts/savings/transfers")).json()
    (moved,) = page["data"]
    assert (moved["debit_account_id"], moved["amount"], moved["status"]) == ("w", 25, "posted")
    assert moved["id"].startswith("close_")
    again = await api.client.post("/v1/accounts/w/close", json=body)
    assert (again.status_code, again.json()) == (200, closed)
    assert (await api.client.get("/v1/accounts/savings")).json()["balance"]["available"] == 25


async def _close_a_debt(shards: int, funds: int) -> list[tuple[int, Any]]:
    """Over HTTP, on 2 embedded shards: ``d`` (on shard-0) owes 40 and closes, ``p`` (on
    shard-0 or shard-1) paying its debt from ``funds``; then the same close again. Each
    answer's status and body, ids and timestamps aside."""
    import tempfile

    from paycore.api import create_app
    from paycore.cluster.topology import build_store
    from paycore.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp, embedded_shards=2, auth="open")
        store = build_store(settings)
        d, lender = [f"d{i}" for i in range(99) if store.shard_for(f"d{i}") == "shard-0"][:2]
        payer_shard = "shard-1" if shards == 2 else "shard-0"
        p = next(f"p{i}" for i in range(99) if store.shard_for(f"p{i}") == payer_shard)
        async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as c:
            api = Api(c)
            for account in (d, lender):
                await api.account(account)
            await api.account(p, flags={"no_overdraft": True})
            await api.ok_transfer("debt", d, lender, 40)
            if funds:
                await api.ok_transfer("fund", lender, p, funds)
            out = []
            for _ in range(2):
                response = await c.post(f"/v1/accounts/{d}/close", json={"transfer_balance_to": p})
                body = response.json()
                for key in ("id", "timestamp", "created_at", "instance"):
                    body.pop(key, None)
                if "detail" in body:
                    body["detail"] = body["detail"].replace(p, "P")
                out.append((response.status_code, body))
            balance = (await c.get(f"/v1/accounts/{p}")).json()["balance"]
            out.append((200, balance))
            return out


@pytest.mark.parametrize("funds", [100, 10])
async def test_a_debt_paid_from_another_shard_answers_as_on_one_shard(funds: int) -> None:
    """A close whose debt an account on another shard pays answers exactly as when both
    live on one shard: 200 with the closed account (then 200 again, nothing moved), or
    the payer's insufficient_funds with nothing changed."""
    across, one = await _close_a_debt(2, funds), await _close_a_debt(1, funds)
    assert across == one
    assert [status for status, _ in one[:2]] == ([200, 200] if funds == 100 else [409, 409])


async def test_close_with_a_target_that_cannot_take_it_changes_nothing(api: Api) -> None:
    await api.account("bank")
    await api.account("w", flags={"no_overdraft": True})
    await api.account("eur", "EUR")
    await api.ok_transfer("t1", "bank", "w", 25)
    response = await api.client.post("/v1/accounts/w/close", json={"transfer_balance_to": "eur"})
    assert_problem(response, ErrorCode.CURRENCY_MISMATCH)
    response = await api.client.post("/v1/accounts/w/close", json={"transfer_balance_to": "x y"})
    assert_problem(response, ErrorCode.INVALID_REQUEST)  # not an id at all
    account = (await api.client.get("/v1/accounts/w")).json()
    assert (account["flags"]["closed"], account["balance"]["available"]) == (False, 25)


async def test_close_refuses_an_unexpected_body(api: Api) -> None:
    """Close takes only transfer_balance_to: another field is 422 and the account stays open."""
    await api.account("w")
    response = await api.client.post("/v1/accounts/w/close", json={"force": True})
    assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert (await api.client.get("/v1/accounts/w")).json()["flags"]["closed"] is False


# -- account transfers ---------------------------------------------------------------


async def _ledger_with_transfers(api: Api, count: int) -> list[str]:
    await api.account("bank")
    await api.account("w")
    await api.account("other")
    ids = []
    for i in range(count):
        transfer_id = f"t{i:03d}"
        if i % 3 == 2:
            await api.ok_transfer(transfer_id, "w", "other", 1)
        else:
            await api.ok_transfer(transfer_id, "bank", "w", 10)
        ids.append(transfer_id)
    await api.ok_transfer("unrelated", "bank", "other", 5)
    return ids


async def _all_pages(
    client: AsyncTestClient[Any], url: str, limit: int, **query: str
) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **query}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(url, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([t["id"] for t in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str)


async def test_account_transfers_pages_through_every_transfer_in_order(api: Api) -> None:
    """Following next_cursor visits each transfer of the account once, oldest first."""
    ids = await _ledger_with_transfers(api, 25)
    pages = await _all_pages(api.client, "/v1/accounts/w/transfers", limit=10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for page in pages for i in page] == ids


async def test_account_transfers_descending_and_by_side(api: Api) -> None:
    """order=desc gives newest first; side=debits/credits keeps one side of the account."""
    ids = await _ledger_with_transfers(api, 9)
    desc = await _all_pages(api.client, "/v1/accounts/w/transfers", limit=4, order="desc")
    assert [i for page in desc for i in page] == ids[::-1]
    debits = (await api.client.get("/v1/accounts/w/transfers?side=debits")).json()["data"]
    credits = (await api.client.get("/v1/accounts/w/transfers?side=credits")).json()["data"]
    assert [t["id"] for t in debits] == [i for n, i in enumerate(ids) if n % 3 == 2]
    assert [t["id"] for t in credits] == [i for n, i in enumerate(ids) if n % 3 != 2]
    assert all(t["debit_account_id"] == "w" for t in debits)


async def test_account_transfers_shows_current_status_of_holds(api: Api) -> None:
    """A listed hold carries its status now (posted after capture), not the one at creation."""
    await api.account("bank")
    await api.account("w")
    await api.ok_transfer("h1", "bank", "w", 10, pending=True)
    await api.client.post("/v1/transfers/h1/post", json={"id": "p1"})
    data = (await api.client.get("/v1/accounts/w/transfers")).json()["data"]
    assert [(t["id"], t["status"]) for t in data] == [("h1", "posted"), ("p1", "posted")]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=abc", "cursor=abc", "cursor=-1", "cursor=" + "9" * 30,
     "order=up", "side=left"],
)  # fmt: skip
async def test_account_transfers_refuses_bad_query(api: Api, query: str) -> None:
    """Out-of-range limits, foreign cursors and unknown order/side values are 422."""
    await api.account("w")
    assert_problem(
        await api.client.get(f"/v1/accounts/w/transfers?{query}"), ErrorCode.INVALID_REQUEST
    )


async def test_account_transfers_of_unknown_account_is_404(client: AsyncTestClient[Any]) -> None:
    """Listing the transfers of an account that does not exist is account_not_found."""
    assert_problem(await client.get("/v1/accounts/ghost/transfers"), ErrorCode.ACCOUNT_NOT_FOUND)


# -- balance history ----------------------------------------------------------------


async def test_balance_history_lists_a_snapshot_per_transfer(api: Api, clock: ManualClock) -> None:
    """A history account has one balance per transfer, paged by cursor, oldest first."""
    await api.account("bank")
    await api.account("w", flags={"history": True})
    for i in range(5):
        clock.advance(1)
        await api.ok_transfer(f"t{i}", "bank", "w", 10)
    first = (await api.client.get("/v1/accounts/w/balances?limit=3")).json()
    assert [r["credits_posted"] for r in first["data"]] == [10, 20, 30]
    rest = (
        await api.client.get(f"/v1/accounts/w/balances?limit=3&cursor={first['next_cursor']}")
    ).json()
    assert [r["credits_posted"] for r in rest["data"]] == [40, 50]
    assert rest["next_cursor"] is None
    record = rest["data"][-1]
    assert record["available"] == 50
    assert record["recorded_at"] == rfc3339(record["timestamp"])


async def test_balance_at_a_time_is_the_one_in_force_then(api: Api, clock: ManualClock) -> None:
    """?at= gives the balance after the last transfer at or before that time."""
    await api.account("bank")
    await api.account("w", flags={"history": True})
    created = clock.now
    clock.advance(10)
    await api.ok_transfer("t1", "bank", "w", 10)
    clock.advance(10)
    await api.ok_transfer("t2", "bank", "w", 5)

    async def at(ns: int) -> list[dict[str, Any]]:
        response = await api.client.get("/v1/accounts/w/balances", params={"at": rfc3339(ns)})
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    assert [r["credits_posted"] for r in await at(created + 15 * NS)] == [10]
    assert [r["credits_posted"] for r in await at(clock.now + NS)] == [15]
    assert [r["credits_posted"] for r in await at(created + 5 * NS)] == [0]  # opening balance
    assert await at(created - 3600 * NS) == []  # the account did not exist yet


@pytest.mark.parametrize(
    "at", ["yesterday", "2024-13-01T00:00:00Z", "2024-01-01T00:00:00", "2024-02-30T00:00:00Z"]
)
async def test_balance_at_refuses_a_bad_time(api: Api, at: str) -> None:
    """?at= must be an RFC 3339 date-time with an offset."""
    await api.account("w", flags={"history": True})
    response = await api.client.get("/v1/accounts/w/balances", params={"at": at})
    assert_problem(response, ErrorCode.INVALID_REQUEST)


async def test_balance_at_accepts_offsets_and_far_dates(api: Api) -> None:
    """Any UTC offset and dates far in the future are read without error."""
    await api.account("w", flags={"history": True})
    for at in ["9999-12-31T23:59:59.999999999Z", "2030-01-01T01:00:00+01:00"]:
        response = await api.client.get("/v1/accounts/w/balances", params={"at": at})
        assert response.status_code == 200, response.text


async def test_balances_of_an_account_without_history_is_refused(api: Api) -> None:
    """An account created without flags.history has no balance history: 422."""
    await api.account("w")
    response = await api.client.get("/v1/accounts/w/balances")
    body = assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert "history" in body["detail"]


async def test_balances_of_unknown_account_is_404(client: AsyncTestClient[Any]) -> None:
    """Balance history of a missing account is account_not_found."""
    assert_problem(await client.get("/v1/accounts/ghost/balances"), ErrorCode.ACCOUNT_NOT_FOUND)
