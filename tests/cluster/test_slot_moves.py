"""Moving slot ranges between shards (``paycore.cluster.slot_moves``): the accounts keep
every answer (balances, history, idempotent replays, transfer ids), the old owner
refuses a router that missed the switch, what cannot move yet rolls the move back, a
move that dies at any step finishes when run again, and the audit stays clean."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
from cluster_support import ClusterDatabases, counters, ids_on, move, open_accounts

from paycore.cluster import slot_catalog, slot_moves
from paycore.cluster.router import ShardedStore
from paycore.cluster.shardmap import slot_of
from paycore.cluster.topology import build_store
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.ops.audit import audit_cluster
from paycore.payments.flows.model import PaymentView, RefundView
from paycore.payments.intents import CaptureMethod
from paycore.payments.processors.base import CardDetails
from paycore.payments.service import NewPayment, PaymentService
from paycore.payments.testing import ScriptedConnector
from paycore.storage.base import CreateAccounts, CreateTransfers, Idempotency, StoredResponse
from paycore.storage.listing import Page, TransferFilter

SOURCE, TARGET = "shard-0", "shard-3"


@pytest.fixture(autouse=True)
def _quick_maps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test with one router need not wait for others to adopt a fence; with two, they
    look for a new map every 0.2 s (the move waits 0.3 s for them)."""
    if "under_load" in request.node.name:
        monkeypatch.setattr(slot_catalog, "REFRESH_SECONDS", 0.2)
        monkeypatch.setattr(slot_moves, "ADOPT_SECONDS", 0.3)
    else:
        monkeypatch.setattr(slot_moves, "ADOPT_SECONDS", 0.0)


def _slot_range(ids: Sequence[str]) -> tuple[int, int]:
    slots = [slot_of(i) for i in ids]
    return min(slots), max(slots)


async def _send(store: ShardedStore, *requests: TransferRequest) -> list[Any]:
    results: list[Any] = await store.execute(CreateTransfers(tuple(requests)))
    return results


async def _history(store: ShardedStore, account_id: str) -> list[Any]:
    page = await store.account_transfers(account_id, limit=100)
    return list(page.data)


async def _listed(store: ShardedStore, account_id: str) -> list[Any]:
    page = await store.list_transfers(TransferFilter("default", account_id), Page(100))
    return list(page.items)


async def _ledger(store: ShardedStore, accounts: list[str]) -> dict[str, Any]:
    """Each account's counters, history page and GET /v1/transfers?account_id= rows."""
    found = await store.get_accounts(accounts)
    return {
        a: (counters(found[a]), await _history(store, a), await _listed(store, a)) for a in accounts
    }


@pytest.fixture
async def moving(cluster: ShardedStore) -> dict[str, Any]:
    """On the source: a bank and two wallets in one slot range (with history among them,
    across shards and a resolved hold), and a stay-behind account outside the range."""
    bank, w1, w2 = ids_on(cluster, SOURCE, 3, prefix="mv-")
    lo, hi = _slot_range([bank, w1, w2])
    stay = next(i for i in ids_on(cluster, SOURCE, 400, prefix="st-") if not lo <= slot_of(i) <= hi)
    (far,) = ids_on(cluster, "shard-1", 1, prefix="far-")
    await open_accounts(cluster, [bank, stay], no_overdraft=False)
    await open_accounts(cluster, [w1, w2, far])
    results = await _send(
        cluster,
        move("mv-t1", bank, w1, 500),
        move("mv-t2", w1, w2, 120),
        move("mv-t3", w1, far, 80),  # across shards
        move("mv-t4", stay, w2, 30),  # with an account that does not move
        move("mv-h1", w2, w1, 40, pending=True),
    )
    assert all(r.ok for r in results), results
    post = TransferRequest(
        "mv-p1", None, None, 25, None, pending_id="mv-h1", flags=TransferFlags(post_pending=True)
    )
    assert all(r.ok for r in await _send(cluster, post))
    return {"accounts": [bank, w1, w2], "stay": stay, "far": far, "slots": (lo, hi)}


