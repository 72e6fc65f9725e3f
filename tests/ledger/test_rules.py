"""The pure double-entry rules: every rejection code and every success of a WorkingSet."""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec
import pytest

from paycore.errors import ErrorCode
from paycore.ledger.model import (
    SYSTEM_TENANT,
    Account,
    AccountFlags,
    AccountRequest,
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferRequest,
)
from paycore.ledger.refusals import KEPT_REFUSALS, Refusal, fingerprint
from paycore.ledger.rules import (
    MAX_CODE,
    MAX_TIMEOUT_SECONDS,
    PendingState,
    TransferResult,
    WorkingSet,
    check_account_request,
    close_account,
    new_account,
)
from paycore.money import MAX_AMOUNT

E = ErrorCode
TAKEN = ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
NS = 1_000_000_000
NOW = 1_000 * NS
PENDING = TransferFlags(pending=True)
POST = TransferFlags(post_pending=True)
VOID = TransferFlags(void_pending=True)
LINKED = TransferFlags(linked=True)


# -- builders ---------------------------------------------------------------------------


def account(
    account_id: str,
    currency: str = "USD",
    *,
    dp: int = 0,
    dpo: int = 0,
    cp: int = 0,
    cpo: int = 0,
    **flags: Any,
) -> Account:
    return Account(
        id=account_id,
        currency=currency,
        code=0,
        flags=AccountFlags(**flags),
        metadata=None,
        timestamp=1,
        debits_pending=dp,
        debits_posted=dpo,
        credits_pending=cp,
        credits_posted=cpo,
    )


def ledger(*accounts: Account, now: int = NOW, last_timestamp: int = 0) -> WorkingSet:
    """A working set with ``a`` and ``b`` (USD, unlimited) unless accounts are given."""
    accounts = accounts or (account("a"), account("b"))
    return WorkingSet(accounts, [], [], now=now, last_timestamp=last_timestamp)


def tr(
    transfer_id: str = "t1",
    debit: str | None = "a",
    credit: str | None = "b",
    amount: int | None = 10,
    **fields: Any,
) -> TransferRequest:
    return TransferRequest(
        id=transfer_id, debit_account_id=debit, credit_account_id=credit, amount=amount, **fields
    )


def post(transfer_id: str, pending_id: str, amount: int | None = None, **f: Any) -> TransferRequest:
    return TransferRequest(id=transfer_id, pending_id=pending_id, amount=amount, flags=POST, **f)


def void(transfer_id: str, pending_id: str, amount: int | None = None, **f: Any) -> TransferRequest:
    return TransferRequest(id=transfer_id, pending_id=pending_id, amount=amount, flags=VOID, **f)


def linked(request: TransferRequest) -> TransferRequest:
    flags = msgspec.structs.replace(request.flags, linked=True)
    return msgspec.structs.replace(request, flags=flags)


def counters(ws: WorkingSet, account_id: str) -> tuple[int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted)."""
    return ws.accounts[account_id].counters()


def codes(results: list[TransferResult]) -> list[ErrorCode | None]:
    return [r.code for r in results]


def one(ws: WorkingSet, request: TransferRequest) -> TransferResult:
    (result,) = ws.apply_transfers([request])
    return result


def snapshot(ws: WorkingSet, *, dirty: bool = True) -> tuple[Any, ...]:
    """Everything a rejected item must leave untouched.

    ``dirty=False`` leaves out which accounts are marked for writing: an undone chain
    may leave an account marked, which only rewrites the same counters.
    """
    return (
        {i: a.counters() for i, a in ws.accounts.items()},
        set(ws.transfers),
        {i: (p.status, p.resolved_by) for i, p in ws.pendings.items()},
        list(ws.created),
        list(ws.history),
        dict(ws.changed_pendings),
        [a.account.id for a in ws.dirty_accounts()] if dirty else None,
    )


def hold_ledger(
    amount: int = 100, timeout: int = 0, *accounts: Account
) -> tuple[WorkingSet, Transfer]:
    """A working set where ``h`` is a pending hold of ``amount`` from a to b."""
    ws = ledger(*accounts)
    result = one(ws, tr("h", amount=amount, flags=PENDING, timeout_seconds=timeout))
    assert result.ok, result
    assert result.transfer is not None
    return ws, result.transfer


def reject(ws: WorkingSet, request: TransferRequest, code: ErrorCode) -> TransferResult:
    """Apply a request that must fail with ``code`` and change nothing."""
    before = snapshot(ws)
    result = one(ws, request)
    assert (result.code, result.transfer, result.exists) == (code, None, False), result
    assert not result.ok
    assert snapshot(ws) == before
    return result


# -- successes ----------------------------------------------------------------------------


def test_a_posted_transfer_moves_posted_counters_on_both_sides() -> None:
    """A plain transfer adds its amount to one side's posted debits and the other's credits."""
    ws = ledger()
    result = one(ws, tr(amount=25, code=7, metadata={"order": "o1"}))
    assert result.ok
    assert not result.exists
    assert counters(ws, "a") == (0, 25, 0, 0)
    assert counters(ws, "b") == (0, 0, 0, 25)
    t = result.transfer
    assert t is not None
    assert (t.id, t.amount, t.currency, t.code, t.metadata) == ("t1", 25, "USD", 7, {"order": "o1"})
    assert ws.created == [t]
    assert ws.transfers["t1"] == t
    assert {s.account.id for s in ws.dirty_accounts()} == {"a", "b"}
    assert ws.changed_pendings == {}


def test_the_currency_may_be_given_when_it_matches() -> None:
    """Naming the accounts' currency on the request is accepted."""
    assert one(ledger(), tr(currency="USD")).ok


def test_a_pending_transfer_moves_pending_counters_and_opens_a_hold() -> None:
    """A hold reserves its amount in the pending counters and starts in status pending."""
    ws, hold = hold_ledger(40, 5)
    assert counters(ws, "a") == (40, 0, 0, 0)
    assert counters(ws, "b") == (0, 0, 40, 0)
    state = ws.pendings["h"]
    assert (state.status, state.resolved_by) == (PendingStatus.PENDING, None)
    assert ws.changed_pendings == {"h": state}
    assert hold.expires_at == hold.timestamp + 5 * NS


def test_a_full_post_moves_the_hold_to_posted_counters() -> None:
    """Posting without an amount captures the whole hold."""
    ws, _ = hold_ledger(40)
    result = one(ws, post("p", "h", code=3))
    assert result.ok
    assert counters(ws, "a") == (0, 40, 0, 0)
    assert counters(ws, "b") == (0, 0, 0, 40)
    assert (ws.pendings["h"].status, ws.pendings["h"].resolved_by) == (PendingStatus.POSTED, "p")
    t = result.transfer
    assert t is not None
    assert (t.amount, t.debit_account_id, t.credit_account_id, t.pending_id, t.code) == (
        40,
        "a",
        "b",
        "h",
        3,
    )


def test_a_partial_post_captures_part_and_releases_the_rest() -> None:
    """Posting less than the hold posts that amount and frees the remainder."""
    ws, _ = hold_ledger(40)
    result = one(ws, post("p", "h", 15))
    assert result.ok
    assert result.transfer is not None
    assert result.transfer.amount == 15
    assert counters(ws, "a") == (0, 15, 0, 0)
    assert counters(ws, "b") == (0, 0, 0, 15)


