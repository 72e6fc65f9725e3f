"""Ids are scoped by tenant (issue 14, item 5): two tenants may use the same ids (accounts,
transfers, holds and their posts and voids, payments' accounts) and never see each
other's; the ids paycore derives for a tenant cannot be taken by another; a read of
another tenant's id is a plain miss (the store is asked for an id that is not there,
exactly as for a missing one); no answer shows an id as the store keeps it. Each test
runs on one store (SQLite, PostgreSQL) and on the embedded default (four SQLite shards
behind the router), where the id the store keeps decides the shard.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from backends import PostgresDatabase
from paycore.api import create_app
from paycore.api.auth import ApiKeys, Scope
from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import Settlement
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.storage.sqlite import SQLiteStore
from paycore.storage.store import Store

ALL = frozenset({Scope.READ, Scope.WRITE})
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _stored(tenant: str, client_id: str) -> str:
    """The id the store keeps for ``tenant``'s ``client_id`` (the design's contract)."""
    return client_id if tenant == "default" else f"{tenant}/{client_id}"


def _derived(action: str, pending_id: str) -> str:
    """How the API names the post or void of a hold when the client gives no id."""
    return f"{action}_{hashlib.sha256(pending_id.encode()).hexdigest()[:40]}"


@dataclass
class Tenant:
    """A client of one tenant; every answer it gets is kept (to look for leaks)."""

    name: str
    client: AsyncTestClient[Any]
    token: str
    answers: list[httpx.Response] = field(default_factory=list)

    async def get(self, path: str) -> httpx.Response:
        response = await self.client.get(path, headers={"Authorization": f"Bearer {self.token}"})
        self.answers.append(response)
        return response

    async def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        headers["Authorization"] = f"Bearer {self.token}"
        response = await self.client.post(path, json=body, headers=headers)
        self.answers.append(response)
        return response

    async def ok(self, path: str, body: Any = None, status: int = 201) -> dict[str, Any]:
        response = await self.post(path, body)
        assert response.status_code == status, (self.name, path, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    async def account(self, account_id: str, **fields: Any) -> dict[str, Any]:
        return await self.ok("/v1/accounts", {"id": account_id, "currency": "USD", **fields})

    async def transfer(
        self, transfer_id: str, debit: str, credit: str, amount: int, **fields: Any
    ) -> httpx.Response:
        body = {
            "id": transfer_id,
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": amount,
            "currency": "USD",
            **fields,
        }
        return await self.post("/v1/transfers", body)

    def assert_no_stored_id_shown(self) -> None:
        """No answer this tenant got names an id in the store's form (``<tenant>/...``)."""
        for response in self.answers:
            assert f"{self.name}/" not in response.text, response.text
            for value in response.headers.values():
                assert f"{self.name}/" not in value, value


@dataclass
class Setup:
    store: Store
    client: AsyncTestClient[Any]
    keys: ApiKeys

    async def tenant(self, name: str) -> Tenant:
        key = await self.keys.create(name, ALL)
        return Tenant(name, self.client, key.token)

    def shard_of(self, stored_id: str) -> str:
        store = self.store
        return store.shard_for(stored_id) if isinstance(store, ShardedStore) else "one"

    def local_ids(self, tenants: list[str], names: list[str]) -> dict[str, str]:
        """A client id for each name such that, for every tenant, all of that tenant's
        accounts live on one shard (so every transfer among them is local for each)."""
        chosen: dict[str, str] = {}
        for name in names:
            for n in range(10_000):
                candidate = f"{name}{n}"
                ids = [*chosen.values(), candidate]
                if all(len({self.shard_of(_stored(t, i)) for i in ids}) == 1 for t in tenants):
                    chosen[name] = candidate
                    break
        assert len(chosen) == len(names)
        return chosen


@pytest.fixture(
    params=["one_sqlite", pytest.param("one_postgres", marks=pytest.mark.postgres), "four_shards"]
)
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    settings = Settings(data_dir=str(tmp_path), auth="api_keys", rate_limit_per_second=0)
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


# -- the same ids in two tenants --------------------------------------------------------------


