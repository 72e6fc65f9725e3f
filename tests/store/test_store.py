"""A store on each backend: commands, expiry on a controlled clock, and every read."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from backends import AnyStore, StoreFactory
from paycore.errors import ErrorCode, PaycoreError, RequestError, UnavailableError
from paycore.ledger.model import (
    AccountFlags,
    AccountRequest,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferRequest,
    TransferStatus,
)
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    LedgerSnapshot,
    PurgeIdempotency,
)
from paycore.storage.sqlite import SQLiteStore
from paycore.storage.store import Store
from store.support import NS, LedgerState, ManualClock, audit, read_state

PENDING = TransferFlags(pending=True)


def post(transfer_id: str, pending_id: str, amount: int | None = None) -> TransferRequest:
    return TransferRequest(
        transfer_id, pending_id=pending_id, amount=amount, flags=TransferFlags(post_pending=True)
    )


def void(transfer_id: str, pending_id: str) -> TransferRequest:
    return TransferRequest(
        transfer_id, pending_id=pending_id, flags=TransferFlags(void_pending=True)
    )


async def transfer(store: AnyStore, *requests: TransferRequest) -> list[Transfer]:
    """Apply requests that must all succeed; returns the transfers."""
    results = await store.execute(CreateTransfers(requests))
    assert all(r.ok for r in results), results
    return [r.transfer for r in results if r.transfer]


@pytest.fixture
async def ledger(store: AnyStore) -> AnyStore:
    """A store with two unlimited USD accounts, a and b, and a history account h."""
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("a", "USD"),
                AccountRequest("b", "USD"),
                AccountRequest("h", "USD", flags=AccountFlags(history=True)),
            )
        )
    )
    return store


def test_the_store_satisfies_the_protocol(make_store: StoreFactory) -> None:
    """The backend's store implements every method of the Store protocol."""
    assert isinstance(make_store(), Store)


@pytest.mark.parametrize("mode", ["FULL", "normal", "Extra"])
def test_durability_modes_are_checked(db_path: Path, mode: str) -> None:
    """FULL, NORMAL and EXTRA are accepted in any case; they are normalized to upper case."""
    assert SQLiteStore(db_path, synchronous=mode).synchronous == mode.upper()


def test_an_unknown_durability_mode_is_refused(db_path: Path) -> None:
    """A synchronous mode SQLite would treat as weaker than asked (e.g. OFF) is refused."""
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(db_path, synchronous="OFF")


async def test_accounts_are_created_once(store: AnyStore) -> None:
    """Creating accounts answers per item: created, exists, different fields, or invalid."""
    request = AccountRequest("a", "USD", metadata={"owner": "ann"})
    (first,) = await store.execute(CreateAccounts((request,)))
    results = await store.execute(
        CreateAccounts(
            (request, AccountRequest("a", "EUR"), AccountRequest("bad id", "USD"), request)
        )
    )
    assert (first.ok, first.exists) == (True, False)
    assert [(r.code, r.exists) for r in results] == [
        (None, True),
        (ErrorCode.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS, False),
        (ErrorCode.INVALID_REQUEST, False),
        (None, True),
    ]
    stored = await store.get_accounts(["a", "bad id"])
    assert list(stored) == ["a"]
    assert stored["a"] == first.account


async def test_closing_an_account(ledger: AnyStore) -> None:
    """Close refuses an account with holds, then closes it for good against new transfers."""
    await transfer(ledger, TransferRequest("hold", "a", "b", 5, flags=PENDING))
    busy = await ledger.execute(CloseAccount("a"))
    assert busy.code is ErrorCode.ACCOUNT_HAS_PENDING_TRANSFERS
    await transfer(ledger, void("v", "hold"))
    closed = await ledger.execute(CloseAccount("a"))
    assert (closed.ok, closed.exists) == (True, False)
    again = await ledger.execute(CloseAccount("a"))
    assert (again.ok, again.exists) == (True, True)
    assert (await ledger.execute(CloseAccount("ghost"))).code is ErrorCode.ACCOUNT_NOT_FOUND
    (refused,) = await ledger.execute(CreateTransfers((TransferRequest("t", "b", "a", 1),)))
    assert refused.code is ErrorCode.ACCOUNT_CLOSED
    accounts = await ledger.get_accounts(["a"])
    assert accounts["a"].flags.closed