def test_a_post_inherits_the_hold_code_and_may_repeat_its_accounts() -> None:
    """A post without a code takes the hold's; naming the hold's own accounts is accepted."""
    ws = ledger()
    assert one(ws, tr("h", flags=PENDING, code=9)).ok
    result = one(ws, post("p", "h", debit_account_id="a", credit_account_id="b", currency="USD"))
    assert result.transfer is not None
    assert result.transfer.code == 9


def test_a_void_releases_the_hold() -> None:
    """Voiding returns both pending counters to where they were and posts nothing."""
    ws, _ = hold_ledger(40)
    result = one(ws, void("v", "h"))
    assert result.ok
    assert counters(ws, "a") == (0, 0, 0, 0)
    assert counters(ws, "b") == (0, 0, 0, 0)
    assert ws.pendings["h"].status is PendingStatus.VOIDED
    assert ws.pendings["h"].resolved_by == "v"
    assert result.transfer is not None
    assert result.transfer.amount == 40


def test_a_void_may_name_the_full_amount() -> None:
    """A void that names exactly the hold's amount is accepted."""
    ws, _ = hold_ledger(40)
    assert one(ws, void("v", "h", 40)).ok


def test_expire_due_releases_holds_at_and_after_their_deadline_only() -> None:
    """A hold expires when now reaches timestamp + timeout; earlier ones stay pending."""
    ws = ledger()
    assert one(ws, tr("due", amount=10, flags=PENDING, timeout_seconds=2)).ok
    assert one(ws, tr("later", amount=20, flags=PENDING, timeout_seconds=3)).ok
    assert one(ws, tr("never", amount=30, flags=PENDING)).ok
    deadline = ws.transfers["due"].expires_at
    assert deadline is not None
    ws.now = deadline - 1
    assert ws.expire_due() == []
    ws.now = deadline
    expired = ws.expire_due()
    assert [s.transfer.id for s in expired] == ["due"]
    assert ws.pendings["due"].status is PendingStatus.EXPIRED
    assert ws.pendings["due"].resolved_by is None
    assert counters(ws, "a") == (50, 0, 0, 0)
    assert counters(ws, "b") == (0, 0, 50, 0)
    ws.now += 100 * NS
    assert [s.transfer.id for s in ws.expire_due()] == ["later"]
    assert ws.expire_due() == []  # an expired hold is not released twice
    assert ws.pendings["never"].status is PendingStatus.PENDING


def test_expiring_writes_history_with_a_fresh_timestamp() -> None:
    """Releasing a hold of a history account records a snapshot at a new timestamp."""
    ws = ledger(account("a", history=True), account("b"))
    assert one(ws, tr("h", flags=PENDING, timeout_seconds=1)).ok
    ws.now += 2 * NS
    (state,) = ws.expire_due()
    records = [(h.account_id, h.debits_pending) for h in ws.history]
    assert records == [("a", 10), ("a", 0)]
    assert ws.history[-1].timestamp > state.transfer.timestamp


def test_balancing_moves_at_most_what_is_available() -> None:
    """A balancing transfer is cut down to the debit account's available balance."""
    ws = ledger(account("a", no_overdraft=True, cpo=100, dpo=40, dp=25), account("b"))
    result = one(ws, tr(amount=1_000, flags=TransferFlags(balancing=True)))
    assert result.ok
    assert result.transfer is not None
    assert result.transfer.amount == 35
    assert counters(ws, "a") == (25, 75, 0, 100)


def test_balancing_respects_a_credit_limit() -> None:
    """On a credit-limit account, balancing moves down to exactly -limit."""
    ws = ledger(account("a", credit_limit=50, cpo=10), account("b"))
    result = one(ws, tr(amount=1_000, flags=TransferFlags(balancing=True)))
    assert result.transfer is not None
    assert result.transfer.amount == 60


def test_balancing_moves_the_whole_amount_when_it_is_available() -> None:
    """Balancing never moves more than asked, and on an unlimited account moves it all."""
    ws = ledger(account("a", no_overdraft=True, cpo=100), account("b"), account("c"))
    result = one(ws, tr(amount=30, flags=TransferFlags(balancing=True)))
    assert result.transfer is not None
    assert result.transfer.amount == 30
    result = one(ws, tr("t2", "b", "c", amount=10**9, flags=TransferFlags(balancing=True)))
    assert result.transfer is not None
    assert result.transfer.amount == 10**9


def test_a_balancing_hold_reserves_at_most_what_is_available() -> None:
    """A pending balancing transfer holds only the available amount."""
    ws = ledger(account("a", no_overdraft=True, cpo=70), account("b"))
    result = one(ws, tr(amount=100, flags=TransferFlags(pending=True, balancing=True)))
    assert result.transfer is not None
    assert result.transfer.amount == 70
    assert counters(ws, "a") == (70, 0, 0, 70)


def test_a_retry_with_the_same_fields_returns_the_original() -> None:
    """The same id with the same fields answers exists and the first transfer, changing nothing."""
    ws = ledger()
    request = tr(amount=10, code=2, metadata={"k": 1})
    first = one(ws, request)
    before = snapshot(ws)
    again = one(ws, request)
    assert again.ok
    assert again.exists
    assert again.transfer == first.transfer
    assert snapshot(ws) == before


def test_a_retry_may_leave_out_fields() -> None:
    """Accounts, amount, currency and code may be omitted on a retry and still match."""
    ws = ledger()
    assert one(ws, tr(amount=10, code=2)).ok
    result = one(ws, tr(debit=None, credit=None, amount=None, code=0))
    assert (result.ok, result.exists) == (True, True)


def test_a_retry_of_a_balancing_transfer_with_the_requested_amount_matches() -> None:
    """A balancing transfer that moved less than asked still matches the original request."""
    ws = ledger(account("a", no_overdraft=True, cpo=30), account("b"))
    request = tr(amount=100, flags=TransferFlags(balancing=True))
    assert one(ws, request).transfer.amount == 30  # type: ignore[union-attr]
    assert one(ws, request).exists


def test_a_retry_of_a_post_returns_the_post() -> None:
    """Posting the same hold again with the same id is an idempotent retry, not a second post."""
    ws, _ = hold_ledger(40)
    request = post("p", "h", 15)
    assert one(ws, request).ok
    result = one(ws, request)
    assert (result.ok, result.exists) == (True, True)
    assert counters(ws, "a") == (0, 15, 0, 0)


def test_a_retry_is_answered_even_when_the_account_is_closed_since() -> None:
    """The exists check comes before the account checks, so a retry never changes its answer."""
    ws = ledger()
    request = tr()
    assert one(ws, request).ok
    state = ws.accounts["a"]
    state.account = msgspec.structs.replace(state.account, flags=AccountFlags(closed=True))
    assert one(ws, request).exists


def test_a_duplicate_within_one_batch_is_applied_once() -> None:
    """The second item with an id already used earlier in the batch answers exists."""
    ws = ledger()
    results = ws.apply_transfers([tr(amount=10), tr(amount=10), tr(amount=11)])
    assert codes(results) == [None, None, E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS]
    assert [r.exists for r in results] == [False, True, False]
    assert counters(ws, "a") == (0, 10, 0, 0)
    assert len(ws.created) == 1


