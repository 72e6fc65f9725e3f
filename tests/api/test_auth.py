"""API keys and tenants: every route needs a key, a key acts for one tenant, another
tenant's object is answered exactly as a missing one, keys rotate and revoke, and no
Authorization header, however strange, gets a 500."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from backends import AnyStore, StoreFactory
from paycore.api import create_app
from paycore.api.auth import ApiKeys, Scope
from paycore.config import Settings
from paycore.errors import ErrorCode

ALL = frozenset({Scope.READ, Scope.WRITE})
PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/processor_events/{processor:str}"}


def _routes(app: Litestar) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves but the public ones."""
    found = set()
    for route in app.routes:
        for method in getattr(route, "methods", ()):
            if method in ("HEAD", "OPTIONS") or route.path in PUBLIC:
                continue
            # /docs needs no key; the console logs in with its own session (test_console.py).
            if route.path.startswith(("/docs", "/console")):
                continue
            found.add((method, route.path))
    return found


class Tenant:
    """A client of one tenant: its key sent with every request."""

    def __init__(self, client: AsyncTestClient[Any], token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers=self.headers)

    async def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return await self.client.post(path, json=body, headers={**self.headers, **headers})

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path, headers=self.headers)

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        if method == "GET":
            return await self.get(path)
        if method == "DELETE":
            return await self.delete(path)
        return await self.post(path, body)


@asynccontextmanager
async def _two_tenants(
    open_client: Any, store: AnyStore
) -> AsyncIterator[tuple[AsyncTestClient[Any], Tenant, Tenant]]:
    async with open_client(auth="api_keys") as client:
        keys = ApiKeys(store)
        # Admin keys: the admin API's routes are walked too.
        alice = await keys.create("alice", ALL | {Scope.ADMIN})
        bob = await keys.create("bob", ALL | {Scope.ADMIN})
        yield client, Tenant(client, alice.token), Tenant(client, bob.token)


async def _alice_world(alice: Tenant) -> dict[str, str]:
    """Alice's objects: two wallets, a transfer, a hold, a payment paid from a wallet."""
    for account in ("a1", "a2"):
        r = await alice.post("/v1/accounts", {"id": account, "currency": "USD"})
        assert r.status_code == 201, r.text
    await alice.post("/v1/accounts", {"id": "a3", "currency": "USD", "flags": {"history": True}})
    body = {"debit_account_id": "a1", "credit_account_id": "a2", "currency": "USD"}
    assert (
        await alice.post("/v1/transfers", {**body, "id": "t1", "amount": 500})
    ).status_code == 201
    hold = {**body, "id": "h1", "amount": 5, "pending": True}
    assert (await alice.post("/v1/transfers", hold)).status_code == 201
    payment = {
        "amount": 100,
        "currency": "USD",
        "merchant_account_id": "a1",
        "source": {"wallet_account_id": "a2"},
    }
    paid = await alice.post("/v1/payments", payment)
    assert paid.status_code == 201, paid.text
    key = await alice.post("/v1/api_keys", {"scopes": ["read"]})
    assert key.status_code == 201, key.text
    hook = await alice.post("/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/alice"})
    assert hook.status_code == 201, hook.text
    conversion = await _alice_conversion(alice)
    return {
        "payment": paid.json()["id"],
        "key": key.json()["id"],
        "hook": hook.json()["id"],
        "quote": conversion["quote_id"],
        "conversion": conversion["id"],
    }


