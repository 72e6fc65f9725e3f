"""Every ErrorCode is reachable over HTTP, each with the status and shape its spec promises.

One scenario per code; the table must name every code, so a new code fails this
module until someone shows how a client meets it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.support import NS, Api, ManualClock, assert_problem, operation_of
from backends import AnyStore
from paycore.api.auth import ApiKeys, Scope
from paycore.api.problem_codes import (
    BATCH_ITEM_CODES,
    OPERATION_CODES,
    UNROUTED_CODES,
    WORKER_ONLY_CODES,
)
from paycore.config import FxConfig, ProcessorConfig, ReconciliationConfig
from paycore.errors import ErrorCode, UnavailableError
from paycore.money import MAX_AMOUNT
from paycore.payments.processors.base import Operation
from paycore.payments.service import PaymentService
from paycore.payments.testing import Behaviour, ScriptedConnector
from paycore.payments.webhooks import SIGNATURE_HEADER, signature_header
from paycore.storage.base import CreateAccounts
from paycore.storage.fx_quotes import CreateFxQuote, FxQuoteRow
from payments.payment_support import payment_app

E = ErrorCode


@dataclass
class World:
    """What a scenario may touch: the client, its store and clock, and monkeypatch."""

    api: Api
    client: AsyncTestClient[Any]
    store: AnyStore
    clock: ManualClock
    monkeypatch: pytest.MonkeyPatch


# A scenario returns the HTTP answer (a problem) or, for batch-only codes, the item's code.
Scenario = Callable[[World], Awaitable[httpx.Response | str]]


async def _setup(api: Api) -> None:
    await api.account("a")  # no limits: the bank
    await api.account("b", flags={"no_overdraft": True})
    await api.account("c", flags={"credit_limit": 100})
    await api.account("e", "EUR")


def _item(**fields: Any) -> dict[str, Any]:
    return {"debit_account_id": "a", "credit_account_id": "b", "currency": "USD", **fields}


async def _batch_error(w: World, items: list[dict[str, Any]], index: int) -> str:
    response = await w.client.post("/v1/transfers/batch", json={"transfers": items})
    assert response.status_code == 200, response.text
    code: str = response.json()["results"][index]["error"]["code"]
    return code


async def invalid_request(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "a", "b", 1.5)  # type: ignore[arg-type]


async def batch_too_large(w: World) -> httpx.Response:
    items = [_item(id=f"t{i}", amount=1) for i in range(8190)]
    return await w.client.post("/v1/transfers/batch", json={"transfers": items})


async def request_too_large(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "a", "b", 1, metadata={f"n{i}": "x" * 450 for i in range(4)})


async def unsupported_media_type(w: World) -> httpx.Response:
    body = msgspec.json.encode(_item(id="t1", amount=1))
    return await w.client.post(
        "/v1/transfers", content=body, headers={"content-type": "text/plain"}
    )


async def rate_limited(w: World) -> httpx.Response:
    """The setup's four requests spent this caller's burst of 5 (0.01/s): one passes."""
    assert (await w.client.get("/v1/accounts/a")).status_code == 200
    return await w.client.get("/v1/accounts/a")


async def not_found(w: World) -> httpx.Response:
    return await w.client.get("/v1/nothing-here")


async def method_not_allowed(w: World) -> httpx.Response:
    response = await w.client.delete("/v1/accounts/a")
    assert "GET" in response.headers["allow"]
    return response


async def account_not_found(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "a", "ghost", 1)


async def account_exists_with_different_fields(w: World) -> httpx.Response:
    return await w.client.post("/v1/accounts", json={"id": "a", "currency": "EUR"})


async def account_closed(w: World) -> httpx.Response:
    assert (await w.client.post("/v1/accounts/b/close")).status_code == 200
    return await w.api.transfer("t1", "a", "b", 1)


async def account_has_pending_transfers(w: World) -> httpx.Response:
    await w.api.ok_transfer("h1", "a", "b", 5, pending=True)
    return await w.client.post("/v1/accounts/b/close")


async def account_has_balance(w: World) -> httpx.Response:
    await w.api.ok_transfer("t1", "a", "b", 5)
    return await w.client.post("/v1/accounts/b/close")


async def transfer_not_found(w: World) -> httpx.Response:
    return await w.client.get("/v1/transfers/ghost")


async def transfer_exists_with_different_fields(w: World) -> httpx.Response:
    await w.api.ok_transfer("t1", "a", "b", 5)
    return await w.api.transfer("t1", "a", "b", 6)


async def accounts_must_be_different(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "a", "a", 1)


async def currency_mismatch(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "a", "e", 1)


async def insufficient_funds(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "b", "a", 1)


async def exceeds_credit_limit(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "c", "a", 101)


async def overflow(w: World) -> httpx.Response:
    await w.api.ok_transfer("t1", "a", "b", MAX_AMOUNT)
    return await w.api.transfer("t2", "a", "b", 1)


async def timeout_reserved_for_pending_transfer(w: World) -> httpx.Response:
    return await w.api.transfer("t1", "a", "b", 1, timeout_seconds=10)


async def pending_transfer_not_found(w: World) -> httpx.Response:
    return await w.client.post("/v1/transfers/ghost/post")


async def pending_transfer_not_pending(w: World) -> httpx.Response:
    await w.api.ok_transfer("t1", "a", "b", 5)
    return await w.client.post("/v1/transfers/t1/void")


async def pending_transfer_already_posted(w: World) -> httpx.Response:
    await w.api.ok_transfer("h1", "a", "b", 5, pending=True)
    assert (await w.client.post("/v1/transfers/h1/post", json={"id": "p1"})).status_code == 201
    return await w.client.post("/v1/transfers/h1/post", json={"id": "p2"})


async def pending_transfer_already_voided(w: World) -> httpx.Response:
    await w.api.ok_transfer("h1", "a", "b", 5, pending=True)
    assert (await w.client.post("/v1/transfers/h1/void")).status_code == 201
    return await w.client.post("/v1/transfers/h1/post")


async def pending_transfer_expired(w: World) -> httpx.Response:
    await w.api.ok_transfer("h1", "a", "b", 5, pending=True, timeout_seconds=1)
    w.clock.advance(2)
    return await w.client.post("/v1/transfers/h1/post")


async def amount_exceeds_pending_amount(w: World) -> httpx.Response:
    await w.api.ok_transfer("h1", "a", "b", 5, pending=True)
    return await w.client.post("/v1/transfers/h1/post", json={"amount": 6})


async def linked_event_failed(w: World) -> str:
    items = [_item(id="t1", amount=1, linked=True), _item(id="t2", amount=1, debit_account_id="b")]
    return await _batch_error(w, items, 0)


async def linked_event_chain_open(w: World) -> str:
    return await _batch_error(w, [_item(id="t1", amount=1, linked=True)], 0)


async def idempotency_key_reused(w: World) -> httpx.Response:
    key = {"Idempotency-Key": "k1"}
    body = _item(id="t1", amount=1)
    assert (await w.client.post("/v1/transfers", json=body, headers=key)).status_code == 201
    return await w.client.post("/v1/transfers", json={**body, "amount": 2}, headers=key)


async def idempotency_key_in_use(w: World) -> httpx.Response:
    key = {"Idempotency-Key": "k1"}
    body = _item(id="t1", amount=1)
    execute_idempotent = w.store.execute_idempotent
    seen: list[httpx.Response] = []

    async def second_request_arrives_meanwhile(command: Any, idempotency: Any) -> Any:
        # The test client runs the app on its own loop and one request at a time, so
        # the overlapping request is sent from inside the first, straight to the app.
        transport = httpx.ASGITransport(app=w.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
            seen.append(await other.post("/v1/transfers", json=body, headers=key))
        return await execute_idempotent(command, idempotency)

    w.monkeypatch.setattr(w.store, "execute_idempotent", second_request_arrives_meanwhile)
    first = await w.client.post("/v1/transfers", json=body, headers=key)
    assert first.status_code == 201
    return seen[0]


async def store_unavailable(w: World) -> httpx.Response:
    async def shard_down(command: Any) -> Any:
        raise UnavailableError("shard shard-0: disk I/O error", retry_after=3)

    w.monkeypatch.setattr(w.store, "execute", shard_down)
    response = await w.api.transfer("t1", "a", "b", 1)
    assert response.headers["retry-after"] == "3"
    return response


async def lock_unavailable(w: World) -> httpx.Response:
    """A keyed write on a sharded store whose lock service (Redis) is down: refused
    before it did anything, with Retry-After; it needs no lock without the key."""
    import tempfile

    from paycore.api import create_app
    from paycore.cluster.topology import build_store
    from paycore.config import Settings
    from paycore.locks.testing import free_port

    with tempfile.TemporaryDirectory() as tmp:
        nobody_listens = f"redis://127.0.0.1:{free_port()}/0"
        settings = Settings(data_dir=tmp, embedded_shards=2, locks_url=nobody_listens, auth="open")
        store = build_store(settings)
        async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as c:
            body = {"id": "x", "currency": "USD"}
            response = await c.post("/v1/accounts", json=body, headers={"Idempotency-Key": "k1"})
            assert response.headers["retry-after"] == "1"
            assert (await c.get("/v1/accounts/x")).status_code == 404
            assert (await c.post("/v1/accounts", json=body)).status_code == 201
            return response


async def internal_error(w: World) -> httpx.Response:
    async def broken(transfer_id: str) -> Any:
        raise RuntimeError("secret internals")

    w.monkeypatch.setattr(w.store, "get_transfer", broken)
    response = await w.client.get("/v1/transfers/t1")
    assert "secret" not in response.text
    return response


async def _on_two_shards(
    body: dict[str, Any],
    batch: bool = False,
    then: str | None = None,
    path: str | None = None,
) -> httpx.Response:
    """POST ``body`` (``{a}``/``{b}``: accounts on two shards) to an app over 2 SQLite shards,
    at ``path`` (which may name ``{a}``) or at the transfer routes; with ``then``, leave its
    sagas after step 1 (a node that died) and POST ``{}`` there."""
    import tempfile

    from paycore.api import create_app
    from paycore.cluster.topology import build_store
    from paycore.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp, embedded_shards=2, auth="open")
        store = build_store(settings)
        a = next(f"a{i}" for i in range(99) if store.shard_for(f"a{i}") == "shard-0")
        b = next(f"b{i}" for i in range(99) if store.shard_for(f"b{i}") == "shard-1")
        async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as c:
            for account in (a, b):
                await c.post("/v1/accounts", json={"id": account, "currency": "USD"})
            raw = msgspec.json.encode(body).decode().replace("{a}", a).replace("{b}", b)
            path = (path or ("/v1/transfers/batch" if batch else "/v1/transfers")).format(a=a)
            store.drive_sagas = then is None
            first = await c.post(path, content=raw, headers={"content-type": "application/json"})
            if then is None:
                return first
            return await c.post(then, json={})


async def transfer_in_flight(w: World) -> httpx.Response:
    body = {"id": "t1", "debit_account_id": "{a}", "credit_account_id": "{b}", "amount": 1,
            "currency": "USD", "pending": True}  # fmt: skip
    return await _on_two_shards(body, batch=False, then="/v1/transfers/t1/post")


# -- payments (the payment routes, over the same store, with a scripted processor) ----------


@asynccontextmanager
async def _payments(
    w: World, *, processors: bool = True
) -> AsyncIterator[tuple[AsyncTestClient[Any], ScriptedConnector]]:
    acq = ScriptedConnector("acq")
    service = PaymentService(w.store, {"acq": acq} if processors else {}, clock=w.clock)
    async with AsyncTestClient(app=payment_app(service)) as client:
        yield client, acq


def _payment(amount: int = 100, capture: str = "automatic", **card: Any) -> dict[str, Any]:
    fields = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return {"amount": amount, "currency": "USD", "merchant_account_id": "a", "capture": capture,
            "source": {"card": {**fields, **card}}}  # fmt: skip


async def _bad_card(w: World, **card: Any) -> httpx.Response:
    async with _payments(w) as (c, _):
        return await c.post("/v1/payments", json=_payment(**card))


async def invalid_card_number(w: World) -> httpx.Response:
    return await _bad_card(w, number="4242424242424241")


async def invalid_expiry_date(w: World) -> httpx.Response:
    return await _bad_card(w, exp_month=13)


async def card_expired(w: World) -> httpx.Response:
    return await _bad_card(w, exp_year=2020)


async def invalid_cvc(w: World) -> httpx.Response:
    return await _bad_card(w, cvc="1")


async def payment_not_found(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        return await c.get("/v1/payments/pay_nope")


async def refund_not_found(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        return await c.get("/v1/refunds/re_nope")


async def payout_not_found(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        return await c.get("/v1/payouts/po_nope")


async def payment_unexpected_state(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        paid = (await c.post("/v1/payments", json=_payment())).json()
        return await c.post(f"/v1/payments/{paid['id']}/capture")


async def amount_exceeds_capturable(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        held = (await c.post("/v1/payments", json=_payment(100, "manual"))).json()
        return await c.post(f"/v1/payments/{held['id']}/capture", json={"amount": 101})


async def authorization_expired(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        held = (await c.post("/v1/payments", json=_payment(100, "manual"))).json()
        w.clock.advance(8 * 24 * 3600)
        return await c.post(f"/v1/payments/{held['id']}/capture")


async def capture_declined(w: World) -> httpx.Response:
    async with _payments(w) as (c, acq):
        held = (await c.post("/v1/payments", json=_payment(100, "manual"))).json()
        acq.plan(Operation.CAPTURE, Behaviour.DECLINE)
        return await c.post(f"/v1/payments/{held['id']}/capture")


async def refund_exceeds_captured(w: World) -> httpx.Response:
    async with _payments(w) as (c, _):
        paid = (await c.post("/v1/payments", json=_payment(100))).json()
        return await c.post("/v1/refunds", json={"payment_id": paid["id"], "amount": 101})


async def processor_unavailable(w: World) -> httpx.Response:
    async with _payments(w, processors=False) as (c, _):
        return await c.post("/v1/payments", json=_payment())


_PROCESSOR_SECRET = "whsec_acq_0123456789abcdef"
_KEYS = {"auth": "api_keys"}


async def unauthorized(w: World) -> httpx.Response:
    """No API key on a server that requires them (the default mode)."""
    response = await w.client.get("/v1/accounts/a")
    assert response.headers["www-authenticate"].startswith("Bearer")
    return response


async def forbidden_scope(w: World) -> httpx.Response:
    """A valid key that may only read, used to write."""
    key = await ApiKeys(w.store).create("t1", frozenset({Scope.READ}))
    headers = {"Authorization": f"Bearer {key.token}"}
    assert (await w.client.get("/v1/accounts/a", headers=headers)).status_code == 404
    return await w.client.post("/v1/accounts", json={"currency": "USD"}, headers=headers)


async def invalid_signature(w: World) -> httpx.Response:
    """A processor's notification signed with another secret (the app's settings give
    processor ``acq`` its own)."""
    body = b'{"id": "evt_1", "type": "authorization.captured"}'
    forged = signature_header(["whsec_not_the_processors_one"], body)
    good = signature_header([_PROCESSOR_SECRET], body)
    path = "/v1/processor_events/acq"
    response = await w.client.post(path, content=body, headers={SIGNATURE_HEADER: forged})
    json = {"content-type": "application/json"}
    accepted = await w.client.post(path, content=body, headers={SIGNATURE_HEADER: good, **json})
    assert accepted.json() == {"received": True, "duplicate": False}
    return response


async def api_key_not_found(w: World) -> httpx.Response:
    """Open mode acts for tenant "default" with the admin scope."""
    return await w.client.get("/v1/api_keys/0123456789abcdef")


async def last_admin_key(w: World) -> httpx.Response:
    """The only admin key of its tenant, revoked by itself."""
    key = await ApiKeys(w.store).create("t1", frozenset({Scope.ADMIN}))
    headers = {"Authorization": f"Bearer {key.token}"}
    return await w.client.delete(f"/v1/api_keys/{key.row.id}", headers=headers)


async def webhook_endpoint_not_found(w: World) -> httpx.Response:
    return await w.client.get("/v1/webhook_endpoints/we_000000000000000000000000")


async def webhook_delivery_not_found(w: World) -> httpx.Response:
    made = await w.client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/x"})
    return await w.client.post(f"/v1/webhook_endpoints/{made.json()['id']}/deliveries/e1/redeliver")


async def webhook_delivery_in_progress(w: World) -> httpx.Response:
    """An event whose delivery failed once (nothing listens) and will be retried."""
    from paycore.workers.webhooks import StoredEndpoints, WebhookWorker

    made = (
        await w.client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/x"})
    ).json()
    path = f"/v1/webhook_endpoints/{made['id']}"
    event = (await w.client.post(f"{path}/test")).json()["event_id"]
    # Nothing listens, so which secret signs does not matter here.
    stored = StoredEndpoints(w.store, lambda: b"k" * 32, refresh_seconds=0)
    sender = WebhookWorker(w.store, w.store.name, (), stored=stored)
    await sender.run_once()
    await sender.aclose()
    return await w.client.post(f"{path}/deliveries/{event}/redeliver")


async def _fx_quote(w: World, **body: Any) -> httpx.Response:
    return await w.client.post("/v1/fx/quotes", json={"sell_currency": "USD", **body})


async def _convert(w: World, quote_id: str, credit: str = "e") -> httpx.Response:
    body = {"quote_id": quote_id, "debit_account_id": "a", "credit_account_id": credit}
    return await w.client.post("/v1/fx/conversions", json=body)


async def fx_pair_unsupported(w: World) -> httpx.Response:
    """The embedded rate table quotes no CHF."""
    return await _fx_quote(w, buy_currency="CHF", sell_amount=100)


async def fx_amount_too_small(w: World) -> httpx.Response:
    """One yen buys less than a cent."""
    return await _fx_quote(w, sell_currency="JPY", buy_currency="USD", sell_amount=1)


async def fx_quote_not_found(w: World) -> httpx.Response:
    return await w.client.get("/v1/fx/quotes/fxq_000000000000000000000000")


async def fx_quote_expired(w: World) -> httpx.Response:
    """A quote whose lock ran out (written as a node would have, a minute ago)."""
    now = time.time_ns()
    row = FxQuoteRow("fxq_" + "1" * 24, "default", "USD", "EUR", 100, 92, 0, "0.92", "0.92",
                     now - 60 * NS, now - 30 * NS)  # fmt: skip
    await w.store.execute(CreateFxQuote(row))
    return await _convert(w, row.id)


async def fx_quote_already_used(w: World) -> httpx.Response:
    """A quote converted into one account, then asked for another."""
    quote = (await _fx_quote(w, buy_currency="EUR", sell_amount=100)).json()
    assert (await _convert(w, quote["id"])).status_code == 201
    await w.api.account("e2", "EUR")
    return await _convert(w, quote["id"], credit="e2")


async def fx_conversion_not_found(w: World) -> httpx.Response:
    return await w.client.get("/v1/fx/conversions/fxc_000000000000000000000000")


async def fx_rate_unavailable(w: World) -> httpx.Response:
    """The HTTP rate source set in the app's settings listens nowhere."""
    response = await _fx_quote(w, buy_currency="EUR", sell_amount=100)
    assert response.headers["retry-after"]
    return response