async def test_two_tenants_use_the_same_account_and_transfer_ids(setup: Setup) -> None:
    """Alice and Bob each create accounts a1, a2 and transfers t1 (posted), h1 (a hold,
    then posted) and a batch b1, b2 under the same ids: every one is created (201, no
    conflict), each reads back only its own (amounts differ), each listing shows only
    its own transfers, and the store keeps them apart."""
    alice, bob = await setup.tenant("alice"), await setup.tenant("bob")
    ids = setup.local_ids(["alice", "bob"], ["a", "b"])
    a1, a2 = ids["a"], ids["b"]
    for n, who in enumerate((alice, bob), start=1):
        for account_id in (a1, a2):
            created = await who.account(account_id)
            assert created["id"] == account_id
        moved = await who.transfer("t1", a1, a2, 100 * n)
        assert moved.status_code == 201, moved.text
        assert moved.json()["debit_account_id"] == a1
        held = await who.transfer("h1", a1, a2, 10 * n, pending=True)
        assert held.status_code == 201, held.text
        posted = await who.ok("/v1/transfers/h1/post", {})
        assert (posted["id"], posted["pending_id"]) == (_derived("post", "h1"), "h1")
        item = {"debit_account_id": a1, "credit_account_id": a2, "currency": "USD"}
        batch = await who.ok(
            "/v1/transfers/batch",
            {"transfers": [{**item, "id": "b1", "amount": n}, {**item, "id": "b2", "amount": n}]},
            status=200,
        )
        assert batch["results"] == [
            {"id": "b1", "status": "posted"},
            {"id": "b2", "status": "posted"},
        ]
    for n, who in enumerate((alice, bob), start=1):
        t1 = (await who.get("/v1/transfers/t1")).json()
        assert (t1["id"], t1["amount"]) == ("t1", 100 * n)
        assert (await who.get("/v1/transfers/h1")).json()["status"] == "posted"
        account = (await who.get(f"/v1/accounts/{a1}")).json()
        assert account["id"] == a1
        assert account["balance"]["debits_posted"] == 100 * n + 10 * n + 2 * n
        listing = (await who.get(f"/v1/accounts/{a1}/transfers")).json()["data"]
        assert [t["id"] for t in listing] == ["t1", "h1", _derived("post", "h1"), "b1", "b2"]
        assert {t["amount"] for t in listing} == {100 * n, 10 * n, n}
        assert all(t["debit_account_id"] == a1 for t in listing)
    for who in (alice, bob):  # an id made by paycore is the tenant's too
        keyed = {"Idempotency-Key": "open-1"}
        made = await who.post("/v1/accounts", {"currency": "USD"}, **keyed)
        again = await who.post("/v1/accounts", {"currency": "USD"}, **keyed)
        assert made.status_code == again.status_code == 201, made.text
        assert again.content == made.content
        assert again.headers["idempotent-replayed"] == "true"
        assert (await who.get(f"/v1/accounts/{made.json()['id']}")).status_code == 200
    accounts = await setup.store.get_accounts([a1, _stored("alice", a1), _stored("bob", a1)])
    assert {a.tenant for a in accounts.values()} == {"alice", "bob"}
    alice.assert_no_stored_id_shown()
    bob.assert_no_stored_id_shown()