def test_a_later_apply_on_the_same_set_sees_earlier_items() -> None:
    """A group commit applies several requests to one set; each sees the ones before it."""
    ws = ledger(account("a", no_overdraft=True, cpo=15), account("b"))
    assert one(ws, tr("t1", amount=10)).ok
    assert one(ws, tr("t2", amount=10)).code is E.INSUFFICIENT_FUNDS
    assert one(ws, tr("t1", amount=10)).exists


def test_a_linked_chain_that_succeeds_applies_every_item() -> None:
    """A chain whose items all pass is applied in full."""
    ws = ledger(account("a"), account("b"), account("c"))
    results = ws.apply_transfers([linked(tr("t1", "a", "b")), linked(tr("t2", "b", "c")), tr("t3")])
    assert codes(results) == [None, None, None]
    assert counters(ws, "b") == (0, 10, 0, 20)


def test_a_failed_chain_rolls_back_counters_holds_and_history() -> None:
    """When a chain item fails, every earlier item of the chain is undone without a trace."""
    ws = ledger(
        account("a", history=True),
        account("b"),
        account("poor", no_overdraft=True, cpo=5),
        account("c"),
    )
    assert one(ws, tr("h", flags=PENDING, amount=50)).ok  # a hold made before the chain
    assert one(ws, tr("h2", flags=PENDING, amount=7)).ok
    assert one(ws, void("v2", "h2")).ok  # and one already resolved in this batch
    before = snapshot(ws, dirty=False)
    results = ws.apply_transfers(
        [
            linked(post("p", "h", 20)),  # resolves the earlier hold
            linked(tr("new-hold", "a", "c", 5, flags=PENDING)),  # opens a hold
            linked(post("p2", "new-hold")),  # and resolves it
            linked(tr("t1", "a", "b", 3)),
            tr("t2", "poor", "b", 6),  # fails: closes the chain
        ]
    )
    assert codes(results) == [E.LINKED_EVENT_FAILED] * 4 + [E.INSUFFICIENT_FUNDS]
    assert snapshot(ws, dirty=False) == before
    assert ws.pendings["h"].status is PendingStatus.PENDING
    assert ws.pendings["h"].resolved_by is None
    assert ws.pendings["h2"].status is PendingStatus.VOIDED
    assert "new-hold" not in ws.pendings
    assert set(ws.changed_pendings) == {"h", "h2"}
    assert ws.changed_pendings["h"].status is PendingStatus.PENDING
    # the undone hold can still be posted afterwards
    assert one(ws, post("p", "h")).ok


def test_items_after_a_failure_in_a_chain_are_not_even_tried() -> None:
    """After the failing item, the rest of the chain answers linked_event_failed."""
    ws = ledger()
    results = ws.apply_transfers(
        [
            linked(tr("t1")),
            linked(tr("t2", "a", "ghost")),
            linked(tr("t3", amount=0)),  # would be invalid: never looked at
            tr("t4"),
            tr("t5"),  # outside the chain
        ]
    )
    assert codes(results) == [
        E.LINKED_EVENT_FAILED,
        E.ACCOUNT_NOT_FOUND,
        E.LINKED_EVENT_FAILED,
        E.LINKED_EVENT_FAILED,
        None,
    ]
    assert [t.id for t in ws.created] == ["t5"]
    assert counters(ws, "a") == (0, 10, 0, 0)


def test_a_chain_left_open_at_the_end_of_the_batch_fails_as_a_whole() -> None:
    """A batch ending on a linked item rolls the open chain back: linked_event_chain_open."""
    ws = ledger()
    results = ws.apply_transfers([tr("t0"), linked(tr("t1")), linked(tr("t2", amount=0))])
    assert codes(results) == [None, E.LINKED_EVENT_CHAIN_OPEN, E.LINKED_EVENT_CHAIN_OPEN]
    assert [t.id for t in ws.created] == ["t0"]
    assert counters(ws, "a") == (0, 10, 0, 0)


def test_a_failed_chain_does_not_stop_the_next_chain() -> None:
    """Chains are independent: one failing leaves the following chain to succeed."""
    ws = ledger()
    results = ws.apply_transfers([linked(tr("t1")), tr("t2", amount=0), linked(tr("t3")), tr("t4")])
    assert codes(results) == [E.LINKED_EVENT_FAILED, E.INVALID_REQUEST, None, None]
    assert [t.id for t in ws.created] == ["t3", "t4"]


def test_a_chain_can_reuse_an_id_it_failed_to_create() -> None:
    """An id whose creation was rolled back with its chain is free again."""
    ws = ledger()
    assert codes(ws.apply_transfers([linked(tr("t1")), tr("t2", amount=0)]))[0] is not None
    assert one(ws, tr("t1", amount=12)).ok


def test_timestamps_are_strictly_increasing_even_when_the_clock_is_behind() -> None:
    """Every new transfer gets a timestamp after the previous one, and not before now."""
    ws = ledger(now=NOW, last_timestamp=NOW + 50)  # the clock went back
    results = ws.apply_transfers([tr("t1"), tr("t2", flags=PENDING), post("t3", "t2")])
    stamps = [r.transfer.timestamp for r in results if r.transfer]
    assert stamps == [NOW + 51, NOW + 52, NOW + 53]
    ws2 = ledger(now=NOW, last_timestamp=7)
    stamps = [r.transfer.timestamp for r in ws2.apply_transfers([tr("t1"), tr("t2")]) if r.transfer]
    assert stamps == [NOW, NOW + 1]
    assert ws2.last_timestamp == NOW + 1


def test_a_rolled_back_chain_does_not_hand_its_timestamps_out_again() -> None:
    """Timestamps consumed by an undone chain stay consumed, so none is ever reused."""
    ws = ledger()
    ws.apply_transfers([linked(tr("t1")), linked(tr("t2")), tr("t3", amount=0)])
    after = one(ws, tr("t4")).transfer
    assert after is not None
    assert after.timestamp == NOW + 2


def test_history_accounts_get_a_snapshot_after_each_transfer() -> None:
    """An account flagged history gets its counters recorded at each transfer's timestamp."""
    ws = ledger(account("a", history=True), account("b"))
    r1 = one(ws, tr("t1", amount=5))
    r2 = one(ws, tr("t2", amount=7, flags=PENDING))
    assert [(h.account_id, h.timestamp, h.debits_posted, h.debits_pending) for h in ws.history] == [
        ("a", r1.transfer.timestamp, 5, 0),  # type: ignore[union-attr]
        ("a", r2.transfer.timestamp, 5, 7),  # type: ignore[union-attr]
    ]


def test_a_hold_may_be_resolved_only_along_its_transition_table() -> None:
    """Moving a hold out of a final state is a programming error, not a silent no-op."""
    hold = Transfer("h", "a", "b", 1, "USD", 0, PENDING, None, 0, None, 1)
    state = PendingState(hold, PendingStatus.PENDING)
    state.move_to(PendingStatus.POSTED, "p")
    with pytest.raises(ValueError, match="illegal pending transition"):
        state.move_to(PendingStatus.VOIDED, "v")