async def test_holds_expire_on_the_store_clock(ledger: AnyStore, clock: ManualClock) -> None:
    """ExpirePending releases exactly the holds whose deadline has come, once."""
    due, later, never = await transfer(
        ledger,
        TransferRequest("due", "a", "b", 10, flags=PENDING, timeout_seconds=5),
        TransferRequest("later", "a", "b", 20, flags=PENDING, timeout_seconds=50),
        TransferRequest("never", "a", "b", 30, flags=PENDING),
    )
    assert due.expires_at is not None
    clock.now = due.expires_at - 1
    assert await ledger.execute(ExpirePending()) == []
    (in_time,) = await ledger.execute(CreateTransfers((post("p-late", "later"),)))
    assert in_time.ok
    clock.now = due.expires_at
    (expired_post,) = await ledger.execute(CreateTransfers((post("p-due", "due"),)))
    assert expired_post.code is ErrorCode.PENDING_TRANSFER_EXPIRED  # due, even before the sweep
    assert await ledger.execute(ExpirePending()) == ["due"]
    assert await ledger.execute(ExpirePending()) == []
    view = await ledger.get_transfer("due")
    assert view is not None
    assert (view.status, view.resolved_by) == (TransferStatus.EXPIRED, None)
    accounts = await ledger.get_accounts(["a", "b"])
    assert (accounts["a"].debits_pending, accounts["a"].debits_posted) == (30, 20)
    assert (accounts["b"].credits_pending, accounts["b"].credits_posted) == (30, 20)
    clock.advance(10**6)
    assert await ledger.execute(ExpirePending()) == []  # "never" has no timeout
    assert later.timestamp < never.timestamp
    assert audit(await ledger.with_snapshot(read_state)) == []


async def test_expiry_works_in_bounded_slices(ledger: AnyStore, clock: ManualClock) -> None:
    """ExpirePending releases at most ``limit`` holds per call, earliest deadlines first."""
    await transfer(
        ledger,
        *(
            TransferRequest(f"h{i}", "a", "b", 1, flags=PENDING, timeout_seconds=10 - i)
            for i in range(5)
        ),
    )
    clock.advance(60)
    assert await ledger.execute(ExpirePending(limit=2)) == ["h4", "h3"]
    assert await ledger.execute(ExpirePending(limit=2)) == ["h2", "h1"]
    assert await ledger.execute(ExpirePending(limit=2)) == ["h0"]


async def test_timestamps_increase_even_when_the_clock_goes_back(
    ledger: AnyStore, clock: ManualClock
) -> None:
    """Every new transfer is stamped after the previous one, whatever the wall clock does."""
    (first,) = await transfer(ledger, TransferRequest("t1", "a", "b", 1))
    assert first.timestamp >= clock.now
    clock.advance(-3600)
    (second,) = await transfer(ledger, TransferRequest("t2", "a", "b", 1))
    assert second.timestamp == first.timestamp + 1
    clock.advance(7200)
    (third,) = await transfer(ledger, TransferRequest("t3", "a", "b", 1))
    assert third.timestamp == clock.now


# -- reads ----------------------------------------------------------------------------------


async def test_get_transfer_shows_each_status(ledger: AnyStore) -> None:
    """A read shows posted, pending, posted-by and voided-by, and None for unknown ids."""
    await transfer(
        ledger,
        TransferRequest("plain", "a", "b", 1, metadata={"order": 7}),
        TransferRequest("h1", "a", "b", 9, flags=PENDING),
        TransferRequest("h2", "a", "b", 9, flags=PENDING),
        TransferRequest("h3", "a", "b", 9, flags=PENDING),
        post("p1", "h1", 4),
        void("v2", "h2"),
    )
    expected = {
        "plain": (TransferStatus.POSTED, None),
        "h1": (TransferStatus.POSTED, "p1"),
        "h2": (TransferStatus.VOIDED, "v2"),
        "h3": (TransferStatus.PENDING, None),
        "p1": (TransferStatus.POSTED, None),
        "v2": (TransferStatus.VOIDED, None),
    }
    for transfer_id, (status, resolved_by) in expected.items():
        view = await ledger.get_transfer(transfer_id)
        assert view is not None
        assert (view.transfer.id, view.status, view.resolved_by) == (
            transfer_id,
            status,
            resolved_by,
        )
    plain = await ledger.get_transfer("plain")
    assert plain is not None
    assert plain.transfer.metadata == {"order": 7}
    post_view = await ledger.get_transfer("p1")
    assert post_view is not None
    assert (post_view.transfer.amount, post_view.transfer.pending_id) == (4, "h1")
    assert await ledger.get_transfer("nope") is None


