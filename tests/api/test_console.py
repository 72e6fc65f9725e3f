"""The operator console (/console): login with an admin key into a server-side session,
CSRF-checked forms, a strict Content-Security-Policy, escaped output, tenant
boundaries, and every page over a ledger with a card payment and a cross-shard transfer."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from litestar.testing import AsyncTestClient

from fix_postgres import PostgresServer
from paycore.api import create_app
from paycore.api.auth import ApiKeys, Scope
from paycore.api.console import CSP, SESSION_COOKIE, ops_reads
from paycore.api.console.audit_runs import Auditor, AuditRuns
from paycore.api.console.chart import balance_svg
from paycore.api.console.sessions import LoginTokens, Sessions
from paycore.api.console.traffic_rows import per_second, share, traffic_rows
from paycore.api.traffic import RecentTraffic
from paycore.cluster.topology import build_store
from paycore.config import Settings, ShardConfig
from paycore.ledger.tenancy import internal_account_id, internal_transfer_id
from paycore.ops.console_audit import console_audit
from paycore.storage.payments import AckPaymentEvents, ClaimPaymentEvents, WebhookDeliveryRow
from paycore.storage.store import Store

ADMIN = frozenset({Scope.ADMIN})
HOSTILE = "<script>alert('x')</script>"
HOSTILE_ID = "<b onmouseover=alert(1)>x"  # no '/': it stays one path segment
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


async def _login(client: AsyncTestClient[Any], token: str) -> httpx.Response:
    """Log in through the form as a browser does: GET it, POST it with its token."""
    client.cookies.clear()
    form = await client.get("/console/login")
    assert form.status_code == 200, form.text
    return await client.post("/console/login", data={"api_key": token, "csrf": _csrf(form.text)})


class World:
    """Alice's objects, made over the API with her key."""

    def __init__(self, payment: str, a: str, b: str) -> None:
        self.payment, self.a, self.b = payment, a, b


async def _seed(client: AsyncTestClient[Any], store: Store, token: str, tenant: str) -> World:
    headers = {"Authorization": f"Bearer {token}"}

    async def post(path: str, body: Any) -> dict[str, Any]:
        r = await client.post(path, json=body, headers=headers)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def shard(client_id: str) -> str:
        return store.shard_of(internal_account_id(tenant, client_id))

    a = next(f"a{n}" for n in range(200) if shard(f"a{n}") == shard("m1"))
    b = next(f"b{n}" for n in range(200) if shard(f"b{n}") != shard(a))
    await post("/v1/accounts", {"id": "m1", "currency": "USD", "flags": {"history": True}})
    for account in (a, b):
        await post("/v1/accounts", {"id": account, "currency": "USD"})
    await post("/v1/accounts", {"id": "evil", "currency": "USD", "metadata": {"note": HOSTILE}})
    transfer = {"debit_account_id": a, "credit_account_id": "m1", "currency": "USD"}
    await post("/v1/transfers", {**transfer, "id": "t1", "amount": 500})
    await post("/v1/transfers", {"id": "xs1", "debit_account_id": a, "credit_account_id": b,
                                 "amount": 70, "currency": "USD"})  # fmt: skip
    payment = {"amount": 1200, "currency": "USD", "merchant_account_id": "m1"}
    paid = await post("/v1/payments", {**payment, "source": {"card": CARD}})
    assert paid["status"] == "succeeded", paid
    return World(paid["id"], a, b)


@asynccontextmanager
async def _serving(
    root: Path,
    base_url: str = "http://testserver.local",
    auth: str = "api_keys",
    *,
    auditor: Auditor | None = console_audit,
) -> AsyncIterator[tuple[AsyncTestClient[Any], Store]]:
    """The app as ``paycore serve`` builds it (the embedded shards: several in the tests,
    the console's auditor), API keys required unless ``auth`` says otherwise."""
    settings = Settings(data_dir=str(root), auth=auth, rate_limit_per_second=0)
    store = build_store(settings)
    app = create_app(store, settings, start_workers=False, auditor=auditor)
    async with AsyncTestClient(app=app, base_url=base_url) as client:
        yield client, store


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient[Any], Store]]:
    async with _serving(tmp_path) as both:
        yield both


@pytest.fixture
def keyed(served: tuple[AsyncTestClient[Any], Store]) -> AsyncTestClient[Any]:
    return served[0]