async def test_another_tenants_derived_post_and_void_ids_cannot_be_taken(setup: Setup) -> None:
    """Bob (and the default tenant) first create transfers under every id Alice's post
    and void of her holds could get (derived from her hold's id, as she sends it or as
    the store keeps it); Alice's posts and voids still succeed, and are hers."""
    alice = await setup.tenant("alice")
    squatters = {"bob": ("h1", "h2"), "default": ("h3", "h4")}  # holds each squats
    ids = setup.local_ids(["alice"], ["a", "b"])
    a1, a2 = ids["a"], ids["b"]
    await alice.account(a1)
    await alice.account(a2)
    for hold in ("h1", "h2", "h3", "h4"):
        assert (await alice.transfer(hold, a1, a2, 50, pending=True)).status_code == 201
    for name, (to_post, to_void) in squatters.items():
        squatter = await setup.tenant(name)
        # Accounts of its own (other ids than anyone's): the point is the transfer ids.
        own = setup.local_ids([name], [f"{name}.a", f"{name}.b"])
        sa, sb = own[f"{name}.a"], own[f"{name}.b"]
        await squatter.account(sa)
        await squatter.account(sb)
        for transfer_id in [
            _derived("post", to_post),
            _derived("void", to_void),
            _derived("post", _stored("alice", to_post)),
            _derived("void", _stored("alice", to_void)),
        ]:
            squat = await squatter.transfer(transfer_id, sa, sb, 1)
            assert squat.status_code == 201, squat.text
    for to_post, to_void in squatters.values():
        posted = await alice.post(f"/v1/transfers/{to_post}/post", {"amount": 30})
        assert posted.status_code == 201, posted.text
        assert (posted.json()["pending_id"], posted.json()["amount"]) == (to_post, 30)
        voided = await alice.post(f"/v1/transfers/{to_void}/void", {})
        assert voided.status_code == 201, voided.text
        assert voided.json()["status"] == "voided"
        # Retries find Alice's own post and void (200), not a squatter's transfer.
        assert (
            await alice.post(f"/v1/transfers/{to_post}/post", {"amount": 30})
        ).status_code == 200
        assert (await alice.post(f"/v1/transfers/{to_void}/void", {})).status_code == 200
    balance = (await alice.get(f"/v1/accounts/{a1}")).json()["balance"]
    assert (balance["debits_posted"], balance["debits_pending"]) == (60, 0)
    alice.assert_no_stored_id_shown()


async def test_the_longest_tenant_and_ids_fit(setup: Setup) -> None:
    """A 64-char tenant's 64-char ids (129 chars as the store keeps them) work on every
    path: accounts, a transfer, a hold posted under its derived id, reads, a listing."""
    who = await setup.tenant("T" * 64)
    a1 = "a" * 64
    a2 = next(  # beside a1: a hold may not span shards
        i
        for i in (f"{'b' * 61}{n:03d}" for n in range(1000))
        if setup.shard_of(_stored(who.name, i)) == setup.shard_of(_stored(who.name, a1))
    )
    await who.account(a1)
    await who.account(a2)
    hold = "h" * 64
    assert (await who.transfer(hold, a1, a2, 3, pending=True)).status_code == 201
    assert (await who.transfer("t" * 64, a1, a2, 4)).status_code == 201
    posted = await who.ok(f"/v1/transfers/{hold}/post", {})
    assert (posted["pending_id"], posted["debit_account_id"]) == (hold, a1)
    assert (await who.get(f"/v1/transfers/{'t' * 64}")).json()["amount"] == 4
    listing = (await who.get(f"/v1/accounts/{a2}/transfers")).json()["data"]
    assert [t["id"] for t in listing] == [hold, "t" * 64, _derived("post", hold)]
    who.assert_no_stored_id_shown()


# -- another tenant's ids are plain misses ----------------------------------------------------


