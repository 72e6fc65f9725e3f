"""The list endpoints (issue 18, item 2): ``GET /v1/accounts``, ``/v1/transfers``,
``/v1/payments``, ``/v1/refunds``, ``/v1/payouts``. Pages walked with any size, either
order, visit every selected object exactly once, in (time, id) order, each item as a
read of its id shows it; filters select what they say; a tenant lists only its own,
never paycore's own; a bad query is a 422 that names the parameter. Each test runs on
one store (SQLite, PostgreSQL) and on the embedded default (four SQLite shards behind
the router), where transfers cross shards.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.support import assert_problem
from backends import PostgresDatabase
from paycore.api import create_app
from paycore.api.auth import ApiKeys, Scope
from paycore.api.schemas import rfc3339
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.errors import ErrorCode
from paycore.storage.sqlite import SQLiteStore
from paycore.storage.store import Store

ALL = frozenset({Scope.READ, Scope.WRITE})
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@dataclass
class Caller:
    """A client of one tenant."""

    name: str
    client: AsyncTestClient[Any]
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers)

    async def ok(self, path: str, body: Any, status: int = 201) -> dict[str, Any]:
        response = await self.client.post(path, json=body, headers=self.headers)
        assert response.status_code == status, (self.name, path, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    async def account(self, account_id: str, **fields: Any) -> dict[str, Any]:
        return await self.ok("/v1/accounts", {"id": account_id, "currency": "USD", **fields})

    async def transfer(
        self, transfer_id: str, debit: str, credit: str, amount: int, **f: Any
    ) -> Any:
        body = {"id": transfer_id, "debit_account_id": debit, "credit_account_id": credit,
                "amount": amount, "currency": "USD", **f}  # fmt: skip
        return await self.ok("/v1/transfers", body)

    async def walk(self, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
        """Every item of a listing, page by page (each page at most ``limit``)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
            response = await self.get(path, **query)
            assert response.status_code == 200, response.text
            page = response.json()
            assert set(page) == {"data", "next_cursor"}
            assert len(page["data"]) <= limit
            items += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("the walk did not end")


@dataclass
class Setup:
    store: Store
    client: AsyncTestClient[Any]
    keys: ApiKeys

    async def tenant(self, name: str) -> Caller:
        key = await self.keys.create(name, ALL)
        return Caller(name, self.client, key.token)


@pytest.fixture(
    params=["one_sqlite", pytest.param("one_postgres", marks=pytest.mark.postgres), "four_shards"]
)
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    settings = Settings(
        data_dir=str(tmp_path), auth="api_keys", rate_limit_per_second=0, max_page_size=50
    )
    store: Store
    database: PostgresDatabase | None = None
    if request.param == "one_sqlite":
        store = SQLiteStore(tmp_path / "shard-0.sqlite3")
    elif request.param == "one_postgres":
        database = PostgresDatabase(request.getfixturevalue("postgres_server"))
        store = database.store()
    else:
        store = build_store(settings)  # the embedded default: four shards, the router
    app = create_app(store, settings, start_workers=False)
    try:
        async with AsyncTestClient(app=app) as client:
            yield Setup(store, client, ApiKeys(store))
    finally:
        if database is not None:
            database.drop()


def _key(item: dict[str, Any]) -> tuple[str, str]:
    """An item's place in a listing: its creation time (RFC 3339, nine fraction digits,
    so it sorts as text), then its id."""
    return item["created_at"], item["id"]


async def _check_walks(caller: Caller, path: str, expected: list[dict[str, Any]], **f: Any) -> None:
    """Walks of every page size from 1 to past the end, both orders, give ``expected``
    (sorted by key) exactly, each item as a read of its id shows it."""
    for limit in sorted({1, 2, 3, 7, len(expected) + 1}):
        assert await caller.walk(path, limit, **f) == expected, (path, f, limit)
        assert await caller.walk(path, limit, order="desc", **f) == expected[::-1], (f, limit)