# -- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(tr(""), id="empty-id"),
        pytest.param(tr("x" * 65), id="id-too-long"),
        pytest.param(tr("a b"), id="id-with-space"),
        pytest.param(tr("a/b/c"), id="id-with-two-slashes"),
        pytest.param(tr("/b"), id="id-with-an-empty-namespace"),
        pytest.param(tr(flags=TransferFlags(pending=True, post_pending=True)), id="pending+post"),
        pytest.param(tr(flags=TransferFlags(post_pending=True, void_pending=True)), id="post+void"),
        pytest.param(tr(flags=TransferFlags(pending=True, void_pending=True)), id="pending+void"),
        pytest.param(tr(amount=0), id="zero-amount"),
        pytest.param(tr(amount=-5), id="negative-amount"),
        pytest.param(tr(amount=MAX_AMOUNT + 1), id="amount-past-int64"),
        pytest.param(tr(amount=True), id="bool-amount"),
        pytest.param(tr(amount=1.5), id="float-amount"),  # type: ignore[arg-type]
        pytest.param(tr(flags=PENDING, timeout_seconds=-1), id="negative-timeout"),
        pytest.param(
            tr(flags=PENDING, timeout_seconds=MAX_TIMEOUT_SECONDS + 1), id="timeout-too-long"
        ),
        pytest.param(tr(flags=PENDING, timeout_seconds=1.5), id="float-timeout"),
        pytest.param(tr(debit=None), id="no-debit-account"),
        pytest.param(tr(credit=None), id="no-credit-account"),
        pytest.param(tr(amount=None), id="no-amount"),
        pytest.param(tr(pending_id="h"), id="pending-id-on-a-create"),
        pytest.param(TransferRequest("p", flags=POST), id="post-without-pending-id"),
        pytest.param(TransferRequest("v", flags=VOID), id="void-without-pending-id"),
    ],
)
def test_malformed_items_are_invalid_requests(request_: TransferRequest) -> None:
    """Each malformed item is refused with invalid_request and changes nothing."""
    ws, _ = hold_ledger(40)
    reject(ws, request_, E.INVALID_REQUEST)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(post("p", "h", debit_account_id="b"), id="post-other-debit"),
        pytest.param(post("p", "h", credit_account_id="a"), id="post-other-credit"),
        pytest.param(void("v", "h", debit_account_id="c"), id="void-other-debit"),
        pytest.param(void("v", "h", 39), id="partial-void"),
    ],
)
def test_resolving_a_hold_with_other_fields_is_an_invalid_request(
    request_: TransferRequest,
) -> None:
    """A post or void must not name other accounts than the hold's; a void takes it all."""
    ws, _ = hold_ledger(40)
    reject(ws, request_, E.INVALID_REQUEST)


def test_the_largest_timeout_is_accepted() -> None:
    """timeout_seconds may be as large as 2^31-1."""
    ws = ledger()
    assert one(ws, tr(flags=PENDING, timeout_seconds=MAX_TIMEOUT_SECONDS)).ok


def test_debit_and_credit_accounts_must_differ() -> None:
    """A transfer from an account to itself is refused."""
    reject(ledger(), tr(debit="a", credit="a"), E.ACCOUNTS_MUST_BE_DIFFERENT)


@pytest.mark.parametrize(("debit", "credit"), [("ghost", "b"), ("a", "ghost")])
def test_unknown_accounts_are_not_found(debit: str, credit: str) -> None:
    """A transfer naming an account that does not exist is refused with account_not_found."""
    result = reject(ledger(), tr(debit=debit, credit=credit), E.ACCOUNT_NOT_FOUND)
    assert "ghost" in result.detail


def test_accounts_of_different_currencies_cannot_trade() -> None:
    """Debit and credit accounts must share a currency."""
    ws = ledger(account("a", "USD"), account("b", "EUR"))
    reject(ws, tr(), E.CURRENCY_MISMATCH)


def test_a_request_currency_must_match_the_accounts() -> None:
    """A currency named on the request must be the accounts' currency."""
    reject(ledger(), tr(currency="EUR"), E.CURRENCY_MISMATCH)


def test_a_post_currency_must_match_the_hold() -> None:
    """Posting a USD hold as EUR is refused."""
    ws, _ = hold_ledger(40)
    reject(ws, post("p", "h", currency="EUR"), E.CURRENCY_MISMATCH)


@pytest.mark.parametrize("closed", ["a", "b"])
def test_closed_accounts_take_no_transfers(closed: str) -> None:
    """Neither side of a new transfer may be a closed account."""
    accounts = {i: account(i, closed=(i == closed)) for i in ("a", "b")}
    ws = ledger(*accounts.values())
    reject(ws, tr("t1"), E.ACCOUNT_CLOSED)
    reject(ws, tr("t2", flags=PENDING), E.ACCOUNT_CLOSED)  # t1's refusal is kept


def test_no_overdraft_refuses_debits_beyond_posted_credits() -> None:
    """A no_overdraft account may be debited down to exactly zero, and no further."""
    ws = ledger(account("a", no_overdraft=True, cpo=100), account("b"))
    reject(ws, tr("t0", amount=101), E.INSUFFICIENT_FUNDS)
    assert one(ws, tr("t1", amount=100)).ok
    reject(ws, tr("t2", amount=1), E.INSUFFICIENT_FUNDS)
    assert counters(ws, "a") == (0, 100, 0, 100)


def test_holds_count_against_the_limit() -> None:
    """Outgoing holds reduce what a limited account may still spend."""
    ws = ledger(account("a", no_overdraft=True, cpo=100), account("b"))
    assert one(ws, tr("h", amount=80, flags=PENDING)).ok
    reject(ws, tr("t1", amount=21), E.INSUFFICIENT_FUNDS)
    reject(ws, tr("h2", amount=21, flags=PENDING), E.INSUFFICIENT_FUNDS)
    assert one(ws, tr("t2", amount=20)).ok


def test_incoming_holds_do_not_count_as_funds() -> None:
    """Credits still pending cannot be spent before they are posted."""
    ws = ledger(account("a"), account("b", no_overdraft=True))
    assert one(ws, tr("h", "a", "b", 50, flags=PENDING)).ok
    reject(ws, tr("t1", "b", "a", 1), E.INSUFFICIENT_FUNDS)


def test_a_credit_limit_lets_the_balance_go_down_to_minus_the_limit() -> None:
    """A credit-limit account may reach -limit, and further debits exceed the credit limit."""
    ws = ledger(account("a", credit_limit=100, cpo=20), account("b"))
    reject(ws, tr("t0", amount=121), E.EXCEEDS_CREDIT_LIMIT)
    assert one(ws, tr("t1", amount=120)).ok
    reject(ws, tr("t2", amount=1), E.EXCEEDS_CREDIT_LIMIT)


def test_a_zero_credit_limit_reports_insufficient_funds() -> None:
    """A credit limit of zero behaves, and answers, like no_overdraft."""
    ws = ledger(account("a", credit_limit=0), account("b"))
    reject(ws, tr(amount=1), E.INSUFFICIENT_FUNDS)