class _Spy:
    """Records the store's reads (which method, how many ids it found) in order."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        for name in ("get_accounts", "get_transfer", "get_transfers", "account_transfers"):
            monkeypatch.setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        async def spied(*args: Any, **kwargs: Any) -> Any:
            found = await read(*args, **kwargs)
            size = len(found) if isinstance(found, dict) else int(found is not None)
            self.calls.append((name, size))
            return found

        return spied

    def take(self) -> list[tuple[str, int]]:
        calls, self.calls = self.calls, []
        return calls


async def test_reading_another_tenants_ids_is_a_plain_miss(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob reading Alice's account, its listing and balances, her transfer and her hold
    gets exactly what reading ids nobody has gets (status and body, the id aside), and
    the store does the same work for both: the same reads, none of which finds a thing.
    (Before ids were scoped, her transfer was found, then its accounts read, then the
    answer refused: 3.0 against 1.2 ms.)"""
    alice, bob = await setup.tenant("alice"), await setup.tenant("bob")
    ids = setup.local_ids(["alice"], ["a", "b"])
    a1, a2 = ids["a"], ids["b"]
    await alice.account(a1, flags={"history": True})
    await alice.account(a2)
    assert (await alice.transfer("t1", a1, a2, 5)).status_code == 201
    assert (await alice.transfer("h1", a1, a2, 5, pending=True)).status_code == 201
    spy = _Spy(setup.store, monkeypatch)
    paths = [
        "/v1/accounts/{a}",
        "/v1/accounts/{a}/transfers",
        "/v1/accounts/{a}/balances",
        "/v1/transfers/{t}",
        "/v1/transfers/{h}",
    ]
    for path in paths:
        foreign = await bob.get(path.format(a=a1, t="t1", h="h1"))
        foreign_reads = spy.take()
        missing = await bob.get(path.format(a="zz" + a1, t="zzt1", h="zzh1"))
        missing_reads = spy.take()
        assert foreign.status_code == missing.status_code == 404, foreign.text
        shown = foreign.text.replace(a1, "<id>").replace("'t1'", "<id>").replace("'h1'", "<id>")
        hidden = missing.text.replace("zz" + a1, "<id>").replace("'zzt1'", "<id>")
        assert shown == hidden.replace("'zzh1'", "<id>"), path
        assert foreign_reads == missing_reads, path
        assert all(found == 0 for _, found in foreign_reads), (path, foreign_reads)
    # Writes naming her objects are refused as for missing ones, and change nothing.
    body = {"debit_account_id": a1, "credit_account_id": a2, "amount": 1, "currency": "USD"}
    for path, payload in [
        ("/v1/transfers/h1/post", {}),
        ("/v1/transfers/h1/void", {}),
        (f"/v1/accounts/{a1}/close", {}),
        ("/v1/transfers", {**body, "id": "x1"}),
    ]:
        answer = await bob.post(path, payload)
        assert answer.status_code == 404, answer.text
    assert (await alice.get("/v1/transfers/h1")).json()["status"] == "pending"
    bob.assert_no_stored_id_shown()


# -- payments -----------------------------------------------------------------------------------


async def test_payments_of_two_tenants_with_the_same_account_ids(setup: Setup) -> None:
    """Alice and Bob each have a merchant m and a wallet w (the same ids): card payments,
    a wallet payment, a refund and a payout of each land on its own accounts, each reads
    back its own (its account ids as it sent them), and neither reads the other's."""
    alice, bob = await setup.tenant("alice"), await setup.tenant("bob")
    ids = setup.local_ids(["alice", "bob"], ["m", "w", "bank"])
    m, w, bank = ids["m"], ids["w"], ids["bank"]
    payments: dict[str, list[str]] = {}
    for n, who in enumerate((alice, bob), start=1):
        for account_id in (m, w, bank):
            await who.account(account_id)
        assert (await who.transfer("fund", bank, w, 1000 * n)).status_code == 201
        card = await who.ok(
            "/v1/payments",
            {
                "amount": 100 * n,
                "currency": "USD",
                "merchant_account_id": m,
                "source": {"card": CARD},
            },
        )
        assert (card["status"], card["merchant_account_id"]) == ("succeeded", m), card
        wallet = await who.ok(
            "/v1/payments",
            {
                "amount": 10 * n,
                "currency": "USD",
                "merchant_account_id": m,
                "source": {"wallet_account_id": w},
            },
        )
        assert wallet["source"] == {"type": "wallet", "wallet_account_id": w}, wallet
        refund = await who.ok("/v1/refunds", {"payment_id": card["id"], "amount": n})
        assert refund["payment_id"] == card["id"]
        payout = await who.ok(
            "/v1/payouts",
            {
                "wallet_account_id": w,
                "amount": 5 * n,
                "currency": "USD",
                "destination": "GB00BANK01",
            },
        )
        assert payout["wallet_account_id"] == w, payout
        payments[who.name] = [card["id"], wallet["id"]]
        listing = (await who.get(f"/v1/accounts/{m}/transfers")).json()["data"]
        assert listing, "the payments' ledger transfers show on the merchant's account"
        assert all(m in (t["debit_account_id"], t["credit_account_id"]) for t in listing)
    for n, (who, other) in enumerate(((alice, bob), (bob, alice)), start=1):
        for payment_id in payments[who.name]:
            mine = await who.get(f"/v1/payments/{payment_id}")
            assert mine.status_code == 200, mine.text
            assert mine.json()["merchant_account_id"] == m
            assert (await other.get(f"/v1/payments/{payment_id}")).status_code == 404
        merchant = (await who.get(f"/v1/accounts/{m}")).json()["balance"]
        assert merchant["credits_posted"] == 100 * n + 10 * n
        assert merchant["debits_posted"] + merchant["debits_pending"] == n  # the refund
    alice.assert_no_stored_id_shown()
    bob.assert_no_stored_id_shown()