async def test_a_move_keeps_every_answer_and_the_audit_clean(
    cluster: ShardedStore, moving: dict[str, Any]
) -> None:
    accounts, (lo, hi) = moving["accounts"], moving["slots"]
    everyone = [*accounts, moving["stay"], moving["far"]]
    # An Idempotency-Key whose record lives in the moving slots, answered before the move.
    key_in_range = next(k for k in (f"key-{i}" for i in range(10_000)) if lo <= slot_of(k) <= hi)
    first = await cluster.execute_idempotent(
        CreateTransfers((move("mv-k1", accounts[0], accounts[2], 7),)),
        Idempotency(key_in_range, "fp", lambda r: StoredResponse(201, b"first"), 600),
    )
    assert first == (StoredResponse(201, b"first"), False)
    before = await _ledger(cluster, everyone)
    assert all(history and listed for _, history, listed in before.values()), before

    report = await slot_moves.move_slots(cluster, lo, hi, TARGET)

    assert report.state == "done", report
    assert report.accounts >= 3, report
    assert all(cluster.shard_for(a) == TARGET for a in accounts)
    assert cluster.shard_for(moving["stay"]) == SOURCE
    assert await _ledger(cluster, everyone) == before  # balances and histories, unchanged
    replay = await cluster.execute_idempotent(
        CreateTransfers((move("mv-k1", accounts[0], accounts[2], 7),)),
        Idempotency(key_in_range, "fp", lambda r: StoredResponse(201, b"again"), 600),
    )
    assert replay == (StoredResponse(201, b"first"), True)  # the key moved with its slot
    # The moved accounts keep working, with the ones left behind and across shards.
    after = await _send(
        cluster,
        move("mv-a1", accounts[1], moving["stay"], 10),
        move("mv-a2", moving["far"], accounts[2], 5),
        move("mv-a3", accounts[0], accounts[1], 50),
    )
    assert [r.ok for r in after] == [True, True, True], after
    again = await _send(cluster, move("mv-t1", accounts[0], accounts[1], 500))
    assert not again[0].ok  # a transfer id used before the move is still taken
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def test_a_router_that_missed_the_switch_is_refused_by_the_old_owner(
    cluster_databases: ClusterDatabases, cluster: ShardedStore, moving: dict[str, Any]
) -> None:
    stale = build_store(cluster_databases.settings())
    await stale.start()
    try:
        lo, hi = moving["slots"]
        await slot_moves.move_slots(cluster, lo, hi, TARGET)
        w1 = moving["accounts"][1]
        assert stale.shard_for(w1) == SOURCE  # its map is the old one
        with pytest.raises(UnavailableError, match="moved off shard"):
            await _send(stale, move("stale-1", w1, moving["stay"], 1))
        assert await stale.refresh_map()
        assert [r.ok for r in await _send(stale, move("stale-1", w1, moving["stay"], 1))] == [True]
        assert (await cluster.get_accounts([w1]))[w1].debits_posted == 120 + 80 + 1
    finally:
        await stale.stop()
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def test_a_pending_hold_rolls_the_move_back_and_nothing_changes(
    cluster: ShardedStore, moving: dict[str, Any]
) -> None:
    accounts, (lo, hi) = moving["accounts"], moving["slots"]
    assert all(
        r.ok for r in await _send(cluster, move("mv-h2", accounts[1], accounts[2], 5, pending=True))
    )
    version = cluster.map_version
    with pytest.raises(slot_moves.MoveBlocked, match="pending hold 'mv-h2'"):
        await slot_moves.move_slots(cluster, lo, hi, TARGET, wait_seconds=0.3)
    assert cluster.shard_for(accounts[1]) == SOURCE
    assert cluster.map_version > version
    assert [r.ok for r in await _send(cluster, move("mv-b1", accounts[0], accounts[1], 1))] == [
        True
    ]
    # Once the hold is resolved, the same slots move.
    void = TransferRequest(
        "mv-v2", None, None, 5, None, pending_id="mv-h2", flags=TransferFlags(void_pending=True)
    )
    assert [r.ok for r in await _send(cluster, void)] == [True]
    assert (await slot_moves.move_slots(cluster, lo, hi, TARGET)).state == "done"
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def _die_at(
    cluster: ShardedStore, monkeypatch: pytest.MonkeyPatch, lo: int, hi: int, step: str
) -> None:
    """Move ``lo..hi`` to the target with a mover that dies once it recorded ``step``."""
    real = slot_moves._record

    async def dying(router: ShardedStore, plan: Any, state: str, detail: str = "") -> None:
        await real(router, plan, state, detail)
        if state == step:
            raise RuntimeError(f"the mover died at {state}")

    monkeypatch.setattr(slot_moves, "_record", dying)
    with pytest.raises(RuntimeError, match="died"):
        await slot_moves.move_slots(cluster, lo, hi, TARGET)
    monkeypatch.setattr(slot_moves, "_record", real)


