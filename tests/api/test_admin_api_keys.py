"""``/v1/api_keys``: an admin key creates, lists, reads, revokes and rotates its own
tenant's keys over HTTP; the token is shown once and never stored; another tenant's key
is a missing one; keys without the admin scope are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.test_auth import Tenant, _files_holding
from backends import AnyStore
from paycore.api.auth import ApiKeys, Scope

ADMIN = frozenset({Scope.ADMIN})


@asynccontextmanager
async def _admins(open_client: Any, store: AnyStore) -> AsyncIterator[tuple[Tenant, Tenant]]:
    """Alice's and Bob's admin clients (keys made as an operator would)."""
    async with open_client(auth="api_keys") as client:
        keys = ApiKeys(store)
        alice = await keys.create("alice", ADMIN, name="bootstrap")
        bob = await keys.create("bob", ADMIN)
        yield Tenant(client, alice.token), Tenant(client, bob.token)


async def _delete(tenant: Tenant, path: str) -> httpx.Response:
    return await tenant.client.delete(path, headers=tenant.headers)


def _as(tenant: Tenant, token: str) -> Tenant:
    return Tenant(tenant.client, token)


async def test_a_created_key_is_shown_once_and_works(open_client: Any, store: AnyStore) -> None:
    """POST makes a key of the caller's tenant with the scopes asked; its token works at
    once with those scopes; reads and lists show it without any secret."""
    async with _admins(open_client, store) as (alice, _):
        made = await alice.post("/v1/api_keys", {"scopes": ["read"], "name": "reporting"})
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["tenant"] == "alice"
        assert key["scopes"] == ["read"]
        assert key["name"] == "reporting"
        assert key["status"] == "active"
        assert key["object"] == "api_key"
        assert key["token"].startswith(f"pk_live_{key['id']}_")
        reader = _as(alice, key["token"])
        assert (await reader.get("/v1/accounts/nothing")).status_code == 404
        refused = await reader.post("/v1/accounts", {"currency": "USD"})
        assert refused.json()["code"] == "forbidden_scope"
        secret = _secret(key["token"])
        shown = await alice.get(f"/v1/api_keys/{key['id']}")
        assert shown.status_code == 200
        assert "token" not in shown.json()
        listed = await alice.get("/v1/api_keys")
        assert [k["name"] for k in listed.json()["data"]] == ["bootstrap", "reporting"]
        for text in (shown.text, listed.text):
            assert secret not in text
            assert key["token"] not in text


async def test_a_replayed_create_returns_the_same_key_without_its_token(
    open_client: Any, store: AnyStore, backend: str, tmp_path: Path
) -> None:
    """Under an Idempotency-Key a retry makes no second key and gets the first one back
    with ``token`` null: the stored answer never held the secret."""
    async with _admins(open_client, store) as (alice, _):
        first = await alice.post("/v1/api_keys", {"scopes": ["write"]}, **{"Idempotency-Key": "k"})
        again = await alice.post("/v1/api_keys", {"scopes": ["write"]}, **{"Idempotency-Key": "k"})
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == {**first.json(), "token": None}
        assert len((await alice.get("/v1/api_keys")).json()["data"]) == 2
        reused = await alice.post("/v1/api_keys", {"scopes": ["read"]}, **{"Idempotency-Key": "k"})
        assert reused.json()["code"] == "idempotency_key_reused"
    secret = _secret(first.json()["token"])
    if backend == "sqlite":
        assert not _files_holding(tmp_path, secret.encode())


async def test_revoking_a_key_refuses_it_at_once(open_client: Any, store: AnyStore) -> None:
    """DELETE revokes: the key is refused on this node at once; it stays listed, revoked."""
    async with _admins(open_client, store) as (alice, _):
        key = (await alice.post("/v1/api_keys", {"scopes": ["read"]})).json()
        user = _as(alice, key["token"])
        assert (await user.get("/v1/accounts/x")).status_code == 404  # cached as valid
        revoked = await _delete(alice, f"/v1/api_keys/{key['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["status"] == "revoked"
        assert (await user.get("/v1/accounts/x")).json()["code"] == "unauthorized"
        again = await _delete(alice, f"/v1/api_keys/{key['id']}")
        assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_the_last_admin_key_is_not_revoked(open_client: Any, store: AnyStore) -> None:
    """A tenant keeps one active admin key: revoking the last one is 409
    ``last_admin_key``; once another admin key exists, the first may go (even itself)."""
    async with _admins(open_client, store) as (alice, _):
        own = (await alice.get("/v1/api_keys")).json()["data"][0]["id"]
        refused = await _delete(alice, f"/v1/api_keys/{own}")
        assert refused.status_code == 409
        assert refused.json()["code"] == "last_admin_key"
        other = (await alice.post("/v1/api_keys", {"scopes": ["admin"]})).json()
        assert (await _delete(alice, f"/v1/api_keys/{own}")).status_code == 200
        assert (await alice.get("/v1/api_keys")).json()["code"] == "unauthorized"
        successor = _as(alice, other["token"])
        refused = await _delete(successor, f"/v1/api_keys/{other['id']}")
        assert refused.json()["code"] == "last_admin_key"


async def test_rotation_keeps_the_old_key_for_its_grace(open_client: Any, store: AnyStore) -> None:
    """Rotating answers a new key of the same scopes and name (token shown once) and the
    old one, which still works during its grace; with no grace it is refused at once."""
    async with _admins(open_client, store) as (alice, _):
        key = (await alice.post("/v1/api_keys", {"scopes": ["read"], "name": "n"})).json()
        rotated = await alice.post(f"/v1/api_keys/{key['id']}/rotate", {"grace_seconds": 3600})
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert (new["scopes"], new["name"]) == (["read"], "n")
        assert new["replaces"]["id"] == key["id"]
        assert new["replaces"]["replaced_by"] == new["id"]
        assert new["replaces"]["status"] == "active"  # until its revoked_at
        assert (await _as(alice, key["token"]).get("/v1/accounts/x")).status_code == 404
        assert (await _as(alice, new["token"]).get("/v1/accounts/x")).status_code == 404
        again = await alice.post(f"/v1/api_keys/{new['id']}/rotate")  # no body: no grace
        assert again.status_code == 201
        assert again.json()["replaces"]["status"] == "revoked"
        assert (await _as(alice, new["token"]).get("/v1/accounts/x")).status_code == 401
        gone = await alice.post(f"/v1/api_keys/{new['id']}/rotate")
        assert gone.json()["code"] == "api_key_not_found"


async def test_another_tenants_key_is_a_missing_one(open_client: Any, store: AnyStore) -> None:
    """Bob reading, revoking or rotating Alice's key gets exactly the answer for a key
    that does not exist, and her key keeps working."""
    async with _admins(open_client, store) as (alice, bob):
        key = (await alice.post("/v1/api_keys", {"scopes": ["read"]})).json()
        ghost = "0123456789abcdef"
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/rotate")):
            answers = []
            for key_id in (key["id"], ghost):
                path = f"/v1/api_keys/{key_id}{suffix}"
                response = await bob.client.request(method, path, headers=bob.headers)
                answers.append((response.status_code, response.text.replace(key_id, "<id>")))
            assert answers[0] == answers[1], method
            assert answers[0][0] == 404
            assert "api_key_not_found" in answers[0][1]
        assert [k["tenant"] for k in (await bob.get("/v1/api_keys")).json()["data"]] == ["bob"]
        assert (await _as(alice, key["token"]).get("/v1/accounts/x")).status_code == 404


async def test_only_admin_keys_manage_keys(open_client: Any, store: AnyStore) -> None:
    """Read and write keys get 403 ``forbidden_scope`` on every key route."""
    async with open_client(auth="api_keys") as client:
        token = (await ApiKeys(store).create("t", frozenset({Scope.READ, Scope.WRITE}))).token
        headers = {"Authorization": f"Bearer {token}"}
        for method, path in (
            ("GET", "/v1/api_keys"),
            ("POST", "/v1/api_keys"),
            ("GET", "/v1/api_keys/0123456789abcdef"),
            ("DELETE", "/v1/api_keys/0123456789abcdef"),
            ("POST", "/v1/api_keys/0123456789abcdef/rotate"),
        ):
            response = await client.request(
                method, path, headers=headers, json={"scopes": ["read"]}
            )
            assert response.status_code == 403, (method, path)
            assert response.json()["code"] == "forbidden_scope"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "missing required field `scopes`"),
        ({"scopes": []}, "length >= 1"),
        ({"scopes": ["root"]}, "Invalid enum value 'root'"),
        ({"scopes": ["read", "read"]}, "must not repeat"),
        ({"scopes": ["read"], "name": ""}, "length >= 1"),
        ({"scopes": ["read"], "name": "a\nb"}, "$.name"),
        ({"scopes": ["read"], "expires_in_seconds": 0}, ">= 1"),
        ({"scopes": ["read"], "tenant": "bob"}, "unknown field `tenant`"),
    ],
)
async def test_a_bad_key_request_is_a_precise_422(
    open_client: Any, store: AnyStore, body: dict[str, Any], words: str
) -> None:
    """Each bad body is 422 ``invalid_request`` saying what is wrong; no key is made."""
    async with _admins(open_client, store) as (alice, _):
        response = await alice.post("/v1/api_keys", body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_request"
        assert words in response.json()["detail"]
        assert len((await alice.get("/v1/api_keys")).json()["data"]) == 1


async def test_bad_rotation_and_list_parameters_are_422(open_client: Any, store: AnyStore) -> None:
    """A grace beyond 30 days, a foreign cursor, a page too large: 422 each."""
    async with _admins(open_client, store) as (alice, _):
        own = (await alice.get("/v1/api_keys")).json()["data"][0]["id"]
        too_long = await alice.post(f"/v1/api_keys/{own}/rotate", {"grace_seconds": 31 * 86400})
        assert too_long.json()["code"] == "invalid_request"
        assert "grace_seconds" in too_long.json()["detail"]
        for query in ("cursor=12.zz", "limit=100000", "limit=0"):
            response = await alice.get(f"/v1/api_keys?{query}")
            assert response.status_code == 422, query
            assert response.json()["code"] == "invalid_request"


async def test_the_key_list_pages_with_a_cursor(open_client: Any, store: AnyStore) -> None:
    """Pages follow ``next_cursor`` oldest first, each key once, until null."""
    async with _admins(open_client, store) as (alice, _):
        for n in range(4):
            await alice.post("/v1/api_keys", {"scopes": ["read"], "name": f"k{n}"})
        names, cursor = [], None
        while True:
            page = (
                await alice.get("/v1/api_keys?limit=2" + (f"&cursor={cursor}" if cursor else ""))
            ).json()
            names += [k["name"] for k in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert names == ["bootstrap", "k0", "k1", "k2", "k3"]


def _secret(token: str) -> str:
    """The secret of ``pk_live_<id>_<secret>`` (it may hold "_" itself: base64url)."""
    return token.removeprefix("pk_live_").partition("_")[2]