def test_balancing_with_nothing_available_is_refused() -> None:
    """A balancing transfer from an account with nothing available moves nothing and fails."""
    ws = ledger(account("a", no_overdraft=True, cpo=10, dp=10), account("b"))
    reject(ws, tr(flags=TransferFlags(balancing=True)), E.INSUFFICIENT_FUNDS)
    ws = ledger(account("a", credit_limit=5, dpo=5), account("b"))
    reject(ws, tr(flags=TransferFlags(balancing=True)), E.EXCEEDS_CREDIT_LIMIT)


def test_the_credit_side_has_no_limit() -> None:
    """A limited account may always be credited."""
    ws = ledger(account("a"), account("b", no_overdraft=True))
    assert one(ws, tr(amount=10**6)).ok


@pytest.mark.parametrize(
    ("accounts", "request_"),
    [
        pytest.param(
            (account("a", dpo=MAX_AMOUNT - 5), account("b")), tr(amount=6), id="debits-posted"
        ),
        pytest.param(
            (account("a"), account("b", cpo=MAX_AMOUNT - 5)), tr(amount=6), id="credits-posted"
        ),
        pytest.param(
            (account("a", dp=MAX_AMOUNT - 5), account("b")),
            tr(amount=6, flags=PENDING),
            id="debits-pending",
        ),
        pytest.param(
            (account("a"), account("b", cp=MAX_AMOUNT - 5)),
            tr(amount=6, flags=PENDING),
            id="credits-pending",
        ),
        pytest.param(
            (account("a", dp=MAX_AMOUNT - 5), account("b")), tr(amount=6), id="debits-sum"
        ),
        pytest.param(
            (account("a"), account("b", cpo=MAX_AMOUNT - 5)),
            tr(amount=6, flags=PENDING),
            id="credits-sum",
        ),
    ],
)
def test_counters_never_overflow_int64(
    accounts: tuple[Account, Account], request_: TransferRequest
) -> None:
    """A transfer that would push a counter, or pending and posted together, past 2^63-1
    is refused with overflow (pending plus posted: a posted transfer across shards is
    held first, and must be answered as on one shard)."""
    reject(ledger(*accounts), request_, E.OVERFLOW)


def test_counters_may_reach_exactly_the_maximum() -> None:
    """Filling a counter up to 2^63-1 exactly is allowed."""
    ws = ledger(account("a", dpo=MAX_AMOUNT - 6), account("b"))
    assert one(ws, tr(amount=6)).ok
    assert counters(ws, "a")[1] == MAX_AMOUNT


def test_a_hold_counts_against_the_posted_counters_it_will_reach() -> None:
    """A hold is refused when pending plus posted would pass 2^63-1, so posting a hold
    that was accepted can always fill the posted counter, up to the maximum exactly."""
    with pytest.raises(AssertionError):
        hold_ledger(40, 0, account("a"), account("b", cpo=MAX_AMOUNT - 39))
    ws, _ = hold_ledger(40, 0, account("a"), account("b", cpo=MAX_AMOUNT - 40))
    assert one(ws, post("p", "h")).ok
    assert counters(ws, "b")[3] == MAX_AMOUNT


def test_a_timeout_is_only_for_holds() -> None:
    """A plain transfer with a timeout is refused."""
    reject(ledger(), tr(timeout_seconds=5), E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER)


@pytest.mark.parametrize("resolve", [post, void])
def test_a_post_or_void_takes_no_timeout(resolve: Any) -> None:
    """Resolving a hold with a timeout is refused."""
    ws, _ = hold_ledger(40)
    reject(ws, resolve("r", "h", timeout_seconds=5), E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER)


@pytest.mark.parametrize("resolve", [post, void])
def test_resolving_an_unknown_hold_is_not_found(resolve: Any) -> None:
    """A post or void naming no transfer answers pending_transfer_not_found."""
    ws, _ = hold_ledger(40)
    reject(ws, resolve("r", "nope"), E.PENDING_TRANSFER_NOT_FOUND)


@pytest.mark.parametrize("resolve", [post, void])
def test_resolving_a_transfer_that_is_not_a_hold_is_refused(resolve: Any) -> None:
    """A post or void naming a posted transfer answers pending_transfer_not_pending."""
    ws = ledger()
    assert one(ws, tr("plain")).ok
    reject(ws, resolve("r", "plain"), E.PENDING_TRANSFER_NOT_PENDING)


def test_a_hold_without_a_status_is_not_pending() -> None:
    """A hold the store did not load a status for cannot be resolved."""
    hold = Transfer("h", "a", "b", 5, "USD", 0, PENDING, None, 0, None, 1)
    ws = WorkingSet([account("a"), account("b")], [hold], [], now=NOW, last_timestamp=1)
    reject(ws, post("p", "h"), E.PENDING_TRANSFER_NOT_PENDING)


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        (post("p", "h"), post("p2", "h"), E.PENDING_TRANSFER_ALREADY_POSTED),
        (post("p", "h", 5), void("v", "h"), E.PENDING_TRANSFER_ALREADY_POSTED),
        (void("v", "h"), void("v2", "h"), E.PENDING_TRANSFER_ALREADY_VOIDED),
        (void("v", "h"), post("p", "h"), E.PENDING_TRANSFER_ALREADY_VOIDED),
    ],
)
def test_a_hold_is_resolved_at_most_once(
    first: TransferRequest, second: TransferRequest, code: ErrorCode
) -> None:
    """Once posted or voided, a hold refuses any further post or void."""
    ws, _ = hold_ledger(40)
    assert one(ws, first).ok
    result = reject(ws, second, code)
    assert repr(first.id) in result.detail


@pytest.mark.parametrize("resolve", [post, void])
def test_an_expired_hold_cannot_be_resolved(resolve: Any) -> None:
    """A hold released by expiry refuses a post or void."""
    ws, hold = hold_ledger(40, 5)
    assert hold.expires_at is not None
    ws.now = hold.expires_at
    assert len(ws.expire_due()) == 1
    reject(ws, resolve("r", "h"), E.PENDING_TRANSFER_EXPIRED)


@pytest.mark.parametrize("resolve", [post, void])
def test_a_hold_past_its_deadline_is_expired_before_the_sweep(resolve: Any) -> None:
    """From its deadline on, a hold refuses to be resolved even if not yet swept."""
    early, hold = hold_ledger(40, 5)
    assert hold.expires_at is not None
    early.now = hold.expires_at - 1
    assert one(early, resolve("r", "h")).ok  # one nanosecond early: still fine
    due, hold = hold_ledger(40, 5)
    assert hold.expires_at is not None
    due.now = hold.expires_at
    reject(due, resolve("r", "h"), E.PENDING_TRANSFER_EXPIRED)
    assert due.pendings["h"].status is PendingStatus.PENDING  # the sweep releases it later


def test_a_post_may_not_exceed_the_hold() -> None:
    """Posting more than the held amount is refused."""
    ws, _ = hold_ledger(40)
    reject(ws, post("p", "h", 41), E.AMOUNT_EXCEEDS_PENDING_AMOUNT)


ORIGINAL = tr(amount=10, code=3, metadata={"k": 1})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 11),
        ("debit_account_id", "c"),
        ("credit_account_id", "c"),
        ("currency", "EUR"),
        ("code", 4),
        ("flags", PENDING),
        ("flags", TransferFlags(balancing=True)),
        ("metadata", {"k": 2}),
        ("metadata", None),
        ("pending_id", "h"),
        ("timeout_seconds", 5),
    ],
)
def test_a_retry_with_different_fields_is_refused(field: str, value: object) -> None:
    """Reusing a transfer id with any other field value answers exists_with_different_fields."""
    ws = ledger(account("a"), account("b"), account("c"))
    assert one(ws, ORIGINAL).ok
    retry = msgspec.structs.replace(ORIGINAL, **{field: value})
    reject(ws, retry, E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS)


