"""The auditor catches every kind of damage and passes a clean ledger."""

from __future__ import annotations

import msgspec
import pytest

from backends import AnyStore, LedgerDatabase
from ops.conftest import Clock
from ops.support import NS, LedgerBuilder, post, transfer
from paycore.ledger.model import AccountFlags, AccountRequest, BalanceRecord, PendingStatus
from paycore.ops.audit import ViolationKind, audit_store, check_snapshot
from paycore.storage.base import CreateAccounts, CreateTransfers, ExpirePending

K = ViolationKind


# -- the pure checker over a fake snapshot -------------------------------------------------


def test_clean_ledger_passes(ledger: LedgerBuilder) -> None:
    """A ledger built by the rules (posts, partial posts, voids, expiry, balancing) is clean."""
    report = check_snapshot(ledger.snapshot())
    assert report.violations == []
    assert report.ok
    assert report.violation_count == 0
    assert report.transfers == len(ledger.transfers)
    assert report.holds_pending == 1
    assert report.balance_rows == len(ledger.history) > 0
    usd = next(t for t in report.totals if t.currency == "USD")
    assert usd.net_posted == 0
    assert usd.debits_pending == usd.credits_pending == 100
    assert {t.currency for t in report.totals} == {"USD", "EUR"}


def test_lost_transfer_is_caught(ledger: LedgerBuilder) -> None:
    """A transfer missing from history leaves both accounts' counters unexplained."""
    snap = ledger.snapshot()
    snap.transfers_ = [t for t in snap.transfers_ if t.id != "p2p-1"]
    report = check_snapshot(snap)
    assert not report.ok
    mismatched = {v.account_id for v in report.violations if v.kind is K.COUNTER_MISMATCH}
    assert {"alice", "bob"} <= mismatched


def test_duplicated_effect_is_caught(ledger: LedgerBuilder) -> None:
    """A transfer applied twice to the counters conserves money yet fails the replay."""
    snap = ledger.snapshot()
    t = snap.transfer("pay-1")
    alice, shop = snap.account("alice"), snap.account("shop")
    snap.edit_account("alice", debits_posted=alice.debits_posted + t.amount)
    snap.edit_account("shop", credits_posted=shop.credits_posted + t.amount)
    report = check_snapshot(snap)
    assert K.POSTED_NOT_CONSERVED not in report.kinds()
    mismatched = {v.account_id for v in report.violations if v.kind is K.COUNTER_MISMATCH}
    assert mismatched == {"alice", "shop"}


def test_duplicate_transfer_row_is_caught(ledger: LedgerBuilder) -> None:
    """Two history rows with one id are reported as such."""
    snap = ledger.snapshot()
    t = snap.transfer("pay-1")
    snap.transfers_.append(msgspec.structs.replace(t, timestamp=snap.now + 1))
    report = check_snapshot(snap)
    assert K.TRANSFER_DUPLICATE_ID in report.kinds()


def test_overdraft_is_caught_then_and_now(ledger: LedgerBuilder) -> None:
    """A no-overdraft wallet debited past its funds is reported at the transfer and after."""
    snap = ledger.snapshot()
    bob = snap.account("bob")
    rogue = msgspec.structs.replace(
        snap.transfer("fund-b"),
        id="rogue",
        debit_account_id="bob",
        credit_account_id="bank",
        amount=1_000_000,
        timestamp=snap.now + 5,
    )
    snap.transfers_.append(rogue)
    bank = snap.account("bank")
    snap.edit_account("bob", debits_posted=bob.debits_posted + 1_000_000)
    snap.edit_account("bank", credits_posted=bank.credits_posted + 1_000_000)
    report = check_snapshot(snap)
    assert report.kinds() == {K.LIMIT_EXCEEDED}
    at_transfer = [v for v in report.violations if v.transfer_id == "rogue"]
    now = [v for v in report.violations if v.transfer_id is None]
    assert at_transfer[0].account_id == now[0].account_id == "bob"