# -- accounts -----------------------------------------------------------------------------------


async def test_account_pages_visit_each_account_once_and_filters_select(setup: Setup) -> None:
    """Alice's accounts (currencies, flags, metadata, one closed) walked at any page size
    and order: each once, in (created_at, id) order, as GET shows it; each filter lists
    exactly the accounts the model selects; Bob's same ids never show."""
    alice, bob = await setup.tenant("alice"), await setup.tenant("bob")
    rng = random.Random(18)
    for n in range(14):
        flags = {"history": True} if n % 3 == 0 else {}
        if n % 4 == 0:
            flags["no_overdraft"] = True
        fields: dict[str, Any] = {"flags": flags, "metadata": {"team": rng.choice(["a", "b"])}}
        if n % 5 == 0:
            fields["currency"] = "EUR"
        await alice.account(f"acc{n}", **fields)
        await bob.account(f"acc{n}")
    await alice.ok("/v1/accounts/acc1/close", {}, status=200)
    reads = [(await alice.get(f"/v1/accounts/acc{n}")).json() for n in range(14)]
    model = sorted(reads, key=_key)
    await _check_walks(alice, "/v1/accounts", model)
    middle = model[5]["created_at"]
    selections: list[tuple[dict[str, Any], Any]] = [
        ({"currency": "EUR"}, lambda a: a["currency"] == "EUR"),
        ({"history": "true"}, lambda a: a["flags"]["history"]),
        ({"history": "false"}, lambda a: not a["flags"]["history"]),
        ({"no_overdraft": "true"}, lambda a: a["flags"]["no_overdraft"]),
        ({"closed": "true"}, lambda a: a["flags"]["closed"]),
        ({"closed": "false", "currency": "USD"}, lambda a: not a["flags"]["closed"]
         and a["currency"] == "USD"),
        ({"metadata[team]": "a"}, lambda a: a["metadata"] == {"team": "a"}),
        ({"code": "0"}, lambda a: a["code"] == 0),
        ({"code": "7"}, lambda a: False),
        ({"created_gte": middle}, lambda a: a["created_at"] >= middle),
        ({"created_lt": middle}, lambda a: a["created_at"] < middle),
    ]  # fmt: skip
    for query, selected in selections:
        wanted = [a for a in model if selected(a)]
        assert await alice.walk("/v1/accounts", 3, **query) == wanted, query
    assert len(await bob.walk("/v1/accounts", 50)) == 14
    assert all(
        "alice" not in a["id"] and "/" not in a["id"] for a in await bob.walk("/v1/accounts", 5)
    )


# -- transfers ----------------------------------------------------------------------------------


