"""``/v1/fx``: quotes lock a rate until they expire; a conversion books a quote once, as
one linked chain through the FX accounts (across shards too), idempotently; bad input
and refused conversions change nothing."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.support import Api, ManualClock, assert_problem
from paycore.api import create_app
from paycore.api.routes import fx as fx_routes
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import FxConfig, Settings
from paycore.errors import ErrorCode
from paycore.fx import StaticRates, liquidity_account_id, revenue_account_id

RATES = {"USD/EUR": "0.92", "EUR/USD": "1.08", "USD/JPY": "151.5", "JPY/USD": "0.0066"}


@pytest.fixture
def fx_settings(tmp_path: Path) -> Settings:
    fx = FxConfig(rates=RATES, spreads={"USD/EUR": 50}, quote_ttl_seconds=30)
    return Settings(data_dir=str(tmp_path), auth="open", fx=fx)


@pytest.fixture
def store(fx_settings: Settings, clock: ManualClock) -> ShardedStore:
    """The embedded store: SQLite shards (four in the suite), with the test's clock."""
    return build_store(fx_settings, clock=clock)


@pytest.fixture
async def fx_client(
    store: ShardedStore, fx_settings: Settings, clock: ManualClock
) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(
        store,
        fx_settings,
        start_workers=False,
        fx_rates=StaticRates(RATES),
        clock=clock,
    )
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
def fx_api(fx_client: AsyncTestClient[Any]) -> Api:
    return Api(fx_client)


def _spread_ids(store: ShardedStore) -> tuple[str, str]:
    """A USD and a EUR wallet id on two shards that neither FX liquidity account is on."""
    assert len(store.shards) >= 3, "the suite runs four embedded shards"
    taken = {store.shard_for(liquidity_account_id(c)) for c in ("USD", "EUR")}
    usd = eur = None
    for n in itertools.count():
        shard = store.shard_for(f"w{n}")
        if usd is None and shard not in taken:
            usd = f"w{n}"
            taken.add(shard)
        elif eur is None and (shard not in taken or len(store.shards) <= len(taken)):
            eur = f"w{n}"
        if usd and eur:
            return usd, eur
    raise AssertionError


async def _wallets(api: Api, store: ShardedStore, funds: int = 100_00) -> tuple[str, str]:
    usd, eur = _spread_ids(store)
    await api.account(usd, "USD", flags={"no_overdraft": True})
    await api.account(eur, "EUR")
    await api.account("bank-usd", "USD")
    await api.ok_transfer("fund", "bank-usd", usd, funds)
    return usd, eur


async def _quote(api: Api, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/fx/quotes", json=body)
    assert response.status_code == 201, response.text
    quote: dict[str, Any] = response.json()
    return quote


async def _posted(api: Api, account_id: str) -> int:
    balance = await api.balance(account_id)
    return balance["credits_posted"] - balance["debits_posted"]


async def test_a_quote_locks_a_rate_with_amounts_rounded_against_the_customer(
    fx_api: Api,
) -> None:
    """Selling 100.00 USD at 0.92 less 50 bps gets 91.54 EUR (rounded down), the spread
    is what the mid rate would have paid more; the quote reads back the same."""
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=100_00)
    assert quote["rate"] == "0.9154"
    assert quote["mid_rate"] == "0.92"
    assert (quote["sell_amount"], quote["buy_amount"], quote["spread_amount"]) == (
        100_00,
        91_54,
        46,
    )
    assert quote["id"].startswith("fxq_")
    assert quote["expires_at"] > quote["created_at"]
    again = await fx_api.client.get(f"/v1/fx/quotes/{quote['id']}")
    assert again.status_code == 200
    assert again.json() == quote


async def test_a_quote_for_a_bought_amount_rounds_the_price_up(fx_api: Api) -> None:
    """Buying 1,000 JPY (0 decimals) at 151.5 costs 6.61 USD (6.6007 rounded up)."""
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="JPY", buy_amount=1000)
    assert (quote["sell_amount"], quote["buy_amount"]) == (661, 1000)
    assert quote["spread_amount"] == 1  # 661 * 1.515 = 1001.4: the rounding is the house's