async def _all_pages(
    store: AnyStore, account_id: str, limit: int, *, descending: bool, side: str
) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await store.account_transfers(
            account_id, limit=limit, cursor=cursor, descending=descending, side=side
        )
        pages.append([v.transfer.id for v in page.data])
        if page.next_cursor is None:
            return pages
        assert page.next_cursor == page.data[-1].transfer.timestamp
        cursor = page.next_cursor


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize(
    ("side", "ids"),
    [
        ("both", ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]),
        ("debits", ["t0", "t2", "t4", "t6"]),
        ("credits", ["t1", "t3", "t5"]),
    ],
)
async def test_account_transfers_page_through_in_both_orders(
    ledger: AnyStore, descending: bool, side: str, ids: list[str]
) -> None:
    """Pages of an account's transfers cover each once, in timestamp order, per side."""
    for i in range(7):
        debit, credit = ("a", "b") if i % 2 == 0 else ("b", "a")
        await transfer(ledger, TransferRequest(f"t{i}", debit, credit, i + 1))
        await transfer(ledger, TransferRequest(f"other{i}", "b", "h", 1))  # not a's
    expected = list(reversed(ids)) if descending else ids
    pages = await _all_pages(ledger, "a", 3, descending=descending, side=side)
    assert [i for page in pages for i in page] == expected
    assert [len(p) for p in pages[:-1]] == [3] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= 3
    whole = await ledger.account_transfers("a", limit=100, descending=descending, side=side)
    assert ([v.transfer.id for v in whole.data], whole.next_cursor) == (expected, None)


async def test_a_page_exactly_full_has_no_next_cursor(ledger: AnyStore) -> None:
    """When the last page is exactly full, no empty extra page is announced."""
    await transfer(ledger, *(TransferRequest(f"t{i}", "a", "b", 1) for i in range(4)))
    page = await ledger.account_transfers("a", limit=2)
    assert page.next_cursor is not None
    page = await ledger.account_transfers("a", limit=2, cursor=page.next_cursor)
    assert ([v.transfer.id for v in page.data], page.next_cursor) == (["t2", "t3"], None)
    empty = await ledger.account_transfers("ghost", limit=2)
    assert (empty.data, empty.next_cursor) == ([], None)


async def test_balance_history_lists_and_answers_as_of_a_time(ledger: AnyStore) -> None:
    """History has a snapshot per transfer; ``at`` gives the one in force then."""
    t1, t2, hold = await transfer(
        ledger,
        TransferRequest("t1", "a", "h", 100),
        TransferRequest("t2", "h", "b", 30),
        TransferRequest("hold", "h", "b", 5, flags=PENDING),
    )
    records = await ledger.balance_history("h")
    assert [
        (r.timestamp, r.debits_pending, r.debits_posted, r.credits_pending, r.credits_posted)
        for r in records
    ] == [
        (t1.timestamp, 0, 0, 0, 100),
        (t2.timestamp, 0, 30, 0, 100),
        (hold.timestamp, 5, 30, 0, 100),
    ]
    assert await ledger.balance_history("h", at=t1.timestamp - 1) == []
    assert await ledger.balance_history("h", at=t1.timestamp) == [records[0]]
    assert await ledger.balance_history("h", at=hold.timestamp - 1) == [records[1]]
    assert await ledger.balance_history("h", at=hold.timestamp + NS) == [records[2]]
    assert await ledger.balance_history("h", limit=2) == records[:2]
    assert await ledger.balance_history("h", cursor=records[1].timestamp) == records[2:]
    assert await ledger.balance_history("a") == []  # no history flag, no snapshots