_REPORT_HEADER = (
    "record,batch_id,settlement_date,payout_date,type,reference,processor_id,currency,"
    "count,gross,fee,net\n"
)


def _report(reference: str = "ref-1", batch: str = "b1") -> str:
    """A settlement report of one line, a reference paycore never sent."""
    days = "2026-12-07,2026-12-08"
    return (
        f"{_REPORT_HEADER}line,{batch},{days},capture,{reference},p1,USD,,10.00,0.39,9.61\n"
        f"total,{batch},{days},,,,USD,1,10.00,0.39,9.61\n"
    )


async def _import(w: World, report: str, processor: str = "sim-a") -> httpx.Response:
    body = {"processor": processor, "report": report}
    return await w.client.post("/v1/reconciliation/reports", json=body)


async def invalid_report(w: World) -> httpx.Response:
    return await _import(w, "not,a,report\n")


async def unknown_processor(w: World) -> httpx.Response:
    """A processor this node has none of (the embedded ones are sim-a and sim-b)."""
    return await _import(w, _report(), processor="sim-zz")


async def report_conflict(w: World) -> httpx.Response:
    """The batch again, with another line in it."""
    assert (await _import(w, _report())).status_code == 201
    return await _import(w, _report(reference="ref-2"))


async def import_in_progress(w: World) -> httpx.Response:
    """A second import of sim-a's reports sent while the first books (the lock wait set
    to 0 in the settings)."""
    execute = w.store.execute
    seen: list[httpx.Response] = []

    async def second_import_arrives_meanwhile(command: Any) -> Any:
        if isinstance(command, CreateAccounts) and command.requests and not seen:
            transport = httpx.ASGITransport(app=w.client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
                body = {"processor": "sim-a", "report": _report(batch="b2")}
                seen.append(await other.post("/v1/reconciliation/reports", json=body))
        return await execute(command)

    w.monkeypatch.setattr(w.store, "execute", second_import_arrives_meanwhile)
    assert (await _import(w, _report())).status_code == 201
    return seen[0]


async def reconciliation_exception_not_found(w: World) -> httpx.Response:
    path = f"/v1/reconciliation/exceptions/rx_{'0' * 24}/resolve"
    return await w.client.post(path, json={"note": "checked"})


SCENARIOS: dict[ErrorCode, tuple[dict[str, Any], Scenario]] = {
    E.INVALID_REQUEST: ({}, invalid_request),
    E.BATCH_TOO_LARGE: ({}, batch_too_large),
    E.REQUEST_TOO_LARGE: ({"max_body_bytes": 1024}, request_too_large),
    E.UNSUPPORTED_MEDIA_TYPE: ({}, unsupported_media_type),
    E.RATE_LIMITED: ({"rate_limit_per_second": 0.01, "rate_limit_burst": 5}, rate_limited),
    E.NOT_FOUND: ({}, not_found),
    E.METHOD_NOT_ALLOWED: ({}, method_not_allowed),
    E.ACCOUNT_NOT_FOUND: ({}, account_not_found),
    E.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS: ({}, account_exists_with_different_fields),
    E.ACCOUNT_CLOSED: ({}, account_closed),
    E.ACCOUNT_HAS_PENDING_TRANSFERS: ({}, account_has_pending_transfers),
    E.ACCOUNT_HAS_BALANCE: ({}, account_has_balance),
    E.TRANSFER_NOT_FOUND: ({}, transfer_not_found),
    E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS: ({}, transfer_exists_with_different_fields),
    E.ACCOUNTS_MUST_BE_DIFFERENT: ({}, accounts_must_be_different),
    E.CURRENCY_MISMATCH: ({}, currency_mismatch),
    E.INSUFFICIENT_FUNDS: ({}, insufficient_funds),
    E.EXCEEDS_CREDIT_LIMIT: ({}, exceeds_credit_limit),
    E.OVERFLOW: ({}, overflow),
    E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER: ({}, timeout_reserved_for_pending_transfer),
    E.PENDING_TRANSFER_NOT_FOUND: ({}, pending_transfer_not_found),
    E.PENDING_TRANSFER_NOT_PENDING: ({}, pending_transfer_not_pending),
    E.PENDING_TRANSFER_ALREADY_POSTED: ({}, pending_transfer_already_posted),
    E.PENDING_TRANSFER_ALREADY_VOIDED: ({}, pending_transfer_already_voided),
    E.PENDING_TRANSFER_EXPIRED: ({}, pending_transfer_expired),
    E.AMOUNT_EXCEEDS_PENDING_AMOUNT: ({}, amount_exceeds_pending_amount),
    E.LINKED_EVENT_FAILED: ({}, linked_event_failed),
    E.LINKED_EVENT_CHAIN_OPEN: ({}, linked_event_chain_open),
    E.TRANSFER_IN_FLIGHT: ({}, transfer_in_flight),
    E.IDEMPOTENCY_KEY_REUSED: ({}, idempotency_key_reused),
    E.IDEMPOTENCY_KEY_IN_USE: ({}, idempotency_key_in_use),
    E.INVALID_CARD_NUMBER: ({}, invalid_card_number),
    E.INVALID_EXPIRY_DATE: ({}, invalid_expiry_date),
    E.CARD_EXPIRED: ({}, card_expired),
    E.INVALID_CVC: ({}, invalid_cvc),
    E.PAYMENT_NOT_FOUND: ({}, payment_not_found),
    E.REFUND_NOT_FOUND: ({}, refund_not_found),
    E.PAYOUT_NOT_FOUND: ({}, payout_not_found),
    E.PAYMENT_UNEXPECTED_STATE: ({}, payment_unexpected_state),
    E.AMOUNT_EXCEEDS_CAPTURABLE: ({}, amount_exceeds_capturable),
    E.AUTHORIZATION_EXPIRED: ({}, authorization_expired),
    E.CAPTURE_DECLINED: ({}, capture_declined),
    E.REFUND_EXCEEDS_CAPTURED: ({}, refund_exceeds_captured),
    E.PROCESSOR_UNAVAILABLE: ({}, processor_unavailable),
    E.INVALID_SIGNATURE: (
        {
            "processors": (
                ProcessorConfig("acq", "http://127.0.0.1:9", webhook_secret=_PROCESSOR_SECRET),
            )
        },
        invalid_signature,
    ),
    E.UNAUTHORIZED: (_KEYS, unauthorized),
    E.FORBIDDEN_SCOPE: (_KEYS, forbidden_scope),
    E.API_KEY_NOT_FOUND: ({}, api_key_not_found),
    E.LAST_ADMIN_KEY: (_KEYS, last_admin_key),
    E.WEBHOOK_ENDPOINT_NOT_FOUND: ({}, webhook_endpoint_not_found),
    E.WEBHOOK_DELIVERY_NOT_FOUND: ({}, webhook_delivery_not_found),
    E.WEBHOOK_DELIVERY_IN_PROGRESS: ({}, webhook_delivery_in_progress),
    E.FX_PAIR_UNSUPPORTED: ({}, fx_pair_unsupported),
    E.FX_AMOUNT_TOO_SMALL: ({}, fx_amount_too_small),
    E.FX_QUOTE_NOT_FOUND: ({}, fx_quote_not_found),
    E.FX_QUOTE_EXPIRED: ({}, fx_quote_expired),
    E.FX_QUOTE_ALREADY_USED: ({}, fx_quote_already_used),
    E.FX_CONVERSION_NOT_FOUND: ({}, fx_conversion_not_found),
    E.FX_RATE_UNAVAILABLE: (
        {"fx": FxConfig(source="http", url="http://127.0.0.1:9", timeout_seconds=1)},
        fx_rate_unavailable,
    ),
    E.INVALID_REPORT: ({}, invalid_report),
    E.UNKNOWN_PROCESSOR: ({}, unknown_processor),
    E.REPORT_CONFLICT: ({}, report_conflict),
    E.IMPORT_IN_PROGRESS: (
        {"reconciliation": ReconciliationConfig(lock_wait_seconds=0)},
        import_in_progress,
    ),
    E.RECONCILIATION_EXCEPTION_NOT_FOUND: ({}, reconciliation_exception_not_found),
    E.STORE_UNAVAILABLE: ({}, store_unavailable),
    E.LOCK_UNAVAILABLE: ({}, lock_unavailable),
    E.INTERNAL_ERROR: ({}, internal_error),
}


@dataclass
class Tools:
    store: AnyStore
    clock: ManualClock
    monkeypatch: pytest.MonkeyPatch


@pytest.fixture
def tools(store: AnyStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Tools:
    return Tools(store, clock, monkeypatch)


# Codes only workers meet, never a client (tested in tests/store/test_fencing.py).
WORKER_ONLY = WORKER_ONLY_CODES


def test_every_error_code_has_a_scenario() -> None:
    """The scenario table names every ErrorCode, so none is left unreachable or untested."""
    assert set(SCENARIOS) == set(ErrorCode) - WORKER_ONLY


@pytest.mark.parametrize(
    "code", [c for c in ErrorCode if c not in WORKER_ONLY], ids=lambda code: code.value
)
async def test_error_code_is_reachable_over_http(
    code: ErrorCode, open_client: Any, tools: Tools, caplog: pytest.LogCaptureFixture
) -> None:
    """A client can meet this code, as problem+json with the spec's status (or a batch item)."""
    overrides, scenario = SCENARIOS[code]
    async with open_client(**overrides) as client:
        api = Api(client)
        if overrides is not _KEYS:  # with keys required, the open setup cannot run
            await _setup(api)
        outcome = await scenario(World(api, client, tools.store, tools.clock, tools.monkeypatch))
    if isinstance(outcome, str):
        assert outcome == code.value
        assert code in BATCH_ITEM_CODES  # the batch's document names its items' codes
    else:
        assert_problem(outcome, code)
        # The OpenAPI document declares this code for the operation that answered it.
        operation = operation_of(outcome.request.method, outcome.request.url.path)
        if operation is None:
            assert code in UNROUTED_CODES, (outcome.request.method, outcome.request.url)
        else:
            assert code in OPERATION_CODES[operation], operation
    if code is E.INTERNAL_ERROR:
        assert "secret internals" in caplog.text  # logged for operators, hidden from clients