async def _alice_conversion(alice: Tenant) -> dict[str, Any]:
    """A held conversion from a1 to a EUR wallet, of a quote whose random id holds no
    "500" (the walk below looks for that text in every answer to Bob)."""
    assert (await alice.post("/v1/accounts", {"id": "a4", "currency": "EUR"})).status_code == 201
    while True:
        body = {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount": 10}
        quote = (await alice.post("/v1/fx/quotes", body)).json()
        if "500" not in quote["id"]:
            break
    convert = {"quote_id": quote["id"], "debit_account_id": "a1", "credit_account_id": "a4"}
    held = await alice.post("/v1/fx/conversions", {**convert, "pending": True})
    assert held.status_code == 201, held.text
    conversion: dict[str, Any] = held.json()
    return conversion


def _requests(world: dict[str, str], ids: dict[str, str]) -> dict[tuple[str, str], Any]:
    """Per route: (path, body) naming Alice's objects (``ids`` maps each to the id used)."""
    a1, a2, t1, h1 = ids["a1"], ids["a2"], ids["t1"], ids["h1"]
    hook = ids.get("hook", world["hook"])
    pay = ids.get("payment", world["payment"])
    quote, fxc = ids["quote"], ids["conversion"]
    body = {"debit_account_id": a1, "credit_account_id": a2, "currency": "USD", "amount": 1}
    return {
        ("GET", "/v1/accounts/{account_id:str}"): (f"/v1/accounts/{a1}", None),
        ("POST", "/v1/accounts/{account_id:str}/close"): (f"/v1/accounts/{a1}/close", None),
        ("GET", "/v1/accounts/{account_id:str}/transfers"): (f"/v1/accounts/{a1}/transfers", None),
        ("GET", "/v1/accounts/{account_id:str}/balances"): (
            f"/v1/accounts/{ids['a3']}/balances",
            None,
        ),
        ("GET", "/v1/transfers/{transfer_id:str}"): (f"/v1/transfers/{t1}", None),
        ("GET", "/v1/transfers/batch"): ("/v1/transfers/batch", None),
        # Bob's own new ids: each refusal is kept under its id, so the two calls
        # compared (Alice's accounts, missing ones) use two ids.
        ("POST", "/v1/transfers"): ("/v1/transfers", {**body, "id": ids["bob-t"]}),
        ("POST", "/v1/transfers/batch"): (
            "/v1/transfers/batch",
            {"transfers": [{**body, "id": ids["bob-b"]}]},
        ),
        ("POST", "/v1/transfers/{transfer_id:str}/post"): (f"/v1/transfers/{h1}/post", None),
        ("POST", "/v1/transfers/{transfer_id:str}/void"): (f"/v1/transfers/{h1}/void", None),
        ("GET", "/v1/payments/{payment_id:str}"): (f"/v1/payments/{pay}", None),
        ("POST", "/v1/payments/{payment_id:str}/capture"): (f"/v1/payments/{pay}/capture", None),
        ("POST", "/v1/payments/{payment_id:str}/cancel"): (f"/v1/payments/{pay}/cancel", None),
        ("POST", "/v1/payments"): (
            "/v1/payments",
            {
                "amount": 1,
                "currency": "USD",
                "merchant_account_id": a1,
                "source": {"wallet_account_id": a2},
            },
        ),
        ("POST", "/v1/refunds"): ("/v1/refunds", {"payment_id": pay, "amount": 1}),
        ("GET", "/v1/refunds/{refund_id:str}"): (f"/v1/refunds/{ids.get('refund', 'rf_x')}", None),
        ("POST", "/v1/payouts"): (
            "/v1/payouts",
            {
                "wallet_account_id": a1,
                "amount": 1,
                "currency": "USD",
                "destination": "DE89370400440532013000",
            },
        ),
        ("GET", "/v1/payouts/{payout_id:str}"): (f"/v1/payouts/{ids.get('payout', 'po_x')}", None),
        # Lists: a filter naming Alice's object is a miss; with none, Bob's own (none).
        ("GET", "/v1/accounts"): ("/v1/accounts?currency=USD", None),
        ("GET", "/v1/transfers"): (f"/v1/transfers?account_id={a1}", None),
        ("GET", "/v1/payments"): (f"/v1/payments?merchant_account_id={a1}", None),
        ("GET", "/v1/refunds"): (f"/v1/refunds?payment_id={pay}", None),
        ("GET", "/v1/payouts"): (f"/v1/payouts?wallet_account_id={a1}", None),
        # Ids are scoped by tenant: Bob naming Alice's account id makes his own account.
        ("POST", "/v1/accounts"): ("/v1/accounts", {"id": a1, "currency": "USD"}),
        # The admin API: Alice's key is a missing one; Bob's list and new keys are his.
        ("GET", "/v1/api_keys"): ("/v1/api_keys", None),
        ("POST", "/v1/api_keys"): ("/v1/api_keys", {"scopes": ["read"]}),
        ("GET", "/v1/api_keys/{key_id:str}"): (f"/v1/api_keys/{ids['key']}", None),
        ("DELETE", "/v1/api_keys/{key_id:str}"): (f"/v1/api_keys/{ids['key']}", None),
        ("POST", "/v1/api_keys/{key_id:str}/rotate"): (f"/v1/api_keys/{ids['key']}/rotate", None),
        ("GET", "/v1/webhook_endpoints"): ("/v1/webhook_endpoints", None),
        ("POST", "/v1/webhook_endpoints"): ("/v1/webhook_endpoints", {"url": "http://b.example"}),
        ("GET", "/v1/webhook_endpoints/{endpoint_id:str}"): (f"/v1/webhook_endpoints/{hook}", None),
        ("DELETE", "/v1/webhook_endpoints/{endpoint_id:str}"): (
            f"/v1/webhook_endpoints/{hook}",
            None,
        ),
        ("POST", "/v1/webhook_endpoints/{endpoint_id:str}/rotate_secret"): (
            f"/v1/webhook_endpoints/{hook}/rotate_secret",
            None,
        ),
        ("POST", "/v1/webhook_endpoints/{endpoint_id:str}/test"): (
            f"/v1/webhook_endpoints/{hook}/test",
            None,
        ),
        ("GET", "/v1/webhook_endpoints/{endpoint_id:str}/deliveries"): (
            f"/v1/webhook_endpoints/{hook}/deliveries",
            None,
        ),
        (
            "POST",
            "/v1/webhook_endpoints/{endpoint_id:str}/deliveries/{delivery_id:str}/redeliver",
        ): (f"/v1/webhook_endpoints/{hook}/deliveries/evt_1/redeliver", None),
        # FX: Alice's quote and conversion are missing ones; Bob's quote is his own.
        ("POST", "/v1/fx/quotes"): (
            "/v1/fx/quotes",
            {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount": 10},
        ),
        ("GET", "/v1/fx/quotes/{quote_id:str}"): (f"/v1/fx/quotes/{quote}", None),
        ("GET", "/v1/fx/quotes"): ("/v1/fx/quotes", None),
        ("POST", "/v1/fx/conversions"): (
            "/v1/fx/conversions",
            {"quote_id": quote, "debit_account_id": a1, "credit_account_id": ids["a4"]},
        ),
        ("GET", "/v1/fx/conversions/{conversion_id:str}"): (f"/v1/fx/conversions/{fxc}", None),
        ("GET", "/v1/fx/conversions"): ("/v1/fx/conversions", None),
        ("POST", "/v1/fx/conversions/{conversion_id:str}/capture"): (
            f"/v1/fx/conversions/{fxc}/capture",
            None,
        ),
        ("POST", "/v1/fx/conversions/{conversion_id:str}/void"): (
            f"/v1/fx/conversions/{fxc}/void",
            None,
        ),
        # Reconciliation is the operator's (tenant default): any other is refused alike.
        ("POST", "/v1/reconciliation/reports"): (
            "/v1/reconciliation/reports",
            {"processor": "sim-a", "report": "x"},
        ),
        ("GET", "/v1/reconciliation/reports"): ("/v1/reconciliation/reports", None),
        ("GET", "/v1/reconciliation/exceptions"): ("/v1/reconciliation/exceptions", None),
        ("POST", "/v1/reconciliation/exceptions/{exception_id:str}/resolve"): (
            f"/v1/reconciliation/exceptions/rx_{'0' * 24}/resolve",
            {"note": "checked"},
        ),
    }


# Routes that make a new object of the caller's own (an id or secret of its own each time).
CREATES = {
    ("POST", "/v1/accounts"),
    ("POST", "/v1/api_keys"),
    ("POST", "/v1/webhook_endpoints"),
    ("POST", "/v1/fx/quotes"),
}
# Routes of the operator's tenant alone (reconciliation): 403 to any other, whatever named.
OPERATOR_ONLY = {
    ("POST", "/v1/reconciliation/reports"),
    ("GET", "/v1/reconciliation/reports"),
    ("GET", "/v1/reconciliation/exceptions"),
    ("POST", "/v1/reconciliation/exceptions/{exception_id:str}/resolve"),
}
# Routes whose answer for a foreign filter is the caller's own (empty) list, 200.
ADMIN_LISTS = {("GET", "/v1/api_keys"), ("GET", "/v1/webhook_endpoints")}
OWN_LISTS = {
    ("POST", "/v1/transfers/batch"),
    ("GET", "/v1/accounts"),
    ("GET", "/v1/api_keys"),
    ("GET", "/v1/webhook_endpoints"),
    ("GET", "/v1/fx/quotes"),
    ("GET", "/v1/fx/conversions"),
}


def _answer(response: httpx.Response, ids: dict[str, str]) -> tuple[int, str]:
    """Status and body with the ids named replaced by placeholders."""
    text = response.text
    for name, value in sorted(ids.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<{name}>")
    return response.status_code, text


def _shape(response: httpx.Response, ids: dict[str, str]) -> tuple[int, str]:
    """``_answer`` without the times (two accounts made one after the other)."""
    status, text = _answer(response, ids)
    text = re.sub(r'"(timestamp|created_at)":("[^"]*"|\d+)', r'"\1":_', text)
    return status, text


async def _snapshot(alice: Tenant, world: dict[str, str]) -> list[str]:
    paths = ["/v1/accounts/a1", "/v1/accounts/a2", "/v1/transfers/t1", "/v1/transfers/h1"]
    paths.append(f"/v1/payments/{world['payment']}")
    return [re.sub(r'"attempts".*', "", (await alice.get(p)).text) for p in paths]


async def test_another_tenants_objects_answer_as_missing_ones_on_every_route(
    open_client: Any, store: AnyStore
) -> None:
    """On every route of the app, Bob naming Alice's objects gets exactly what naming
    objects that do not exist gets (404 with the same body; creating an account under
    her id makes his own, as under a fresh id), never her data; and nothing of hers
    changed."""
    async with _two_tenants(open_client, store) as (client, alice, bob):
        world = await _alice_world(alice)
        before = await _snapshot(alice, world)
        routes = _routes(client.app)
        real = {"a1": "a1", "a2": "a2", "a3": "a3", "a4": "a4", "t1": "t1", "h1": "h1", **world}
        real |= {"bob-t": "bob-t", "bob-b": "bob-b"}
        ghost = {k: f"zz{v}" for k, v in real.items()}
        # Quote and conversion ids have a shape of their own: ghosts of that shape.
        ghost |= {"quote": "fxq_" + "0" * 24, "conversion": "fxc_" + "0" * 24}
        to_alice, to_nothing = _requests(world, real), _requests(world, ghost)
        assert set(to_alice) == routes, "a route without a cross-tenant check"
        # Last: once Bob has his own "a1", the other routes would name it.
        for route in [*sorted(routes - CREATES), *sorted(CREATES)]:
            path, body = to_alice[route]
            method = route[0]
            foreign = await bob.call(method, path, body)
            g_path, g_body = to_nothing[route]
            missing = await bob.call(method, g_path, g_body)
            if route == ("POST", "/v1/accounts"):
                assert foreign.status_code == missing.status_code == 201, foreign.text
                assert _shape(foreign, real) == _shape(missing, ghost)
                continue
            if route in CREATES:
                assert foreign.status_code == missing.status_code == 201, foreign.text
                assert "alice" not in foreign.text
                continue
            if route in ADMIN_LISTS:  # the caller's own (random) ids: compared as they are
                assert foreign.text == missing.text, route
                continue
            if route in OPERATOR_ONLY:  # refused to every tenant but the operator's
                assert foreign.status_code == 403, (route, foreign.text)
                assert _answer(foreign, real) == _answer(missing, ghost), route
                continue
            assert foreign.status_code in (404, 200), (route, foreign.text)
            if route not in OWN_LISTS:
                assert foreign.status_code != 200, (route, foreign.text)
            assert _answer(foreign, real) == _answer(missing, ghost), route
            # Her data, not the ids Bob named (a random id may hold "500" by chance).
            seen = foreign.text
            for named in real.values():
                seen = seen.replace(named, "")
            for secret in ("alice", '"balance"', "500"):
                assert secret not in seen, (route, foreign.text)
        assert await _snapshot(alice, world) == before


async def test_a_transfer_between_own_and_foreign_accounts_fails_atomically(
    open_client: Any, store: AnyStore
) -> None:
    """A batch naming Bob's account in one item of a linked chain fails whole, as
    account_not_found; Alice's own transfers still work."""
    async with _two_tenants(open_client, store) as (_, alice, bob):
        await _alice_world(alice)
        assert (await bob.post("/v1/accounts", {"id": "b1", "currency": "USD"})).status_code == 201
        item = {"debit_account_id": "a1", "currency": "USD", "amount": 1}
        batch = {
            "transfers": [
                {**item, "id": "x1", "credit_account_id": "a2", "linked": True},
                {**item, "id": "x2", "credit_account_id": "b1"},
            ]
        }
        results = (await alice.post("/v1/transfers/batch", batch)).json()["results"]
        assert [r["error"]["code"] for r in results] == ["linked_event_failed", "account_not_found"]
        assert (await alice.get("/v1/transfers/x1")).status_code == 404
        assert (await bob.get("/v1/accounts/b1")).json()["balance"]["credits_posted"] == 0


async def test_a_refused_transfer_id_is_replayed_to_its_tenant_only(
    open_client: Any, store: AnyStore
) -> None:
    """Alice's refused id keeps her refusal; Bob using the same id learns nothing of it:
    his transfer is tried as if the id had never been refused (and later, Alice still gets
    her own answer)."""
    async with _two_tenants(open_client, store) as (_, alice, bob):
        for tenant, names in ((alice, ("a1", "a2")), (bob, ("b1", "b2"))):
            for i, name in enumerate(names):
                flags = {"no_overdraft": True} if i == 0 else {}
                body = {"id": name, "currency": "USD", "flags": flags}
                assert (await tenant.post("/v1/accounts", body)).status_code == 201
        pay = {"id": "pay-1", "debit_account_id": "a1", "credit_account_id": "a2", "amount": 5}
        first = await alice.post("/v1/transfers", {**pay, "currency": "USD"})
        assert first.json()["code"] == "insufficient_funds"
        bobs = {**pay, "debit_account_id": "b2", "credit_account_id": "b1", "currency": "USD"}
        created = await bob.post("/v1/transfers", bobs)
        assert created.status_code == 201, created.text
        again = await alice.post("/v1/transfers", {**pay, "currency": "USD"})
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert (await bob.post("/v1/transfers", bobs)).status_code == 200  # his, as stored


async def test_idempotency_keys_are_scoped_per_tenant(open_client: Any, store: AnyStore) -> None:
    """Two tenants using one Idempotency-Key each get their own answer, never a replay of
    the other's."""
    async with _two_tenants(open_client, store) as (_, alice, bob):
        a = await alice.post("/v1/accounts", {"currency": "USD"}, **{"Idempotency-Key": "k1"})
        b = await bob.post("/v1/accounts", {"currency": "USD"}, **{"Idempotency-Key": "k1"})
        assert a.status_code == b.status_code == 201
        assert "idempotent-replayed" not in b.headers
        assert a.json()["id"] != b.json()["id"]
        again = await bob.post("/v1/accounts", {"currency": "USD"}, **{"Idempotency-Key": "k1"})
        assert again.json()["id"] == b.json()["id"]


async def test_every_route_needs_a_valid_key(open_client: Any, store: AnyStore) -> None:
    """Without a key, or with a revoked one, every non-public route answers 401 with
    WWW-Authenticate; health, readiness, metrics and docs need none."""
    async with open_client(auth="api_keys") as client:
        keys = ApiKeys(store)
        key = await keys.create("alice", ALL)
        await keys.revoke(key.row.id)
        for method, template in sorted(_routes(client.app)):
            path = re.sub(r"\{[^}]+\}", "x1", template)
            for headers in ({}, {"Authorization": f"Bearer {key.token}"}):
                response = await client.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, response.text)
                assert response.json()["code"] == ErrorCode.UNAUTHORIZED
                assert response.headers["www-authenticate"].startswith("Bearer")
        for path in ("/healthz", "/readyz", "/metrics", "/docs/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/readyz")).json()["auth"] == "api_keys"


async def test_scopes_limit_what_a_key_may_do(open_client: Any, store: AnyStore) -> None:
    """A read key reads but may not write (403 forbidden_scope); a write key writes."""
    async with open_client(auth="api_keys") as client:
        keys = ApiKeys(store)
        reader = Tenant(client, (await keys.create("t", frozenset({Scope.READ}))).token)
        writer = Tenant(client, (await keys.create("t", frozenset({Scope.WRITE}))).token)
        refused = await reader.post("/v1/accounts", {"id": "w1", "currency": "USD"})
        assert refused.status_code == 403
        assert refused.json()["code"] == ErrorCode.FORBIDDEN_SCOPE
        assert (
            await writer.post("/v1/accounts", {"id": "w1", "currency": "USD"})
        ).status_code == 201
        assert (await reader.get("/v1/accounts/w1")).status_code == 200
        assert (await writer.get("/v1/accounts/w1")).status_code == 403


async def test_rotation_keeps_the_old_key_for_its_grace_then_refuses_it(
    open_client: Any, store: AnyStore
) -> None:
    """Rotating gives a new key of the same tenant and scopes; the old one works during
    the grace period only; a revocation is immediate on the node that made it, and on
    another node once its cache entry runs out."""
    async with open_client(auth="api_keys") as client:
        now = [0.0]
        here = ApiKeys(store, clock=lambda: now[0])
        there = ApiKeys(store, clock=lambda: now[0])  # another API node's cache
        old = await here.create("alice", ALL)
        header = f"Bearer {old.token}"
        assert (await there.authenticate(header)).tenant == "alice"
        new, revoked = await here.rotate(old.row.id, grace_seconds=3600)
        assert revoked.replaced_by == new.row.id
        assert (await here.authenticate(header)).tenant == "alice"  # in its grace period
        assert (await here.authenticate(f"Bearer {new.token}")).scopes == ALL
        await here.revoke(old.row.id)
        with pytest.raises(Exception, match="not valid"):
            await here.authenticate(header)
        assert (await there.authenticate(header)).tenant == "alice"  # cached, for a while
        now[0] += here.cache_seconds + 1
        with pytest.raises(Exception, match="not valid"):
            await there.authenticate(header)
        response = await client.get("/v1/accounts/x", headers={"Authorization": header})
        assert response.status_code == 401


async def test_keys_are_not_stored_in_clear(
    open_client: Any, store: AnyStore, backend: str, tmp_path: Path
) -> None:
    """The table keeps a hash: the secret is nowhere in the key rows."""
    keys = ApiKeys(store)
    async with open_client(auth="api_keys"):
        new = await keys.create("alice", ALL)
        rows = await keys.list()
    # The secret is what follows the key id (it may itself hold "_": token_urlsafe).
    secret = new.token.split(f"{new.row.id}_", 1)[1]
    assert len(secret) >= 40
    assert secret not in repr(rows)
    assert all(secret not in str(value) for row in rows for value in row.__struct_fields__)
    if backend == "sqlite":
        assert not _files_holding(tmp_path, secret.encode())


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


_headers = (
    st.text(max_size=300)
    | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=5000)
    | st.sampled_from(["Bearer", "Bearer ", "bearer  ", "Basic dXNlcjpwYXNz", "Bearer pk_live_"])
    | st.builds(lambda s: f"Bearer pk_live_{s}", st.text(max_size=120))
    | st.builds(lambda s: f"Bearer pk_live_0123456789abcdef_{s}", st.text(max_size=80))
)


