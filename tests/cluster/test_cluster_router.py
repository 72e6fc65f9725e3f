"""The router: one ``Store`` over four shards, answering as one store would."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster_support import counters, move, open_accounts

from backends import LedgerDatabase
from paycore.cluster.router import ShardedStore
from paycore.cluster.shardmap import ShardMap
from paycore.errors import ErrorCode, IdempotencyError
from paycore.ledger.model import AccountRequest, TransferFlags, TransferRequest, TransferStatus
from paycore.ops.audit import audit_cluster
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    StoredResponse,
)
from paycore.storage.store import Command


async def test_batch_results_come_back_in_request_order(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A batch over every shard answers item by item in the order it was sent."""
    s0, s1, s2, s3 = (wallets[s] for s in cluster.shards)
    batch = (
        move("o1", s2[0], s2[1], 10),  # local on shard-2
        move("o2", s0[0], s3[0], 20),  # cross 0 -> 3
        move("o3", s1[0], s1[1], 30),  # local on shard-1
        move("o4", s3[1], s0[1], 10**9),  # refused: insufficient funds
        move("o5", s0[1], "nobody-at-all", 5),  # refused: unknown credit account
        move("o6", s3[0], s3[1], 40),  # local on shard-3
    )
    results = await cluster.execute(CreateTransfers(batch))
    assert [r.id for r in results] == ["o1", "o2", "o3", "o4", "o5", "o6"]
    assert [r.code for r in results] == [
        None,
        None,
        None,
        ErrorCode.INSUFFICIENT_FUNDS,
        ErrorCode.ACCOUNT_NOT_FOUND,
        None,
    ]
    # The cross-shard item was settled by the request itself: nothing is left in flight.
    assert [r.in_flight for r in results] == [False] * 6
    shown = results[1].transfer
    assert shown is not None
    assert (shown.debit_account_id, shown.credit_account_id) == (s0[0], s3[0])
    assert shown.flags == TransferFlags()


