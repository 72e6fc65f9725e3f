"""Cross-shard transfers: the saga, its compensation, the relay and the cross-shard audit."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from cluster_support import ClusterDatabases, counters, move
from litestar.testing import AsyncTestClient

from paycore.api import create_app
from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import (
    OPEN_STATES,
    IllegalSagaTransition,
    SagaState,
    Settlement,
    advance,
    clearing_account_id,
)
from paycore.errors import ErrorCode
from paycore.ledger.model import TransferFlags, TransferRequest, TransferStatus
from paycore.ops.audit import ClusterViolationKind, audit_cluster
from paycore.storage.base import ClaimOutbox, CloseAccount, CreateTransfers
from paycore.workers.relay import RelayWorker

# These tests drive the recovery path: requests leave steps 2 and 3 to the relay.
pytestmark = pytest.mark.usefixtures("relay_path")


async def _balances(store: ShardedStore, *ids: str) -> dict[str, tuple[int, int, int, int]]:
    found = await store.get_accounts(list(ids))
    return {i: counters(found[i]) for i in ids}


def test_saga_transitions_follow_the_table() -> None:
    """A saga moves held -> credited -> completed or held -> rejected -> compensated, only."""
    assert advance(SagaState.HELD, SagaState.CREDITED) is SagaState.CREDITED
    assert advance(SagaState.REJECTED, SagaState.COMPENSATED) is SagaState.COMPENSATED
    for state, to in [
        (SagaState.HELD, SagaState.COMPLETED),
        (SagaState.CREDITED, SagaState.COMPENSATED),
        (SagaState.COMPLETED, SagaState.HELD),
        (SagaState.COMPENSATED, SagaState.CREDITED),
    ]:
        try:
            advance(state, to)
        except IllegalSagaTransition:
            continue
        raise AssertionError(f"{state} -> {to} was allowed")


async def test_happy_path_moves_money_once_through_clearing(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A->B across shards: pending on A while in flight, then posted on both, clearing nets 0."""
    a, b = wallets["shard-0"][0], wallets["shard-2"][0]
    out, into = (
        clearing_account_id("shard-0", "shard-2", "USD"),
        clearing_account_id("shard-2", "shard-0", "USD"),
    )
    (r,) = await cluster.execute(CreateTransfers((move("x1", a, b, 700),)))
    assert r.ok
    assert r.in_flight
    assert (await _balances(cluster, a, b))[a] == (700, 0, 0, 10_000)
    assert (await _balances(cluster, a, b))[b] == (0, 0, 0, 10_000)
    view = await cluster.get_transfer("x1")
    assert view is not None
    assert view.status is TransferStatus.IN_FLIGHT
    assert (view.transfer.debit_account_id, view.transfer.credit_account_id) == (a, b)
    mid = await audit_cluster(cluster.shards)
    assert mid.ok, mid.violations
    assert mid.sagas_open == 1
    assert [(t.in_flight, t.clearing_posted_net) for t in mid.totals] == [(700, 0)]

    await RelayWorker(cluster).drain()
    balances = await _balances(cluster, a, b, out, into)
    assert balances[a] == (0, 700, 0, 10_000)
    assert balances[b] == (0, 0, 0, 10_700)
    assert balances[out] == (0, 0, 0, 700)
    assert balances[into] == (0, 700, 0, 0)
    view = await cluster.get_transfer("x1")
    assert view is not None
    assert view.status is TransferStatus.POSTED
    end = await audit_cluster(cluster.shards)
    assert end.ok, end.violations
    assert end.sagas_open == 0