@pytest.mark.parametrize("dies_at", ["draining", "copying", "switching", "retiring"])
async def test_a_move_that_dies_at_any_step_finishes_when_run_again(
    cluster: ShardedStore, moving: dict[str, Any], monkeypatch: pytest.MonkeyPatch, dies_at: str
) -> None:
    accounts, (lo, hi) = moving["accounts"], moving["slots"]
    before = await _ledger(cluster, accounts)
    await _die_at(cluster, monkeypatch, lo, hi, dies_at)
    with pytest.raises(slot_moves.MoveBlocked, match="unfinished"):
        await slot_moves.move_slots(cluster, 0, 0, "shard-2")  # another move waits
    report = await slot_moves.move_slots(cluster, lo, hi, TARGET)
    assert report.state == "done"
    assert all(cluster.shard_for(a) == TARGET for a in accounts)
    assert await _ledger(cluster, accounts) == before
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def test_an_aborted_move_leaves_the_slots_where_they_were(
    cluster: ShardedStore, moving: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts, (lo, hi) = moving["accounts"], moving["slots"]
    before = await _ledger(cluster, accounts)
    await _die_at(cluster, monkeypatch, lo, hi, "switching")  # after copying
    with pytest.raises(slot_moves.MoveBlocked, match="switched already"):
        await slot_moves.abort_move(cluster)
    await slot_moves.move_slots(cluster, lo, hi, TARGET)  # finish it, then move back
    back = await slot_moves.move_slots(cluster, lo, hi, SOURCE)
    assert back.state == "done"
    assert all(cluster.shard_for(a) == SOURCE for a in accounts)
    assert await _ledger(cluster, accounts) == before
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


def test_a_move_must_name_slots_of_one_other_shard(cluster: ShardedStore) -> None:
    plan = slot_moves.plan_move
    shard_map, shards = cluster.shard_map, cluster.shards
    with pytest.raises(ValueError, match="within 0-4095"):
        plan(shard_map, 1, 4000, 4096, target=TARGET, shards=shards)
    with pytest.raises(ValueError, match="several shards"):
        plan(shard_map, 1, 1000, 1100, target=TARGET, shards=shards)
    with pytest.raises(ValueError, match="already"):
        plan(shard_map, 1, 3100, 3200, target=TARGET, shards=shards)
    with pytest.raises(ValueError, match="not one of"):
        plan(shard_map, 1, 0, 10, target="shard-9", shards=shards)
    moved = plan(shard_map, 1, 0, 10, target=TARGET, shards=shards)
    assert moved.version == 3  # 2 fences the slots, 3 switches them
    assert moved.after.shard_of_slot(10) == TARGET
    assert moved.after.shard_of_slot(11) == SOURCE


async def test_both_legs_of_a_cross_shard_transfer_can_move_to_one_shard(
    cluster: ShardedStore,
) -> None:
    """A saga's legs share its id on their two shards: moving both accounts, one range
    after the other, onto a third shard keeps both legs of the history."""
    (a,) = ids_on(cluster, "shard-0", 1, prefix="leg-a-")
    (b,) = ids_on(cluster, "shard-1", 1, prefix="leg-b-")
    await open_accounts(cluster, [a], no_overdraft=False)
    await open_accounts(cluster, [b])
    assert [r.ok for r in await _send(cluster, move("leg-t", a, b, 9))] == [True]
    before = await _ledger(cluster, [a, b])
    for account in (a, b):
        slot = slot_of(account)
        await slot_moves.move_slots(cluster, slot, slot, "shard-2")
    assert cluster.shard_for(a) == cluster.shard_for(b) == "shard-2"
    assert await _ledger(cluster, [a, b]) == before
    assert [r.ok for r in await _send(cluster, move("leg-u", a, b, 1))] == [True]
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def test_slots_moving_back_and_forth_under_load_lose_and_double_nothing(
    cluster_databases: ClusterDatabases, cluster: ShardedStore
) -> None:
    """Two nodes serve a bank workload (transfers within and across shards, holds then
    posted, every 503 retried with the same transfer id) while a slot range holding half
    the accounts moves to another shard and back, three times. Every acknowledged
    transfer is stored once, each balance is what the acknowledged transfers make it,
    nothing else moved, and the audit is clean."""
    other = build_store(cluster_databases.settings())
    await other.start()
    nodes = [cluster, other]
    movers = ids_on(cluster, SOURCE, 12, prefix="ld-")
    lo, hi = _slot_range(movers)
    stayers = [
        *ids_on(cluster, "shard-1", 6, prefix="ld-"),
        *ids_on(cluster, "shard-2", 6, prefix="ls-"),
    ]
    accounts = [*movers, *stayers]
    (bank,) = ids_on(cluster, "shard-1", 1, prefix="ld-bank-")
    await open_accounts(cluster, [bank], no_overdraft=False)
    await open_accounts(cluster, accounts)
    funding = await _send(cluster, *(move(f"ld-fund-{a}", bank, a, 1_000) for a in accounts))
    assert all(r.ok for r in funding)
    acknowledged: dict[str, tuple[str, str, int]] = {}
    refused: set[str] = set()
    stop = asyncio.Event()
    rng = random.Random(7)

    async def until_answered(node: ShardedStore, *requests: TransferRequest) -> list[Any]:
        for _ in range(1500):  # 30 s
            try:
                return await _send(node, *requests)
            except UnavailableError:
                await asyncio.sleep(0.02)
        raise AssertionError(f"{requests[0].id} was never answered")

    async def client(n: int) -> None:
        node = nodes[n % 2]
        i = 0
        while not stop.is_set():
            i += 1
            debit, credit = rng.sample(accounts, 2)
            tid = f"ld-{n}-{i}"
            if i % 5 == 0:  # a hold, posted at once
                (held,) = await until_answered(node, move(tid, debit, credit, 3, pending=True))
                if not held.ok:
                    assert held.code is ErrorCode.INSUFFICIENT_FUNDS, held  # the only refusal
                    refused.add(tid)
                    continue
                post = TransferRequest(
                    f"{tid}-p", None, None, 3, None, pending_id=tid,
                    flags=TransferFlags(post_pending=True),
                )  # fmt: skip
                (posted,) = await until_answered(node, post)
                assert posted.ok, posted
                acknowledged[tid] = (debit, credit, 3)
                continue
            (result,) = await until_answered(node, move(tid, debit, credit, rng.randint(1, 9)))
            if result.ok:
                assert result.transfer is not None
                acknowledged[tid] = (debit, credit, result.transfer.amount)
            else:
                assert result.code is ErrorCode.INSUFFICIENT_FUNDS, result  # the only refusal
                refused.add(tid)

    async def mover() -> int:
        done = 0
        for target in (TARGET, SOURCE) * 3:
            while True:
                try:
                    await slot_moves.move_slots(cluster, lo, hi, target, wait_seconds=2.0)
                    done += 1
                    break
                except slot_moves.MoveBlocked:  # something did not end in time: again
                    await asyncio.sleep(0.01)
        stop.set()
        return done

    try:
        clients = [asyncio.create_task(client(n)) for n in range(6)]
        moves = await asyncio.wait_for(mover(), timeout=120)
        await asyncio.gather(*clients)
    finally:
        await other.stop()
    assert moves == 6
    assert len(acknowledged) > 20, len(acknowledged)
    expected = dict.fromkeys(accounts, 1_000)
    for debit, credit, amount in acknowledged.values():
        expected[debit] -= amount
        expected[credit] += amount
    found = await cluster.get_accounts(accounts)
    assert {a: found[a].credits_posted - found[a].debits_posted for a in accounts} == expected
    stored = await cluster.get_transfers([*acknowledged, *refused])
    assert set(acknowledged) <= set(stored)
    assert not set(stored) & refused
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def test_a_move_carries_the_payments_refunds_and_attempts_of_its_accounts(
    cluster: ShardedStore,
) -> None:
    """A merchant's card payment (captured, refunded in part) moves with the merchant:
    read back the same from its new shard, refunded again there, and the psp: accounts
    and the audit agree."""

    (merchant,) = ids_on(cluster, SOURCE, 1, prefix="pm-m-")
    await open_accounts(cluster, [merchant], no_overdraft=False)
    service = PaymentService(cluster, {"acq-a": ScriptedConnector("acq-a")})
    card = CardDetails("4242424242424242", 12, 2030, "123")
    paid = await service.create_payment(
        NewPayment(1_000, "USD", merchant, capture=CaptureMethod.AUTOMATIC, card=card)
    )
    assert isinstance(paid.outcome, PaymentView), paid.outcome
    payment_id = paid.outcome.payment.id
    assert isinstance((await service.refund(payment_id, 300)).outcome, RefundView)
    before = await service.get_payment(payment_id)
    assert before.shard == SOURCE
    slot = slot_of(merchant)
    report = await slot_moves.move_slots(cluster, slot, slot, TARGET)
    assert report.payments == 2  # the payment and its refund
    after = await service.get_payment(payment_id)
    assert after.shard == TARGET
    assert (after.payment, after.attempts) == (before.payment, before.attempts)
    for shard in cluster.shards.values():  # stored once, on the target
        assert (await shard.payments.payment(payment_id) is not None) == (shard.name == TARGET)
    assert isinstance((await service.refund(payment_id, 200)).outcome, RefundView)
    final = await service.get_payment(payment_id)
    assert final.payment.amount_refunded == 500
    found = await cluster.get_accounts([merchant])
    assert found[merchant].credits_posted - found[merchant].debits_posted == 500
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, audit.violations


async def test_history_accounts_move_with_their_balance_rows_and_audit_clean(
    cluster: ShardedStore,
) -> None:
    """Accounts keeping balance history, whose last rows are a hold and its void (no
    posting row at their time) or a hold only: after the move, the target's audit checks
    only its own rows (the chaos run's history accounts failed it: 'balance row matches
    no transfer')."""
    a, b = ids_on(cluster, SOURCE, 2, prefix="hist-")
    flags = AccountFlags(history=True)
    made = await cluster.execute(
        CreateAccounts(tuple(AccountRequest(i, "USD", flags=flags) for i in (a, b)))
    )
    assert all(r.ok for r in made)
    hold = move("hist-h", a, b, 7, pending=True)
    void = TransferRequest(
        "hist-v", None, None, 7, None, pending_id="hist-h", flags=TransferFlags(void_pending=True)
    )
    for batch in ((move("hist-1", a, b, 5),), (hold,), (void,)):
        assert all(r.ok for r in await _send(cluster, *batch))
    before = await _ledger(cluster, [a, b])
    history = [await cluster.balance_history(i, limit=100) for i in (a, b)]
    for account in (a, b):
        await slot_moves.move_slots(cluster, slot_of(account), slot_of(account), TARGET)
    assert await _ledger(cluster, [a, b]) == before
    assert [await cluster.balance_history(i, limit=100) for i in (a, b)] == history
    assert all(r.ok for r in await _send(cluster, move("hist-2", b, a, 1)))
    audit = await audit_cluster(cluster.shards)
    assert audit.ok, [v for r in audit.shards.values() for v in r.violations]