def _q(sell: str = "USD", buy: str = "EUR", **amounts: Any) -> dict[str, Any]:
    return {"sell_currency": sell, "buy_currency": buy, **amounts}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_q(), ErrorCode.INVALID_REQUEST),
        (_q(sell_amount=1, buy_amount=1), ErrorCode.INVALID_REQUEST),
        (_q("USD", "USD", sell_amount=1), ErrorCode.INVALID_REQUEST),
        (_q("USD", "XYZ", sell_amount=1), ErrorCode.INVALID_REQUEST),
        (_q(sell_amount=0), ErrorCode.INVALID_REQUEST),
        (_q(sell_amount=1.5), ErrorCode.INVALID_REQUEST),
        (_q(sell_amount="100"), ErrorCode.INVALID_REQUEST),
        (_q("USD", "GBP", sell_amount=100), ErrorCode.FX_PAIR_UNSUPPORTED),
        (_q("JPY", "USD", sell_amount=1), ErrorCode.FX_AMOUNT_TOO_SMALL),
    ],
)
async def test_a_bad_quote_request_gets_a_precise_error(
    fx_api: Api, body: dict[str, Any], code: ErrorCode
) -> None:
    """Missing or doubled amounts, equal or unknown currencies, an unquoted pair and an
    amount that buys nothing are refused with their own stable code."""
    assert_problem(await fx_api.client.post("/v1/fx/quotes", json=body), code)


async def test_a_conversion_across_shards_moves_both_currencies_through_the_fx_accounts(
    fx_api: Api, store: ShardedStore
) -> None:
    """The wallets and FX accounts on different shards: the USD wallet pays 100.00, the
    EUR wallet gets 91.54, FX revenue 0.46 EUR; each currency sums to zero."""
    usd, eur = await _wallets(fx_api, store)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=100_00)
    response = await fx_api.client.post(
        "/v1/fx/conversions",
        json={"quote_id": quote["id"], "debit_account_id": usd, "credit_account_id": eur},
    )
    assert response.status_code == 201, response.text
    conversion = response.json()
    assert conversion["status"] == "posted"
    assert conversion["id"] == "fxc_" + quote["id"].removeprefix("fxq_")
    assert conversion["transfer_ids"] == [
        f"fx.{quote['id']}.sell",
        f"fx.{quote['id']}.buy",
        f"fx.{quote['id']}.spread",
    ]
    assert await _posted(fx_api, usd) == 0
    assert await _posted(fx_api, eur) == 91_54
    liquidity_usd, liquidity_eur, revenue_eur = (
        liquidity_account_id("USD"),
        liquidity_account_id("EUR"),
        revenue_account_id("EUR"),
    )
    accounts = await store.get_accounts([liquidity_usd, liquidity_eur, revenue_eur])
    net = {i: a.credits_posted - a.debits_posted for i, a in accounts.items()}
    assert net == {liquidity_usd: 100_00, liquidity_eur: -92_00, revenue_eur: 46}
    assert await _posted(fx_api, "bank-usd") + 0 + net[liquidity_usd] == 0  # USD sums to 0
    assert 91_54 + net[liquidity_eur] + net[revenue_eur] == 0  # EUR sums to 0
    read = await fx_api.client.get(f"/v1/fx/conversions/{conversion['id']}")
    assert read.status_code == 200
    assert read.json() == conversion