def test_fuzzed_authorization_headers_never_get_a_500(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """Any Authorization header (garbage, unicode, huge, a scheme without a token, a
    wrong scheme, a key's shape with a wrong secret) is a 401, never a 500."""
    app = create_app(make_store(), Settings(data_dir=str(tmp_path)), start_workers=False)
    with TestClient(app=app) as client:

        @hypothesis_settings(max_examples=200, deadline=None)
        @given(header=_headers)
        def check(header: str) -> None:
            raw = header.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
            raw = raw.replace(b"\x00", b"")
            response = client.get("/v1/accounts/a1", headers=[(b"authorization", raw)])
            assert response.status_code == 401, response.text

        check()


async def test_only_an_admin_key_reads_paycores_own_accounts(tmp_path: Path) -> None:
    """paycore's own accounts (clearing, processors) are read-only for admin keys, which
    an operator reconciles with; any other key gets them as missing, and no key may name
    them in a transfer or close them (the router refuses: they are reserved)."""
    from paycore.cluster.settlement import clearing_account_id
    from paycore.cluster.shardmap import ShardMap
    from paycore.cluster.topology import build_store

    settings = Settings(data_dir=str(tmp_path), rate_limit_per_second=0)
    store = build_store(settings)  # the router, as every server has it
    from paycore.ledger.tenancy import internal_account_id

    # Placed by the id the store keeps: in tenant "t"'s namespace.
    place = ShardMap.even([f"shard-{n}" for n in range(4)]).shard_for

    def shard_of(account_id: str) -> str:
        return place(internal_account_id("t", account_id))

    a = next(f"a{n}" for n in range(100) if shard_of(f"a{n}") == "shard-0")
    b = next(f"b{n}" for n in range(100) if shard_of(f"b{n}") == "shard-1")
    clearing = clearing_account_id("shard-0", "shard-1", "USD")
    async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as client:
        keys = ApiKeys(store)
        admin = Tenant(client, (await keys.create("ops", frozenset({Scope.ADMIN}))).token)
        plain = Tenant(client, (await keys.create("t", frozenset({Scope.READ, Scope.WRITE}))).token)
        for account in (a, b):
            assert (await plain.post("/v1/accounts", {"id": account, "currency": "USD"})).is_success
        saga = await plain.post(
            "/v1/transfers",
            {
                "id": "t1",
                "debit_account_id": a,
                "credit_account_id": b,
                "amount": 7,
                "currency": "USD",
            },
        )
        assert saga.status_code == 201, saga.text  # step 1 opened the clearing account
        for path in ("", "/transfers"):
            assert (await admin.get(f"/v1/accounts/{clearing}{path}")).status_code == 200
            missing = await plain.get(f"/v1/accounts/{clearing}{path}")
            assert missing.status_code == 404
            assert missing.json()["code"] == ErrorCode.ACCOUNT_NOT_FOUND
        before = (await admin.get(f"/v1/accounts/{clearing}")).json()["balance"]
        for key in (admin, plain):
            for debit, credit in ((clearing, a), (a, clearing)):
                moved = await key.post(
                    "/v1/transfers",
                    {
                        "id": f"{debit}-{credit}",
                        "debit_account_id": debit,
                        "credit_account_id": credit,
                        "amount": 5,
                        "currency": "USD",
                    },
                )
                assert moved.status_code in (404, 422), moved.text
            assert (await key.post(f"/v1/accounts/{clearing}/close", {})).status_code in (404, 422)
        assert (await admin.get(f"/v1/accounts/{clearing}")).json()["balance"] == before
