"""Every payment path over HTTP (``/v1/payments``, ``/v1/refunds``, ``/v1/payouts``), on
both backends: the contract's shapes and codes, Idempotency-Key replays byte for byte,
and bad input answered with a stable code that changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.support import assert_problem
from backends import AnyStore, LedgerDatabase
from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import Settlement
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import AccountFlags, AccountRequest, TransferRequest
from paycore.ops.audit import audit_cluster
from paycore.payments.processors.base import Operation
from paycore.payments.service import PaymentService, expire_authorizations, resolve_processing
from paycore.payments.testing import Behaviour, ScriptedConnector
from paycore.storage.base import CreateAccounts, CreateTransfers
from payments.payment_support import (
    CARD,
    ManualClock,
    World,
    assert_ledger_clean,
    card_json,
    open_world,
    payment_client,
)

E = ErrorCode
KEY = "Idempotency-Key"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(database: LedgerDatabase, clock: ManualClock) -> AnyStore:
    return database.store(clock=clock)


@pytest.fixture
async def world(store: AnyStore, clock: ManualClock) -> AsyncIterator[World]:
    async with open_world(store, clock) as w:
        yield w


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with payment_client(world.service) as c:
        yield c


def pay(amount: int = 1000, capture: str = "automatic", **source: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "USD",
        "merchant_account_id": "m1",
        "capture": capture,
        "source": source or {"card": card_json()},
    }


async def _ok(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


# -- the paths --------------------------------------------------------------------------------


async def test_card_payment_answers_the_contract(client: httpx.AsyncClient, world: World) -> None:
    """201 ``{id, status, processor, attempts}`` plus card brand/last4 and amounts; the
    number is nowhere in the answer; GET shows the same payment."""
    response = await client.post("/v1/payments", json=pay(1250))
    body = await _ok(response)
    assert body["id"].startswith("pay_")
    assert (body["status"], body["processor"], body["amount"]) == ("succeeded", "acq-a", 1250)
    assert body["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}
    assert (body["amount_captured"], body["amount_capturable"]) == (1250, 0)
    assert body["source"] == {"type": "card", "wallet_account_id": None}
    (attempt,) = body["attempts"]
    assert (attempt["operation"], attempt["outcome"], attempt["processor"]) == (
        "authorize",
        "approved",
        "acq-a",
    )
    assert attempt["routing"]["candidates"] == ["acq-a", "acq-b"]
    assert CARD.number not in response.text
    again = await _ok(await client.get(f"/v1/payments/{body['id']}"), 200)
    assert again == {**body, "refunds": []}  # a read shows the payment's refunds too


async def test_manual_capture_cancel_and_refund_over_http(
    client: httpx.AsyncClient, world: World
) -> None:
    """Authorize, capture in two parts, refund part twice; another authorization canceled."""
    held = await _ok(await client.post("/v1/payments", json=pay(1000, "manual")))
    assert (held["status"], held["amount_capturable"]) == ("requires_capture", 1000)
    assert held["capture_before"] is not None
    pid = held["id"]
    part = await _ok(await client.post(f"/v1/payments/{pid}/capture", json={"amount": 300}), 200)
    assert (part["status"], part["amount_captured"], part["amount_capturable"]) == (
        "requires_capture",
        300,
        700,
    )
    rest = await _ok(await client.post(f"/v1/payments/{pid}/capture"), 200)
    assert (rest["status"], rest["amount_captured"]) == ("succeeded", 1000)
    refund = await _ok(await client.post("/v1/refunds", json={"payment_id": pid, "amount": 400}))
    assert (refund["status"], refund["amount"], refund["payment_id"]) == ("succeeded", 400, pid)
    assert await _ok(await client.get(f"/v1/refunds/{refund['id']}"), 200) == refund
    last = await _ok(await client.post("/v1/refunds", json={"payment_id": pid}))
    assert last["amount"] == 600
    over = await client.post("/v1/refunds", json={"payment_id": pid, "amount": 1})
    assert_problem(over, E.REFUND_EXCEEDS_CAPTURED)
    paid = await _ok(await client.get(f"/v1/payments/{pid}"), 200)
    assert paid["amount_refunded"] == 1000

    other = await _ok(await client.post("/v1/payments", json=pay(500, "manual")))
    canceled = await _ok(await client.post(f"/v1/payments/{other['id']}/cancel"), 200)
    assert (canceled["status"], canceled["cancellation_reason"]) == ("canceled", "requested")
    assert [a["operation"] for a in canceled["attempts"]] == ["authorize", "void"]
    await assert_ledger_clean(world.store)


async def test_payouts_and_wallet_payments_over_http(
    client: httpx.AsyncClient, world: World
) -> None:
    """A payout is paid (or failed when the wallet cannot cover it); a wallet pays."""
    body = {"wallet_account_id": "w1", "amount": 2500, "currency": "USD",
            "destination": "GB00BANK0000000001"}  # fmt: skip
    payout = await _ok(await client.post("/v1/payouts", json=body))
    assert (payout["status"], payout["processor"], payout["amount"]) == ("paid", "acq-a", 2500)
    assert await _ok(await client.get(f"/v1/payouts/{payout['id']}"), 200) == payout
    broke = await _ok(await client.post("/v1/payouts", json={**body, "amount": 10_000}))
    assert (broke["status"], broke["failure_code"]) == ("failed", "insufficient_funds")
    wallet_pay = await _ok(await client.post("/v1/payments", json=pay(500, wallet_account_id="w1")))
    assert wallet_pay["source"] == {"type": "wallet", "wallet_account_id": "w1"}
    assert (wallet_pay["status"], wallet_pay["card"], wallet_pay["processor"]) == (
        "succeeded",
        None,
        None,
    )
    assert (await world.account("w1")).balance == 10_000 - 2500 - 500
    await assert_ledger_clean(world.store)


# -- bad input --------------------------------------------------------------------------------

BAD_PAYMENTS: list[tuple[str, dict[str, Any], ErrorCode]] = [
    ("float amount", pay(10.5), E.INVALID_REQUEST),  # type: ignore[arg-type]
    ("string amount", pay("10"), E.INVALID_REQUEST),  # type: ignore[arg-type]
    ("zero amount", pay(0), E.INVALID_REQUEST),
    ("unknown field", {**pay(), "tip": 1}, E.INVALID_REQUEST),
    ("no source", {**pay(), "source": {}}, E.INVALID_REQUEST),
    ("two sources", pay(card=card_json(), wallet_account_id="w1"), E.INVALID_REQUEST),
    ("bad currency", {**pay(), "currency": "XXQ"}, E.INVALID_REQUEST),
    ("bad capture", {**pay(), "capture": "later"}, E.INVALID_REQUEST),
    ("bad id", {**pay(), "merchant_account_id": "m 1"}, E.INVALID_REQUEST),
    ("luhn", pay(card=card_json("4242424242424241")), E.INVALID_CARD_NUMBER),
    ("letters", pay(card=card_json("4242abcd42424242")), E.INVALID_CARD_NUMBER),
    ("month", pay(card=card_json(exp_month=13)), E.INVALID_EXPIRY_DATE),
    ("expired", pay(card=card_json(exp_year=2020)), E.CARD_EXPIRED),
    ("cvc", pay(card=card_json(cvc="12")), E.INVALID_CVC),
    ("no merchant", {**pay(), "merchant_account_id": "ghost"}, E.ACCOUNT_NOT_FOUND),
    ("currency", {**pay(), "currency": "EUR"}, E.CURRENCY_MISMATCH),
    ("same wallet", {**pay(wallet_account_id="m1")}, E.ACCOUNTS_MUST_BE_DIFFERENT),
]


@pytest.mark.parametrize(
    ("body", "code"), [(b, c) for _, b, c in BAD_PAYMENTS], ids=[n for n, _, _ in BAD_PAYMENTS]
)
async def test_a_bad_payment_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], code: ErrorCode
) -> None:
    """Each bad request gets its stable code; no payment, no event, no processor call."""
    response = await client.post("/v1/payments", json=body)
    problem = assert_problem(response, code)
    assert "4242424242424241" not in problem["detail"]
    reads = world.service.reads(world.store.name)
    assert await reads.payments_in("processing", 2**62, 10) == []
    assert await reads.events() == []
    assert all(c.calls == [] for c in world.connectors.values())


async def test_refusals_of_captures_refunds_payouts_and_reads(
    client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    """Unknown ids are 404s with their own code; a wrong state is 409; a capture past the
    authorization, or after it expired, is refused; a declined capture is 402."""
    assert_problem(await client.get("/v1/payments/pay_nope"), E.PAYMENT_NOT_FOUND)
    assert_problem(await client.get("/v1/refunds/re_nope"), E.REFUND_NOT_FOUND)
    assert_problem(await client.get("/v1/payouts/po_nope"), E.PAYOUT_NOT_FOUND)
    assert_problem(await client.post("/v1/payments/pay_nope/capture"), E.PAYMENT_NOT_FOUND)
    assert_problem(await client.post("/v1/payments/a%20b/cancel"), E.PAYMENT_NOT_FOUND)
    done = await _ok(await client.post("/v1/payments", json=pay(100)))
    assert_problem(
        await client.post(f"/v1/payments/{done['id']}/capture"), E.PAYMENT_UNEXPECTED_STATE
    )
    assert_problem(
        await client.post(f"/v1/payments/{done['id']}/cancel", json={"x": 1}), E.INVALID_REQUEST
    )
    held = await _ok(await client.post("/v1/payments", json=pay(100, "manual")))
    over = await client.post(f"/v1/payments/{held['id']}/capture", json={"amount": 101})
    assert_problem(over, E.AMOUNT_EXCEEDS_CAPTURABLE)
    world.processor("acq-a").plan(Operation.CAPTURE, Behaviour.DECLINE)
    assert_problem(await client.post(f"/v1/payments/{held['id']}/capture"), E.CAPTURE_DECLINED)
    world.processor("acq-a").plan(Operation.CAPTURE, Behaviour.FAIL)
    assert_problem(await client.post(f"/v1/payments/{held['id']}/capture"), E.PROCESSOR_UNAVAILABLE)
    clock.advance(8 * 24 * 3600)
    assert_problem(await client.post(f"/v1/payments/{held['id']}/capture"), E.AUTHORIZATION_EXPIRED)
    bad_payout = {"wallet_account_id": "w1", "amount": 1, "currency": "USD",
                  "destination": "gb-lower"}  # fmt: skip
    assert_problem(await client.post("/v1/payouts", json=bad_payout), E.INVALID_REQUEST)
    ghost = {**bad_payout, "wallet_account_id": "ghost", "destination": "GB00BANK000001"}
    assert_problem(await client.post("/v1/payouts", json=ghost), E.ACCOUNT_NOT_FOUND)
    assert_problem(
        await client.post("/v1/refunds", json={"payment_id": "pay_nope", "amount": 1}),
        E.PAYMENT_NOT_FOUND,
    )
    assert await expire_authorizations(world.store, clock=clock) == [held["id"]]
    await assert_ledger_clean(world.store)


async def test_no_processor_is_a_retryable_503(world: World) -> None:
    """With no processor to send it to: 503 ``processor_unavailable``, nothing written."""
    service = PaymentService(world.store, {}, clock=world.clock)
    async with payment_client(service) as c:
        response = await c.post("/v1/payments", json=pay(), headers={KEY: "k-503"})
        assert_problem(response, E.PROCESSOR_UNAVAILABLE)
    assert await world.service.reads(world.store.name).key_record("default:k-503") is None


# -- Idempotency-Key ---------------------------------------------------------------------------


async def test_a_retry_gets_the_first_answer_byte_for_byte(
    client: httpx.AsyncClient, world: World
) -> None:
    """Same key and body: the first answer again, marked replayed; the processor was
    called once. Another body under the key: 409 reused, on any payment route."""
    first = await client.post("/v1/payments", json=pay(700), headers={KEY: "k1"})
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    second = await client.post("/v1/payments", json=pay(700), headers={KEY: "k1"})
    assert (second.status_code, second.content) == (201, first.content)
    assert second.headers["idempotent-replayed"] == "true"
    assert world.processor("acq-a").count(Operation.AUTHORIZE) == 1
    assert_problem(
        await client.post("/v1/payments", json=pay(701), headers={KEY: "k1"}),
        E.IDEMPOTENCY_KEY_REUSED,
    )
    other_card = pay(700, card=card_json("5555555555554444"))
    assert_problem(
        await client.post("/v1/payments", json=other_card, headers={KEY: "k1"}),
        E.IDEMPOTENCY_KEY_REUSED,
    )
    pid = first.json()["id"]
    assert_problem(
        await client.post("/v1/refunds", json={"payment_id": pid}, headers={KEY: "k1"}),
        E.IDEMPOTENCY_KEY_REUSED,
    )


async def test_every_payment_post_replays(client: httpx.AsyncClient, world: World) -> None:
    """Capture, cancel, refund and payout under a key: each retried answer is the first."""
    held = await _ok(await client.post("/v1/payments", json=pay(900, "manual")))
    other = await _ok(await client.post("/v1/payments", json=pay(100, "manual")))
    payout = {"wallet_account_id": "w1", "amount": 10, "currency": "USD",
              "destination": "GB00BANK000001"}  # fmt: skip
    calls = [
        (f"/v1/payments/{held['id']}/capture", {"amount": 400}, "kc"),
        (f"/v1/payments/{other['id']}/cancel", None, "kv"),
        ("/v1/refunds", {"payment_id": held["id"], "amount": 100}, "kr"),
        ("/v1/payouts", payout, "kp"),
    ]
    for path, body, key in calls:
        first = await client.post(path, json=body, headers={KEY: key})
        assert first.status_code in (200, 201), first.text
        again = await client.post(path, json=body, headers={KEY: key})
        assert (again.status_code, again.content) == (first.status_code, first.content)
        assert again.headers["idempotent-replayed"] == "true"
    acq = world.processor("acq-a")
    assert [acq.count(op) for op in (Operation.CAPTURE, Operation.VOID)] == [1, 1]
    assert [acq.count(op) for op in (Operation.REFUND, Operation.PAYOUT)] == [1, 1]
    # A later capture under a new key still works: the first key's answer is its own.
    more = await client.post(f"/v1/payments/{held['id']}/capture", headers={KEY: "kc2"})
    assert more.json()["amount_captured"] == 900


async def test_errors_are_replayed_but_bad_bodies_are_not_kept(
    client: httpx.AsyncClient, world: World
) -> None:
    """A refusal under a key is kept (the account created since changes nothing for a
    retry); a body that fails validation keeps nothing, so a corrected one may use it."""
    ghost = {**pay(), "merchant_account_id": "m2"}
    first = await client.post("/v1/payments", json=ghost, headers={KEY: "ke"})
    assert_problem(first, E.ACCOUNT_NOT_FOUND)
    await world.store.execute(CreateAccounts((AccountRequest("m2", "USD"),)))
    again = await client.post("/v1/payments", json=ghost, headers={KEY: "ke"})
    assert (again.status_code, again.content) == (404, first.content)
    assert again.headers["idempotent-replayed"] == "true"

    bad = await client.post("/v1/payments", json=pay(1.5), headers={KEY: "kb"})  # type: ignore[arg-type]
    assert_problem(bad, E.INVALID_REQUEST)
    fixed = await client.post("/v1/payments", json=pay(15), headers={KEY: "kb"})
    assert fixed.status_code == 201
    assert_problem(
        await client.post("/v1/payments", json=pay(), headers={KEY: "x" * 256}), E.INVALID_REQUEST
    )


async def test_a_key_past_its_retention_makes_a_new_payment(
    client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    """After the 72 hours a key's record is kept, the key is free: a new payment."""
    first = await _ok(await client.post("/v1/payments", json=pay(10), headers={KEY: "kx"}))
    clock.advance(73 * 3600)
    second = await _ok(await client.post("/v1/payments", json=pay(10), headers={KEY: "kx"}))
    assert second["id"] != first["id"]
    again = await client.post("/v1/payments", json=pay(10), headers={KEY: "kx"})
    assert again.json()["id"] == second["id"]