async def test_a_conversion_is_idempotent_and_a_quote_is_used_once(
    fx_api: Api, store: ShardedStore
) -> None:
    """An Idempotency-Key replays the first answer; the same body without one answers
    the same conversion (200); the quote with other accounts is refused, unchanged."""
    usd, eur = await _wallets(fx_api, store)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=10_00)
    body = {"quote_id": quote["id"], "debit_account_id": usd, "credit_account_id": eur}
    headers = {"Idempotency-Key": "convert-1"}
    first = await fx_api.client.post("/v1/fx/conversions", json=body, headers=headers)
    again = await fx_api.client.post("/v1/fx/conversions", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    unkeyed = await fx_api.client.post("/v1/fx/conversions", json=body)
    assert unkeyed.status_code == 200
    assert unkeyed.json() == first.json()
    await fx_api.account("other-eur", "EUR")
    other = await fx_api.client.post(
        "/v1/fx/conversions", json={**body, "credit_account_id": "other-eur"}
    )
    assert_problem(other, ErrorCode.FX_QUOTE_ALREADY_USED)
    assert await _posted(fx_api, usd) == 90_00
    assert await _posted(fx_api, "other-eur") == 0


async def test_an_expired_quote_is_refused_and_changes_nothing(
    fx_api: Api, store: ShardedStore, clock: ManualClock
) -> None:
    """Past ``expires_at`` the quote is refused (409 fx_quote_expired); a conversion made
    in time still answers its retry after the expiry."""
    usd, eur = await _wallets(fx_api, store)
    late = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=10_00)
    used = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=5_00)
    in_time = {"quote_id": used["id"], "debit_account_id": usd, "credit_account_id": eur}
    first = await fx_api.client.post("/v1/fx/conversions", json=in_time)
    assert first.status_code == 201
    clock.advance(30)
    refused = await fx_api.client.post(
        "/v1/fx/conversions",
        json={"quote_id": late["id"], "debit_account_id": usd, "credit_account_id": eur},
    )
    assert_problem(refused, ErrorCode.FX_QUOTE_EXPIRED)
    assert await _posted(fx_api, usd) == 95_00
    retry = await fx_api.client.post("/v1/fx/conversions", json=in_time)
    assert retry.status_code == 200
    assert retry.json() == first.json()


async def test_a_refused_conversion_across_shards_changes_no_account(
    fx_api: Api, store: ShardedStore
) -> None:
    """A wallet short of funds refuses the whole chain (insufficient_funds): neither
    currency moves on any shard."""
    usd, eur = await _wallets(fx_api, store, funds=50_00)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=100_00)
    refused = await fx_api.client.post(
        "/v1/fx/conversions",
        json={"quote_id": quote["id"], "debit_account_id": usd, "credit_account_id": eur},
    )
    assert_problem(refused, ErrorCode.INSUFFICIENT_FUNDS)
    assert await _posted(fx_api, usd) == 50_00
    assert await _posted(fx_api, eur) == 0
    accounts = await store.get_accounts([liquidity_account_id("USD"), liquidity_account_id("EUR")])
    assert all(a.debits_posted == a.credits_posted == 0 for a in accounts.values())
    assert all(a.debits_pending == a.credits_pending == 0 for a in accounts.values())


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"quote_id": "fxq_" + "0" * 24}, ErrorCode.FX_QUOTE_NOT_FOUND),
        ({"quote_id": "nope"}, ErrorCode.INVALID_REQUEST),
        ({"debit_account_id": "fx:liquidity:USD"}, ErrorCode.INVALID_REQUEST),
        ({"credit_account_id": "psp:s0:sim-a:EUR"}, ErrorCode.INVALID_REQUEST),
        ({"credit_account_id": "missing"}, ErrorCode.ACCOUNT_NOT_FOUND),
        ({"credit_account_id": "bank-usd"}, ErrorCode.CURRENCY_MISMATCH),
        ({"extra": 1}, ErrorCode.INVALID_REQUEST),
        ({"timeout_seconds": 60}, ErrorCode.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
    ],
)
async def test_a_bad_conversion_gets_a_precise_error_and_changes_nothing(
    fx_api: Api, store: ShardedStore, body: dict[str, Any], code: ErrorCode
) -> None:
    """Unknown quotes, paycore's own accounts, missing or mismatched accounts and
    unknown fields are refused with their code; no balance moves."""
    usd, eur = await _wallets(fx_api, store)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=10_00)
    full = {"quote_id": quote["id"], "debit_account_id": usd, "credit_account_id": eur, **body}
    assert_problem(await fx_api.client.post("/v1/fx/conversions", json=full), code)
    assert await _posted(fx_api, usd) == 100_00
    assert await _posted(fx_api, eur) == 0


async def test_fx_ids_are_paycore_s_own(fx_api: Api) -> None:
    """No client creates an ``fx:`` account or an ``fx.`` transfer."""
    response = await fx_api.client.post(
        "/v1/accounts", json={"id": "fx:liquidity:USD", "currency": "USD"}
    )
    assert_problem(response, ErrorCode.INVALID_REQUEST)
    await fx_api.account("a", "USD")
    await fx_api.account("b", "USD")
    assert_problem(await fx_api.transfer("fx.x.sell", "a", "b", 1), ErrorCode.INVALID_REQUEST)