def test_a_retry_of_a_hold_with_another_timeout_is_refused() -> None:
    """The timeout is one of the fields a retry must repeat."""
    ws, _ = hold_ledger(40, 5)
    reject(
        ws,
        tr("h", amount=40, flags=PENDING, timeout_seconds=6),
        E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    )


def test_a_retry_of_a_balancing_transfer_asking_less_than_it_moved_is_refused() -> None:
    """A balancing retry matches only amounts at least as large as what was moved."""
    ws = ledger(account("a", no_overdraft=True, cpo=30), account("b"))
    assert one(ws, tr(amount=100, flags=TransferFlags(balancing=True))).ok
    reject(
        ws,
        tr(amount=29, flags=TransferFlags(balancing=True)),
        E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
    )


@pytest.mark.parametrize("code", [-1, 2**31, 2**63])
def test_a_transfer_code_outside_0_to_2_31_is_an_invalid_request(code: int) -> None:
    """Transfer codes follow the account code range, so every code can be stored."""
    reject(ledger(), tr(code=code), E.INVALID_REQUEST)


def test_the_largest_code_is_accepted() -> None:
    """A transfer code may be as large as 2^31-1."""
    assert one(ledger(), tr(code=MAX_CODE)).ok


@pytest.mark.parametrize("pending_id", ["", "not an id", "x" * 65, "h\n"])
@pytest.mark.parametrize("resolve", [post, void])
def test_a_malformed_pending_id_names_no_hold(resolve: Any, pending_id: str) -> None:
    """A post or void naming an id no transfer could have answers pending_transfer_not_found."""
    ws, _ = hold_ledger(40)
    reject(ws, resolve("r", pending_id), E.PENDING_TRANSFER_NOT_FOUND)


def test_a_transfer_id_with_a_trailing_newline_is_an_invalid_request() -> None:
    """An id that ends in a newline breaks the id contract and is refused."""
    reject(ledger(), tr("t1\n"), E.INVALID_REQUEST)


# -- accounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        AccountRequest("a", "USD"),
        AccountRequest("a" * 64, "JPY", code=2**31 - 1, metadata={"k": "v"}),
        AccountRequest("w", "EUR", flags=AccountFlags(no_overdraft=True, history=True)),
        AccountRequest("c", "USD", flags=AccountFlags(credit_limit=0)),
        AccountRequest("c", "USD", flags=AccountFlags(credit_limit=MAX_AMOUNT)),
    ],
)
def test_well_formed_account_requests_pass(request_: AccountRequest) -> None:
    """Valid ids, currencies, codes and flag combinations are accepted."""
    assert check_account_request(request_) is None


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(AccountRequest("", "USD"), id="empty-id"),
        pytest.param(AccountRequest("a b", "USD"), id="bad-id"),
        pytest.param(AccountRequest("a", "usd"), id="lowercase-currency"),
        pytest.param(AccountRequest("a", "XXX"), id="unknown-currency"),
        pytest.param(AccountRequest("a", "USD", flags=AccountFlags(closed=True)), id="closed"),
        pytest.param(
            AccountRequest("a", "USD", flags=AccountFlags(no_overdraft=True, credit_limit=5)),
            id="no-overdraft-and-credit-limit",
        ),
        pytest.param(
            AccountRequest("a", "USD", flags=AccountFlags(credit_limit=-1)), id="negative-limit"
        ),
        pytest.param(
            AccountRequest("a", "USD", flags=AccountFlags(credit_limit=MAX_AMOUNT + 1)),
            id="limit-past-int64",
        ),
        pytest.param(
            AccountRequest("a", "USD", flags=AccountFlags(credit_limit=5.0)),  # type: ignore[arg-type]
            id="float-limit",
        ),
        pytest.param(AccountRequest("a", "USD", code=-1), id="negative-code"),
        pytest.param(AccountRequest("a", "USD", code=2**31), id="code-too-big"),
        pytest.param(AccountRequest("a", "USD", code=True), id="bool-code"),
    ],
)
def test_malformed_account_requests_are_invalid(request_: AccountRequest) -> None:
    """Each malformed account request is refused with invalid_request and a detail."""
    problem = check_account_request(request_)
    assert problem is not None
    assert problem[0] is E.INVALID_REQUEST
    assert problem[1]
    result = new_account(request_, None, 5)
    assert (result.code, result.account) == (E.INVALID_REQUEST, None)


def test_a_new_account_starts_at_zero_with_its_timestamp() -> None:
    """A created account carries the request's fields, the given timestamp and zero counters."""
    request = AccountRequest(
        "a", "EUR", code=3, flags=AccountFlags(history=True), metadata={"x": 1}
    )
    result = new_account(request, None, 42)
    assert (result.ok, result.exists) == (True, False)
    a = result.account
    assert a is not None
    assert (a.id, a.currency, a.code, a.flags, a.metadata, a.timestamp) == (
        "a",
        "EUR",
        3,
        AccountFlags(history=True),
        {"x": 1},
        42,
    )
    assert (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) == (0, 0, 0, 0)


def test_creating_an_existing_account_with_the_same_fields_returns_it() -> None:
    """The same account request again answers exists with the stored account, closed or not."""
    request = AccountRequest("a", "USD", flags=AccountFlags(no_overdraft=True), metadata={"k": 1})
    existing = new_account(request, None, 1).account
    assert existing is not None
    result = new_account(request, existing, 2)
    assert (result.ok, result.exists, result.account) == (True, True, existing)
    closed = close_account(existing, "a").account
    assert new_account(request, closed, 3).exists


ACCOUNT = AccountRequest("a", "USD", flags=AccountFlags(no_overdraft=True), metadata={"k": 1})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("currency", "EUR"),
        ("code", 1),
        ("flags", AccountFlags()),
        ("flags", AccountFlags(credit_limit=0)),
        ("flags", AccountFlags(no_overdraft=True, history=True)),
        ("metadata", None),
        ("metadata", {"k": 2}),
    ],
)
def test_creating_an_existing_account_with_other_fields_is_refused(field: str, value: Any) -> None:
    """Reusing an account id with any other field answers account_exists_with_different_fields."""
    existing = new_account(ACCOUNT, None, 1).account
    result = new_account(msgspec.structs.replace(ACCOUNT, **{field: value}), existing, 2)
    assert (result.code, result.account) == (E.ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS, None)


def test_closing_an_unknown_account_is_not_found() -> None:
    """Closing an account that does not exist answers account_not_found."""
    result = close_account(None, "ghost")
    assert (result.id, result.code) == ("ghost", E.ACCOUNT_NOT_FOUND)


class _Holds(TypedDict, total=False):
    dp: int
    cp: int


@pytest.mark.parametrize("pending", [{"dp": 1}, {"cp": 1}])
def test_an_account_with_holds_cannot_be_closed(pending: _Holds) -> None:
    """An account with outgoing or incoming holds stays open."""
    result = close_account(account("a", **pending), "a")
    assert (result.code, result.account) == (E.ACCOUNT_HAS_PENDING_TRANSFERS, None)