async def test_batch_is_split_into_one_command_per_shard(
    cluster: ShardedStore, wallets: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard gets one CreateTransfers holding exactly its items, in their batch order
    (besides any id reservations the router sends first)."""
    seen: dict[str, list[Command]] = {}
    for name, shard in cluster.shards.items():
        original = shard.execute

        async def spy(command: Command, _name: str = name, _orig: Any = original) -> Any:
            seen.setdefault(_name, []).append(command)
            return await _orig(command)

        monkeypatch.setattr(shard, "execute", spy)
    s = [wallets[n] for n in cluster.shards]
    batch = [move(f"sp{i}", s[i % 4][0], s[i % 4][1], 1) for i in range(12)]
    results = await cluster.execute(CreateTransfers(tuple(batch)))
    assert all(r.ok for r in results)
    for k, name in enumerate(cluster.shards):
        (command,) = [c for c in seen[name] if isinstance(c, CreateTransfers)]
        assert [r.id for r in command.requests] == [f"sp{i}" for i in range(k, 12, 4)]


async def test_linked_chains_across_shards_take_effect_in_a_batch(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Chains spanning shards apply as one shard would, beside a chain on one shard."""
    s0, s1 = wallets["shard-0"], wallets["shard-1"]
    batch = (
        move("l1", s0[0], s0[1], 5, linked=True),
        move("l2", s1[0], s1[1], 5),  # closes the chain, on another shard
        move("l3", s0[0], s0[1], 5, linked=True),
        move("l4", s0[1], s1[0], 5),  # cross-shard inside a chain
        move("l5", s1[0], s1[1], 5, linked=True),
        move("l6", s1[1], s1[0], 5),  # a chain on one shard
    )
    results = await cluster.execute(CreateTransfers(batch))
    assert [r.code for r in results] == [None] * 6
    assert not any(r.in_flight for r in results)
    after = await cluster.get_accounts([*s0, *s1])
    assert counters(after[s0[0]]) == (0, 10, 0, 10_000)
    assert counters(after[s0[1]]) == (0, 5, 0, 10_010)
    assert counters(after[s1[0]]) == (0, 10, 0, 10_010)
    assert counters(after[s1[1]]) == (0, 5, 0, 10_010)
    for tid in ("l1", "l4"):
        view = await cluster.get_transfer(tid)
        assert view is not None
        assert view.status is TransferStatus.POSTED
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_cross_shard_hold_is_pending_on_both_sides_then_posts_in_part(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A hold between shards shows as debits_pending on A and credits_pending on B at once;
    a partial post moves that much on both sides and releases the rest, as on one shard."""
    a, b = wallets["shard-0"][0], wallets["shard-2"][0]
    (held,) = await cluster.execute(CreateTransfers((move("h1", a, b, 500, pending=True),)))
    assert held.ok
    assert not held.in_flight
    found = await cluster.get_accounts([a, b])
    assert counters(found[a]) == (500, 0, 0, 10_000)
    assert counters(found[b]) == (0, 0, 500, 10_000)
    view = await cluster.get_transfer("h1")
    assert view is not None
    assert view.status is TransferStatus.PENDING
    assert (view.transfer.debit_account_id, view.transfer.credit_account_id) == (a, b)
    post = TransferRequest(
        "p1", pending_id="h1", amount=200, flags=TransferFlags(post_pending=True)
    )
    (posted,) = await cluster.execute(CreateTransfers((post,)))
    assert posted.ok, posted
    assert not posted.in_flight
    found = await cluster.get_accounts([a, b])
    assert counters(found[a]) == (0, 200, 0, 10_000)
    assert counters(found[b]) == (0, 0, 0, 10_200)
    view = await cluster.get_transfer("h1")
    assert view is not None
    assert view.status is TransferStatus.POSTED
    again = TransferRequest("v1", pending_id="h1", flags=TransferFlags(void_pending=True))
    (late,) = await cluster.execute(CreateTransfers((again,)))
    assert late.code is ErrorCode.PENDING_TRANSFER_ALREADY_POSTED
    for account in (a, b):
        page = await cluster.account_transfers(account, limit=100)
        shown = [v.transfer.id for v in page.data if not v.transfer.id.startswith("fund-")]
        assert shown == ["h1", "p1"], page.data
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_cross_shard_hold_voids_on_both_sides(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Voiding a hold between shards releases it on A and on B."""
    a, b = wallets["shard-1"][0], wallets["shard-3"][0]
    await cluster.execute(CreateTransfers((move("h2", a, b, 300, pending=True),)))
    assert (await audit_cluster(cluster.shards)).ok  # an open hold: pending on both sides
    void = TransferRequest("v2", pending_id="h2", flags=TransferFlags(void_pending=True))
    (voided,) = await cluster.execute(CreateTransfers((void,)))
    assert voided.ok
    assert not voided.in_flight
    found = await cluster.get_accounts([a, b])
    assert counters(found[a]) == (0, 0, 0, 10_000)
    assert counters(found[b]) == (0, 0, 0, 10_000)
    view = await cluster.get_transfer("h2")
    assert view is not None
    assert view.status is TransferStatus.VOIDED
    assert (await audit_cluster(cluster.shards)).ok


async def test_post_and_void_find_the_shard_of_their_hold(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A post or void naming only the hold id reaches the hold's shard, wherever it is."""
    for shard, (a, b) in wallets.items():
        hold = f"hold-{shard}"
        (r,) = await cluster.execute(CreateTransfers((move(hold, a, b, 100, pending=True),)))
        assert r.ok
        post = TransferRequest(f"post-{shard}", amount=60, pending_id=hold,
                               flags=TransferFlags(post_pending=True))  # fmt: skip
        (done,) = await cluster.execute(CreateTransfers((post,)))
        assert done.ok, done
        view = await cluster.get_transfer(hold)
        assert view is not None
        assert view.status is TransferStatus.POSTED
    missing = TransferRequest(
        "void-x", pending_id="no-such-hold", flags=TransferFlags(void_pending=True)
    )
    (r,) = await cluster.execute(CreateTransfers((missing,)))
    assert r.code is ErrorCode.PENDING_TRANSFER_NOT_FOUND


async def test_a_cross_shard_transfer_cannot_be_posted_or_voided_by_a_client(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """The hold behind a cross-shard transfer belongs to the settlement, not to the client."""
    a, b = wallets["shard-1"][0], wallets["shard-3"][0]
    cluster.drive_sagas = False  # the hold is there, in settlement, until the relay runs
    (r,) = await cluster.execute(CreateTransfers((move("x1", a, b, 100),)))
    assert r.in_flight
    void = TransferRequest("v-x1", pending_id="x1", flags=TransferFlags(void_pending=True))
    (refused,) = await cluster.execute(CreateTransfers((void,)))
    assert refused.code is ErrorCode.PENDING_TRANSFER_NOT_PENDING


async def test_clearing_ids_are_reserved(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Clients can neither create, close nor move money through a clearing account."""
    (r,) = await cluster.execute(CreateAccounts((AccountRequest("clearing:x:y:USD", "USD"),)))
    assert r.code is ErrorCode.INVALID_REQUEST
    a = wallets["shard-0"][0]
    (t,) = await cluster.execute(
        CreateTransfers((move("c1", a, "clearing:shard-0:shard-1:USD", 1),))
    )
    assert t.code is ErrorCode.INVALID_REQUEST
    closed = await cluster.execute(CloseAccount("clearing:shard-0:shard-1:USD"))
    assert closed.code is ErrorCode.INVALID_REQUEST


async def test_accounts_live_on_the_shard_of_their_id(cluster: ShardedStore) -> None:
    """An account is written on exactly the shard the map names, and read back from there."""
    ids = [f"acc-{i}" for i in range(40)]
    await open_accounts(cluster, ids)
    for name, shard in cluster.shards.items():
        mine = await shard.get_accounts(ids)
        assert set(mine) == {i for i in ids if cluster.shard_for(i) == name}
    assert set(await cluster.get_accounts(ids)) == set(ids)


async def test_a_single_shard_router_answers_like_the_plain_store(
    new_database: Callable[[], LedgerDatabase],
) -> None:
    """Over one shard, every command and read gives exactly the plain store's answer."""
    now = [time.time_ns()]
    plain = new_database().store(clock=lambda: now[0])
    only = new_database().store(name="only", clock=lambda: now[0])
    routed = ShardedStore({"only": only}, ShardMap.even(["only"]))
    await plain.start()
    await routed.start()
    try:
        commands: list[Command] = [
            CreateAccounts(
                (
                    AccountRequest("bank", "USD"),
                    AccountRequest("w1", "USD"),
                    AccountRequest("w2", "USD"),
                    AccountRequest("w1", "EUR"),
                )
            ),
            CreateTransfers(
                (
                    move("t1", "bank", "w1", 500),
                    move("t2", "w1", "w2", 100, linked=True),
                    move("t3", "w2", "nobody", 1),
                    move("t4", "w1", "w2", 50, pending=True),
                    TransferRequest("p4", pending_id="t4", flags=TransferFlags(post_pending=True)),
                    move("t1", "bank", "w1", 501),
                )
            ),
            CloseAccount("w2"),
            ExpirePending(),
        ]
        for command in commands:
            now[0] += 1_000
            assert await routed.execute(command) == await plain.execute(command)
        for transfer_id in ("t1", "t2", "t4", "p4", "none"):
            assert await routed.get_transfer(transfer_id) == await plain.get_transfer(transfer_id)
        assert await routed.get_accounts(["w1", "w2"]) == await plain.get_accounts(["w1", "w2"])
        page = await routed.account_transfers("w1", limit=10)
        assert page == await plain.account_transfers("w1", limit=10)
    finally:
        await plain.stop()
        await routed.stop()


async def test_one_idempotency_key_is_refused_for_a_second_request_on_another_shard(
    cluster: ShardedStore,
) -> None:
    """Reusing a key with another body is 409 even when the two requests touch different shards."""
    first_id = next(f"k{i}" for i in range(99) if cluster.shard_for(f"k{i}") == "shard-0")
    other_id = next(f"k{i}" for i in range(99) if cluster.shard_for(f"k{i}") == "shard-2")

    def idem() -> Idempotency:
        return Idempotency("default:K1", fp, lambda r: StoredResponse(201, repr(r).encode()))

    fp = "first"
    first, replayed = await cluster.execute_idempotent(
        CreateAccounts((AccountRequest(first_id, "USD"),)), idem()
    )
    assert first.status == 201
    assert not replayed
    fp = "second"
    with pytest.raises(IdempotencyError) as refused:
        await cluster.execute_idempotent(CreateAccounts((AccountRequest(other_id, "USD"),)), idem())
    assert refused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert other_id not in await cluster.get_accounts([other_id])
    fp = "first"
    again, replayed = await cluster.execute_idempotent(
        CreateAccounts((AccountRequest(first_id, "USD"),)), idem()
    )
    assert replayed
    assert again == first


async def test_an_idempotent_close_on_another_shard_than_its_key_replays(
    cluster: ShardedStore,
) -> None:
    """A close whose account and key live on different shards runs once and then replays."""
    key = "default:close-1"
    account = next(
        f"c{i}" for i in range(99) if cluster.shard_for(f"c{i}") != cluster.shard_for(key)
    )
    await cluster.execute(CreateAccounts((AccountRequest(account, "USD"),)))
    idem = Idempotency(key, "fp", lambda r: StoredResponse(200, repr(r.ok).encode()))
    first, replayed = await cluster.execute_idempotent(CloseAccount(account), idem)
    assert first.body == b"True"
    assert not replayed
    assert (await cluster.get_accounts([account]))[account].flags.closed
    again, replayed = await cluster.execute_idempotent(CloseAccount(account), idem)
    assert replayed
    assert again == first
    other = Idempotency(key, "other", idem.render)
    with pytest.raises(IdempotencyError):
        await cluster.execute_idempotent(CloseAccount(account), other)