def test_credit_limit_is_enforced(ledger: LedgerBuilder) -> None:
    """An account may go down to -credit_limit, not one unit further."""
    snap = ledger.snapshot()
    carol = snap.account("carol")
    assert carol.debits_posted == 400
    snap.edit_account("carol", debits_posted=500)
    shop = snap.account("shop")
    snap.edit_account("shop", credits_posted=shop.credits_posted + 100)
    assert K.LIMIT_EXCEEDED not in check_snapshot(snap).kinds()
    snap.edit_account("carol", debits_posted=501)
    snap.edit_account("shop", credits_posted=shop.credits_posted + 101)
    assert K.LIMIT_EXCEEDED in check_snapshot(snap).kinds()


def test_money_leak_is_caught(ledger: LedgerBuilder) -> None:
    """Credits that appear from nowhere break conservation and the replay."""
    snap = ledger.snapshot()
    bob = snap.account("bob")
    snap.edit_account("bob", credits_posted=bob.credits_posted + 1)
    report = check_snapshot(snap)
    assert report.kinds() == {K.POSTED_NOT_CONSERVED, K.COUNTER_MISMATCH}
    leak = next(v for v in report.violations if v.kind is K.POSTED_NOT_CONSERVED)
    assert leak.currency == "USD"
    assert "0.01 USD" in leak.detail


def test_pending_imbalance_is_caught(ledger: LedgerBuilder) -> None:
    """A hold counted on one side only breaks pending conservation."""
    snap = ledger.snapshot()
    shop = snap.account("shop")
    snap.edit_account("shop", credits_pending=shop.credits_pending + 50)
    assert K.PENDING_NOT_CONSERVED in check_snapshot(snap).kinds()


def test_expired_but_unnoticed_hold_is_caught(ledger: LedgerBuilder) -> None:
    """A hold still pending past its timeout plus the grace is overdue; within it, not yet."""
    snap = ledger.snapshot()
    expires_at = snap.transfer("h-open").expires_at
    assert expires_at is not None
    snap.now = expires_at + 30 * NS
    assert check_snapshot(snap).ok
    snap.now = expires_at + 61 * NS
    report = check_snapshot(snap)
    assert report.kinds() == {K.HOLD_OVERDUE}
    assert report.violations[0].transfer_id == "h-open"
    assert check_snapshot(snap, grace_seconds=120).ok


def test_hold_resolved_twice_is_caught(ledger: LedgerBuilder) -> None:
    """A second post of one hold is reported, and its effect shows in the counters."""
    snap = ledger.snapshot()
    again = msgspec.structs.replace(snap.transfer("post-full"), id="post-again", timestamp=snap.now)
    snap.transfers_.append(again)
    assert K.HOLD_RESOLVED_TWICE in check_snapshot(snap).kinds()


def test_hold_status_disagreeing_with_history_is_caught(ledger: LedgerBuilder) -> None:
    """A status row that says posted or expired when history says otherwise is reported."""
    snap = ledger.snapshot()
    snap.pendings_ = [
        (i, PendingStatus.POSTED, "nobody") if i == "h-open" else (i, s, r)
        for i, s, r in snap.pendings_
    ]
    assert K.HOLD_STATUS_INCONSISTENT in check_snapshot(snap).kinds()
    snap = ledger.snapshot()
    snap.pendings_ = [
        (i, PendingStatus.PENDING, None) if i == "h-full" else (i, s, r)
        for i, s, r in snap.pendings_
    ]
    assert K.HOLD_STATUS_INCONSISTENT in check_snapshot(snap).kinds()


def test_hold_expired_before_its_timeout_is_caught(ledger: LedgerBuilder) -> None:
    """Expiring a hold early is as wrong as never expiring it."""
    snap = ledger.snapshot()
    snap.pendings_ = [
        (i, PendingStatus.EXPIRED, None) if i == "h-open" else (i, s, r)
        for i, s, r in snap.pendings_
    ]
    assert K.HOLD_STATUS_INCONSISTENT in check_snapshot(snap).kinds()


def test_missing_hold_status_is_caught(ledger: LedgerBuilder) -> None:
    """Every hold needs its status row."""
    snap = ledger.snapshot()
    snap.pendings_ = [p for p in snap.pendings_ if p[0] != "h-open"]
    assert K.HOLD_STATUS_MISSING in check_snapshot(snap).kinds()