async def test_transfer_pages_visit_each_transfer_once_and_filters_select(setup: Setup) -> None:
    """Transfers (posted, holds pending, posted in part, voided), among accounts that in
    the four-shard case sit on different shards (sagas): walked at any page size and
    order, each once, as GET shows it, never a saga's bookkeeping; ``account_id``,
    ``status`` and created range select what the model says."""
    alice = await setup.tenant("alice")
    accounts = [f"w{n}" for n in range(5)]
    for account_id in accounts:
        await alice.account(account_id)
    rng = random.Random(7)
    ids: list[str] = []
    for n in range(16):
        debit, credit = rng.sample(accounts, 2)
        pending = n % 3 == 0
        await alice.transfer(f"t{n}", debit, credit, 10 + n, pending=pending)
        ids.append(f"t{n}")
        if pending and n % 2 == 0:
            posted = await alice.ok(f"/v1/transfers/t{n}/post", {"id": f"p{n}", "amount": 5})
            ids.append(posted["id"])
        elif pending and n % 9 == 3:
            await alice.ok(f"/v1/transfers/t{n}/void", {"id": f"v{n}"})
            ids.append(f"v{n}")
    reads = [(await alice.get(f"/v1/transfers/{i}")).json() for i in ids]
    model = sorted(reads, key=_key)
    await _check_walks(alice, "/v1/transfers", model)
    for status in ("posted", "pending", "voided", "expired", "in_flight"):
        wanted = [t for t in model if t["status"] == status]
        assert await alice.walk("/v1/transfers", 4, status=status) == wanted, status
    for account_id in accounts[:3]:
        touching = [t for t in model
                    if account_id in (t["debit_account_id"], t["credit_account_id"])]  # fmt: skip
        assert await alice.walk("/v1/transfers", 2, account_id=account_id) == touching
        both = {"account_id": account_id, "status": "posted"}
        assert await alice.walk("/v1/transfers", 2, **both) == [
            t for t in touching if t["status"] == "posted"
        ]
    middle = model[len(model) // 2]["created_at"]
    window = {"created_gte": model[2]["created_at"], "created_lt": middle}
    assert await alice.walk("/v1/transfers", 3, **window) == [
        t for t in model if model[2]["created_at"] <= t["created_at"] < middle
    ]


async def test_tenants_list_only_their_own_and_never_paycores(setup: Setup) -> None:
    """Alice, Bob and the default tenant use the same ids; each listing of accounts and
    transfers shows only the caller's (its ids as it sent them), never a clearing or
    processor account, never a settlement or payment transfer, even with a card
    payment and cross-shard transfers behind them."""
    callers = [await setup.tenant(name) for name in ("alice", "bob", "default")]
    for n, who in enumerate(callers, start=1):
        for account_id in ("a", "b", "c", "m"):
            await who.account(account_id)
        await who.transfer("t1", "a", "b", 100 * n)
        await who.transfer("t2", "b", "c", 10 * n, pending=True)
        await who.ok("/v1/transfers/t2/post", {})
        payment = {"amount": 7 * n, "currency": "USD", "merchant_account_id": "m"}
        await who.ok("/v1/payments", {**payment, "source": {"card": CARD}})
    for n, who in enumerate(callers, start=1):
        accounts = await who.walk("/v1/accounts", 2)
        assert sorted(a["id"] for a in accounts) == ["a", "b", "c", "m"], who.name
        transfers = await who.walk("/v1/transfers", 2)
        assert len(transfers) == 3, (who.name, transfers)
        assert {t["id"] for t in transfers} >= {"t1", "t2"}
        assert {t["amount"] for t in transfers} == {100 * n, 10 * n}
        for t in transfers:
            assert not t["id"].startswith(("xs.", "pm.")), t
            assert {t["debit_account_id"], t["credit_account_id"]} <= {"a", "b", "c", "m"}, t
        payments = await who.walk("/v1/payments", 5)
        assert [(p["merchant_account_id"], p["amount"]) for p in payments] == [("m", 7 * n)]
        for path in ("/v1/accounts", "/v1/transfers", "/v1/payments"):
            body = (await who.get(path)).text
            for other in ("alice/", "bob/", "clearing:", "psp:"):
                assert other not in body, (who.name, path, body)


# -- payments, refunds, payouts -------------------------------------------------------------


async def test_payment_refund_and_payout_lists(setup: Setup) -> None:
    """Card and wallet payments, refunds and payouts of two merchants and two wallets:
    each list (walked at any size and order) shows each once, as its GET shows it; a
    payment's read shows its refunds; the filters select what they say; Bob sees none
    of Alice's."""
    alice, bob = await setup.tenant("alice"), await setup.tenant("bob")
    for account_id in ("m1", "m2", "w1", "w2", "bank"):
        await alice.account(account_id)
    await alice.transfer("fund1", "bank", "w1", 10_000)
    await alice.transfer("fund2", "bank", "w2", 10_000)
    payments: list[str] = []
    for n in range(6):
        merchant = ("m1", "m2")[n % 2]
        source: dict[str, Any] = {"card": CARD} if n % 3 else {"wallet_account_id": "w1"}
        capture = "manual" if n == 4 else "automatic"
        made = await alice.ok("/v1/payments", {"amount": 100 + n, "currency": "USD",
                                               "merchant_account_id": merchant,
                                               "capture": capture, "source": source})  # fmt: skip
        payments.append(made["id"])
    refunded = payments[1:3]  # card payments, captured
    refunds = [
        (await alice.ok("/v1/refunds", {"payment_id": p, "amount": a}))["id"]
        for p in refunded
        for a in (3, 4)
    ]
    payouts = [
        (await alice.ok("/v1/payouts", {"wallet_account_id": w, "amount": 50 + n,
                                        "currency": "USD", "destination": "GB00BANK01"}))["id"]
        for n, w in enumerate(("w1", "w2", "w1"))
    ]  # fmt: skip
    payment_reads = sorted([(await alice.get(f"/v1/payments/{p}")).json() for p in payments],
                           key=_key)  # fmt: skip
    refund_reads = sorted([(await alice.get(f"/v1/refunds/{r}")).json() for r in refunds], key=_key)
    payout_reads = sorted([(await alice.get(f"/v1/payouts/{p}")).json() for p in payouts], key=_key)
    for read in payment_reads:
        mine = [r for r in refund_reads if r["payment_id"] == read["id"]]
        assert read["refunds"] == mine, read
    await _check_walks(alice, "/v1/payments", payment_reads)
    await _check_walks(alice, "/v1/refunds", refund_reads)
    await _check_walks(alice, "/v1/payouts", payout_reads)
    checks: list[tuple[str, dict[str, str], list[dict[str, Any]]]] = [
        ("/v1/payments", {"merchant_account_id": "m1"},
         [p for p in payment_reads if p["merchant_account_id"] == "m1"]),
        ("/v1/payments", {"status": "requires_capture"},
         [p for p in payment_reads if p["status"] == "requires_capture"]),
        ("/v1/payments", {"status": "succeeded", "merchant_account_id": "m2"},
         [p for p in payment_reads if p["status"] == "succeeded"
          and p["merchant_account_id"] == "m2"]),
        ("/v1/refunds", {"payment_id": refunded[0]},
         [r for r in refund_reads if r["payment_id"] == refunded[0]]),
        ("/v1/refunds", {"status": "failed"}, []),
        ("/v1/payouts", {"wallet_account_id": "w1"},
         [p for p in payout_reads if p["wallet_account_id"] == "w1"]),
        ("/v1/payouts", {"wallet_account_id": "w2", "status": "paid"},
         [p for p in payout_reads if p["wallet_account_id"] == "w2" and p["status"] == "paid"]),
        ("/v1/payments", {"created_gte": payment_reads[3]["created_at"]}, payment_reads[3:]),
    ]  # fmt: skip
    assert any(p["status"] == "requires_capture" for p in payment_reads)
    for path, query, wanted in checks:
        assert await alice.walk(path, 2, **query) == wanted, (path, query)
    for path in ("/v1/payments", "/v1/refunds", "/v1/payouts"):
        assert await bob.walk(path, 10) == [], path
    assert_problem(
        await bob.get("/v1/refunds", payment_id=payments[1]), ErrorCode.PAYMENT_NOT_FOUND
    )
    missing = await bob.get("/v1/payments", merchant_account_id="m1")
    assert_problem(missing, ErrorCode.ACCOUNT_NOT_FOUND)


# -- bad queries --------------------------------------------------------------------------------

BAD_QUERIES: list[tuple[str, dict[str, str], str]] = [
    ("/v1/accounts", {"limit": "0"}, "limit must be in 1..50"),
    ("/v1/accounts", {"limit": "51"}, "limit must be in 1..50"),
    ("/v1/accounts", {"limit": "ten"}, "limit must be an integer in 1..50"),
    ("/v1/accounts", {"cursor": "bm90IGEgY3Vyc29y"}, "cursor is not one this API handed out"),
    ("/v1/accounts", {"cursor": "%%%"}, "cursor is not one this API handed out"),
    ("/v1/accounts", {"order": "sideways"}, "order must be one of asc, desc, not 'sideways'"),
    ("/v1/accounts", {"currency": "usd"}, "currency must be an ISO 4217 code"),
    ("/v1/accounts", {"code": "-1"}, "code must be an integer in 0..2147483647"),
    ("/v1/accounts", {"history": "yes"}, "history must be one of true, false, not 'yes'"),
    ("/v1/accounts", {"closed": "1"}, "closed must be one of true, false, not '1'"),
    ("/v1/accounts", {"no_overdraft": "TRUE"}, "no_overdraft must be one of true, false"),
    ("/v1/accounts", {"metadata[]": "x"}, "a metadata filter is metadata[<key>]=<value>"),
    ("/v1/accounts", {"created_gte": "yesterday"}, "created_gte: not an RFC 3339 date-time"),
    ("/v1/accounts", {"created_lt": "2024-13-01T00:00:00Z"}, "created_lt: "),
    ("/v1/accounts", {"colour": "red"}, "unknown query parameter 'colour'"),
    ("/v1/transfers", {"status": "done"}, "status must be one of posted, pending, voided"),
    ("/v1/transfers", {"account_id": "a/b"}, "account_id must be an id of 1-64 characters"),
    ("/v1/transfers", {"metadata[x]": "y"}, "unknown query parameter 'metadata[x]'"),
    ("/v1/payments", {"status": "paid"}, "status must be one of processing, requires_capture"),
    ("/v1/payments", {"merchant_account_id": "x" * 65}, "merchant_account_id must be an id"),
    ("/v1/refunds", {"status": "processing"}, "status must be one of pending, succeeded, failed"),
    ("/v1/refunds", {"payment_id": "p q"}, "payment_id must be an id"),
    ("/v1/payouts", {"status": "succeeded"}, "status must be one of processing, paid, failed"),
    ("/v1/payouts", {"wallet_account_id": ""}, "wallet_account_id must be an id"),
]


@pytest.mark.parametrize(("path", "query", "detail"), BAD_QUERIES)
async def test_bad_list_query_is_a_422_naming_the_parameter(
    setup: Setup, path: str, query: dict[str, str], detail: str
) -> None:
    """Each bad filter or page value is refused with 422 ``invalid_request`` whose detail
    names the parameter and what it takes; the listing is the same afterwards."""
    alice = await setup.tenant("alice")
    await alice.account("a")
    before = await alice.get(path)
    assert before.status_code == 200, before.text
    refused = await alice.get(path, **query)
    problem = assert_problem(refused, ErrorCode.INVALID_REQUEST)
    assert detail in problem["detail"], problem
    assert (await alice.get(path)).content == before.content


async def test_a_parameter_given_twice_is_refused(setup: Setup) -> None:
    """``?status=posted&status=pending`` is a 422, not one of the two silently."""
    alice = await setup.tenant("alice")
    refused = await alice.client.get(
        "/v1/transfers?status=posted&status=pending", headers=alice.headers
    )
    problem = assert_problem(refused, ErrorCode.INVALID_REQUEST)
    assert "'status' is given more than once" in problem["detail"]


async def test_created_range_takes_the_form_at_takes(setup: Setup) -> None:
    """``created_gte``/``created_lt`` take any RFC 3339 offset, as ``at`` does: the same
    instant written in UTC and at +02:00 selects the same accounts."""
    alice = await setup.tenant("alice")
    for n in range(3):
        await alice.account(f"a{n}")
    accounts = await alice.walk("/v1/accounts", 10)
    second = accounts[1]["timestamp"]
    utc = rfc3339(second)
    local = datetime.fromtimestamp(second // 10**9, tz=timezone(timedelta(hours=2)))
    shifted = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{second % 10**9:09d}+02:00"
    assert await alice.walk("/v1/accounts", 10, created_gte=utc) == accounts[1:]
    assert await alice.walk("/v1/accounts", 10, created_gte=shifted) == accounts[1:]
    assert await alice.walk("/v1/accounts", 10, created_lt=shifted) == accounts[:1]