async def test_a_held_conversion_is_captured_in_part_at_the_locked_rate(
    fx_api: Api, store: ShardedStore, clock: ManualClock
) -> None:
    """As holds, the legs are pending; a capture of 50.00 of 100.00 USD after the quote
    expired books 45.77 EUR at the locked rate and releases the rest."""
    usd, eur = await _wallets(fx_api, store)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=100_00)
    held = await fx_api.client.post(
        "/v1/fx/conversions",
        json={
            "quote_id": quote["id"],
            "debit_account_id": usd,
            "credit_account_id": eur,
            "pending": True,
        },
    )
    assert held.status_code == 201, held.text
    assert held.json()["status"] == "pending"
    assert (await fx_api.balance(usd))["debits_pending"] == 100_00
    assert (await fx_api.balance(eur))["credits_pending"] == 91_54
    clock.advance(3600)
    conversion_id = held.json()["id"]
    captured = await fx_api.client.post(
        f"/v1/fx/conversions/{conversion_id}/capture", json={"sell_amount": 50_00}
    )
    assert captured.status_code == 201, captured.text
    out = captured.json()
    assert (out["status"], out["sell_amount"], out["buy_amount"], out["spread_amount"]) == (
        "posted",
        50_00,
        45_77,
        23,
    )
    assert await fx_api.balance(usd) == {
        **await fx_api.balance(usd),
        "debits_pending": 0,
        "debits_posted": 50_00,
    }
    assert await _posted(fx_api, eur) == 45_77
    read = await fx_api.client.get(f"/v1/fx/conversions/{conversion_id}")
    assert read.json()["buy_amount"] == 45_77
    void = await fx_api.client.post(f"/v1/fx/conversions/{conversion_id}/void")
    assert_problem(void, ErrorCode.PENDING_TRANSFER_ALREADY_POSTED)
    same = await fx_api.client.post(
        f"/v1/fx/conversions/{conversion_id}/capture", json={"sell_amount": 50_00}
    )
    assert same.status_code == 200
    assert same.json() == out
    more = await fx_api.client.post(
        f"/v1/fx/conversions/{conversion_id}/capture", json={"sell_amount": 60_00}
    )
    assert_problem(more, ErrorCode.PENDING_TRANSFER_ALREADY_POSTED)
    assert await _posted(fx_api, eur) == 45_77


async def test_a_held_conversion_is_voided_as_one(fx_api: Api, store: ShardedStore) -> None:
    """A void releases every leg's hold: no balance keeps anything pending."""
    usd, eur = await _wallets(fx_api, store)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=100_00)
    held = await fx_api.client.post(
        "/v1/fx/conversions",
        json={
            "quote_id": quote["id"],
            "debit_account_id": usd,
            "credit_account_id": eur,
            "pending": True,
        },
    )
    voided = await fx_api.client.post(f"/v1/fx/conversions/{held.json()['id']}/void", json={})
    assert voided.status_code == 201, voided.text
    assert voided.json()["status"] == "voided"
    for account_id in (usd, eur):
        balance = await fx_api.balance(account_id)
        assert balance["debits_pending"] == balance["credits_pending"] == 0
    assert await _posted(fx_api, usd) == 100_00