@pytest.fixture
def store(served: tuple[AsyncTestClient[Any], Store]) -> Store:
    return served[1]


async def _key(store: Store, tenant: str, scopes: frozenset[Scope]) -> str:
    return (await ApiKeys(store).create(tenant, scopes)).token


async def test_login_refuses_bad_and_read_keys_and_accepts_an_admin_key(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """A wrong key is a 401, a read-and-write key a 403, an admin key a session: its
    cookie is HttpOnly, SameSite=Strict, scoped to /console, and holds no part of the key."""
    assert (await keyed.get("/console", follow_redirects=False)).status_code == 303
    bad = await _login(keyed, "pk_live_0123456789abcdef_" + "x" * 43)
    assert bad.status_code == 401
    assert "not valid" in bad.text
    reader = await _key(store, "alice", frozenset({Scope.READ, Scope.WRITE}))
    refused = await _login(keyed, reader)
    assert refused.status_code == 403
    assert "admin scope" in refused.text
    assert SESSION_COOKIE not in keyed.cookies
    admin = await _key(store, "alice", ADMIN)
    ok = await _login(keyed, admin)
    assert ok.status_code == 200, ok.text  # followed the 303 to the overview
    assert "Overview" in ok.text
    set_cookie = next(
        h for r in (*ok.history, ok) for h in r.headers.get_list("set-cookie")
        if h.startswith(SESSION_COOKIE + "=")
    )  # fmt: skip
    flags = {part.strip().lower() for part in set_cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    assert "secure" not in flags  # plain http here; see the https test
    session_id = keyed.cookies[SESSION_COOKIE]
    assert session_id not in admin
    assert admin.removeprefix("pk_live_").partition("_")[2] not in set_cookie  # the secret


async def test_the_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    """Served over https, the session cookie carries the Secure flag."""
    async with _serving(tmp_path, "https://console.test") as (https, store):
        admin = await _key(store, "alice", ADMIN)
        form = await https.get("/console/login")
        r = await https.post(
            "/console/login", data={"api_key": admin, "csrf": _csrf(form.text)},
            follow_redirects=False,
        )  # fmt: skip
        assert r.status_code == 303
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
        assert "secure" in {p.strip().lower() for p in cookie.split(";")}


async def test_post_forms_need_their_csrf_token(keyed: AsyncTestClient[Any], store: Store) -> None:
    """Login and logout without their CSRF token, or with a wrong one, are 403 and
    change nothing; with it, logout ends the session for good."""
    admin = await _key(store, "alice", ADMIN)
    keyed.cookies.clear()
    await keyed.get("/console/login")
    for data in ({"api_key": admin}, {"api_key": admin, "csrf": "f" * 64}):
        r = await keyed.post("/console/login", data=data)
        assert r.status_code == 403, r.text
        assert SESSION_COOKIE not in keyed.cookies
    assert (await _login(keyed, admin)).status_code == 200
    overview = await keyed.get("/console")
    token = _csrf(overview.text)
    session_id = keyed.cookies[SESSION_COOKIE]
    wrong = ("y" if token[0] == "x" else "x") + token[1:]
    for data in ({}, {"csrf": wrong}):
        r = await keyed.post("/console/logout", data=data)
        assert r.status_code == 403
        assert (await keyed.get("/console", follow_redirects=False)).status_code == 200
    out = await keyed.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    # The old cookie, even replayed, opens nothing any more.
    keyed.cookies.set(SESSION_COOKIE, session_id, path="/console")
    assert (await keyed.get("/console", follow_redirects=False)).status_code == 303


async def test_a_revoked_key_ends_its_sessions(keyed: AsyncTestClient[Any], store: Store) -> None:
    """Revoking the key that logged in logs its sessions out at the next request."""
    keys = ApiKeys(store)
    new = await keys.create("alice", ADMIN)
    assert (await _login(keyed, new.token)).status_code == 200
    await keys.revoke(new.row.id)
    assert (await keyed.get("/console", follow_redirects=False)).status_code == 303


async def test_every_page_renders_for_a_ledger_with_a_payment_and_a_cross_shard_transfer(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """Overview, search, account (with its chart), transfer, payment (with its attempts
    and ledger transfers) and stuck pages are 200, with the security headers."""
    admin = await _key(store, "alice", ADMIN)
    world = await _seed(keyed, store, await _key(store, "alice", ADMIN), "alice")
    assert (await _login(keyed, admin)).status_code == 200
    pages = {
        "/console": ["Money per currency", "USD", "Shards", "Processors"],
        "/console/accounts?q=a": [world.a],
        "/console/accounts/m1": ["Balance over time", "<svg", "t1"],
        f"/console/accounts/{world.a}": ["xs1"],
        "/console/transfers/xs1": [world.a, world.b, "posted"],
        f"/console/payments/{world.payment}": ["authorize", "Ledger transfers", "succeeded"],
        "/console/stuck?older_than=0": ["Stuck payments"],
        # Not ASCII digits: the default bound ('²' was a 500, Arabic-Indic digits read).
        "/console/stuck?older_than=%C2%B2": ["Stuck payments"],
        "/console/stuck?older_than=%D9%A3": ["Stuck payments"],
        "/console/sagas?older_than=%C2%B2": ["sagas"],
    }
    for path, expected in pages.items():
        r = await keyed.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-type"].startswith("text/html")
        for text in expected:
            assert text in r.text, (path, text)
    payment = (await keyed.get(f"/console/payments/{world.payment}")).text
    ledger = re.findall(r'href="/console/transfers/(pm\.[^"]+)"', payment)
    assert ledger, payment
    for transfer_id in ledger:
        r = await keyed.get(f"/console/transfers/{transfer_id}")
        assert r.status_code == 200, r.text
        assert f"/console/payments/{world.payment}" in r.text
    css = await keyed.get("/console/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (await keyed.get("/console/static/../app.py")).status_code == 404


async def test_the_shard_table_names_each_postgresql_shards_primary(
    tmp_path: Path, postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    """On PostgreSQL the overview says which server each shard answered from (the primary
    behind a multi-host DSN); the embedded shards say so."""
    shards = (ShardConfig(name="shard-0", backend="postgres", dsn=postgres_dsn),)
    settings = Settings(data_dir=str(tmp_path), shards=shards, rate_limit_per_second=0)
    store = build_store(settings)
    app = create_app(store, settings, start_workers=False)
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        assert (await _login(client, await _key(store, "alice", ADMIN))).status_code == 200
        page = (await client.get("/console")).text
    shards_table = page[page.index("<h2>Shards</h2>") : page.index("<h2>Processors</h2>")]
    assert f"<code>127.0.0.1:{postgres_server.port}</code>" in shards_table, shards_table


async def test_the_shard_table_calls_sqlite_shards_embedded(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """The embedded shards have no server to name: the table says they are embedded."""
    assert (await _login(keyed, await _key(store, "alice", ADMIN))).status_code == 200
    page = (await keyed.get("/console")).text
    shards_table = page[page.index("<h2>Shards</h2>") : page.index("<h2>Processors</h2>")]
    assert shards_table.count("embedded") == len(store.shard_stores) > 1


async def test_hostile_metadata_and_queries_are_escaped(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """An account's metadata holding a script tag, and a search for one, render as text."""
    world_key = await _key(store, "alice", ADMIN)
    await _seed(keyed, store, world_key, "alice")
    assert (await _login(keyed, world_key)).status_code == 200
    page = await keyed.get("/console/accounts/evil")
    assert page.status_code == 200
    assert HOSTILE not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    search = await keyed.get("/console/accounts", params={"q": HOSTILE})
    assert search.status_code == 200
    assert "<script>" not in search.text
    assert "&lt;script&gt;" in search.text


async def test_another_tenants_objects_are_404s(keyed: AsyncTestClient[Any], store: Store) -> None:
    """Bob's admin gets 404 for Alice's account, transfer and payment, exactly as for
    ids that do not exist, and finds none of her accounts or money."""
    world = await _seed(keyed, store, await _key(store, "alice", ADMIN), "alice")
    assert (await _login(keyed, await _key(store, "bob", ADMIN))).status_code == 200
    for kind, ident in (("accounts", "m1"), ("transfers", "t1"), ("payments", world.payment)):
        foreign = await keyed.get(f"/console/{kind}/{ident}")
        ghost = await keyed.get(f"/console/{kind}/zz{ident}")
        assert foreign.status_code == ghost.status_code == 404
        # The session's CSRF token is random text that may contain the id by chance.
        token = _csrf(foreign.text)
        assert foreign.text.replace(token, "CSRF").replace(ident, "ID") == ghost.text.replace(
            token, "CSRF"
        ).replace(f"zz{ident}", "ID")
    search = await keyed.get("/console/accounts?q=")
    assert "m1" not in search.text
    assert world.a not in search.text
    overview = await keyed.get("/console")
    assert "No accounts yet." in overview.text


async def test_open_mode_acts_for_the_default_tenant_with_a_warning(tmp_path: Path) -> None:
    """With auth = "open" there is no login: the console is the default tenant's, and
    every page says so."""
    async with _serving(tmp_path, auth="open") as (client, _):
        await _check_open(client)


async def _check_open(client: AsyncTestClient[Any]) -> None:
    r = await client.get("/console")
    assert r.status_code == 200
    assert "SECURITY" in r.text
    assert "tenant <strong>default</strong>" in r.text
    assert (await client.get("/console/login", follow_redirects=False)).status_code == 303


def test_sessions_expire_and_are_bounded() -> None:
    """A session ends after its idle time, and the oldest makes room past the bound."""
    from paycore.api.auth import OPEN_PRINCIPAL

    now = [0.0]
    sessions = Sessions(idle_seconds=10, max_seconds=100, max_sessions=2, clock=lambda: now[0])
    first = sessions.create(OPEN_PRINCIPAL)
    assert sessions.get(first.id) is first
    now[0] = 11
    assert sessions.get(first.id) is None
    a, b, c = (sessions.create(OPEN_PRINCIPAL) for _ in range(3))
    assert sessions.get(a.id) is None
    assert sessions.get(b.id) is b
    assert sessions.get(c.id) is c
    assert len(sessions) == 2


def test_login_tokens_are_bound_to_their_nonce() -> None:
    """A login CSRF token checks with its own nonce only."""
    tokens = LoginTokens()
    nonce, token = tokens.new()
    assert tokens.check(nonce, token)
    assert not tokens.check(tokens.new()[0], token)
    assert not tokens.check(nonce, None)


def test_the_balance_chart_holds_numbers_only() -> None:
    """The SVG is drawn from the points, zero line included; nothing to draw, nothing."""
    assert balance_svg([]) == ""
    svg = balance_svg([(1, 10), (5, -4), (9, 7)])
    assert svg.startswith("<svg")
    assert re.fullmatch(r"[<>\w\s=\"./:,#\-]+", svg), svg


async def test_every_console_page_needs_a_session(keyed: AsyncTestClient[Any]) -> None:
    """Without a session, every console page sends the browser to the login form and
    shows nothing; only the login form and the stylesheet answer."""
    free = {"/console/login", "/console/static/{name:str}"}
    paths = {
        route.path
        for route in keyed.app.routes
        if route.path.startswith("/console") and "GET" in getattr(route, "methods", ())
    }
    assert "/console/payments/{payment_id:str}" in paths
    for path in sorted(paths - free):
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        r = await keyed.get(concrete, follow_redirects=False)
        assert r.status_code == 303, (path, r.text)
        assert r.headers["location"] == "/console/login"
        assert r.text == ""


async def test_a_csrf_token_sent_as_a_file_is_refused(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """A multipart form whose token is a file part is a 403, not a 500."""
    admin = await _key(store, "alice", ADMIN)
    keyed.cookies.clear()
    await keyed.get("/console/login")
    r = await keyed.post(
        "/console/login", data={"api_key": admin}, files={"csrf": ("csrf", b"x", "text/plain")}
    )
    assert r.status_code == 403


@pytest.mark.parametrize("path", ["/console/login", "/console/logout", "/console/audit"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"[" * 100_000 + b"]" * 100_000),
        ("application/json", b'{"api_key": {"a": [1, 2, {"b": null}]}}'),
        ("application/x-www-form-urlencoded", b"api_key=" + b"%FF%FE" * 1000 + b"&csrf=%00"),
        ("application/x-www-form-urlencoded", b"api_key=" + b"k" * 2_000_000),
        ("multipart/form-data; boundary=x", b"--x\r\nbroken"),
        ("text/plain", b"\xff\xfe\x00 not a form"),
    ],
)
async def test_hostile_form_bodies_never_get_a_5xx(
    keyed: AsyncTestClient[Any], path: str, content_type: str, body: bytes
) -> None:
    """Whatever arrives at a console form (JSON nested 100,000 deep, bytes that are not
    UTF-8, a 2 MB field, a broken multipart), the answer is never a 5xx: a login is
    refused, a logout without a session has nothing to end."""
    keyed.cookies.clear()
    await keyed.get("/console/login")
    r = await keyed.post(path, content=body, headers={"content-type": content_type})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if path == "/console/login":
        assert r.status_code >= 400, r.text[:300]


async def _refund_and_payout(
    client: AsyncTestClient[Any], token: str, world: World
) -> tuple[str, str]:
    """A refund of the world's card payment and a payout from its account ``a``."""
    headers = {"Authorization": f"Bearer {token}"}
    refund = await client.post(
        "/v1/refunds", json={"payment_id": world.payment, "amount": 300}, headers=headers
    )
    assert refund.status_code == 201, refund.text
    payout = await client.post(
        "/v1/payouts",
        json={"wallet_account_id": world.a, "amount": 150, "currency": "USD",
              "destination": "DE89370400440532013000"},
        headers=headers,
    )  # fmt: skip
    assert payout.status_code == 201, payout.text
    return refund.json()["id"], payout.json()["id"]


async def test_refund_and_payout_pages_link_to_their_payment_wallet_and_transfers(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """The payment page lists its refund, and the merchant's and wallet's account pages
    link the refund and payout their ledger transfers belong to; the refund page shows
    its attempts, links to its payment and its ledger transfers, each of which links
    back; likewise a payout with its wallet account."""
    admin = await _key(store, "alice", ADMIN)
    world = await _seed(keyed, store, admin, "alice")
    refund_id, payout_id = await _refund_and_payout(keyed, admin, world)
    assert (await _login(keyed, admin)).status_code == 200
    payment = (await keyed.get(f"/console/payments/{world.payment}")).text
    assert f'href="/console/refunds/{refund_id}"' in payment
    merchant = (await keyed.get("/console/accounts/m1")).text  # its ledger transfers say so
    assert f'href="/console/refunds/{refund_id}"' in merchant
    assert f'href="/console/payments/{world.payment}"' in merchant
    wallet = (await keyed.get(f"/console/accounts/{world.a}")).text
    assert f'href="/console/payouts/{payout_id}"' in wallet
    refund = await keyed.get(f"/console/refunds/{refund_id}")
    assert refund.status_code == 200, refund.text
    assert refund.headers["content-security-policy"] == CSP
    for text in ("300 USD", f'href="/console/payments/{world.payment}"',
                 'href="/console/accounts/m1"', "refund</strong>"):  # fmt: skip
        assert text in refund.text, text
    payout = await keyed.get(f"/console/payouts/{payout_id}")
    assert payout.status_code == 200, payout.text
    for text in ("150 USD", f'href="/console/accounts/{world.a}"', "DE89370400440532013000",
                 "payout</strong>"):  # fmt: skip
        assert text in payout.text, text
    for page, owner in (
        (refund.text, f"refunds/{refund_id}"),
        (payout.text, f"payouts/{payout_id}"),
    ):
        ledger = re.findall(r'href="/console/transfers/(pm\.[^"]+)"', page)
        assert ledger, page
        for transfer_id in ledger:
            r = await keyed.get(f"/console/transfers/{transfer_id}")
            assert r.status_code == 200, r.text
            assert f'href="/console/{owner}"' in r.text


async def test_another_tenants_refund_and_payout_are_404s(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """Bob's admin gets for Alice's refund and payout the same 404 as for missing ids;
    a hostile id in the path is shown escaped."""
    alice = await _key(store, "alice", ADMIN)
    world = await _seed(keyed, store, alice, "alice")
    refund_id, payout_id = await _refund_and_payout(keyed, alice, world)
    assert (await _login(keyed, await _key(store, "bob", ADMIN))).status_code == 200
    for kind, ident in (("refunds", refund_id), ("payouts", payout_id)):
        foreign = await keyed.get(f"/console/{kind}/{ident}")
        ghost = await keyed.get(f"/console/{kind}/{ident[:-2]}zz")
        assert foreign.status_code == ghost.status_code == 404
        assert foreign.text.replace(ident, "ID") == ghost.text.replace(f"{ident[:-2]}zz", "ID")
        hostile = await keyed.get(f"/console/{kind}/{quote(HOSTILE_ID)}")
        assert hostile.status_code == 404
        assert hostile.headers["content-type"].startswith("text/html")
        assert HOSTILE_ID not in hostile.text
        assert "&lt;b onmouseover=alert(1)&gt;" in hostile.text


async def _fail_deliveries(
    client: AsyncTestClient[Any], store: Store, token: str, tenant: str
) -> list[str]:
    """The sender's record of attempts at two payments' events: the first given up
    after a hostile error, the second answered 503 and due again in an hour."""
    again = {"amount": 800, "currency": "USD", "merchant_account_id": "m1",
             "source": {"card": CARD}}  # fmt: skip
    paid = await client.post(
        "/v1/payments", json=again, headers={"Authorization": f"Bearer {token}"}
    )
    assert paid.status_code == 201, paid.text
    shard = store.shard_of(internal_account_id(tenant, "m1"))
    events = await store.execute(ClaimPaymentEvents(shard, "sender-test", 30))
    assert len(events) >= 2, events
    first, second = events[0].id, events[1].id
    later = time.time_ns() + 3600 * 1_000_000_000
    await store.execute(
        AckPaymentEvents(
            shard,
            failed=(first,),
            retry=((second, later),),
            deliveries=(
                WebhookDeliveryRow(first, "https://hooks.example/in", "failed", "rejected",
                                   last_status=410, last_error=HOSTILE),
                WebhookDeliveryRow(second, "https://hooks.example/in", "pending", "error",
                                   last_status=503),
            ),
        )
    )  # fmt: skip
    return [first, second]


async def test_failing_webhook_deliveries_are_listed_escaped_and_tenant_scoped(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """A delivery given up and one being retried are listed, latest change first, with
    attempts, last answer and next retry; a hostile error shows as text; page 1 of size 1
    links to the rest; Bob's admin sees none of Alice's."""
    admin = await _key(store, "alice", ADMIN)
    await _seed(keyed, store, admin, "alice")
    failed, retried = await _fail_deliveries(keyed, store, admin, "alice")
    assert (await _login(keyed, admin)).status_code == 200
    page = await keyed.get("/console/webhooks")
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == CSP
    text = page.text
    for shown in (failed, retried, "HTTP 410", "HTTP 503", "payment.succeeded"):
        assert shown in text, shown
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    assert 'href="/console/webhooks"' in text  # in the navigation
    assert sorted(await _delivery_pages(store, "alice")) == sorted([failed, retried])
    assert "Older" not in text  # one page of 25 holds both
    assert (await _login(keyed, await _key(store, "bob", ADMIN))).status_code == 200
    bob = await keyed.get("/console/webhooks")
    assert bob.status_code == 200
    assert failed not in bob.text
    assert retried not in bob.text
    assert "No failing deliveries." in bob.text


async def _delivery_pages(store: Store, tenant: str) -> list[str]:
    """The event ids of the tenant's failing deliveries, one page of one at a time,
    following each page's cursor as the page's link does."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await ops_reads.failing_deliveries(
            store, tenant, ops_reads.parse_delivery_cursor(cursor), 1
        )
        seen += [row.failing.delivery.event_id for row in page.rows]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def _stall_saga(store: Store, tenant: str, client_transfer: str, seconds_ago: int) -> None:
    """Put a finished cross-shard transfer's outbox row back to ``held``, begun
    ``seconds_ago``: as if the request died after step 1 and no relay ran since."""
    internal = internal_transfer_id(tenant, client_transfer)
    stalled = 0
    for shard in store.shard_stores.values():
        path = getattr(shard, "path", None)
        assert isinstance(path, Path), shard
        with closing(sqlite3.connect(path, timeout=10)) as db, db:
            stalled += db.execute(
                "UPDATE outbox SET state = 'held', created_at = ? WHERE transfer_id = ?",
                (time.time_ns() - seconds_ago * 1_000_000_000, internal),
            ).rowcount
    assert stalled == 1


async def test_stuck_sagas_are_listed_past_their_bound_for_their_tenant_only(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """A cross-shard transfer whose saga stayed ``held`` for two minutes is listed past
    the default 60 s bound with its state, shards and age, linking to its transfer; not
    under a bound of ten minutes; and not at all for Bob's admin."""
    admin = await _key(store, "alice", ADMIN)
    world = await _seed(keyed, store, admin, "alice")
    assert (await _login(keyed, admin)).status_code == 200
    assert "xs1" not in (await keyed.get("/console/sagas?older_than=0")).text  # finished
    _stall_saga(store, "alice", "xs1", 120)
    page = await keyed.get("/console/sagas")
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == CSP
    for shown in ('href="/console/transfers/xs1"', "held", f'href="/console/accounts/{world.b}"',
                  "70 USD", 'href="/console/sagas"'):  # fmt: skip
        assert shown in page.text, shown
    ages = re.findall(r'<td class="num">(\d+)</td>\s*</tr>', page.text)
    assert len(ages) == 1, ages
    assert 120 <= int(ages[0]) < 180, ages
    assert "xs1" not in (await keyed.get("/console/sagas?older_than=600")).text
    assert (await _login(keyed, await _key(store, "bob", ADMIN))).status_code == 200
    bob = await keyed.get("/console/sagas?older_than=0")
    assert bob.status_code == 200
    assert "xs1" not in bob.text
    assert world.a not in bob.text


def test_recent_traffic_counts_minute_by_minute_and_forgets_old_minutes() -> None:
    """Requests land in their wall-clock minute; 4xx, 5xx and the 2xx answers that make
    transfers and payments are counted apart; a quiet minute shows zeros; beyond the
    ring's size a minute is gone; rates and shares are formatted from integers."""
    now = [600.0]
    traffic = RecentTraffic(minutes=3, clock=lambda: now[0])
    traffic.note("POST", "/v1/transfers", 201)
    traffic.note("POST", "/v1/transfers/batch", 200)
    traffic.note("POST", "/v1/payments", 201)
    traffic.note("GET", "/v1/transfers", 200)  # a listing makes nothing
    traffic.note("POST", "/v1/transfers", 422)
    traffic.note("GET", "/v1/accounts/{account_id:str}", 503)
    now[0] = 720.0 + 15  # two minutes on: the one between was quiet
    traffic.note("GET", "/healthz", 200)
    current, quiet, first = traffic.minutes()
    assert (current.start, current.requests) == (720, 1)
    assert (quiet.start, quiet.requests) == (660, 0)
    assert first.start == 600
    assert (first.requests, first.client_errors, first.server_errors) == (6, 1, 1)
    assert (first.transfer_writes, first.payments_created) == (2, 1)
    rows = traffic_rows(traffic, now[0])
    assert (rows[0].current, rows[0].per_second) == (True, "0.0")  # 1 in 15 s: 0.06
    assert (rows[2].per_second, rows[2].error_share) == ("0.1", "33.3 %")
    assert rows[1].error_share == "\u2013"
    assert per_second(90, 60) == "1.5"
    assert share(1, 3) == "33.3 %"
    now[0] = 900.0  # 600 is now four minutes back: out of a ring of three
    assert [m.start for m in traffic.minutes()] == [900, 840, 780]
    assert all(m.requests == 0 for m in traffic.minutes())


async def test_the_overview_shows_this_nodes_traffic(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """The API requests made before the page are counted in the overview's minutes
    (summed over the minutes: the seeding may straddle two)."""
    admin = await _key(store, "alice", ADMIN)
    await _seed(keyed, store, admin, "alice")
    assert (await _login(keyed, admin)).status_code == 200
    page = (await keyed.get("/console")).text
    assert "Traffic of the last minutes (this node)" in page
    assert "This node's view only" in page
    assert "(so far)" in page
    section = page[page.index("Traffic of the last minutes") : page.index("<h2>Shards</h2>")]
    rows = re.findall(r"<tr><td>[^<]*</td>((?:<td[^>]*>[^<]*</td>){7})</tr>", section)
    assert len(rows) == 15, section
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows]

    def total(column: int) -> int:
        return sum(int(c[column].replace(",", "")) for c in cells)

    assert total(0) >= 9  # 4 accounts, 2 transfers, 1 payment, the login's 2 at least
    assert total(5) == 2  # transfer writes
    assert total(6) == 1  # payments created


def _shard_db(store: Store, tenant: str, client_account: str) -> Path:
    """The SQLite file of the shard holding ``client_account``."""
    shard = store.shard_stores[store.shard_of(internal_account_id(tenant, client_account))]
    path = getattr(shard, "path", None)
    assert isinstance(path, Path), shard
    return path


async def test_the_audit_form_runs_a_bounded_audit_and_shows_counts_per_shard_and_kind(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """Without its CSRF token the form is a 403; with it, the audit of a sound ledger is
    clean on every shard; a second run at once is refused; a counter changed behind the
    ledger's back shows as violations of its shard, by kind."""
    admin = await _key(store, "alice", ADMIN)
    await _seed(keyed, store, admin, "alice")
    assert (await _login(keyed, admin)).status_code == 200
    page = await keyed.get("/console/audit")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert "No audit has run on this node" in page.text
    assert 'href="/console/audit"' in page.text
    assert (await keyed.post("/console/audit", data={})).status_code == 403
    assert (await keyed.post("/console/audit", data={"csrf": "x" * 43})).status_code == 403
    assert "No audit has run" in (await keyed.get("/console/audit")).text
    clean = await keyed.post("/console/audit", data={"csrf": _csrf(page.text)})
    assert clean.status_code == 200, clean.text
    assert ">clean<" in clean.text
    for name in store.shard_stores:
        assert f"<code>{name}</code>" in clean.text
    assert "violations found" not in clean.text
    again = await keyed.post("/console/audit", data={"csrf": _csrf(page.text)})
    assert "ran moments ago" in again.text

    with closing(sqlite3.connect(_shard_db(store, "alice", "m1"), timeout=10)) as db, db:
        db.execute(
            "UPDATE accounts SET credits_posted = credits_posted + 7 WHERE id = ?",
            (internal_account_id("alice", "m1"),),
        )
    runs = AuditRuns(store, console_audit, stuck_seconds=300)
    assert runs.start() is None
    await runs.wait(30)
    assert runs.last is not None
    assert runs.last.ok is False
    broken = [s for s in runs.last.shards if not s.ok]
    assert [s.shard for s in broken] == [store.shard_of(internal_account_id("alice", "m1"))]
    assert "counter_mismatch" in dict(broken[0].kinds)


async def test_a_ledger_beyond_the_bound_is_not_audited_from_the_console(
    keyed: AsyncTestClient[Any], store: Store
) -> None:
    """Past its bound of transfer rows the console audits nothing and says to run
    ``paycore audit``; the page shows that outcome."""
    admin = await _key(store, "alice", ADMIN)
    await _seed(keyed, store, admin, "alice")
    runs = AuditRuns(store, console_audit, stuck_seconds=300, max_transfers=1)
    assert runs.start() is None
    assert runs.start() == "An audit is running already."
    await runs.wait(30)
    assert runs.last is not None
    assert runs.last.ok is None
    assert runs.last.problem is not None
    assert "paycore audit" in runs.last.problem
    assert runs.last.shards == []


async def test_open_mode_audit_form_is_csrf_checked_too(tmp_path: Path) -> None:
    """With auth = "open" (no session) the audit form's token is tied to a cookie: a
    POST without it is a 403, with it the audit runs."""
    async with _serving(tmp_path, auth="open") as (client, _):
        page = await client.get("/console/audit")
        assert page.status_code == 200
        assert (await client.post("/console/audit", data={"csrf": "f" * 64})).status_code == 403
        ran = await client.post("/console/audit", data={"csrf": _csrf(page.text)})
        assert ran.status_code == 200, ran.text
        assert "Last audit on this node" in ran.text
        assert "No audit has run" not in ran.text


async def test_an_app_without_an_auditor_offers_no_audit(tmp_path: Path) -> None:
    """Built without the tooling's auditor, the audit page says to run ``paycore
    audit`` and offers no form (so no token: a POST is refused)."""
    async with _serving(tmp_path, auth="open", auditor=None) as (client, _):
        page = await client.get("/console/audit")
        assert page.status_code == 200
        assert "started without the auditor" in page.text
        assert 'action="/console/audit"' not in page.text
        assert 'name="csrf"' not in page.text
        assert (await client.post("/console/audit", data={"csrf": "x" * 64})).status_code == 403
        assert "No audit has run on this node" in (await client.get("/console/audit")).text
