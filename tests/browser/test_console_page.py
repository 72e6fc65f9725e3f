"""The operator console in a real browser: headless Chromium, driven over its DevTools
protocol (``cdp``), logs in to ``paycore serve`` with an admin key typed into the form,
opens every page, follows a card payment to its ledger transfers, and the console of the
browser reports no error (a CSP violation would be one). Screenshots are kept in
tests/artifacts/console-*.png."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser.cdp import browser_page
from paycore.tools.browser import Chromium
from sdk.support import create_key, free_port, paycore_command, wait_until_up

pytestmark = pytest.mark.slow

# Any name but 127.0.0.1 fails to resolve: nothing may come from a CDN.
_OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


class Served:
    def __init__(self, url: str, admin: str) -> None:
        self.url, self.admin = url, admin


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``paycore serve`` on 4 embedded shards, API keys required; an admin key of 'acme'."""
    root = tmp_path_factory.mktemp("console-serve")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PAYCORE_EMBEDDED_SHARDS": "4"}
    data = root / "data"
    admin = create_key(data, env, "admin")
    port = free_port()
    log = root / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            paycore_command("serve", "--data-dir", str(data), "--port", str(port)),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, serve, log)
        yield Served(url, admin)
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def _seed(served: Served) -> tuple[str, str]:
    """Accounts, a transfer, transfers across shards, a card payment with a refund, a
    payout; the payment's id and the payout's."""
    headers = {"Authorization": f"Bearer {served.admin}"}
    with httpx.Client(base_url=served.url, headers=headers, timeout=30) as api:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = api.post(path, json=body)
            assert r.status_code == 201, r.text
            out: dict[str, Any] = r.json()
            return out

        post("/v1/accounts", {"id": "shop", "currency": "EUR", "flags": {"history": True},
                              "metadata": {"name": "<b>Corner shop</b>"}})  # fmt: skip
        for n in range(6):
            post("/v1/accounts", {"id": f"wallet-{n}", "currency": "EUR"})
        for n in range(6):  # among six wallets on four shards, some transfers cross shards
            post("/v1/transfers", {"id": f"t{n}", "debit_account_id": f"wallet-{n}",
                                   "credit_account_id": f"wallet-{(n + 1) % 6}",
                                   "amount": 100 + n, "currency": "EUR"})  # fmt: skip
            post("/v1/transfers", {"id": f"s{n}", "debit_account_id": f"wallet-{n}",
                                   "credit_account_id": "shop", "amount": 250 * (n + 1),
                                   "currency": "EUR"})  # fmt: skip
        payment = {"amount": 4200, "currency": "EUR", "merchant_account_id": "shop"}
        paid = post("/v1/payments", {**payment, "source": {"card": _CARD}})
        payment_id: str = paid["id"]
        post("/v1/refunds", {"payment_id": payment_id, "amount": 1200})
        payout = post("/v1/payouts", {"wallet_account_id": "wallet-0", "amount": 300,
                                      "currency": "EUR",
                                      "destination": "DE89370400440532013000"})  # fmt: skip
        payout_id: str = payout["id"]
        return payment_id, payout_id


async def test_console_in_a_browser(
    chromium: Chromium, console_server: Served, artifacts: Path, tmp_path: Path
) -> None:
    """Log in by typing the key, open every page, follow the payment to its ledger
    transfers and its refund, run an audit, log out; no console error on any page, no
    cookie readable by script."""
    payment_id, payout_id = _seed(console_server)
    base = console_server.url
    async with browser_page(chromium, tmp_path / "profile", free_port(), _OFFLINE) as page:
        await page.goto(f"{base}/console")
        assert "Log in" in await page.text()  # sent to the login form
        await page.screenshot(artifacts / "console-login.png")
        await page.type_into("#api_key", console_server.admin)
        await page.click("form.login button")
        assert "Money per currency" in await page.text()
        assert await page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
        await page.screenshot(artifacts / "console-overview.png")

        await page.goto(f"{base}/console/accounts?q=wallet")
        assert "wallet-5" in await page.text()
        await page.screenshot(artifacts / "console-accounts.png")
        await page.goto(f"{base}/console/accounts")
        await page.click('a[href="/console/accounts/shop"]')
        text = await page.text()
        assert "Balance over time" in text
        assert "<b>Corner shop</b>" in text  # shown as text, not as markup
        assert await page.evaluate("document.querySelectorAll('svg.chart path').length") == 1
        await page.screenshot(artifacts / "console-account.png")

        await page.goto(f"{base}/console/payments/{payment_id}")
        text = await page.text()
        assert "authorize" in text
        assert "succeeded" in text
        await page.screenshot(artifacts / "console-payment.png")
        await page.click('a[href^="/console/transfers/pm."]')
        text = await page.text()
        assert "Transfer pm." in text
        assert payment_id in text  # the transfer links back to its payment
        await page.screenshot(artifacts / "console-transfer.png")

        await page.goto(f"{base}/console/payments/{payment_id}")
        await page.click('a[href^="/console/refunds/re_"]')
        text = await page.text()
        assert "Refund re_" in text
        assert "1,200 EUR" in text
        await page.screenshot(artifacts / "console-refund.png")
        await page.click('a[href^="/console/transfers/pm.re_"]')
        assert "Made by refund" in await page.text()  # the ledger transfer links back

        await page.goto(f"{base}/console/payouts/{payout_id}")
        text = await page.text()
        assert "Payout po_" in text
        assert "wallet-0" in text
        await page.screenshot(artifacts / "console-payout.png")

        await page.goto(f"{base}/console/stuck?older_than=0")
        assert "Stuck payments" in await page.text()
        await page.screenshot(artifacts / "console-stuck.png")
        await page.click('a[href="/console/sagas"]')  # from the navigation
        assert "Stuck sagas" in await page.text()
        await page.screenshot(artifacts / "console-sagas.png")
        await page.click('a[href="/console/webhooks"]')
        assert "Failing webhook deliveries" in await page.text()
        await page.screenshot(artifacts / "console-webhooks.png")
        await page.click('a[href="/console/audit"]')
        assert "No audit has run on this node" in await page.text()
        await page.click("form.search button")  # run one (a CSRF-checked POST)
        text = await page.text()
        assert "Last audit on this node" in text
        assert "violations found" not in text
        await page.screenshot(artifacts / "console-audit.png")

        await page.goto(f"{base}/console")
        await page.click("form.logout button")
        assert "Log in" in await page.text()
        await page.goto(f"{base}/console/accounts/shop")
        assert "Log in" in await page.text()  # the session is over

        assert page.errors() == []
        # And the check sees what it looks for: a script injected into the page is refused
        # by the CSP, and the refusal is reported.
        await page.evaluate(
            "document.body.appendChild(Object.assign(document.createElement('script'), "
            "{textContent: 'document.title = 1'}))"
        )
        await asyncio.sleep(0.5)
        await page.evaluate("1")  # reads the events that arrived meanwhile
        assert any("Content Security Policy" in e for e in page.errors()), page.errors()
    shots = ("login", "overview", "account", "payment", "transfer", "refund", "payout", "stuck",
             "sagas", "webhooks", "audit")  # fmt: skip
    for name in shots:
        shot = artifacts / f"console-{name}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
