"""The ledger's contract across shards (issue 13), example by example.

Every test places its accounts on chosen shards of the 4-shard cluster (``ids_on``)
and checks, through the ``Store`` protocol only, what a client must see: the answer
(``posted``/``pending``, never ``in_flight`` when nothing failed), both accounts'
counters right after it, the transfer as read back, the listings. Where the contract
is "as on one shard", the same requests also run on accounts that share a shard and
the answers are compared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from cluster_support import ClusterDatabases, counters, ids_on, move, open_accounts

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.ledger.model import TransferStatus as S
from paycore.ledger.rules import TransferResult
from paycore.ops.audit import audit_cluster
from paycore.storage.base import CloseAccount, CreateAccounts, CreateTransfers
from paycore.workers import MaintenanceWorker
from store.support import ManualClock

FUNDS = 10_000  # what the ``wallets`` fixture gives every wallet


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
async def clocked(
    cluster_databases: ClusterDatabases, clock: ManualClock
) -> AsyncIterator[ShardedStore]:
    """The 4-shard cluster with every shard on ``clock`` (for holds that time out)."""
    store = build_store(cluster_databases.settings(), clock=clock)
    await store.start()
    yield store
    await store.stop()


# -- helpers ------------------------------------------------------------------------------


def post(
    tid: str, hold: str, amount: int | None = None, *, linked: bool = False
) -> TransferRequest:
    return TransferRequest(
        tid, pending_id=hold, amount=amount, flags=TransferFlags(post_pending=True, linked=linked)
    )


def void(tid: str, hold: str) -> TransferRequest:
    return TransferRequest(tid, pending_id=hold, flags=TransferFlags(void_pending=True))


def hold(
    tid: str, debit: str, credit: str, amount: int, timeout: int = 0, *, linked: bool = False
) -> TransferRequest:
    flags = TransferFlags(pending=True, linked=linked)
    return TransferRequest(tid, debit, credit, amount, flags=flags, timeout_seconds=timeout)


async def send(store: ShardedStore, *requests: TransferRequest) -> list[TransferResult]:
    results: list[TransferResult] = await store.execute(CreateTransfers(requests))
    return results


async def one(store: ShardedStore, request: TransferRequest) -> TransferResult:
    (result,) = await send(store, request)
    return result


def answers(results: list[TransferResult]) -> list[str]:
    """Each item as a client reads it: its status, or its error code."""
    out = []
    for r in results:
        if r.code is not None:
            out.append(r.code.value)
        elif r.in_flight:
            out.append("in_flight")
        else:
            assert r.transfer is not None
            out.append("pending" if r.transfer.flags.pending else "posted")
    return out


async def balances(store: ShardedStore, *ids: str) -> list[tuple[int, int, int, int]]:
    """(debits_pending, debits_posted, credits_pending, credits_posted) of each account."""
    found = await store.get_accounts(list(ids))
    return [counters(found[i]) for i in ids]


async def status(store: ShardedStore, transfer_id: str) -> S | None:
    view = await store.get_transfer(transfer_id)
    return None if view is None else view.status


async def fresh(store: ShardedStore, shard: str, prefix: str, *, history: bool = False) -> str:
    """A new, empty no-overdraft USD account on ``shard``."""
    (account_id,) = ids_on(store, shard, 1, prefix=f"{prefix}-")
    flags = AccountFlags(no_overdraft=True, history=history)
    (result,) = await store.execute(
        CreateAccounts((AccountRequest(account_id, "USD", flags=flags),))
    )
    assert result.ok, result
    return account_id


async def funded(
    store: ShardedStore, shard: str, prefix: str, amount: int = FUNDS, *, history: bool = False
) -> str:
    """A new no-overdraft USD account on ``shard`` holding ``amount`` (from a bank there)."""
    bank, account = ids_on(store, shard, 2, prefix=f"{prefix}-")
    await open_accounts(store, [bank], no_overdraft=False)
    flags = AccountFlags(no_overdraft=True, history=history)
    (opened,) = await store.execute(CreateAccounts((AccountRequest(account, "USD", flags=flags),)))
    assert opened.ok, opened
    assert (await one(store, move(f"fund-{account}", bank, account, amount))).ok
    return account


# -- holds ------------------------------------------------------------------------------------


async def test_hold_across_shards_is_pending_on_both_accounts_at_once(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A hold A(shard-0) -> B(shard-1) answers pending and shows on both accounts at once."""
    a, b = wallets["shard-0"][0], wallets["shard-1"][0]
    result = await one(cluster, hold("h1", a, b, 300))
    assert answers([result]) == ["pending"]
    assert await balances(cluster, a, b) == [(300, 0, 0, FUNDS), (0, 0, 300, FUNDS)]
    assert await status(cluster, "h1") is S.PENDING