def test_malformed_transfers_are_caught(ledger: LedgerBuilder) -> None:
    """Unknown accounts, a currency mismatch, a zero amount and equal sides are reported."""
    snap = ledger.snapshot()
    base = snap.transfer("pay-1")
    ts = snap.now
    snap.transfers_ += [
        msgspec.structs.replace(base, id="x1", debit_account_id="ghost", timestamp=ts + 1),
        msgspec.structs.replace(base, id="x2", currency="EUR", timestamp=ts + 2),
        msgspec.structs.replace(base, id="x3", amount=0, timestamp=ts + 3),
        msgspec.structs.replace(base, id="x4", credit_account_id="alice", timestamp=ts + 4),
    ]
    kinds = check_snapshot(snap).kinds()
    assert {K.TRANSFER_UNKNOWN_ACCOUNT, K.TRANSFER_CURRENCY_MISMATCH, K.TRANSFER_INVALID} <= kinds


def test_post_of_unknown_hold_is_caught(ledger: LedgerBuilder) -> None:
    """A post that names no earlier hold is an invalid resolution."""
    snap = ledger.snapshot()
    rogue = msgspec.structs.replace(
        snap.transfer("post-part"), id="post-ghost", pending_id="ghost", timestamp=snap.now
    )
    snap.transfers_.append(rogue)
    report = check_snapshot(snap)
    assert K.RESOLUTION_INVALID in report.kinds()


def test_out_of_order_timestamps_are_caught(ledger: LedgerBuilder) -> None:
    """Timestamps must be strictly increasing: two transfers may not share one."""
    snap = ledger.snapshot()
    pay = snap.transfer("pay-1")
    fund = snap.transfer("fund-a")
    snap.transfers_ = [
        msgspec.structs.replace(t, timestamp=fund.timestamp) if t.id == pay.id else t
        for t in snap.transfers_
    ]
    assert K.TRANSFER_OUT_OF_ORDER in check_snapshot(snap).kinds()


def test_edited_balance_row_is_caught(ledger: LedgerBuilder) -> None:
    """A history row that disagrees with the replay at its timestamp is reported."""
    snap = ledger.snapshot()
    row = next(r for r in snap.history_ if r.account_id == "shop")
    snap.history_ = [
        msgspec.structs.replace(r, credits_posted=r.credits_posted + 1) if r is row else r
        for r in snap.history_
    ]
    report = check_snapshot(snap)
    assert report.kinds() == {K.HISTORY_MISMATCH}
    assert report.violations[0].account_id == "shop"


def test_missing_balance_rows_are_caught(ledger: LedgerBuilder) -> None:
    """A lost row of a transfer, or of an expiry, is reported as missing."""
    snap = ledger.snapshot()
    hold = snap.transfer("h-exp")
    expiry_rows = [
        r for r in snap.history_ if r.timestamp > hold.timestamp and r.debits_pending == 0
    ]
    assert expiry_rows  # the expiry of h-exp wrote a row for alice and shop
    first = snap.history_[0]
    snap.history_ = [r for r in snap.history_ if r is not first]
    assert K.HISTORY_MISSING in check_snapshot(snap).kinds()
    snap = ledger.snapshot()
    expired_at = [r.timestamp for r in snap.history_ if r.account_id == "alice"]
    expiry = next(
        ts for ts in expired_at if ts not in {t.timestamp for t in snap.transfers_}
    )  # the one row that is no transfer's: the expiry
    snap.history_ = [r for r in snap.history_ if r.timestamp != expiry]
    kinds = check_snapshot(snap).kinds()
    assert K.HISTORY_MISSING in kinds


def test_balance_row_for_account_without_history_is_caught(ledger: LedgerBuilder) -> None:
    """Rows may exist only for accounts flagged ``history``."""
    snap = ledger.snapshot()
    snap.history_.append(BalanceRecord("bob", snap.now, 0, 0, 0, 0))
    assert K.HISTORY_MISMATCH in check_snapshot(snap).kinds()