async def test_a_twin_while_the_first_runs_is_told_in_use(
    client: httpx.AsyncClient, world: World
) -> None:
    """While the first request waits on the processor, its twin gets 409 in_use; then the
    twin's retry gets the first answer."""
    acq = world.processor("acq-a")
    acq.gate = asyncio.Event()
    async with payment_client(world.service) as raw:
        first = asyncio.create_task(raw.post("/v1/payments", json=pay(), headers={KEY: "kt"}))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if world.processor("acq-a").gate is not None and await world.service.reads(
                world.store.name
            ).payments_in("processing", 2**62, 10):
                break
        twin = await raw.post("/v1/payments", json=pay(), headers={KEY: "kt"})
        assert_problem(twin, E.IDEMPOTENCY_KEY_IN_USE)
        acq.gate.set()
        answer = await first
    retry = await client.post("/v1/payments", json=pay(), headers={KEY: "kt"})
    assert (retry.status_code, retry.content) == (answer.status_code, answer.content)
    assert acq.count(Operation.AUTHORIZE) == 1


async def test_a_capture_twin_that_took_over_a_slow_claim_is_told_in_use(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture's retry reads its key's claim before the first request (slow, not dead)
    recorded the capture, then finds the payment processing: that is the first request's
    own capture, so the retry is told 409 in_use (retryable), never a stored
    payment_unexpected_state (found by the chaos run: the capture then happened)."""
    from paycore.payments.flows.work import Pointer, UnitOfWork

    held = await _ok(await client.post("/v1/payments", json=pay(700, capture="manual")))
    acq = world.processor("acq-a")
    acq.gate = asyncio.Event()
    body = {"amount": 229}
    path = f"/v1/payments/{held['id']}/capture"
    async with payment_client(world.service) as raw:
        first = asyncio.create_task(raw.post(path, json=body, headers={KEY: "kc"}))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if await world.service.reads(world.store.name).payments_in("processing", 2**62, 10):
                break
        replay = UnitOfWork.replay_or_resume

        async def read_before_the_capture(work: UnitOfWork) -> Any:
            """The claim, as read before the first request recorded its capture."""
            monkeypatch.setattr(UnitOfWork, "replay_or_resume", replay)
            seen = await work.seen()
            assert isinstance(seen, Pointer)
            return seen

        monkeypatch.setattr(UnitOfWork, "replay_or_resume", read_before_the_capture)
        # Another API node (its own app: the in-process guard of keys in flight is not
        # shared).
        twin = await client.post(path, json=body, headers={KEY: "kc"})
        assert_problem(twin, E.IDEMPOTENCY_KEY_IN_USE)
        acq.gate.set()
        answer = await first
    assert (answer.status_code, answer.json()["amount_captured"]) == (200, 229)
    retry = await client.post(path, json=body, headers={KEY: "kc"})
    assert (retry.status_code, retry.content) == (answer.status_code, answer.content)
    assert acq.count(Operation.CAPTURE) == 1


async def test_an_ambiguous_first_answer_is_the_one_replayed(
    client: httpx.AsyncClient, world: World, clock: ManualClock
) -> None:
    """The first answer said processing (the processor's answer was lost): a retry gets
    that same answer even after the resolver finished the payment; GET shows the end."""
    world.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.AMBIGUOUS)
    first = await client.post("/v1/payments", json=pay(), headers={KEY: "ka"})
    assert first.json()["status"] == "processing"
    clock.advance(120)
    await resolve_processing(world.store, world.connectors, clock=clock)
    again = await client.post("/v1/payments", json=pay(), headers={KEY: "ka"})
    assert again.content == first.content
    now = await _ok(await client.get(f"/v1/payments/{first.json()['id']}"), 200)
    assert now["status"] == "succeeded"


async def test_a_request_that_died_mid_payment_is_in_use_until_resolved(
    client: httpx.AsyncClient, world: World, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome could not be recorded (503): a retry is 409 in_use while the payment is
    processing; after the resolver, the retry gets the payment as it is, kept from then."""
    write = world.service.context.write
    writes = 0

    async def outcome_write_fails(command: Any) -> Any:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise UnavailableError("shard down")
        return await write(command)

    monkeypatch.setattr(world.service.context, "write", outcome_write_fails)
    died = await client.post("/v1/payments", json=pay(), headers={KEY: "kd"})
    assert_problem(died, E.STORE_UNAVAILABLE)
    monkeypatch.undo()
    assert_problem(
        await client.post("/v1/payments", json=pay(), headers={KEY: "kd"}),
        E.IDEMPOTENCY_KEY_IN_USE,
    )
    clock.advance(120)
    await resolve_processing(world.store, world.connectors, clock=clock)
    retry = await client.post("/v1/payments", json=pay(), headers={KEY: "kd"})
    assert (retry.status_code, retry.json()["status"]) == (201, "succeeded")
    assert retry.headers["idempotent-replayed"] == "true"
    later = await client.post("/v1/payments", json=pay(), headers={KEY: "kd"})
    assert later.content == retry.content
    assert world.processor("acq-a").count(Operation.AUTHORIZE) == 1


async def test_a_claimed_payment_that_never_started_is_resumed(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key was claimed but the process died before the payment was written (as when
    the key lives on another shard than the payment): the retry runs the payment, under
    the claimed id."""
    from paycore.payments.flows.work import Pointer, pointer_json
    from paycore.storage.base import StoredResponse
    from paycore.storage.payments import POINTER_CONTENT_TYPE, KeyWrite, PaymentWrite

    body = pay(333)
    raw = _raw_fingerprint("POST", "/v1/payments", body)
    pointer = StoredResponse(
        102,
        pointer_json.encode(Pointer("payment", "pay_claimed", world.store.name, 0)),
        POINTER_CONTENT_TYPE,
    )
    claimed = await world.store.execute(
        PaymentWrite(
            shard=world.store.name,
            key=KeyWrite("default:kr", raw, pointer, 3600, "claim"),
        )
    )
    assert claimed.ok
    retry = await _ok(await client.post("/v1/payments", json=body, headers={KEY: "kr"}))
    assert (retry["id"], retry["status"]) == ("pay_claimed", "succeeded")
    again = await client.post("/v1/payments", json=body, headers={KEY: "kr"})
    assert again.json() == retry


def _raw_fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    import msgspec

    from paycore.api.idempotency import fingerprint
    from paycore.api.payment_schemas import PaymentIn

    decoded = msgspec.json.decode(msgspec.json.encode(body), type=PaymentIn)
    return fingerprint(method, path, decoded.fingerprint_body())


async def test_the_card_number_never_reaches_the_database(
    client: httpx.AsyncClient, world: World, database: LedgerDatabase
) -> None:
    """After payments, retries and a failure under keys, no stored row holds the number
    or the CVC: only brand, last four and a token."""
    number = "5555555555554444"
    body = pay(100, card=card_json(number, cvc="987"))
    await client.post("/v1/payments", json=body, headers={KEY: "kn"})
    await client.post("/v1/payments", json=body, headers={KEY: "kn"})
    world.processor("acq-a").plan(Operation.AUTHORIZE, Behaviour.DECLINE)
    await client.post("/v1/payments", json=pay(5, card=card_json(number, cvc="987")))
    for table in ("payments", "payment_attempts", "payment_events", "idempotency",
                  "transfer_metadata"):  # fmt: skip
        for row in database.query(f"SELECT * FROM {table}"):
            text = " ".join(
                bytes(v).decode(errors="replace") if isinstance(v, bytes | memoryview) else str(v)
                for v in row
            )
            assert number not in text, (table, row)
            # The CVC's digits may turn up by chance in ids and timestamps; the field
            # itself must not be stored anywhere.
            assert "cvc" not in text.lower(), (table, row)


# -- sharded: the key on one shard, the payment on another; wallets across shards ----------


@pytest.fixture
async def cluster(tmp_path: Path, clock: ManualClock) -> AsyncIterator[ShardedStore]:
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=2), clock=clock)
    await store.start()
    yield store
    await store.stop()


def _on(store: ShardedStore, shard: str, prefix: str) -> str:
    return next(f"{prefix}{i}" for i in range(999) if store.shard_for(f"{prefix}{i}") == shard)


async def test_keys_and_wallets_across_shards(cluster: ShardedStore, clock: ManualClock) -> None:
    """On two shards: a keyed payment whose key lives elsewhere replays, and its key reused
    for a merchant on the other shard is refused; a wallet on one shard pays a merchant on
    the other (processing, then succeeded once the saga settled); the cluster audits clean."""
    m0, m1 = _on(cluster, "shard-0", "m"), _on(cluster, "shard-1", "m")
    w0, bank0 = _on(cluster, "shard-0", "w"), _on(cluster, "shard-0", "bank")
    await cluster.execute(
        CreateAccounts(
            (
                AccountRequest(m0, "USD"),
                AccountRequest(m1, "USD"),
                AccountRequest(bank0, "USD"),
                AccountRequest(w0, "USD", flags=AccountFlags(no_overdraft=True)),
            )
        )
    )
    await cluster.execute(
        CreateTransfers((TransferRequest("fund", bank0, w0, amount=5000, currency="USD"),))
    )
    acq = ScriptedConnector("acq-a")
    service = PaymentService(cluster, {"acq-a": acq}, clock=clock, saga_wait_seconds=0.2)
    key = next(f"k{i}" for i in range(999) if cluster.shard_for(f"default:k{i}") == "shard-0")
    async with payment_client(service) as c:
        body = {**pay(800), "merchant_account_id": m1}
        first = await c.post("/v1/payments", json=body, headers={KEY: key})
        assert first.json()["status"] == "succeeded"
        again = await c.post("/v1/payments", json=body, headers={KEY: key})
        assert again.content == first.content
        assert_problem(
            await c.post(
                "/v1/payments", json={**body, "merchant_account_id": m0}, headers={KEY: key}
            ),
            E.IDEMPOTENCY_KEY_REUSED,
        )
        assert acq.count(Operation.AUTHORIZE) == 1

        wallet_body = {**pay(1200, wallet_account_id=w0), "merchant_account_id": m1}
        paid = await _ok(await c.post("/v1/payments", json=wallet_body))
        # The wallet's money crossed shards within the request (its saga was driven
        # before the answer): the payment succeeded at once, nothing is left to settle.
        assert paid["status"] == "succeeded"
        settlement = Settlement(cluster.shards, owner="test")
        assert await settlement.run_shard("shard-0") == 0
        done = await _ok(await c.get(f"/v1/payments/{paid['id']}"), 200)
        assert done["status"] == "succeeded"
        broke = {**pay(9999, wallet_account_id=w0), "merchant_account_id": m1}
        failed = await _ok(await c.post("/v1/payments", json=broke))
        assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    balances = await cluster.get_accounts([w0, m1])
    assert balances[w0].balance == 5000 - 1200
    assert balances[m1].balance == 800 + 1200
    report = await audit_cluster(cluster.shards)
    assert report.ok, report.violations