def test_closing_keeps_counters_and_sets_the_flag_once() -> None:
    """Closing sets the closed flag and keeps the counters; closing again returns it as is.
    A balance (either sign) refuses it: closed, it could never move again."""
    for dpo, cpo, held in ((5, 9, "holds 4 USD"), (9, 5, "owes 4 USD")):
        refused = close_account(account("a", dpo=dpo, cpo=cpo), "a")
        assert refused.code is ErrorCode.ACCOUNT_HAS_BALANCE
        assert held in refused.detail
    before = account("a", dpo=9, cpo=9, history=True)
    result = close_account(before, "a")
    assert (result.ok, result.exists) == (True, False)
    closed = result.account
    assert closed is not None
    assert closed.flags == AccountFlags(history=True, closed=True)
    assert closed.balance == before.balance
    again = close_account(closed, "a")
    assert (again.ok, again.exists, again.account) == (True, True, closed)


def test_only_the_settlement_may_resolve_a_saga_hold() -> None:
    """A hold marked as a cross-shard saga is refused to clients and accepted from settlement."""
    from paycore.ledger.model import SETTLEMENT_METADATA_KEY

    def fresh() -> WorkingSet:
        ws = WorkingSet(
            [
                Account("a", "USD", 0, AccountFlags(), None, 1, credits_posted=100),
                Account("b", "USD", 0, AccountFlags(), None, 1),
            ],
            [],
            [],
            now=10,
            last_timestamp=1,
        )
        hold = TransferRequest(
            "h", "a", "b", 40, flags=TransferFlags(pending=True),
            metadata={SETTLEMENT_METADATA_KEY: {"role": "hold"}},
        )  # fmt: skip
        assert ws.apply_transfers([hold], settlement=True)[0].ok
        return ws

    void = TransferRequest("v", pending_id="h", flags=TransferFlags(void_pending=True))
    (refused,) = fresh().apply_transfers([void])
    assert refused.code is ErrorCode.PENDING_TRANSFER_NOT_PENDING
    (accepted,) = fresh().apply_transfers([void], settlement=True)
    assert accepted.ok


# -- refusals kept under the id (paycore.ledger.refusals) -----------------------------------


def _refused_on(code: ErrorCode) -> tuple[WorkingSet, TransferRequest]:
    """A working set and an item it refuses with ``code``, a refusal that depends on state."""
    if code is E.ACCOUNT_NOT_FOUND:
        return ledger(), tr(credit="ghost")
    if code is E.ACCOUNT_CLOSED:
        return ledger(account("a"), account("b", closed=True)), tr()
    if code is E.CURRENCY_MISMATCH:
        return ledger(), tr(currency="EUR")
    if code is E.INSUFFICIENT_FUNDS:
        return ledger(account("a", no_overdraft=True), account("b")), tr()
    if code is E.EXCEEDS_CREDIT_LIMIT:
        return ledger(account("a", credit_limit=5), account("b")), tr()
    if code is E.OVERFLOW:
        return ledger(account("a"), account("b", cpo=MAX_AMOUNT)), tr()
    if code is E.PENDING_TRANSFER_NOT_FOUND:
        return ledger(), post("p", "h")
    if code is E.PENDING_TRANSFER_NOT_PENDING:
        ws = ledger()
        assert one(ws, tr("plain")).ok
        return ws, post("p", "plain")
    if code is E.AMOUNT_EXCEEDS_PENDING_AMOUNT:
        return hold_ledger(40)[0], post("p", "h", 41)
    ws, _ = hold_ledger(40, 1)
    if code is E.PENDING_TRANSFER_EXPIRED:
        ws.now += 2 * NS
    elif code is E.PENDING_TRANSFER_ALREADY_POSTED:
        assert one(ws, post("first", "h")).ok
    elif code is E.PENDING_TRANSFER_ALREADY_VOIDED:
        assert one(ws, void("first", "h")).ok
    else:
        raise AssertionError(f"no case refused with {code}")
    return ws, post("p", "h")


@pytest.mark.parametrize("code", sorted(KEPT_REFUSALS))
def test_a_refusal_that_depends_on_state_is_kept_under_its_id(code: ErrorCode) -> None:
    """The same request again gets the same refusal (code and detail) without being tried;
    other fields under the id are a conflict, as for a stored transfer."""
    ws, request = _refused_on(code)
    first = reject(ws, request, code)
    assert ws.new_refusals == [
        Refusal(request.id, SYSTEM_TENANT, str(fingerprint(request)), code, first.detail, ws.now)
    ]
    again = reject(ws, request, code)
    assert again.detail == first.detail
    other = reject(ws, msgspec.structs.replace(request, code=99), TAKEN)
    assert code.value in other.detail
    assert len(ws.new_refusals) == 1  # kept once


def test_no_retryable_code_is_kept() -> None:
    """A code that says "retry" (transfer_in_flight, an outage) must never be fixed for good."""
    from paycore.errors import ERROR_SPECS

    assert not [code for code in KEPT_REFUSALS if ERROR_SPECS[code].retryable]


def test_a_kept_refusal_outlives_the_state_that_caused_it() -> None:
    """Refused for lack of funds; later (a new transaction over the kept refusal) the wallet
    is funded: the same request is refused the same way and moves nothing; a new id passes."""
    ws = ledger(account("a", no_overdraft=True), account("b"))
    first = reject(ws, tr(amount=50), E.INSUFFICIENT_FUNDS)
    funded = (account("a", no_overdraft=True, cpo=100), account("b"))
    later = WorkingSet(funded, [], [], now=NOW + NS, last_timestamp=1, refusals=ws.new_refusals)
    again = reject(later, tr(amount=50), E.INSUFFICIENT_FUNDS)
    assert again.detail == first.detail == "available 0, requested 50"
    assert later.new_refusals == []  # nothing new to write
    reject(later, tr(amount=40), TAKEN)
    assert one(later, tr("t2", amount=50)).ok


def test_a_refused_id_repeated_in_one_batch_gets_the_refusal_again() -> None:
    """Even after an earlier item of the same batch funded the wallet."""
    ws = ledger(account("a", no_overdraft=True), account("b"), account("bank"))
    results = ws.apply_transfers([tr(amount=5), tr("fund", "bank", "a", 5), tr(amount=5)])
    assert codes(results) == [E.INSUFFICIENT_FUNDS, None, E.INSUFFICIENT_FUNDS]
    assert counters(ws, "a") == (0, 0, 0, 5)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (tr(amount=0), E.INVALID_REQUEST),
        (tr(debit=None), E.INVALID_REQUEST),
        (tr(credit="a"), E.ACCOUNTS_MUST_BE_DIFFERENT),
        (tr(timeout_seconds=5), E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (post("t1", "not an id"), E.PENDING_TRANSFER_NOT_FOUND),  # no state read
        (void("t1", "h", 5), E.INVALID_REQUEST),  # a void of part of the hold
    ],
)
def test_bad_input_is_not_kept(request_: TransferRequest, code: ErrorCode) -> None:
    """A refusal the request alone decides changes nothing: the id stays free."""
    ws, _ = hold_ledger(40)
    reject(ws, request_, code)
    assert (ws.new_refusals, ws.refusals) == ([], {})
    assert one(ws, tr("t1")).ok