def test_report_keeps_the_first_violations_and_counts_all(ledger: LedgerBuilder) -> None:
    """``max_violations`` bounds the list, not the count."""
    snap = ledger.snapshot()
    for account in list(snap.accounts_):
        snap.edit_account(account.id, credits_posted=account.credits_posted + 7)
    report = check_snapshot(snap, max_violations=3)
    assert len(report.violations) == 3
    assert report.violation_count > 3
    assert not report.ok


def test_report_encodes_to_json(ledger: LedgerBuilder) -> None:
    """Reports are msgspec Structs: JSON out and back without loss."""
    snap = ledger.snapshot()
    snap.edit_account("bob", credits_posted=1)
    report = check_snapshot(snap)
    again = msgspec.json.decode(msgspec.json.encode(report), type=type(report))
    assert again == report


# -- end to end on a real store of each backend --------------------------------------


async def _populate(store: AnyStore, clock: Clock) -> None:
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("w1", "USD", flags=_no_overdraft(history=True)),
                AccountRequest("w2", "USD", flags=_no_overdraft()),
            )
        )
    )
    results = await store.execute(
        CreateTransfers(
            (
                transfer("f1", "bank", "w1", 5_000),
                transfer("f2", "bank", "w2", 5_000),
                transfer("t1", "w1", "w2", 700),
                transfer("h1", "w2", "w1", 900, pending=True, timeout_seconds=2),
                transfer("h2", "w1", "w2", 400, pending=True, timeout_seconds=3600),
                post("p2", "h2", 150),
            )
        )
    )
    assert all(r.ok for r in results), results
    clock.advance(5)
    assert await store.execute(ExpirePending()) == ["h1"]


def _no_overdraft(*, history: bool = False) -> AccountFlags:
    return AccountFlags(no_overdraft=True, history=history)


async def test_store_audit_clean(store: AnyStore, clock: Clock) -> None:
    """A store used through its commands audits clean, expiry and history included."""
    await _populate(store, clock)
    report = await audit_store(store)
    assert report.ok, report.violations
    assert report.transfers == 6
    assert report.balance_rows > 0


@pytest.mark.parametrize(
    ("sql", "params", "kinds"),
    [
        pytest.param(
            "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = ?",
            ("w2",),
            {K.COUNTER_MISMATCH, K.POSTED_NOT_CONSERVED},
            id="counter-edited",
        ),
        pytest.param(
            "DELETE FROM transfers WHERE id = ?",
            ("t1",),
            {K.COUNTER_MISMATCH, K.HISTORY_MISSING},
            id="transfer-lost",
        ),
        pytest.param(
            "UPDATE pending_transfers SET status = 'pending' WHERE id = ?",
            ("h1",),
            {K.COUNTER_MISMATCH},
            id="expiry-undone",
        ),
        pytest.param(
            "UPDATE accounts SET debits_posted = debits_posted + 100000 WHERE id = ?",
            ("w1",),
            {K.COUNTER_MISMATCH, K.POSTED_NOT_CONSERVED, K.LIMIT_EXCEEDED},
            id="overdraft",
        ),
    ],
)
async def test_store_audit_catches_doctored_rows(
    store: AnyStore,
    database: LedgerDatabase,
    clock: Clock,
    *,
    sql: str,
    params: tuple[object, ...],
    kinds: set[ViolationKind],
) -> None:
    """A row edited behind the store's back is caught by the audit."""
    await _populate(store, clock)
    database.query(sql, *params)
    report = await audit_store(store)
    assert not report.ok
    assert kinds <= report.kinds()


async def test_store_audit_catches_unexpired_hold(store: AnyStore, clock: Clock) -> None:
    """A hold whose timeout passed long ago, with no expiry run, is overdue."""
    await _populate(store, clock)
    await store.execute(
        CreateTransfers(
            (
                transfer("h3", "w1", "w2", 10, pending=True, timeout_seconds=1),
                transfer("t9", "w2", "w1", 1),
            )
        )
    )
    clock.advance(30)
    assert (await audit_store(store)).ok
    clock.advance(60)
    report = await audit_store(store)
    assert report.kinds() == {K.HOLD_OVERDUE}
    assert report.violations[0].transfer_id == "h3"