async def test_a_snapshot_is_one_consistent_view(ledger: AnyStore) -> None:
    """A snapshot does not see commits made while it reads, and does not block the writer."""
    first_read = threading.Event()
    go_on = threading.Event()

    def reader(snapshot: LedgerSnapshot) -> tuple[LedgerState, LedgerState]:
        before = read_state(snapshot)
        first_read.set()
        assert go_on.wait(5)
        return before, read_state(snapshot)

    await transfer(ledger, TransferRequest("t1", "a", "b", 5))
    task = asyncio.ensure_future(ledger.with_snapshot(reader))
    assert await asyncio.to_thread(first_read.wait, 5)
    await transfer(ledger, TransferRequest("t2", "a", "b", 7))  # commits mid-snapshot
    go_on.set()
    before, after = await task
    assert after == before
    assert [t.id for t in after.transfers] == ["t1"]
    assert after.accounts["a"].debits_posted == 5
    now = await ledger.with_snapshot(read_state)
    assert [t.id for t in now.transfers] == ["t1", "t2"]
    assert now.accounts["a"].debits_posted == 12


async def test_a_snapshot_carries_the_store_clock(ledger: AnyStore, clock: ManualClock) -> None:
    """The snapshot's ``now`` is the store clock, so an auditor judges expiry by it."""
    assert await ledger.with_snapshot(lambda s: s.now) == clock.now


async def test_snapshot_pendings_list_every_hold(ledger: AnyStore) -> None:
    """The snapshot lists each hold's status and resolver."""
    await transfer(
        ledger,
        TransferRequest("h1", "a", "b", 3, flags=PENDING),
        TransferRequest("h2", "a", "b", 3, flags=PENDING),
        post("p", "h2"),
    )
    state = await ledger.with_snapshot(read_state)
    assert state.pendings == {
        "h1": (PendingStatus.PENDING, None),
        "h2": (PendingStatus.POSTED, "p"),
    }


async def test_ping_answers_while_running(ledger: AnyStore) -> None:
    """ping returns quietly on a started store."""
    await ledger.ping()