async def test_the_same_cross_shard_item_twice_in_one_batch_answers_settled_both_times(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A batch naming one cross-shard hold and one transfer twice answers each copy as the
    first, settled (``pending``/``posted``), never ``in_flight``, and moves the money once."""
    a, b = wallets["shard-0"][1], wallets["shard-1"][1]
    twice_hold, twice_move = hold("h2", a, b, 200, 5), move("m2", a, b, 30)
    results = await send(cluster, twice_hold, twice_hold, twice_move, twice_move)
    assert answers(results) == ["pending", "pending", "posted", "posted"]
    assert [r.exists for r in results] == [False, True, False, True]
    assert await balances(cluster, a, b) == [(200, 30, 0, FUNDS), (0, 0, 200, FUNDS + 30)]


async def test_a_repeat_without_amount_in_the_same_batch_shows_the_clients_transfer(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A cross-shard transfer, then its id again without an amount in the same batch (a
    resend that leaves the amount to the stored one): the second answers ``exists`` with
    the client's transfer (A to B, settled), as one shard does; never the saga's hold
    to the clearing account."""
    a, b = wallets["shard-0"][0], wallets["shard-1"][0]
    first = move("m5", a, b, 30)
    resend = msgspec.structs.replace(first, amount=None)
    results = await send(cluster, first, resend)
    assert answers(results) == ["posted", "posted"]
    assert [r.exists for r in results] == [False, True]
    assert not any(r.in_flight for r in results)
    shown = results[1].transfer
    assert shown is not None
    assert (shown.debit_account_id, shown.credit_account_id, shown.amount) == (a, b, 30)
    assert results[0].transfer is not None
    assert shown.timestamp == results[0].transfer.timestamp
    assert await balances(cluster, a, b) == [(0, 30, 0, FUNDS), (0, 0, 0, FUNDS + 30)]


async def test_partial_post_across_shards_moves_that_amount_and_releases_the_rest(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Posting 120 of a 300 hold across shards moves 120 and frees the other 180 on both sides."""
    a, b = wallets["shard-0"][0], wallets["shard-2"][0]
    assert (await one(cluster, hold("h2", a, b, 300))).ok
    result = await one(cluster, post("p2", "h2", 120))
    assert answers([result]) == ["posted"]
    assert result.transfer is not None
    assert result.transfer.amount == 120
    assert await balances(cluster, a, b) == [(0, 120, 0, FUNDS), (0, 0, 0, FUNDS + 120)]
    view = await cluster.get_transfer("h2")
    assert view is not None
    assert (view.status, view.resolved_by) == (S.POSTED, "p2")
    assert await status(cluster, "p2") is S.POSTED


async def test_void_across_shards_releases_both_sides(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Voiding a hold across shards gives both accounts back exactly what they had."""
    a, b = wallets["shard-1"][0], wallets["shard-3"][0]
    assert (await one(cluster, hold("h3", a, b, 250))).ok
    result = await one(cluster, void("v3", "h3"))
    assert answers([result]) == ["posted"]  # the void itself is a written transfer
    assert await balances(cluster, a, b) == [(0, 0, 0, FUNDS), (0, 0, 0, FUNDS)]
    assert await status(cluster, "h3") is S.VOIDED
    assert await status(cluster, "v3") is S.VOIDED


async def test_hold_across_shards_expires_and_releases_both_sides(
    clocked: ShardedStore, clock: ManualClock
) -> None:
    """A hold with timeout_seconds=1 across shards expires on the maintenance pass and frees
    both sides; posting it afterwards is refused as expired."""
    a = await funded(clocked, "shard-0", "exp-a")
    b = await fresh(clocked, "shard-1", "exp-b")
    assert (await one(clocked, hold("h4", a, b, 400, timeout=1))).ok
    worker = MaintenanceWorker(clocked)
    await worker.run_once()
    assert await balances(clocked, a, b) == [(400, 0, 0, FUNDS), (0, 0, 400, 0)]
    assert await status(clocked, "h4") is S.PENDING
    clock.advance(2)
    await worker.run_once()
    assert await status(clocked, "h4") is S.EXPIRED
    assert await balances(clocked, a, b) == [(0, 0, 0, FUNDS), (0, 0, 0, 0)]
    refused = await one(clocked, post("p4", "h4"))
    assert answers([refused]) == ["pending_transfer_expired"]


async def test_post_after_void_across_shards_is_refused_as_already_voided(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Posting a cross-shard hold that was voided answers pending_transfer_already_voided."""
    a, b = wallets["shard-2"][0], wallets["shard-0"][0]
    assert (await one(cluster, hold("h5", a, b, 90))).ok
    assert (await one(cluster, void("v5", "h5"))).ok
    refused = await one(cluster, post("p5", "h5"))
    assert answers([refused]) == ["pending_transfer_already_voided"]
    assert await balances(cluster, a, b) == [(0, 0, 0, FUNDS), (0, 0, 0, FUNDS)]


async def test_account_with_a_cross_shard_hold_cannot_close(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """While a hold from another shard is pending on B, closing B is refused, as on one shard."""
    a = wallets["shard-0"][0]
    b = await fresh(cluster, "shard-3", "closing")
    assert (await one(cluster, hold("h6", a, b, 10))).ok
    result = await cluster.execute(CloseAccount(b))
    assert result.code is not None
    assert result.code.value == "account_has_pending_transfers"


# The same bad request, once between accounts of one shard and once across shards.
# name: (debit role, credit role, other fields)
REFUSALS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "debit missing, credit of another currency": ("ghost", "eur", {"currency": "USD"}),
    "debit missing, credit closed": ("ghost", "closed_b", {}),
    "debit and credit missing": ("ghost", "ghost_b", {}),
    "debit closed, credit of another currency": ("closed_a", "eur", {}),
    "debit closed": ("closed_a", "b", {}),
    "credit closed": ("a", "closed_b", {}),
    "credit of another currency": ("a", "eur", {}),
    "no funds, credit of another currency": ("poor", "eur", {}),
    "no funds, credit closed": ("poor", "closed_b", {}),
    "no funds": ("poor", "b", {}),
    "timeout on a plain transfer": ("a", "b", {"timeout_seconds": 5}),
    "negative timeout": ("a", "b", {"timeout_seconds": -1}),
    "timeout out of range": ("a", "b", {"timeout_seconds": 2**31}),
    "pending_id on a plain transfer": ("a", "b", {"pending_id": "p"}),
    "amount 0": ("a", "b", {"amount": 0}),
    "code out of range": ("a", "b", {"code": -1}),
    "pending and post_pending": (
        "a",
        "b",
        {"flags": TransferFlags(pending=True, post_pending=True)},
    ),
}


async def test_refusals_across_shards_are_those_of_one_shard(cluster: ShardedStore) -> None:
    """Each bad request answers across shards with the code it gets between accounts of one
    shard (which check comes first included), and moves nothing."""

    async def place(debit_shard: str, credit_shard: str, tag: str) -> dict[str, str]:
        roles = {}
        for role, shard in [
            ("a", debit_shard),
            ("poor", debit_shard),
            ("ghost", debit_shard),
            ("closed_a", debit_shard),
            ("b", credit_shard),
            ("eur", credit_shard),
            ("ghost_b", credit_shard),
            ("closed_b", credit_shard),
        ]:
            (roles[role],) = ids_on(cluster, shard, 1, prefix=f"{tag}-{role}-")
        await open_accounts(
            cluster, [roles["a"], roles["b"], roles["closed_a"]], no_overdraft=False
        )
        await open_accounts(cluster, [roles["poor"], roles["closed_b"]])
        await open_accounts(cluster, [roles["eur"]], currency="EUR")
        for role in ("closed_a", "closed_b"):
            assert (await cluster.execute(CloseAccount(roles[role]))).ok
        return roles

    one_shard = await place("shard-0", "shard-0", "same")
    across = await place("shard-0", "shard-1", "cross")
    differ = {}
    for n, (name, (debit, credit, fields)) in enumerate(REFUSALS.items()):
        got = []
        for tag, roles in (("same", one_shard), ("cross", across)):
            request = TransferRequest(
                f"{tag}-{n}", roles[debit], roles[credit], **{"amount": 5, **fields}
            )
            got.append(answers([await one(cluster, request)])[0])
        if got[0] != got[1]:
            differ[name] = f"one shard: {got[0]}, across shards: {got[1]}"
    assert not differ, "\n" + "\n".join(f"{k}: {v}" for k, v in differ.items())
    accounts = [*one_shard.values(), *across.values()]
    found = await cluster.get_accounts(accounts)
    assert all(counters(a) == (0, 0, 0, 0) for a in found.values())


# -- linked chains ---------------------------------------------------------------------------


async def test_chain_over_three_shards_lets_b_spend_what_the_chain_gave_it(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A(s1)->B(s2), B(s2)->C(s3) linked with B empty and no-overdraft: both succeed."""
    a, c = wallets["shard-1"][0], wallets["shard-3"][0]
    b = await fresh(cluster, "shard-2", "chain-b")
    results = await send(cluster, move("c1", a, b, 70, linked=True), move("c2", b, c, 70))
    assert answers(results) == ["posted", "posted"]
    assert await balances(cluster, a, b, c) == [
        (0, 70, 0, FUNDS),
        (0, 70, 0, 70),
        (0, 0, 0, FUNDS + 70),
    ]
    assert [await status(cluster, t) for t in ("c1", "c2")] == [S.POSTED, S.POSTED]


async def test_chain_over_three_shards_whose_last_item_fails_changes_nothing(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A chain across shards whose last item fails leaves every balance as it was and answers
    item by item exactly as the same chain on one shard."""
    a, c = wallets["shard-1"][0], wallets["shard-3"][0]
    b = await fresh(cluster, "shard-2", "fail-b")
    # The same chain on three accounts of one shard: what the answers must be.
    ta, tc = await funded(cluster, "shard-0", "twin-a"), await funded(cluster, "shard-0", "twin-c")
    tb = await fresh(cluster, "shard-0", "twin-b")
    twin = await send(
        cluster,
        move("t1", ta, tb, 70, linked=True),
        move("t2", tb, tc, 70, linked=True),
        move("t3", tb, tc, 1),  # B has nothing left
    )
    assert answers(twin) == ["linked_event_failed", "linked_event_failed", "insufficient_funds"]

    before = await balances(cluster, a, b, c)
    results = await send(
        cluster,
        move("f1", a, b, 70, linked=True),
        move("f2", b, c, 70, linked=True),
        move("f3", b, c, 1),
    )
    assert answers(results) == answers(twin)
    assert await balances(cluster, a, b, c) == before
    assert [await status(cluster, t) for t in ("f1", "f2", "f3")] == [None, None, None]
    for account in (a, b, c):
        page = await cluster.account_transfers(account, limit=100)
        assert not {"f1", "f2", "f3"} & {v.transfer.id for v in page.data}


async def test_chain_with_a_hold_and_its_post_across_shards(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A linked hold A(s0)->B(s1) and its partial post in one chain: the chain succeeds and
    the post moves exactly its amount, as on one shard."""
    a, b = wallets["shard-0"][0], wallets["shard-1"][1]
    results = await send(cluster, hold("ch", a, b, 200, linked=True), post("cp", "ch", 50))
    assert answers(results) == ["pending", "posted"]
    assert await balances(cluster, a, b) == [(0, 50, 0, FUNDS), (0, 0, 0, FUNDS + 50)]


# -- synchronous answers, read your writes ---------------------------------------------------


async def test_cross_shard_transfer_is_posted_and_spendable_at_once(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A(s0)->B(s1) answers posted, and B spends the money in the very next request."""
    a, c = wallets["shard-0"][0], wallets["shard-2"][0]
    b = await fresh(cluster, "shard-1", "spend-b")
    result = await one(cluster, move("x1", a, b, 500))
    assert answers([result]) == ["posted"]
    assert await status(cluster, "x1") is S.POSTED
    assert await balances(cluster, a, b) == [(0, 500, 0, FUNDS), (0, 0, 0, 500)]
    spent = await one(cluster, move("x2", b, c, 500))
    assert answers([spent]) == ["posted"]
    assert await balances(cluster, b) == [(0, 500, 0, 500)]


async def test_a_hold_posted_across_shards_is_spendable_later_in_the_batch(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """One batch: a hold A(s0)->B(s1), its post, then B spends what the post gave it (B
    has no overdraft): every item answers as on one shard."""
    a, c = wallets["shard-0"][0], wallets["shard-2"][0]
    b = await fresh(cluster, "shard-1", "batch-spend-b")
    results = await send(
        cluster, hold("bh", a, b, 90), post("bp", "bh"), move("bs", b, c, 90), move("bx", b, c, 1)
    )
    assert answers(results) == ["pending", "posted", "posted", "insufficient_funds"]
    assert await balances(cluster, a, b) == [(0, 90, 0, FUNDS), (0, 90, 0, 90)]


async def test_cross_shard_transfer_to_a_closed_account_moves_nothing(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """A transfer to a closed account on another shard answers account_closed, nothing moved."""
    a = wallets["shard-0"][0]
    b = await fresh(cluster, "shard-2", "closed-b")
    assert (await cluster.execute(CloseAccount(b))).ok
    result = await one(cluster, move("x3", a, b, 5))
    assert answers([result]) == ["account_closed"]
    assert await balances(cluster, a, b) == [(0, 0, 0, FUNDS), (0, 0, 0, 0)]


async def test_cross_shard_transfer_has_one_timestamp_everywhere(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """The answer, GET of the transfer, both listings and B's balance history show the same
    timestamp for a cross-shard transfer."""
    a = wallets["shard-3"][0]
    b = await fresh(cluster, "shard-1", "stamp-b", history=True)
    result = await one(cluster, move("x4", a, b, 60))
    assert result.ok
    assert result.transfer is not None
    stamp = result.transfer.timestamp
    view = await cluster.get_transfer("x4")
    assert view is not None
    assert view.transfer.timestamp == stamp
    for account in (a, b):
        page = await cluster.account_transfers(account, limit=100)
        listed = {v.transfer.id: v.transfer.timestamp for v in page.data}
        assert listed.get("x4") == stamp, account
    history = await cluster.balance_history(b)
    assert [h.credits_posted for h in history] == [60]


async def test_balance_history_on_the_credit_side_shows_the_transfers_timestamp(
    cluster: ShardedStore,
) -> None:
    """B's balance history records a cross-shard credit at the transfer's own timestamp."""
    a = await funded(cluster, "shard-0", "hstamp-a")
    b = await fresh(cluster, "shard-1", "hstamp-b", history=True)
    (done,) = await send(cluster, move("hstamp-1", a, b, 60))
    assert done.transfer is not None
    history = await cluster.balance_history(b)
    assert [(h.timestamp, h.credits_posted) for h in history] == [(done.transfer.timestamp, 60)]
    (at,) = await cluster.balance_history(b, at=done.transfer.timestamp)
    assert at.credits_posted == 60


async def test_balance_history_of_both_accounts_is_as_on_one_shard(cluster: ShardedStore) -> None:
    """A posted transfer, a hold posted in part and a voided hold, between two ``history``
    accounts: each account's rows are those of the same requests between two accounts
    that share a shard (one row per transfer, a posted transfer's amount posted at once,
    never pending), each at the transfer's own timestamp."""

    async def rows(
        pair: tuple[str, str], tag: str
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        a, b = pair
        sent = [
            move(f"{tag}-1", a, b, 60),
            hold(f"{tag}-2", a, b, 25),
            post(f"{tag}-3", f"{tag}-2", 20),
            hold(f"{tag}-4", b, a, 7),
            void(f"{tag}-5", f"{tag}-4"),
        ]
        stamps = []
        for request in sent:
            done = await one(cluster, request)
            assert done.transfer is not None, done
            stamps.append(done.transfer.timestamp)
        out = []
        for account in (a, b):
            history = await cluster.balance_history(account)
            assert [h.timestamp for h in history][-len(sent) :] == stamps, account
            out.append([msgspec.structs.astuple(h)[2:] for h in history])
        return out[0], out[1]

    async def history_pair(debit_shard: str, credit_shard: str, tag: str) -> tuple[str, str]:
        a = await funded(cluster, debit_shard, f"{tag}-a", history=True)
        b = await fresh(cluster, credit_shard, f"{tag}-b", history=True)
        return a, b

    across = await rows(await history_pair("shard-0", "shard-1", "hx"), "hx")
    within = await rows(await history_pair("shard-2", "shard-2", "hw"), "hw")
    assert across == within


async def test_listings_show_only_the_clients_transfers(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """After transfers, holds, posts and voids across shards, each account lists exactly the
    client's transfers touching it, once each, in timestamp order, no ``xs.`` ids."""
    a, b = wallets["shard-0"][1], wallets["shard-2"][1]
    sent = [
        move("l1", a, b, 10),
        hold("l2", a, b, 20),
        post("l3", "l2", 15),
        hold("l4", b, a, 30),
        void("l5", "l4"),
        move("l6", b, a, 5),
    ]
    for request in sent:
        assert (await one(cluster, request)).ok, request
    for account in (a, b):
        page = await cluster.account_transfers(account, limit=100)
        ids = [v.transfer.id for v in page.data]
        assert not [i for i in ids if i.startswith("xs.")], ids
        assert ids == [f"fund-{account}", "l1", "l2", "l3", "l4", "l5", "l6"], account
        stamps = [v.transfer.timestamp for v in page.data]
        assert stamps == sorted(set(stamps)), account
        assert [v.status for v in page.data][1:] == [
            S.POSTED,
            S.POSTED,
            S.POSTED,
            S.VOIDED,
            S.VOIDED,
            S.POSTED,
        ]


async def test_balance_history_of_an_expired_hold_is_as_on_one_shard_and_audits_clean(
    clocked: ShardedStore, clock: ManualClock
) -> None:
    """A hold between two ``history`` accounts that expires: each account's rows are those
    of the same hold between accounts sharing a shard, and the audit replays them."""

    async def rows(debit_shard: str, credit_shard: str, tag: str) -> list[list[tuple[Any, ...]]]:
        a = await funded(clocked, debit_shard, f"{tag}-a", history=True)
        b = await fresh(clocked, credit_shard, f"{tag}-b", history=True)
        assert (await one(clocked, hold(f"{tag}-h", a, b, 40, timeout=1))).ok
        assert (await one(clocked, move(f"{tag}-m", a, b, 3))).ok
        clock.advance(2)
        await MaintenanceWorker(clocked).run_once()
        assert await status(clocked, f"{tag}-h") is S.EXPIRED
        out = []
        for account in (a, b):
            history = await clocked.balance_history(account)
            out.append([msgspec.structs.astuple(h)[2:] for h in history][-3:])
        return out

    across = await rows("shard-0", "shard-1", "ex")
    within = await rows("shard-2", "shard-2", "ew")
    assert across == within
    report = await audit_cluster(clocked.shards)
    assert report.ok, report