# -- a tenant's answers are the default tenant's ------------------------------------------------


_TIMES = re.compile(
    r'"(timestamp|created_at|expires_at|updated_at|recorded_at|next_cursor)":("[^"]*"|\d+)'
)


async def _script(who: Tenant, ids: dict[str, str]) -> list[tuple[int, str]]:
    """One client's session, refusals included; its answers with times blanked."""
    a1, a2, a3, nobody = ids["a"], ids["b"], ids["c"], ids["nobody"]
    start = len(who.answers)
    await who.post("/v1/accounts", {"id": a1, "currency": "USD", "flags": {"no_overdraft": True}})
    await who.post("/v1/accounts", {"id": a2, "currency": "USD", "flags": {"history": True}})
    await who.post("/v1/accounts", {"id": a3, "currency": "USD"})
    await who.post("/v1/accounts", {"id": a3, "currency": "EUR"})  # exists, other fields
    await who.transfer("fund", a3, a1, 100)
    await who.transfer("fund", a3, a1, 101)  # exists with different fields
    await who.transfer("big", a1, a2, 10_000)  # insufficient funds
    await who.transfer("ghost", a1, nobody, 1)  # account not found
    await who.transfer("h1", a1, a2, 40, pending=True)
    await who.post("/v1/transfers/h1/post", {"amount": 30})
    await who.post("/v1/transfers/h1/post", {"amount": 30})  # the same capture: 200
    await who.post("/v1/transfers/h1/void", {})  # already posted, by its derived id
    await who.post("/v1/transfers/nothing/void", {})
    item = {"debit_account_id": a1, "credit_account_id": a2, "currency": "USD", "amount": 1}
    await who.post(
        "/v1/transfers/batch",
        {
            "transfers": [
                {**item, "id": "l1", "linked": True},
                {**item, "id": "l2", "debit_account_id": nobody},
                {**item, "id": "ok1"},
                {**item, "id": "fund"},
            ]
        },
    )
    keyed = {"Idempotency-Key": "k-1"}
    body = {"id": "k1", "debit_account_id": a1, "credit_account_id": nobody, "amount": 1}
    await who.post("/v1/transfers", {**body, "currency": "USD"}, **keyed)  # stored refusal
    await who.post("/v1/transfers", {**body, "currency": "USD"}, **keyed)  # its replay
    await who.post(f"/v1/accounts/{a2}/close", {})
    await who.transfer("late", a1, a2, 1)  # credit account closed
    for path in [
        f"/v1/accounts/{a1}",
        f"/v1/accounts/{a1}/transfers?order=desc",
        f"/v1/accounts/{a2}/balances",
        "/v1/transfers/h1",
        f"/v1/transfers/{_derived('post', 'h1')}",
        "/v1/transfers/nothing",
        "/v1/accounts/nothing",
    ]:
        await who.get(path)
    return [(r.status_code, _TIMES.sub(r'"\1":_', r.text)) for r in who.answers[start:]]