async def test_ping_on_a_stopped_store_is_unavailable(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    """Before start and after stop, ping raises UnavailableError so /readyz turns red."""
    store = make_store(clock=clock)
    with pytest.raises(UnavailableError):
        await store.ping()
    await store.start()
    await store.ping()
    await store.stop()
    with pytest.raises(UnavailableError):
        await store.ping()
    await store.stop()


async def test_a_stopped_store_starts_again(make_store: StoreFactory, clock: ManualClock) -> None:
    """The same store object serves again after a stop and a new start, its data intact."""
    store = make_store(clock=clock)
    await store.start()
    await store.execute(CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD"))))
    await transfer(store, TransferRequest("t1", "a", "b", 5))
    await store.stop()
    await store.start()
    try:
        await store.ping()
        (again,) = await store.execute(CreateTransfers((TransferRequest("t1", "a", "b", 5),)))
        assert again.exists
        assert (await store.get_accounts(["a"]))["a"].debits_posted == 5
        assert audit(await store.with_snapshot(read_state)) == []
    finally:
        await store.stop()


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": -1}, {"limit": 5, "side": "nope"}])
async def test_bad_page_arguments_are_invalid_requests(
    ledger: AnyStore, kwargs: dict[str, Any]
) -> None:
    """A page request with a limit below 1 or an unknown side is an invalid_request."""
    await transfer(ledger, TransferRequest("t1", "a", "b", 1))
    with pytest.raises(PaycoreError) as raised:
        await ledger.account_transfers("a", **kwargs)
    assert raised.value.code is ErrorCode.INVALID_REQUEST


# -- the same answers on both backends, where a database could differ -----------------------


async def test_an_id_with_a_nul_byte_names_nothing(ledger: AnyStore) -> None:
    """An id no row can have (a NUL byte) reads as missing and is refused like an unknown one,
    without failing the rest of its batch."""
    assert await ledger.get_transfer("t\x00") is None
    assert "a\x00" not in await ledger.get_accounts(["a\x00", "a"])
    page = await ledger.account_transfers("a\x00", limit=5)
    assert (page.data, page.next_cursor) == ([], None)
    assert await ledger.balance_history("h\x00") == []
    assert (await ledger.execute(CloseAccount("a\x00"))).code is ErrorCode.ACCOUNT_NOT_FOUND
    (account,) = await ledger.execute(CreateAccounts((AccountRequest("c\x00", "USD"),)))
    assert account.code is ErrorCode.INVALID_REQUEST
    results = await ledger.execute(
        CreateTransfers(
            (
                TransferRequest("t\x00", "a", "b", 1),
                TransferRequest("t1", "a\x00", "b", 1),
                TransferRequest("t2", "a", "b\x00", 1),
                post("p1", "h\x00"),
                TransferRequest("t3", "a", "b", 1),
            )
        )
    )
    assert [r.code for r in results] == [
        ErrorCode.INVALID_REQUEST,
        ErrorCode.ACCOUNT_NOT_FOUND,
        ErrorCode.ACCOUNT_NOT_FOUND,
        ErrorCode.PENDING_TRANSFER_NOT_FOUND,
        None,
    ]


async def test_holds_due_at_the_same_moment_expire_in_id_order(
    ledger: AnyStore, clock: ManualClock
) -> None:
    """Holds with the same deadline expire in byte order of their ids, whatever the order they
    were made in, so a bounded sweep picks the same ones on every backend."""
    made = []
    for hold_id, timeout in [("zz", 3), ("aa", 2), ("Ab", 1)]:
        clock.advance(1)  # one second later, one second shorter: the same deadline
        made += await transfer(
            ledger, TransferRequest(hold_id, "a", "b", 1, flags=PENDING, timeout_seconds=timeout)
        )
    (later,) = await transfer(
        ledger, TransferRequest("_x", "a", "b", 1, flags=PENDING, timeout_seconds=1)
    )
    assert len({t.expires_at for t in made}) == 1
    assert later.expires_at is not None
    assert later.expires_at > (made[0].expires_at or 0)
    clock.advance(60)
    assert [await ledger.execute(ExpirePending(limit=1)) for _ in range(5)] == [
        ["Ab"],
        ["aa"],
        ["zz"],
        ["_x"],
        [],
    ]


async def test_a_snapshot_lists_accounts_and_holds_in_id_order(ledger: AnyStore) -> None:
    """A snapshot yields accounts and holds in byte order of their ids, and balance rows in
    timestamp order (account id within one timestamp), so an audit reads the same on both."""
    await ledger.execute(
        CreateAccounts(
            (
                AccountRequest("B", "USD", flags=AccountFlags(history=True)),
                AccountRequest("_", "USD", flags=AccountFlags(history=True)),
            )
        )
    )
    await transfer(
        ledger,
        TransferRequest("zz", "a", "b", 1, flags=PENDING),
        TransferRequest("Ab", "a", "b", 1, flags=PENDING),
        TransferRequest("t1", "_", "B", 5),
        TransferRequest("t2", "h", "_", 5),
    )

    def order(snapshot: LedgerSnapshot) -> tuple[list[str], list[str], list[tuple[int, str]]]:
        return (
            [a.id for a in snapshot.accounts()],
            [hold_id for hold_id, _, _ in snapshot.pendings()],
            [(r.timestamp, r.account_id) for r in snapshot.balance_history()],
        )

    accounts, holds, history = await ledger.with_snapshot(order)
    assert accounts == ["B", "_", "a", "b", "h"]
    assert holds == ["Ab", "zz"]
    assert history == sorted(history)
    assert len(history) == 4


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
async def test_a_limit_below_one_is_refused_not_read_as_no_limit(
    ledger: AnyStore, limit: Any
) -> None:
    """0 or a negative limit is a caller's bug: refused, rather than sweeping everything."""
    await transfer(ledger, TransferRequest("t0", "a", "h", 1))
    with pytest.raises(RequestError) as refused:
        await ledger.balance_history("h", limit=limit)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    for command in (ExpirePending, PurgeIdempotency):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            command(limit=limit)


@pytest.mark.parametrize("limit", [2**63 - 1, 2**63, 10**30])
async def test_a_limit_beyond_64_bits_reads_everything(ledger: AnyStore, limit: int) -> None:
    """A page or history limit too big for a 64-bit integer reads everything, not an error."""
    await transfer(ledger, *(TransferRequest(f"t{i}", "a", "h", 1) for i in range(3)))
    page = await ledger.account_transfers("h", limit=limit)
    assert ([v.transfer.id for v in page.data], page.next_cursor) == (["t0", "t1", "t2"], None)
    assert len(await ledger.balance_history("h", limit=limit)) == 3
