"""The demo's currency exchange act: a USD wallet pays into a EUR wallet.

A quote locks USD -> EUR; the conversion books it as one linked chain through paycore's
FX accounts; the same conversion again answers the same, another use of the quote is
refused; a held conversion is captured in part at the locked rate. The promise checked:
each wallet moves by exactly the quoted amounts (rounded against the customer), and the
quote is used once. Conservation per currency is the audit's, which follows.
"""

from __future__ import annotations

from typing import Any

import msgspec

from paycore.tools.demo.asgi_client import AsgiClient
from paycore.tools.demo.promises import Promise

__all__ = ["run_fx_act"]

BANK, USD_WALLET, EUR_WALLET = "demo.fx-bank", "demo.fx-usd", "demo.fx-eur"
_encode = msgspec.json.Encoder().encode


async def _call(client: AsgiClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await client.request(method, path, None if body is None else _encode(body))
    return response.status, msgspec.json.decode(response.body) if response.body else None


async def _posted(client: AsgiClient, account_id: str) -> int:
    _, account = await _call(client, "GET", f"/v1/accounts/{account_id}")
    balance = account["balance"]
    return int(balance["credits_posted"] - balance["debits_posted"])


async def run_fx_act(client: AsgiClient, promise: Promise) -> str:
    """Run the act, checking ``promise``; a line saying what it did."""
    for body in (
        {"id": BANK, "currency": "USD"},
        {"id": USD_WALLET, "currency": "USD", "flags": {"no_overdraft": True}},
        {"id": EUR_WALLET, "currency": "EUR"},
    ):
        status, _ = await _call(client, "POST", "/v1/accounts", body)
        promise.check(status == 201, f"account {body['id']}: {status}")
    fund = {"id": "demo.fx-fund", "debit_account_id": BANK, "credit_account_id": USD_WALLET,
            "amount": 500_00, "currency": "USD"}  # fmt: skip
    await _call(client, "POST", "/v1/transfers", fund)
    ask = {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount": 123_45}
    status, quote = await _call(client, "POST", "/v1/fx/quotes", ask)
    promise.check(status == 201, f"quote: {status} {quote}")
    convert = {"quote_id": quote["id"], "debit_account_id": USD_WALLET,
               "credit_account_id": EUR_WALLET}  # fmt: skip
    status, first = await _call(client, "POST", "/v1/fx/conversions", convert)
    promise.check(status == 201, f"conversion: {status} {first}")
    status, again = await _call(client, "POST", "/v1/fx/conversions", convert)
    promise.check(status == 200 and again == first, f"the same conversion again: {status}")
    status, reused = await _call(
        client, "POST", "/v1/fx/conversions", {**convert, "credit_account_id": BANK}
    )
    promise.check(reused.get("code") == "fx_quote_already_used", f"quote reused: {status}")
    # A held conversion, captured in part at the locked rate.
    status, held_quote = await _call(
        client, "POST", "/v1/fx/quotes", {**ask, "sell_amount": 100_00}
    )
    status, held = await _call(
        client,
        "POST",
        "/v1/fx/conversions",
        {**convert, "quote_id": held_quote["id"], "pending": True},
    )
    promise.check(status == 201 and held["status"] == "pending", f"held conversion: {status}")
    status, captured = await _call(
        client, "POST", f"/v1/fx/conversions/{held['id']}/capture", {"sell_amount": 40_00}
    )
    promise.check(status == 201 and captured["status"] == "posted", f"capture: {status}")
    usd, eur = await _posted(client, USD_WALLET), await _posted(client, EUR_WALLET)
    want_usd = 500_00 - quote["sell_amount"] - captured["sell_amount"]
    want_eur = quote["buy_amount"] + captured["buy_amount"]
    promise.check(usd == want_usd, f"USD wallet {usd}, expected {want_usd}")
    promise.check(eur == want_eur, f"EUR wallet {eur}, expected {want_eur}")
    return (
        f"FX: {quote['sell_amount'] / 100:.2f} USD -> {quote['buy_amount'] / 100:.2f} EUR at "
        f"{quote['rate']} (mid {quote['mid_rate']}), then a hold captured in part: "
        f"{captured['sell_amount'] / 100:.2f} USD -> {captured['buy_amount'] / 100:.2f} EUR"
    )