async def test_a_tenants_answers_are_the_default_tenants(setup: Setup) -> None:
    """The same session (creates, conflicts, refusals with their details, holds posted
    and voided under derived ids, a batch with a failed chain, a closed account, reads
    and listings) gets byte for byte the same answers, times aside, for tenant
    ``default`` and for tenant ``alice``: ids are shown as the client sent them."""
    default, alice = await setup.tenant("default"), await setup.tenant("alice")
    # "nobody" is never created; on one shard with the others, so that the router
    # refuses a chain naming it for being missing, not for spanning shards.
    ids = setup.local_ids(["default", "alice"], ["a", "b", "c", "nobody"])
    assert await _script(alice, ids) == await _script(default, ids)
    alice.assert_no_stored_id_shown()


async def test_paycores_own_ids_are_refused_alike_to_every_tenant(tmp_path: Path) -> None:
    """paycore's own ids (accounts ``clearing:``/``psp:``, transfers ``xs.``/``pm.``) are
    shared by every tenant, unprefixed: that is sound only while the router refuses
    them to every client. It does, with the same answers for any tenant as for the
    default one."""
    settings = Settings(data_dir=str(tmp_path), auth="api_keys", rate_limit_per_second=0)
    store = build_store(settings)
    async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as client:
        setup = Setup(store, client, ApiKeys(store))
        default, alice = await setup.tenant("default"), await setup.tenant("alice")
        answers: dict[str, list[tuple[int, str]]] = {}
        for who in (default, alice):
            await who.account("a1")
            await who.account("a2")
            sent = [
                await who.post("/v1/accounts", {"id": "clearing:x", "currency": "USD"}),
                await who.post("/v1/accounts", {"id": "psp:s:p:USD", "currency": "USD"}),
                await who.transfer("xs.post.1", "a1", "a2", 1),
                await who.transfer("pm.pay_1.h1", "a1", "a2", 1),
                await who.transfer("t1", "a1", "clearing:shard-0:shard-1:USD", 1),
                await who.post("/v1/transfers/pm.pay_1.h1/void", {}),
            ]
            assert all(r.status_code in (404, 422) for r in sent), [r.text for r in sent]
            answers[who.name] = [(r.status_code, r.text) for r in sent]
        assert answers["alice"] == answers["default"]


async def test_a_tenants_rows_written_before_ids_were_scoped(setup: Setup) -> None:
    """As the README says of them: a tenant other than ``default`` no longer reaches its
    accounts and transfers kept under bare ids (404; a create under an old id makes a
    new, empty account), its old payments still answer, the default tenant still meets
    the old ids as taken, and the rows stay in the ledger."""
    from paycore.ledger.model import AccountRequest, TransferRequest
    from paycore.payments.service import NewPayment, PaymentView, build_payment_service
    from paycore.storage.base import CreateAccounts, CreateTransfers

    store = setup.store
    legacy = setup.local_ids(["default"], ["old.m", "old.w"])  # bare ids: placed as sent
    m, w = legacy["old.m"], legacy["old.w"]
    await store.execute(
        CreateAccounts(tuple(AccountRequest(i, "USD", tenant="alice") for i in (m, w)))
    )
    await store.execute(CreateTransfers((TransferRequest("old.t", w, m, 5, "USD"),)))
    service = build_payment_service(store, Settings(data_dir="unused"))
    paid = await service.create_payment(
        NewPayment(7, "USD", m, wallet_account_id=w, tenant="alice")
    )
    assert isinstance(paid.outcome, PaymentView), paid
    payment_id = paid.outcome.payment.id
    alice, default = await setup.tenant("alice"), await setup.tenant("default")
    assert (await alice.get(f"/v1/accounts/{m}")).status_code == 404
    assert (await alice.get("/v1/transfers/old.t")).status_code == 404
    fresh = await alice.account(m)
    assert fresh["balance"]["credits_posted"] == 0
    old_payment = await alice.get(f"/v1/payments/{payment_id}")
    assert old_payment.status_code == 200, old_payment.text
    assert old_payment.json()["merchant_account_id"] == m
    assert (await default.post("/v1/accounts", {"id": m, "currency": "USD"})).status_code == 409
    assert (await default.get(f"/v1/accounts/{m}")).status_code == 404
    kept = (await store.get_accounts([m]))[m]
    assert (kept.tenant, kept.credits_posted) == ("alice", 5 + 7)