async def test_closed_credit_account_compensates_the_hold(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """B closed between the check and step 2: the hold is voided, A is whole, B untouched."""
    a, b = wallets["shard-1"][0], wallets["shard-3"][1]
    # B must be empty to close: move its funding back on its own shard first.
    bank = next(
        iter(await cluster.shards["shard-3"].get_accounts([f"shard-3-{i}" for i in range(9999)]))
    )
    (back,) = await cluster.execute(CreateTransfers((move("empty-b", b, bank, 10_000),)))
    assert back.ok
    (r,) = await cluster.execute(CreateTransfers((move("x2", a, b, 300),)))
    assert r.in_flight
    closed = await cluster.execute(CloseAccount(b))
    assert closed.ok
    before_b = (await _balances(cluster, b))[b]
    await RelayWorker(cluster).drain()
    balances = await _balances(cluster, a, b)
    assert balances[a] == (0, 0, 0, 10_000)
    assert balances[b] == before_b
    assert await cluster.shards["shard-3"].get_transfer("x2") is None  # no credit leg
    view = await cluster.get_transfer("x2")
    assert view is not None
    assert view.status is TransferStatus.VOIDED
    report = await audit_cluster(cluster.shards)
    assert report.ok, report.violations


async def test_unknown_credit_account_is_refused_before_any_hold(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """B's existence, currency and closed flag are checked up front: a plain 404, no hold."""
    a = wallets["shard-0"][0]
    b = next(i for i in (f"ghost{i}" for i in range(999)) if cluster.shard_for(i) == "shard-1")
    (r,) = await cluster.execute(CreateTransfers((move("x3", a, b, 5),)))
    assert r.code is not None
    assert r.code.value == "account_not_found"
    assert (await _balances(cluster, a))[a] == (0, 0, 0, 10_000)


async def test_limits_are_checked_on_the_source_with_holds(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Money in flight counts against A's limit: a second transfer over the rest is refused."""
    a, b, c = wallets["shard-0"][0], wallets["shard-1"][0], wallets["shard-2"][0]
    first, second = await cluster.execute(
        CreateTransfers((move("y1", a, b, 6_000), move("y2", a, c, 6_000)))
    )
    assert first.in_flight
    assert second.code is not None
    assert second.code.value == "insufficient_funds"


async def test_steps_run_twice_take_effect_once(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Step 2 and step 3 repeated (a relay that crashed and came back) apply once."""
    a, b = wallets["shard-0"][1], wallets["shard-3"][0]
    (r,) = await cluster.execute(CreateTransfers((move("x4", a, b, 250),)))
    assert r.in_flight
    first = Settlement(cluster.shards, owner="first")
    rows = await cluster.shards["shard-0"].execute(ClaimOutbox("first", OPEN_STATES))
    await first.settle("shard-0", rows)
    await first.settle("shard-0", rows)  # as if the answer had been lost
    await RelayWorker(cluster, lease_seconds=0.01).drain()
    balances = await _balances(cluster, a, b)
    assert balances[a] == (0, 250, 0, 10_000)
    assert balances[b] == (0, 0, 0, 10_250)
    assert first.completed == 1
    assert (await audit_cluster(cluster.shards)).ok


async def test_two_relays_at_once_apply_each_saga_once(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Two relays draining the same outboxes concurrently settle each transfer exactly once."""
    shards = list(cluster.shards)
    batch = []
    for i in range(40):
        src, dst = wallets[shards[i % 4]], wallets[shards[(i + 1) % 4]]
        batch.append(move(f"z{i}", src[i % 2], dst[(i + 1) % 2], 10 + i))
    results = await cluster.execute(CreateTransfers(tuple(batch)))
    assert all(r.in_flight for r in results)
    one, two = RelayWorker(cluster, owner="one"), RelayWorker(cluster, owner="two")
    await asyncio.gather(one.drain(), two.drain())
    assert one.settlement.completed + two.settlement.completed == 40
    report = await audit_cluster(cluster.shards)
    assert report.ok, report.violations
    total = sum(10 + i for i in range(40))
    everyone = [w for pair in wallets.values() for w in pair]
    found = await cluster.get_accounts(everyone)
    assert sum(a.credits_posted for a in found.values()) == 8 * 10_000 + total
    assert sum(a.debits_posted for a in found.values()) == total


async def test_a_crashed_relays_claim_is_retaken_after_its_lease(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Rows leased by a relay that died are left alone until the lease ends, then settled."""
    a, b = wallets["shard-2"][0], wallets["shard-1"][1]
    (r,) = await cluster.execute(CreateTransfers((move("x5", a, b, 40),)))
    assert r.in_flight
    dead = await cluster.shards["shard-2"].execute(ClaimOutbox("dead", OPEN_STATES, 0.3))
    assert [row.transfer_id for row in dead] == ["x5"]
    other = RelayWorker(cluster, owner="other")
    assert await other.run_once() == 0
    stuck = await audit_cluster(cluster.shards, stuck_seconds=0.0)
    assert ClusterViolationKind.SAGA_STUCK in {v.kind for v in stuck.violations}
    await asyncio.sleep(0.35)
    await other.drain()
    view = await cluster.get_transfer("x5")
    assert view is not None
    assert view.status is TransferStatus.POSTED


async def test_api_shows_in_flight_then_posted(
    cluster: ShardedStore, wallets: dict[str, list[str]], cluster_databases: ClusterDatabases
) -> None:
    """Over HTTP a cross-shard transfer answers 201 in_flight and reads posted once settled."""
    a, b = wallets["shard-3"][0], wallets["shard-0"][0]
    app = create_app(cluster, cluster_databases.settings(), start_workers=False)
    await cluster.stop()  # the app's lifespan starts it again
    async with AsyncTestClient(app=app) as client:
        body = {"id": "api-1", "debit_account_id": a, "credit_account_id": b,
                "amount": 90, "currency": "USD"}  # fmt: skip
        created = await client.post("/v1/transfers", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "in_flight"
        assert created.json()["credit_account_id"] == b
        again = await client.post("/v1/transfers", json=body)
        assert again.status_code == 200
        read = await client.get("/v1/transfers/api-1")
        assert read.json()["status"] == "in_flight"
        await RelayWorker(cluster).drain()
        read = await client.get("/v1/transfers/api-1")
        assert read.json()["status"] == "posted"
        listed = await client.get(f"/v1/accounts/{b}/transfers")
        assert "api-1" in [t["id"] for t in listed.json()["data"]]
        batch = await client.post(
            "/v1/transfers/batch",
            json={"transfers": [dict(body, id="api-2"), dict(body, id="api-3", amount=10**9)]},
        )
        assert [r.get("status") for r in batch.json()["results"]] == ["in_flight", None]
        cluster.drive_sagas = True  # a hold between shards: both legs before the answer
        held = await client.post("/v1/transfers", json=dict(body, id="api-4", pending=True))
        assert held.status_code == 201, held.text
        assert held.json()["status"] == "pending"
        chain = await client.post(
            "/v1/transfers/batch",
            json={"transfers": [dict(body, id="api-5", linked=True), dict(body, id="api-6")]},
        )
        assert [r["status"] for r in chain.json()["results"]] == ["posted", "posted"]
    await cluster.start()  # the fixture stops it


async def test_a_client_cannot_void_a_saga_hold_even_inside_a_batch(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A void of a saga's hold is refused on the shard itself, whatever path the router took."""
    (a, a2), b = wallets["shard-0"], wallets["shard-3"][0]
    (r,) = await cluster.execute(CreateTransfers((move("x9", a, b, 100),)))
    assert r.in_flight
    # Item 0 names the saga's id, so the router sends item 1 to its shard without a lookup.
    batch = (
        move("x9", a, a2, 1),
        TransferRequest("v9", pending_id="x9", flags=TransferFlags(void_pending=True)),
    )
    results = await cluster.execute(CreateTransfers(batch))
    assert [x.code for x in results] == [
        ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
        ErrorCode.PENDING_TRANSFER_NOT_PENDING,
    ]
    await RelayWorker(cluster, lease_seconds=0.01).drain()
    balances = await _balances(cluster, a, b)
    assert balances[a] == (0, 100, 0, 10_000)
    assert balances[b] == (0, 0, 0, 10_100)
    assert (await cluster.get_transfer("x9")).status is TransferStatus.POSTED  # type: ignore[union-attr]
    assert (await audit_cluster(cluster.shards)).ok


async def test_reserved_metadata_and_settlement_ids_are_refused(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Clients cannot forge a saga marker or squat the ids step 3 will use."""
    a, a2 = wallets["shard-0"]
    forged = TransferRequest("f1", a, a2, 1, metadata={"paycore:xs": {"role": "hold"}})
    squat = move("xs.post.0123", a, a2, 1)
    no_pending_id = TransferRequest("p1", flags=TransferFlags(post_pending=True))
    results = await cluster.execute(CreateTransfers((forged, squat, no_pending_id)))
    assert [x.code for x in results] == [ErrorCode.INVALID_REQUEST] * 3
    balances = await _balances(cluster, a, a2)
    assert balances[a] == (0, 0, 0, 10_000)


async def test_a_retry_after_the_credit_account_closed_gets_the_first_answer(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Retrying a settled cross-shard transfer answers 'exists', even once B is closed."""
    a, b = wallets["shard-0"][0], wallets["shard-3"][1]
    (first,) = await cluster.execute(CreateTransfers((move("x10", a, b, 10),)))
    assert first.ok
    await RelayWorker(cluster, lease_seconds=0.01).drain()
    await cluster.execute(CreateTransfers((move("out-b", b, wallets["shard-3"][0], 10_010),)))
    assert (await cluster.execute(CloseAccount(b))).ok
    (retry,) = await cluster.execute(CreateTransfers((move("x10", a, b, 10),)))
    assert retry.ok
    assert retry.exists
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_timeout_on_a_cross_shard_transfer_is_refused_as_on_one_shard(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """timeout_seconds without pending is refused across shards too, not silently dropped."""
    a, b = wallets["shard-0"][0], wallets["shard-3"][0]
    request = msgspec.structs.replace(move("x11", a, b, 5), timeout_seconds=30)
    (result,) = await cluster.execute(CreateTransfers((request,)))
    assert result.code is ErrorCode.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    assert (await _balances(cluster, a))[a] == (0, 0, 0, 10_000)


async def test_a_saga_that_keeps_failing_does_not_starve_fresh_ones(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Claims take the fewest-attempted rows first, so a stuck saga cannot block newer ones."""
    a, b = wallets["shard-0"][0], wallets["shard-3"][0]
    await cluster.execute(CreateTransfers((move("old", a, b, 1),)))
    await cluster.execute(CreateTransfers((move("new", a, b, 1),)))
    source = cluster.shards["shard-0"]
    # "old" is claimed and its lease runs out unfinished (as when its target is down) ...
    (row,) = await source.execute(ClaimOutbox("x", OPEN_STATES, 0.0, 1))
    assert row.transfer_id == "old"
    # ... so the next claim takes the saga not tried yet, although it is younger.
    (row,) = await source.execute(ClaimOutbox("y", OPEN_STATES, 0.0, 1))
    assert row.transfer_id == "new"
