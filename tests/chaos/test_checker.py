"""The checker finds what it claims to: doctored histories and states, one fault each."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from paycore.chaos.checker import (
    Violation,
    ViolationKind,
    check,
    check_conservation,
    replay_counters,
)
from paycore.chaos.history import Attempt, Call, Outcome, classify
from paycore.chaos.state import FinalState

K = ViolationKind
A, B, S, M = "w.a", "w.b", "src", "m.1"
PSP = "psp:s0:acq-a:USD"


def transfer(tid: str, debit: str, credit: str, amount: int, **kw: Any) -> dict[str, Any]:
    flags = {
        "pending": False,
        "post_pending": False,
        "void_pending": False,
        "linked": False,
        "balancing": False,
    } | kw.pop("flags", {})
    return {
        "id": tid,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": "USD",
        "status": kw.pop("status", "posted"),
        "flags": flags,
        "metadata": kw.pop("metadata", None),
        **kw,
    }


class Run:
    """A small clean run: a history and the final state it should leave."""

    def __init__(self) -> None:
        self.history: list[Attempt] = []
        self.op = 0
        self.flags = {A: {"no_overdraft": True}, B: {"no_overdraft": True}, S: {}, M: {}, PSP: {}}
        self.transfers: list[dict[str, Any]] = []
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}

    def send(
        self,
        path: str,
        body: Any,
        status: int | None,
        response: Any = None,
        *,
        method: str = "POST",
        attempts: int = 1,
    ) -> int:
        self.op += 1
        call = Call(method=method, path=path, body=body, idempotency_key=f"k{self.op}")
        for n in range(1, attempts + 1):
            last = n == attempts
            code = response.get("code") if isinstance(response, dict) else None
            st = status if last else None
            outcome = classify(st, code) if st is not None else Outcome.INFO
            self.history.append(
                Attempt(
                    op=self.op,
                    client=0,
                    kind="x",
                    attempt=n,
                    request=call,
                    invoke_mono=n,
                    invoke_wall=n,
                    complete_mono=n,
                    complete_wall=n,
                    outcome=outcome,
                    status=st,
                    response=response if last else None,
                )
            )
        return self.op

    def state(self) -> FinalState:
        listings: dict[str, list[dict[str, Any]]] = {a: [] for a in self.flags}
        for t in self.transfers:
            listings[t["debit_account_id"]].append(t)
            listings[t["credit_account_id"]].append(t)
        accounts = {}
        for account_id, listing in listings.items():
            accounts[account_id] = {
                "id": account_id,
                "currency": "USD",
                "flags": self.flags[account_id],
                "balance": replay_counters(account_id, listing),
            }
        return FinalState(
            accounts=accounts,
            transfers=listings,
            payments=copy.deepcopy(self.payments),
            refunds=copy.deepcopy(self.refunds),
        )


def clean_run() -> Run:
    run = Run()
    fund = transfer("f1", S, A, 1000)
    run.send("/v1/transfers", {"id": "f1"}, 201, fund)
    run.transfers.append(fund)
    t1 = transfer("t1", A, B, 100)
    run.send("/v1/transfers", {"id": "t1"}, 201, t1, attempts=3)  # ambiguous, then acked
    run.transfers.append(t1)
    run.send("/v1/transfers", {"id": "t2"}, 422, {"code": "insufficient_funds"})
    run.send("/v1/transfers", {"id": "t3"}, None, attempts=2)  # ambiguous, never happened
    t4 = transfer("t4", A, B, 7)
    run.send("/v1/transfers", {"id": "t4"}, None, attempts=2)  # ambiguous, happened
    run.transfers.append(t4)
    hold = transfer("h1", A, B, 30, flags={"pending": True}, status="posted")
    run.send("/v1/transfers", {"id": "h1", "pending": True}, 201, hold)
    post = transfer("p1", A, B, 20, flags={"post_pending": True}, pending_id="h1")
    run.send("/v1/transfers/h1/post", {"id": "p1", "amount": 20}, 201, post)
    run.transfers += [hold, post]
    run.send(
        "/v1/transfers/h1/void", {"id": "v1"}, 409, {"code": "pending_transfer_already_posted"}
    )
    batch = {"transfers": [{"id": "b1"}, {"id": "b2"}]}
    results = {
        "results": [
            {"id": "b1", "status": "posted"},
            {"id": "b2", "error": {"code": "insufficient_funds"}},
        ]
    }
    run.send("/v1/transfers/batch", batch, 200, results)
    run.transfers.append(transfer("b1", B, A, 5))
    run.send(
        f"/v1/accounts/{A}",
        None,
        200,
        {
            "id": A,
            "flags": {"no_overdraft": True},
            "balance": {
                "debits_posted": 10,
                "debits_pending": 0,
                "credits_posted": 1000,
                "credits_pending": 0,
            },
        },
        method="GET",
    )
    payment = {
        "id": "pay1",
        "status": "succeeded",
        "amount": 500,
        "amount_captured": 300,
        "amount_refunded": 100,
        "amount_refund_pending": 0,
        "merchant_account_id": M,
    }
    authorized = {
        **payment,
        "status": "requires_capture",
        "amount_captured": 0,
        "amount_refunded": 0,
    }
    run.send(
        "/v1/payments",
        {"amount": 500, "merchant_account_id": M, "capture": "manual"},
        201,
        authorized,
    )
    run.send("/v1/payments/pay1/capture", {"amount": 300}, 200, {**payment, "amount_refunded": 0})
    refund = {"id": "re1", "payment_id": "pay1", "status": "succeeded", "amount": 100}
    run.send("/v1/refunds", {"payment_id": "pay1", "amount": 100}, 201, refund)
    run.payments["pay1"] = payment
    run.refunds["re1"] = refund
    run.transfers += [
        transfer("pm.pay1.p1", PSP, M, 300, metadata={"payment": "pay1"}),
        transfer("pm.re1.p", M, PSP, 100, metadata={"payment": "pay1", "refund": "re1"}),
    ]
    return run


def kinds(found: list[Violation]) -> set[ViolationKind]:
    return {v.kind for v in found}


def test_clean_run_has_no_violation() -> None:
    """A run whose state matches its history (ambiguous ops done or not) is clean."""
    run = clean_run()
    assert check(run.history, run.state()) == []


def test_lost_acknowledged_transfer() -> None:
    """An acknowledged transfer missing from the ledger is reported as lost."""
    run = clean_run()
    run.transfers = [t for t in run.transfers if t["id"] != "t1"]
    assert kinds(check(run.history, run.state())) == {K.LOST_ACKNOWLEDGED}


def test_lost_acknowledged_payment_and_refund() -> None:
    """An acknowledged payment or refund the API no longer knows is reported as lost."""
    run = clean_run()
    state = run.state()
    del state.refunds["re1"]
    found = check(run.history, state)
    assert K.LOST_ACKNOWLEDGED in kinds(found)
    state = run.state()
    del state.payments["pay1"]
    assert K.LOST_ACKNOWLEDGED in kinds(check(run.history, state))


def test_duplicate_transfer() -> None:
    """A transfer that shows twice is a duplicate (even an ambiguous one)."""
    run = clean_run()
    state = run.state()
    t4 = next(t for t in run.transfers if t["id"] == "t4")
    state.transfers[A].append(t4)
    state.accounts[A]["balance"] = replay_counters(A, state.transfers[A])
    assert K.DUPLICATE in kinds(check(run.history, state))


def test_duplicate_payment_effects() -> None:
    """A capture or refund applied twice, or a payment nobody made, is a duplicate."""
    run = clean_run()
    run.payments["pay1"]["amount_captured"] = 450  # the 300 capture... and more
    assert K.DUPLICATE in kinds(check(run.history, run.state()))
    run = clean_run()
    run.payments["pay1"]["amount_refunded"] = 200
    assert K.DUPLICATE in kinds(check(run.history, run.state()))
    run = clean_run()
    run.transfers.append(transfer("pm.pay9.c1", PSP, M, 50, metadata={"payment": "pay9"}))
    assert kinds(check(run.history, run.state())) == {K.DUPLICATE}


def test_overdraft() -> None:
    """A no-overdraft account below zero, at the end or in a read, is reported."""
    run = clean_run()
    run.transfers.append(transfer("t4", A, B, 5000))  # the ambiguous t4, much larger
    run.transfers = [t for t in run.transfers if not (t["id"] == "t4" and t["amount"] == 7)]
    assert K.LIMIT_EXCEEDED in kinds(check(run.history, run.state()))
    run = clean_run()
    run.send(
        f"/v1/accounts/{B}",
        None,
        200,
        {
            "id": B,
            "flags": {"no_overdraft": True},
            "balance": {
                "debits_posted": 11,
                "debits_pending": 0,
                "credits_posted": 10,
                "credits_pending": 0,
            },
        },
        method="GET",
    )
    assert kinds(check(run.history, run.state())) == {K.LIMIT_EXCEEDED}


def test_overdraft_in_balance_history() -> None:
    """A balance-history record below the limit is reported."""
    run = clean_run()
    state = run.state()
    state.balance_history[A] = [
        {
            "debits_posted": 5,
            "debits_pending": 0,
            "credits_posted": 0,
            "credits_pending": 0,
            "recorded_at": "then",
        }
    ]
    assert kinds(check(run.history, state)) == {K.LIMIT_EXCEEDED}


@pytest.mark.parametrize("delta", [1, -1], ids=["created", "destroyed"])
def test_money_leak(delta: int) -> None:
    """Money created or destroyed (one balance changed alone) breaks conservation."""
    run = clean_run()
    state = run.state()
    state.accounts[B]["balance"]["credits_posted"] += delta
    found = kinds(check(run.history, state))
    assert K.MONEY_NOT_CONSERVED in found
    assert K.BALANCE_MISMATCH in found


def test_conservation_counts_system_accounts_from_where_they_started() -> None:
    """A cluster that served earlier runs starts with money in its processor accounts:
    conservation holds on what this run changed, and a leak is still caught."""
    import copy

    earlier: dict[str, Any] = {"id": "psp:s0:sim-a:USD", "currency": "USD", "balance": {
        "debits_posted": 500, "credits_posted": 0, "debits_pending": 70,
        "credits_pending": 0, "available": -500,
    }}  # fmt: skip
    run = clean_run()
    state = run.state()
    state.accounts[earlier["id"]] = copy.deepcopy(earlier)
    # Without the baseline, the earlier money looks destroyed...
    assert K.MONEY_NOT_CONSERVED in kinds(check_conservation(state))
    # ...with it, the run conserved money...
    state.baseline = {earlier["id"]: copy.deepcopy(earlier)}
    assert check_conservation(state) == []
    # ...and a leak during the run is still one.
    state.accounts[earlier["id"]]["balance"]["debits_posted"] += 9
    assert K.MONEY_NOT_CONSERVED in kinds(check_conservation(state))


def test_pending_leak() -> None:
    """Pending debits that no pending credit matches break conservation."""
    run = clean_run()
    state = run.state()
    state.accounts[A]["balance"]["debits_pending"] += 3
    assert K.MONEY_NOT_CONSERVED in kinds(check(run.history, state))


def test_rejected_op_took_effect() -> None:
    """A refused transfer (single, or a batch item) that is there anyway is reported."""
    run = clean_run()
    run.transfers.append(transfer("t2", A, B, 1))
    assert kinds(check(run.history, run.state())) == {K.REJECTED_TOOK_EFFECT}
    run = clean_run()
    run.transfers.append(transfer("b2", A, B, 1))
    assert kinds(check(run.history, run.state())) == {K.REJECTED_TOOK_EFFECT}
    run = clean_run()
    run.transfers.append(transfer("v1", A, B, 30, flags={"void_pending": True}))
    assert kinds(check(run.history, run.state())) == {K.REJECTED_TOOK_EFFECT}


def test_captured_exceeds_authorized() -> None:
    run = clean_run()
    run.payments["pay1"]["amount_captured"] = 600
    assert K.CAPTURED_EXCEEDS_AUTHORIZED in kinds(check(run.history, run.state()))


def test_refunded_exceeds_captured() -> None:
    run = clean_run()
    run.payments["pay1"]["amount_refund_pending"] = 250
    assert K.REFUNDED_EXCEEDS_CAPTURED in kinds(check(run.history, run.state()))


def test_unresolved_saga_and_payment() -> None:
    """A saga still in flight, a payment still processing, a run never quiet: unresolved."""
    run = clean_run()
    next(t for t in run.transfers if t["id"] == "t1")["status"] = "in_flight"
    assert K.UNRESOLVED in kinds(check(run.history, run.state()))
    run = clean_run()
    run.payments["pay1"]["status"] = "processing"
    assert kinds(check(run.history, run.state())) == {K.UNRESOLVED}
    run = clean_run()
    state = run.state()
    state.quiet, state.still_open = False, ["clearing:s0:s1:USD"]
    assert kinds(check(run.history, state)) == {K.UNRESOLVED}


def test_balance_differs_from_replay() -> None:
    """Counters that do not replay from the listing are reported, even if they conserve."""
    run = clean_run()
    state = run.state()
    state.accounts[A]["balance"]["credits_posted"] -= 10
    state.accounts[B]["balance"]["credits_posted"] += 10
    assert kinds(check(run.history, state)) == {K.BALANCE_MISMATCH}


def test_lost_capture_is_reported() -> None:
    """A capture acknowledged with an amount that the payment no longer shows is lost."""
    run = clean_run()
    run.payments["pay1"]["amount_captured"] = 200
    assert K.LOST_ACKNOWLEDGED in kinds(check(run.history, run.state()))


def test_idempotency_mismatch_and_server_error() -> None:
    """Two definite answers under one key that differ, and any 500, are reported."""
    run = clean_run()
    run.op += 1
    call = Call(method="POST", path="/v1/transfers", body={"id": "t9"}, idempotency_key="z")
    for n, (status, body) in enumerate(
        [
            (422, {"code": "insufficient_funds"}),
            (500, {"code": "internal_error"}),
            (409, {"code": "account_closed"}),
        ],
        1,
    ):
        run.history.append(
            Attempt(
                op=run.op,
                client=0,
                kind="x",
                attempt=n,
                request=call,
                invoke_mono=n,
                invoke_wall=n,
                complete_mono=n,
                complete_wall=n,
                outcome=classify(status, body["code"]),
                status=status,
                response=body,
            )
        )
    assert kinds(check(run.history, run.state())) == {K.IDEMPOTENCY_MISMATCH, K.SERVER_ERROR}


def test_audit_lines_are_violations() -> None:
    run = clean_run()
    found = check(run.history, run.state(), audit=["s0: counter_mismatch: ..."])
    assert kinds(found) == {K.AUDIT}


# -- linked chains and holds (issue 13) ----------------------------------------------------


def chain_run() -> Run:
    """A clean run plus two chains across accounts: one that took effect (a hold, its
    partial post, a transfer), one refused whole (its last item overdrew)."""
    run = clean_run()
    items = [
        {"id": "c1", "linked": True},
        {"id": "c2", "linked": True},
        {"id": "c3"},
        {"id": "d1", "linked": True},
        {"id": "d2"},
    ]
    results = {
        "results": [
            {"id": "c1", "status": "pending"},
            {"id": "c2", "status": "posted"},
            {"id": "c3", "status": "posted"},
            {"id": "d1", "error": {"code": "linked_event_failed"}},
            {"id": "d2", "error": {"code": "insufficient_funds"}},
        ]
    }
    run.send("/v1/transfers/batch", {"transfers": items}, 200, results)
    hold = transfer("c1", A, B, 40, flags={"pending": True}, status="posted")
    post = transfer("c2", A, B, 25, flags={"post_pending": True}, pending_id="c1")
    run.transfers += [hold, post, transfer("c3", B, A, 25)]
    return run


def test_chains_and_holds_of_a_clean_run_have_no_violation() -> None:
    """A chain that took effect whole and one refused whole are clean."""
    run = chain_run()
    assert check(run.history, run.state()) == []


def test_chain_that_took_effect_in_part_is_reported() -> None:
    """A chain of which only some transfers are there is not atomic (ambiguous or not)."""
    run = chain_run()
    run.transfers = [t for t in run.transfers if t["id"] != "c3"]
    assert K.CHAIN_NOT_ATOMIC in kinds(check(run.history, run.state()))
    run = chain_run()
    items = [{"id": "e1", "linked": True}, {"id": "e2"}]
    run.send("/v1/transfers/batch", {"transfers": items}, None, attempts=2)  # ambiguous
    run.transfers.append(transfer("e1", B, A, 3))
    assert kinds(check(run.history, run.state())) == {K.CHAIN_NOT_ATOMIC}


def test_chain_answered_in_part_is_reported() -> None:
    """A chain whose answer has ok items and refused items is not atomic."""
    run = clean_run()
    items = [{"id": "g1", "linked": True}, {"id": "g2"}]
    results = {"results": [{"id": "g1", "status": "posted"}, {"id": "g2", "error": {"code": "x"}}]}
    run.send("/v1/transfers/batch", {"transfers": items}, 200, results)
    run.transfers.append(transfer("g1", B, A, 3))
    assert kinds(check(run.history, run.state())) == {K.CHAIN_NOT_ATOMIC}


def test_post_exceeding_its_hold_is_reported() -> None:
    """A post that moved more than its hold held is reported."""
    run = chain_run()
    next(t for t in run.transfers if t["id"] == "c2")["amount"] = 41
    assert kinds(check(run.history, run.state())) == {K.POST_EXCEEDS_HOLD}


def test_hold_resolved_twice_or_with_the_wrong_status_is_reported() -> None:
    """A hold posted and voided, or shown pending though a post resolved it, is reported."""
    run = chain_run()
    run.transfers.append(transfer("c9", A, B, 40, flags={"void_pending": True}, pending_id="c1"))
    found = check(run.history, run.state())
    assert K.HOLD_INCONSISTENT in kinds(found)
    run = chain_run()
    state = run.state()
    for listing in state.transfers.values():
        for t in listing:
            if t["id"] == "c1":
                t["status"] = "expired"
    assert K.HOLD_INCONSISTENT in kinds(check(run.history, state))