async def test_a_tenants_cross_shard_transfer_shows_its_own_ids(tmp_path: Path) -> None:
    """Between two shards (a saga: a hold to a clearing account, the credit on the other
    shard, the post), Alice's transfer is placed by her ids as the store keeps them and
    answered, read and listed with her ids, on both of its accounts; Bob's twin under
    the same ids is his."""
    settings = Settings(data_dir=str(tmp_path), auth="api_keys", rate_limit_per_second=0)
    store = build_store(settings)
    async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as client:
        setup = Setup(store, client, ApiKeys(store))
        alice, bob = await setup.tenant("alice"), await setup.tenant("bob")
        a = "a0"
        b = next(
            f"b{n}"
            for n in range(1000)
            if all(
                setup.shard_of(_stored(t, f"b{n}")) != setup.shard_of(_stored(t, a))
                for t in ("alice", "bob")
            )
        )
        for n, who in enumerate((alice, bob), start=1):
            await who.account(a)
            await who.account(b)
            moved = await who.transfer("x1", a, b, n)
            assert moved.status_code == 201, moved.text
            body = moved.json()
            assert (body["id"], body["debit_account_id"], body["credit_account_id"]) == ("x1", a, b)
            assert body["status"] in ("in_flight", "posted"), body
            assert body["metadata"] is None
            settlement = Settlement(store.shards, owner="test")  # the relay's steps 2 and 3
            for shard in store.shards:
                await settlement.run_shard(shard)
            read = (await who.get("/v1/transfers/x1")).json()
            shown = (read["amount"], read["status"], read["debit_account_id"])
            assert (*shown, read["credit_account_id"]) == (n, "posted", a, b)
            for account_id in (a, b):
                listing = (await who.get(f"/v1/accounts/{account_id}/transfers")).json()["data"]
                assert [(t["id"], t["credit_account_id"]) for t in listing] == [("x1", b)]
                assert listing[0]["status"] == "posted"
        alice.assert_no_stored_id_shown()
        bob.assert_no_stored_id_shown()


async def test_a_close_remainder_id_is_in_the_tenants_namespace(setup: Setup) -> None:
    """The transfer a close with ``transfer_balance_to`` posts (``close_`` + 40 hex) is
    Alice's: she reads it back by the id her listing shows; Bob and the default tenant,
    having first taken that very id for transfers of their own, neither block her close
    nor see her transfer."""
    alice = await setup.tenant("alice")
    ids = setup.local_ids(["alice"], ["cl.a", "cl.b", "cl.bank"])
    a, b, bank = ids["cl.a"], ids["cl.b"], ids["cl.bank"]
    for account in (a, b, bank):
        await alice.account(account)
    assert (await alice.transfer("cl.fund", bank, a, 70)).status_code == 201
    seed = f"alice\x00{_stored('alice', a)}".encode()
    close_id = "close_" + hashlib.sha256(seed).hexdigest()[:40]
    for name in ("bob", "default"):
        squatter = await setup.tenant(name)
        own = setup.local_ids([name], [f"{name}.x", f"{name}.y"])
        sx, sy = own[f"{name}.x"], own[f"{name}.y"]
        await squatter.account(sx)
        await squatter.account(sy)
        assert (await squatter.transfer(close_id, sx, sy, 1)).status_code == 201
    closed = await alice.post(f"/v1/accounts/{a}/close", {"transfer_balance_to": b})
    assert closed.status_code == 200, closed.text
    listed = (await alice.get(f"/v1/accounts/{b}/transfers")).json()["data"]
    assert [t["id"] for t in listed] == [close_id]
    read = await alice.get(f"/v1/transfers/{close_id}")
    assert read.status_code == 200, read.text
    assert (read.json()["debit_account_id"], read.json()["amount"]) == (a, 70)
    bob = await setup.tenant("bob")
    assert (await bob.get(f"/v1/transfers/{close_id}")).json()["amount"] == 1
    alice.assert_no_stored_id_shown()