async def test_a_quote_request_is_idempotent_with_a_key(fx_api: Api, clock: ManualClock) -> None:
    """The same key and body replays the first quote (same id and rate) even after the
    rate source would price it anew; another body under the key is refused."""
    body = {"sell_currency": "USD", "buy_currency": "JPY", "sell_amount": 100}
    headers = {"Idempotency-Key": "quote-1"}
    first = await fx_api.client.post("/v1/fx/quotes", json=body, headers=headers)
    clock.advance(60)
    again = await fx_api.client.post("/v1/fx/quotes", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await fx_api.client.post(
        "/v1/fx/quotes", json={**body, "sell_amount": 101}, headers=headers
    )
    assert_problem(other, ErrorCode.IDEMPOTENCY_KEY_REUSED)


async def test_quotes_are_listed_oldest_first_a_page_at_a_time(
    fx_api: Api, clock: ManualClock
) -> None:
    """``GET /v1/fx/quotes`` pages through the caller's quotes by creation; a cursor not
    handed out is refused."""
    made = []
    for amount in (100, 200, 300):
        made.append((await _quote(fx_api, sell_currency="USD", buy_currency="EUR",
                                  sell_amount=amount))["id"])  # fmt: skip
        clock.advance(1)
    first = (await fx_api.client.get("/v1/fx/quotes?limit=2")).json()
    assert [q["id"] for q in first["data"]] == made[:2]
    rest = (await fx_api.client.get(f"/v1/fx/quotes?limit=2&cursor={first['next_cursor']}")).json()
    assert [q["id"] for q in rest["data"]] == made[2:]
    assert rest["next_cursor"] is None
    assert_problem(await fx_api.client.get("/v1/fx/quotes?cursor=nope"), ErrorCode.INVALID_REQUEST)


async def _convert(api: Api, quote: dict[str, Any], usd: str, eur: str, **more: Any) -> Any:
    body = {"quote_id": quote["id"], "debit_account_id": usd, "credit_account_id": eur, **more}
    response = await api.client.post("/v1/fx/conversions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_conversions_are_listed_by_their_quotes_a_page_at_a_time(
    fx_api: Api, store: ShardedStore, clock: ManualClock
) -> None:
    """``GET /v1/fx/conversions`` pages through the caller's conversions oldest first,
    skipping quotes never used or refused, each as it stands now (a held one captured
    since shows it); a bad limit or cursor is refused."""
    usd, eur = await _wallets(fx_api, store)
    made = []
    for n, amount in enumerate((1_00, 2_00, 3_00, 4_00)):
        quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=amount)
        clock.advance(1)
        if n == 1:
            continue  # never used
        made.append(await _convert(fx_api, quote, usd, eur, pending=n == 2))
    too_much = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=10**6)
    refused = await fx_api.client.post(
        "/v1/fx/conversions",
        json={"quote_id": too_much["id"], "debit_account_id": usd, "credit_account_id": eur},
    )
    assert_problem(refused, ErrorCode.INSUFFICIENT_FUNDS)
    captured = await fx_api.client.post(f"/v1/fx/conversions/{made[1]['id']}/capture", json={})
    assert captured.status_code == 201, captured.text
    now = [(await fx_api.client.get(f"/v1/fx/conversions/{c['id']}")).json() for c in made]
    assert now[1]["status"] == "posted"
    first = (await fx_api.client.get("/v1/fx/conversions?limit=2")).json()
    assert first["data"] == now[:2]
    assert first["data"][0] == made[0]
    rest = await fx_api.client.get(f"/v1/fx/conversions?limit=2&cursor={first['next_cursor']}")
    assert rest.json() == {"data": [made[2]], "next_cursor": None}
    every = (await fx_api.client.get("/v1/fx/conversions")).json()
    assert [c["id"] for c in every["data"]] == [c["id"] for c in made]
    for query in ("cursor=nope", "limit=0", "limit=100000", "limit=x"):
        assert_problem(
            await fx_api.client.get(f"/v1/fx/conversions?{query}"), ErrorCode.INVALID_REQUEST
        )


async def test_a_conversions_page_reads_a_bounded_number_of_quotes(
    fx_api: Api, store: ShardedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the quotes one page may read, a short (here empty) page is answered with a
    cursor to go on from; following it finds the conversion behind the unused quotes."""
    monkeypatch.setattr(fx_routes, "_SCAN_CHUNK", 2)
    monkeypatch.setattr(fx_routes, "_SCAN_LIMIT", 4)
    usd, eur = await _wallets(fx_api, store)
    for _ in range(5):
        await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=1_00)
    quote = await _quote(fx_api, sell_currency="USD", buy_currency="EUR", sell_amount=1_00)
    conversion = await _convert(fx_api, quote, usd, eur)
    seen: list[dict[str, Any]] = []
    pages, cursor = 0, ""
    while True:
        page = (await fx_api.client.get(f"/v1/fx/conversions?limit=1{cursor}")).json()
        pages += 1
        seen += page["data"]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [conversion]
    assert pages == 2