def test_a_failed_chain_keeps_the_refusal_of_its_failing_item_only() -> None:
    """Resent as it was once funded, the chain fails again at the same item, every item
    answered as the first time, nothing applied; the other items' ids stay free."""
    ws = ledger(account("a", no_overdraft=True, cpo=10), account("b"))
    chain = [linked(tr("t1", amount=10)), tr("t2", amount=5)]
    first = ws.apply_transfers(chain)
    assert codes(first) == [E.LINKED_EVENT_FAILED, E.INSUFFICIENT_FUNDS]
    assert [(f.id, f.code) for f in ws.new_refusals] == [("t2", E.INSUFFICIENT_FUNDS)]
    funded = (account("a", no_overdraft=True, cpo=1_000), account("b"))
    later = WorkingSet(funded, [], [], now=NOW + NS, last_timestamp=1, refusals=ws.new_refusals)
    again = later.apply_transfers(chain)
    assert [(r.code, r.detail) for r in again] == [(r.code, r.detail) for r in first]
    assert (later.created, counters(later, "a")) == ([], (0, 0, 0, 1_000))
    assert one(later, tr("t1", amount=10)).ok


def test_nothing_of_a_chain_left_open_is_kept() -> None:
    """A batch ending inside a chain is malformed: the refusal met inside it is not kept."""
    ws = ledger(account("a", no_overdraft=True), account("b"))
    results = ws.apply_transfers([tr("t0", amount=1), linked(tr("t1")), linked(tr("t2"))])
    assert codes(results) == [
        E.INSUFFICIENT_FUNDS,
        E.LINKED_EVENT_CHAIN_OPEN,
        E.LINKED_EVENT_CHAIN_OPEN,
    ]
    assert [f.id for f in ws.new_refusals] == ["t0"]  # the one outside the chain stays
    assert set(ws.refusals) == {(SYSTEM_TENANT, "t0")}


def _tenant_ledger() -> WorkingSet:
    def owned(tenant: str, account_id: str, **fields: Any) -> Account:
        return msgspec.structs.replace(account(account_id, **fields), tenant=tenant)

    return ledger(
        owned("acme", "a", no_overdraft=True),
        owned("acme", "b"),
        owned("zeta", "c", no_overdraft=True),
        owned("zeta", "d"),
        owned("zeta", "z", no_overdraft=True, cpo=100),
    )


def test_a_refusal_is_answered_again_only_to_its_tenant() -> None:
    """Another tenant reusing the id is tried as if it had never been refused (and gets its
    own refusal kept beside the first); the first tenant still gets its own answer."""
    ws = _tenant_ledger()
    (first,) = ws.apply_transfers([tr("t1", "a", "b")], tenant="acme")
    assert first.code is E.INSUFFICIENT_FUNDS
    (theirs,) = ws.apply_transfers([tr("t1", "c", "d", 7)], tenant="zeta")
    assert theirs.code is E.INSUFFICIENT_FUNDS  # zeta's own answer, not acme's
    assert theirs.detail == "available 0, requested 7"
    assert {(f.tenant, f.id) for f in ws.new_refusals} == {("acme", "t1"), ("zeta", "t1")}
    (again,) = ws.apply_transfers([tr("t1", "a", "b")], tenant="acme")
    assert (again.code, again.detail) == (first.code, first.detail)


def test_another_tenants_transfer_under_a_refused_id_changes_no_answer() -> None:
    """Zeta stores a transfer under an id refused to acme: acme still gets its refusal."""
    ws = _tenant_ledger()
    (first,) = ws.apply_transfers([tr("t1", "a", "b")], tenant="acme")
    (stored,) = ws.apply_transfers([tr("t1", "z", "d")], tenant="zeta")
    assert (stored.ok, stored.exists) == (True, False)  # as if the id were free
    (again,) = ws.apply_transfers([tr("t1", "a", "b")], tenant="acme")
    assert (again.code, again.detail) == (first.code, first.detail)
    (retry,) = ws.apply_transfers([tr("t1", "z", "d")], tenant="zeta")
    assert retry.exists


def test_the_fingerprint_compares_the_fields_as_given() -> None:
    """Metadata key order does not count; every field _exists compares does, and an absent
    field differs from one given with the value it would take."""
    base = tr(metadata={"x": 1, "y": [1, {"b": 2, "a": 1}]})
    assert fingerprint(base) == fingerprint(tr(metadata={"y": [1, {"a": 1, "b": 2}], "x": 1}))
    assert fingerprint(base) == fingerprint(msgspec.structs.replace(base, id="other"))
    changed = [
        tr(),
        tr(debit="c", metadata=base.metadata),
        tr(credit="c", metadata=base.metadata),
        tr(amount=11, metadata=base.metadata),
        tr(currency="USD", metadata=base.metadata),
        tr(code=1, metadata=base.metadata),
        linked(base),
        tr(flags=PENDING, timeout_seconds=1, metadata=base.metadata),
        tr(flags=PENDING, metadata=base.metadata),
        post("t1", "h"),
        post("t1", "h2"),
    ]
    digests = [fingerprint(r) for r in [base, *changed]]
    assert len(set(digests)) == len(digests)


def test_paycores_own_settlement_steps_keep_no_refusal() -> None:
    """A step that posts or voids a saga's (or a payment's) hold is retried until it
    completes: its refusal is answered, not kept."""
    ws, _ = hold_ledger(40)
    (first,) = ws.apply_transfers([post("xs.post.1", "h", 41)], settlement=True)
    assert first.code is E.AMOUNT_EXCEEDS_PENDING_AMOUNT
    assert ws.new_refusals == []
    assert ws.apply_transfers([post("xs.post.1", "h")], settlement=True)[0].ok


def test_a_request_too_deep_to_fingerprint_is_answered_but_not_kept() -> None:
    deep: dict[str, Any] = {}
    for _ in range(5_000):
        deep = {"x": deep}
    ws = ledger(account("a", no_overdraft=True), account("b"))
    reject(ws, tr(metadata=deep), E.INSUFFICIENT_FUNDS)
    assert ws.new_refusals == []


def test_a_refusal_decided_with_both_accounts_in_view_is_answered_and_kept() -> None:
    """The cluster router refuses a cross-shard transfer having read both accounts; the
    debit account's shard answers that refusal and keeps it under the id, so a resend is
    refused the same way even once nothing would refuse it any more. An id already used
    answers as it did first."""
    ws = ledger(account("a"), account("c"))
    detail = "credit account 'b' not found"
    ws.decided = {0: (E.ACCOUNT_NOT_FOUND, detail)}  # by the item's place in the batch
    first = reject(ws, tr("t1"), E.ACCOUNT_NOT_FOUND)
    assert first.detail == detail
    ws.decided = {}
    assert one(ws, tr("t1")).code is E.ACCOUNT_NOT_FOUND  # kept, though nothing decides it
    assert one(ws, tr("t2", credit="c")).ok
    ws.decided = {0: (E.ACCOUNT_CLOSED, "credit account 'c' is closed")}
    assert one(ws, tr("t2", credit="c")).exists
