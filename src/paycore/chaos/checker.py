"""The checker: pure functions from a run's history and final state to its violations.

Soundness first: an operation whose outcome was ambiguous (``info``) may or may not have
taken effect, but never twice; an acknowledged one (any 2xx, a replay included) must be
there exactly once; a rejected one (a definite 4xx, which the contract says changed
nothing) must have left no trace. What is checked, by ``ViolationKind``:

* ``money_not_conserved``: per currency, over every account read (clearing and processor
  accounts included, counted from their balance before the run), posted credits minus
  posted debits sum to zero, and pending debits equal pending credits;
* ``lost_acknowledged``: an acknowledged transfer (single, batch item, hold, post, void),
  payment, refund or payout is missing;
* ``duplicate``: a transfer shows twice, or a payment's captured or refunded amount is
  more than its acknowledged and ambiguous requests could have made, or more payments
  (payouts) moved money than were acknowledged or ambiguous;
* ``rejected_took_effect``: a transfer that was refused is there;
* ``limit_exceeded``: a balance the API reported (an account read during the run, the
  final one, any balance-history record) is below the account's limit;
* ``captured_exceeds_authorized``, ``refunded_exceeds_captured``: per payment;
* ``unresolved``: a saga still ``in_flight``, a payment or payout still ``processing``, a
  refund still ``pending``, or the system not quiet within the run's bound;
* ``balance_mismatch``: an account's counters differ from the replay of its transfer
  listing (or a balance-history record was not monotonic in time);
* ``chain_not_atomic``: a linked chain (items of a batch flagged ``linked``, closed by
  the first item not flagged) was answered in part (some items ok, some refused), or
  only some of its transfers are there;
* ``post_exceeds_hold``: a post of a hold moved more than the hold held;
* ``hold_inconsistent``: a hold resolved (posted or voided) more than once, or whose
  status disagrees with the transfers that resolve it;
* ``idempotency_mismatch``: two definite answers under one Idempotency-Key differ;
* ``server_error``: a 500 (a bug, never a planned answer);
* ``audit``: what ``paycore audit`` found on the store, when the run had access to it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

import msgspec

from paycore.chaos.history import Attempt, Outcome, answered, group_ops, op_outcome
from paycore.chaos.state import FinalState, Json

__all__ = [
    "Violation",
    "ViolationKind",
    "check",
    "check_answers",
    "check_chains",
    "check_conservation",
    "check_holds",
    "check_ledger_ops",
    "check_limits",
    "check_listings",
    "check_payments",
    "check_quiet",
    "replay_counters",
]


class ViolationKind(StrEnum):
    MONEY_NOT_CONSERVED = "money_not_conserved"
    LOST_ACKNOWLEDGED = "lost_acknowledged"
    DUPLICATE = "duplicate"
    REJECTED_TOOK_EFFECT = "rejected_took_effect"
    LIMIT_EXCEEDED = "limit_exceeded"
    CAPTURED_EXCEEDS_AUTHORIZED = "captured_exceeds_authorized"
    REFUNDED_EXCEEDS_CAPTURED = "refunded_exceeds_captured"
    UNRESOLVED = "unresolved"
    BALANCE_MISMATCH = "balance_mismatch"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    CHAIN_NOT_ATOMIC = "chain_not_atomic"
    POST_EXCEEDS_HOLD = "post_exceeds_hold"
    HOLD_INCONSISTENT = "hold_inconsistent"
    SERVER_ERROR = "server_error"
    AUDIT = "audit"


class Violation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One broken promise, with what shows it."""

    kind: ViolationKind
    detail: str
    evidence: dict[str, Any] = {}


Ops = Mapping[int, Sequence[Attempt]]
_POST_OR_VOID: Final = re.compile(r"^/v1/transfers/([^/]+)/(post|void)$")
_CAPTURE: Final = re.compile(r"^/v1/payments/([^/]+)/capture$")
_SYSTEM_PREFIXES: Final = ("clearing:", "psp:")
_COUNTERS: Final = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


def check(
    history: Iterable[Attempt], state: FinalState, *, audit: Iterable[str] = ()
) -> list[Violation]:
    """Every violation in a run (see the module docstring); ``audit``: the lines of a
    ``paycore audit`` of the store (each one a violation), when the run could read it."""
    ops = group_ops(history)
    found: list[Violation] = []
    found += check_answers(ops)
    found += check_ledger_ops(ops, state)
    found += check_chains(ops, state)
    found += check_listings(state)
    found += check_holds(state)
    found += check_conservation(state)
    found += check_limits(ops, state)
    found += check_payments(ops, state)
    found += check_quiet(state)
    found += [Violation(ViolationKind.AUDIT, line) for line in audit]
    return found


# -- answers -----------------------------------------------------------------------------


def check_answers(ops: Ops) -> list[Violation]:
    """Under one key every definite answer is the same (status and body); no 500s."""
    found: list[Violation] = []
    for op, attempts in ops.items():
        for a in attempts:
            if a.status == 500:
                found.append(
                    Violation(
                        ViolationKind.SERVER_ERROR,
                        f"{a.request.method} {a.request.path} answered 500",
                        {"op": op, "attempt": a.attempt, "response": a.response},
                    )
                )
        definite = [a for a in attempts if answered(a)]
        if attempts and attempts[0].request.idempotency_key and len(definite) > 1:
            first = definite[0]
            for later in definite[1:]:
                if (later.status, later.response) != (first.status, first.response):
                    found.append(
                        Violation(
                            ViolationKind.IDEMPOTENCY_MISMATCH,
                            f"{first.request.method} {first.request.path} under key "
                            f"{first.request.idempotency_key!r} answered {first.status} "
                            f"then {later.status}",
                            {"op": op, "first": first.response, "later": later.response},
                        )
                    )
                    break
    return found


# -- ledger writes -----------------------------------------------------------------------


def _ledger_items(attempts: Sequence[Attempt]) -> list[tuple[str, Outcome]]:
    """The transfer ids an operation asked for, each with its outcome."""
    call = attempts[0].request
    body = call.body if isinstance(call.body, dict) else {}
    outcome = op_outcome(attempts)
    if call.method != "POST":
        return []
    if call.path == "/v1/transfers":
        return [(str(body["id"]), outcome)]
    if call.path == "/v1/transfers/batch":
        ids = [str(item["id"]) for item in body.get("transfers", [])]
        if outcome is not Outcome.OK:
            return [(i, outcome) for i in ids]
        ok = next(a for a in attempts if a.outcome is Outcome.OK)
        results = ok.response.get("results", []) if isinstance(ok.response, dict) else []
        return [
            (i, Outcome.OK if "status" in r else Outcome.FAIL)
            for i, r in zip(ids, results, strict=False)
        ]
    match = _POST_OR_VOID.match(call.path)
    if match is not None:
        own = body.get("id")
        if own is None:
            from paycore.api.routes.transfers import resolving_transfer_id  # noqa: PLC0415

            own = resolving_transfer_id(match.group(2), match.group(1))
        return [(str(own), outcome)]
    return []


def _is_system(account_id: str) -> bool:
    """Clearing and processor accounts: their listings show a saga's or a payment's own
    steps (a cross-shard transfer's credit step has the client's id on the other shard)."""
    return account_id.startswith(_SYSTEM_PREFIXES)


def _presence(state: FinalState) -> tuple[Counter[str], Counter[str]]:
    """How often each transfer id shows in its debit account's listing, and in any
    client account's listing."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for account_id, listing in state.transfers.items():
        if _is_system(account_id):
            continue
        for t in listing:
            anywhere[t["id"]] += 1
            if t["debit_account_id"] == account_id:
                own[t["id"]] += 1
    return own, anywhere


def check_ledger_ops(ops: Ops, state: FinalState) -> list[Violation]:
    """Acknowledged transfers are there once, ambiguous ones at most once, refused ones
    not at all (as the listing of their debit account shows them)."""
    own, anywhere = _presence(state)
    found: list[Violation] = []
    for op, attempts in ops.items():
        for transfer_id, outcome in _ledger_items(attempts):
            n = own[transfer_id]
            evidence = {"op": op, "transfer_id": transfer_id, "outcome": outcome.value}
            if outcome is Outcome.OK and n == 0:
                found.append(
                    Violation(
                        ViolationKind.LOST_ACKNOWLEDGED,
                        f"transfer {transfer_id} was acknowledged and is missing",
                        evidence,
                    )
                )
            elif outcome is Outcome.FAIL and anywhere[transfer_id]:
                found.append(
                    Violation(
                        ViolationKind.REJECTED_TOOK_EFFECT,
                        f"transfer {transfer_id} was refused and is there",
                        evidence,
                    )
                )
            if n > 1:
                found.append(
                    Violation(
                        ViolationKind.DUPLICATE,
                        f"transfer {transfer_id} shows {n} times",
                        evidence,
                    )
                )
    return found


# -- linked chains and holds --------------------------------------------------------------


def _chains(items: Sequence[Any]) -> list[list[int]]:
    """The linked chains of a batch, as lists of item positions (a chain is closed by the
    first item not flagged ``linked``, or by the end of the batch)."""
    chains: list[list[int]] = []
    current: list[int] = []
    for i, item in enumerate(items):
        linked = isinstance(item, dict) and bool(item.get("linked"))
        if current or linked:
            current.append(i)
        if current and not linked:
            chains.append(current)
            current = []
    if current:
        chains.append(current)
    return [c for c in chains if len(c) > 1]


def check_chains(ops: Ops, state: FinalState) -> list[Violation]:
    """A linked chain takes effect whole or not at all: in its answer (every item ok, or
    every item refused) and in the final listings (all of its transfers, or none)."""
    _, anywhere = _presence(state)
    found: list[Violation] = []
    for op, attempts in ops.items():
        call = attempts[0].request
        if call.method != "POST" or call.path != "/v1/transfers/batch":
            continue
        items = call.body.get("transfers", []) if isinstance(call.body, dict) else []
        ok = next((a for a in attempts if a.outcome is Outcome.OK), None)
        response = ok.response if ok is not None and isinstance(ok.response, dict) else {}
        results = response.get("results", [])
        for chain in _chains(items):
            ids = [str(items[i]["id"]) for i in chain]
            evidence: dict[str, Any] = {"op": op, "chain": ids}
            if ok is not None:
                answered_ok = [i < len(results) and "status" in results[i] for i in chain]
                if any(answered_ok) and not all(answered_ok):
                    found.append(
                        Violation(
                            ViolationKind.CHAIN_NOT_ATOMIC,
                            f"linked chain {ids} answered in part",
                            {
                                **evidence,
                                "results": [results[i] for i in chain if i < len(results)],
                            },
                        )
                    )
            present = [i for i in ids if anywhere[i]]
            if present and len(present) != len(ids):
                found.append(
                    Violation(
                        ViolationKind.CHAIN_NOT_ATOMIC,
                        f"linked chain {ids}: only {present} took effect",
                        {**evidence, "present": present},
                    )
                )
    return found


def check_holds(state: FinalState) -> list[Violation]:
    """Every hold in the listings: resolved at most once, its status agreeing with what
    resolved it, and a post never moving more than the hold held."""
    transfers: dict[str, Json] = {}
    for account_id, listing in state.transfers.items():
        if not _is_system(account_id):
            for t in listing:
                transfers.setdefault(str(t["id"]), t)
    holds = {i: t for i, t in transfers.items() if (t.get("flags") or {}).get("pending")}
    resolvers: dict[str, list[Json]] = defaultdict(list)
    for t in transfers.values():
        flags = t.get("flags") or {}
        if (flags.get("post_pending") or flags.get("void_pending")) and t.get("pending_id"):
            resolvers[str(t["pending_id"])].append(t)
    found: list[Violation] = []
    for hold_id, hold in holds.items():
        done = resolvers.get(hold_id, [])
        evidence = {"transfer_id": hold_id, "resolved_by": [str(t["id"]) for t in done]}
        posts = [t for t in done if (t.get("flags") or {}).get("post_pending")]
        for post in posts:
            if int(post["amount"]) > int(hold["amount"]):
                found.append(
                    Violation(
                        ViolationKind.POST_EXCEEDS_HOLD,
                        f"post {post['id']} moved {post['amount']} of hold {hold_id}, which "
                        f"held {hold['amount']}",
                        evidence,
                    )
                )
        status = str(hold["status"])
        want = {"posted": (1, 1), "voided": (1, 0)}.get(status, (0, 0))  # (resolvers, posts)
        if len(done) > 1:
            detail = f"hold {hold_id} resolved {len(done)} times"
        elif (len(done), len(posts)) != want:
            detail = f"hold {hold_id} is {status} but resolved by {evidence['resolved_by']}"
        else:
            continue
        found.append(Violation(ViolationKind.HOLD_INCONSISTENT, detail, evidence))
    return found


# -- listings: duplicates, replay, sagas -------------------------------------------------


def replay_counters(account_id: str, listing: Iterable[Json]) -> dict[str, int]:
    """An account's four counters replayed from its transfers as the API lists them: a
    hold counts as pending while its status is ``pending`` (then its post counts as
    posted; a void or an expiry releases it), a saga as pending while ``in_flight``."""
    c = dict.fromkeys(_COUNTERS, 0)
    for t in listing:
        flags = t.get("flags") or {}
        status = t["status"]
        amount = int(t["amount"])
        if flags.get("pending"):
            kind = "pending" if status == "pending" else None
        elif flags.get("void_pending"):
            kind = None
        elif flags.get("post_pending"):
            kind = "posted"
        else:
            kind = {"posted": "posted", "in_flight": "pending"}.get(status)
        if kind is None:
            continue
        if t["debit_account_id"] == account_id:
            c[f"debits_{kind}"] += amount
        if t["credit_account_id"] == account_id:
            c[f"credits_{kind}"] += amount
    return c


def check_listings(state: FinalState) -> list[Violation]:
    """No transfer twice in a listing; every account equals the replay of its listing;
    no saga still in flight."""
    found: list[Violation] = []
    for account_id, listing in state.transfers.items():
        counts = Counter(t["id"] for t in listing)
        for transfer_id, n in counts.items():
            if n > 1:
                found.append(
                    Violation(
                        ViolationKind.DUPLICATE,
                        f"transfer {transfer_id} listed {n} times on {account_id}",
                        {"account_id": account_id, "transfer_id": transfer_id},
                    )
                )
        for t in listing:
            if t["status"] == "in_flight" and t["debit_account_id"] == account_id:
                found.append(
                    Violation(
                        ViolationKind.UNRESOLVED,
                        f"cross-shard transfer {t['id']} still in flight",
                        {"transfer_id": t["id"]},
                    )
                )
        account = state.accounts.get(account_id)
        if account is None:
            continue
        replayed = replay_counters(account_id, listing)
        shown = {k: int(account["balance"][k]) for k in _COUNTERS}
        if replayed != shown:
            found.append(
                Violation(
                    ViolationKind.BALANCE_MISMATCH,
                    f"account {account_id}: counters {shown} but its transfers replay to "
                    f"{replayed}",
                    {"account_id": account_id, "shown": shown, "replayed": replayed},
                )
            )
    return found


# -- conservation ------------------------------------------------------------------------


def check_conservation(state: FinalState) -> list[Violation]:
    """Per currency: what the run changed sums to zero (posted balances; pending debits
    against pending credits), system accounts counted from their balance before the run."""
    posted: dict[str, int] = defaultdict(int)
    pending: dict[str, int] = defaultdict(int)
    for account_id, account in state.accounts.items():
        b = account["balance"]
        currency = str(account["currency"])
        posted[currency] += int(b["credits_posted"]) - int(b["debits_posted"])
        pending[currency] += int(b["credits_pending"]) - int(b["debits_pending"])
        start = state.baseline.get(account_id)
        if start is not None:
            s = start["balance"]
            posted[currency] -= int(s["credits_posted"]) - int(s["debits_posted"])
            pending[currency] -= int(s["credits_pending"]) - int(s["debits_pending"])
    found: list[Violation] = []
    for currency in sorted(posted):
        if posted[currency] or pending[currency]:
            found.append(
                Violation(
                    ViolationKind.MONEY_NOT_CONSERVED,
                    f"{currency}: posted balances sum to {posted[currency]}, pending credits "
                    f"minus pending debits to {pending[currency]} (both must be 0)",
                    {
                        "currency": currency,
                        "posted": posted[currency],
                        "pending": pending[currency],
                    },
                )
            )
    return found


# -- limits ------------------------------------------------------------------------------


def _debit_limit(flags: Mapping[str, Any]) -> int | None:
    if flags.get("no_overdraft"):
        return 0
    limit = flags.get("credit_limit")
    return None if limit is None else int(limit)


def _below(balance: Mapping[str, Any], limit: int) -> bool:
    debits = int(balance["debits_posted"]) + int(balance["debits_pending"])
    return debits > int(balance["credits_posted"]) + limit


def check_limits(ops: Ops, state: FinalState) -> list[Violation]:
    """No balance the API reported is below its account's limit: account reads during the
    run, the final accounts, every balance-history record."""
    found: list[Violation] = []

    def judge(account: Mapping[str, Any], balance: Mapping[str, Any], where: str) -> None:
        limit = _debit_limit(account.get("flags") or {})
        if limit is not None and _below(balance, limit):
            found.append(
                Violation(
                    ViolationKind.LIMIT_EXCEEDED,
                    f"account {account['id']} below its limit ({limit}) {where}",
                    {"account_id": account["id"], "balance": dict(balance)},
                )
            )

    for attempts in ops.values():
        for a in attempts:
            body = a.response
            reads_account = a.request.method == "GET" and a.request.path.startswith("/v1/accounts/")
            if (
                reads_account
                and a.outcome is Outcome.OK
                and isinstance(body, dict)
                and ("balance" in body)
            ):
                judge(body, body["balance"], f"in a read at {a.complete_wall:.3f}")
    for final in state.accounts.values():
        judge(final, final["balance"], "at the end")
    for account_id, records in state.balance_history.items():
        account = state.accounts.get(account_id)
        if account is None:
            continue
        for record in records:
            judge(account, record, f"in its balance history at {record.get('recorded_at')}")
    return found


# -- payments ----------------------------------------------------------------------------


class _PaymentOps:
    """What the history says about each payment, refund and payout."""

    def __init__(self) -> None:
        self.payments: dict[str, Outcome] = {}  # id -> ok (an id is only known from a 2xx)
        self.ambiguous_payments: Counter[str] = Counter()  # merchant -> creations, id unknown
        self.ambiguous_payouts: Counter[str] = Counter()  # wallet -> payouts, id unknown
        self.seen_captured: dict[str, int] = defaultdict(int)  # max amount_captured shown
        self.capture_budget: dict[str, int] = defaultdict(int)  # acked + ambiguous captures
        self.refunds: dict[str, Json] = {}  # id -> the refund as first answered
        self.refund_budget: dict[str, int] = defaultdict(int)  # ambiguous, id unknown
        self.payouts: dict[str, Json] = {}

    def add(self, attempts: Sequence[Attempt]) -> None:
        call = attempts[0].request
        if call.method != "POST":
            return
        outcome = op_outcome(attempts)
        ok = next((a for a in attempts if a.outcome is Outcome.OK), None)
        body = call.body if isinstance(call.body, dict) else {}
        response = ok.response if ok is not None and isinstance(ok.response, dict) else {}
        for a in attempts:  # every payment view shown: captured never goes back
            shown = a.response if isinstance(a.response, dict) else {}
            if a.outcome is Outcome.OK and "amount_captured" in shown:
                pid = str(shown["id"])
                self.seen_captured[pid] = max(self.seen_captured[pid], shown["amount_captured"])
        if call.path == "/v1/payments":
            if ok is not None:
                pid = str(response["id"])
                self.payments[pid] = Outcome.OK
                if body.get("capture", "automatic") == "automatic":
                    self.capture_budget[pid] += int(body["amount"])
            elif outcome is Outcome.INFO:
                self.ambiguous_payments[str(body["merchant_account_id"])] += 1
        elif (match := _CAPTURE.match(call.path)) is not None:
            if outcome is not Outcome.FAIL:
                amount = body.get("amount")
                self.capture_budget[match.group(1)] += int(amount) if amount else 1 << 62
        elif call.path == "/v1/refunds":
            if ok is not None:
                self.refunds[str(response["id"])] = response
            elif outcome is Outcome.INFO:
                amount = body.get("amount")
                self.refund_budget[str(body["payment_id"])] += int(amount) if amount else 1 << 62
        elif call.path == "/v1/payouts":
            if ok is not None:
                self.payouts[str(response["id"])] = response
            elif outcome is Outcome.INFO:
                self.ambiguous_payouts[str(body["wallet_account_id"])] += 1


def _ledger_owners(state: FinalState, key: str) -> dict[str, set[str]]:
    """Account -> the payment (``key="payment"``) or payout ids its ledger transfers name
    (``metadata[key]``), from the listings of the accounts they credit or debit."""
    owners: dict[str, set[str]] = defaultdict(set)
    for account_id, listing in state.transfers.items():
        for t in listing:
            meta = t.get("metadata") or {}
            if key in meta and "refund" not in meta:
                owners[account_id].add(str(meta[key]))
    return owners


def check_payments(ops: Ops, state: FinalState) -> list[Violation]:
    """Payments, refunds and payouts: acknowledged ones exist and are resolved, amounts
    within bounds, and no more of them moved money than were asked for."""
    seen = _PaymentOps()
    for attempts in ops.values():
        seen.add(attempts)
    found: list[Violation] = []

    def flag(kind: ViolationKind, detail: str, **evidence: Any) -> None:
        found.append(Violation(kind, detail, evidence))

    for pid in seen.payments:
        payment = state.payments.get(pid)
        if payment is None:
            flag(
                ViolationKind.LOST_ACKNOWLEDGED,
                f"payment {pid} acknowledged, missing",
                payment_id=pid,
            )
            continue
        captured, amount = int(payment["amount_captured"]), int(payment["amount"])
        refunded = int(payment["amount_refunded"]) + int(payment["amount_refund_pending"])
        if payment["status"] == "processing":
            flag(ViolationKind.UNRESOLVED, f"payment {pid} still processing", payment_id=pid)
        if captured > amount:
            flag(
                ViolationKind.CAPTURED_EXCEEDS_AUTHORIZED,
                f"payment {pid} captured {captured} of {amount}",
                payment_id=pid,
            )
        if refunded > captured:
            flag(
                ViolationKind.REFUNDED_EXCEEDS_CAPTURED,
                f"payment {pid} refunded {refunded} of {captured} captured",
                payment_id=pid,
            )
        if captured < seen.seen_captured[pid]:
            flag(
                ViolationKind.LOST_ACKNOWLEDGED,
                f"payment {pid} showed {seen.seen_captured[pid]} captured, now {captured}",
                payment_id=pid,
            )
        if captured > seen.capture_budget[pid]:
            flag(
                ViolationKind.DUPLICATE,
                f"payment {pid} captured {captured}, more than the {seen.capture_budget[pid]} "
                "its captures asked for",
                payment_id=pid,
            )
        succeeded = sum(
            int(r["amount"])
            for rid, r in state.refunds.items()
            if r["payment_id"] == pid and rid in seen.refunds and r["status"] == "succeeded"
        )
        if int(payment["amount_refunded"]) > succeeded + seen.refund_budget[pid]:
            flag(
                ViolationKind.DUPLICATE,
                f"payment {pid} refunded {payment['amount_refunded']}, more than its "
                f"known refunds ({succeeded}) and ambiguous ones "
                f"({seen.refund_budget[pid]})",
                payment_id=pid,
            )
    for kind, acknowledged, rows, open_status in (
        ("refund", seen.refunds, state.refunds, "pending"),
        ("payout", seen.payouts, state.payouts, "processing"),
    ):
        for oid in acknowledged:
            row = rows.get(oid)
            if row is None:
                flag(
                    ViolationKind.LOST_ACKNOWLEDGED,
                    f"{kind} {oid} acknowledged, missing",
                    **{f"{kind}_id": oid},
                )
            elif row["status"] == open_status:
                flag(
                    ViolationKind.UNRESOLVED,
                    f"{kind} {oid} still {open_status}",
                    **{f"{kind}_id": oid},
                )
    # Money moved by payments (payouts) no client op can account for: a duplicate, or
    # the effect of a refused request.
    for key, known, budget in (
        ("payment", set(seen.payments), seen.ambiguous_payments),
        ("payout", set(seen.payouts), seen.ambiguous_payouts),
    ):
        for account_id, ids in _ledger_owners(state, key).items():
            if account_id not in budget and not _is_client_side(account_id, key, state):
                continue
            unknown = ids - known
            if len(unknown) > budget[account_id]:
                flag(
                    ViolationKind.DUPLICATE,
                    f"{len(unknown)} {key}s moved money on {account_id} that no acknowledged "
                    f"request made ({budget[account_id]} ambiguous)",
                    account_id=account_id,
                    ids=sorted(unknown)[:20],
                )
    return found


def _is_client_side(account_id: str, key: str, state: FinalState) -> bool:
    """Whether ``account_id`` is a merchant (payments) or wallet (payouts) of the run: the
    unknown-id budget is kept per such account, not per processor account."""
    del key
    return account_id in state.accounts and not _is_system(account_id)


# -- quiet -------------------------------------------------------------------------------


def check_quiet(state: FinalState) -> list[Violation]:
    """The system got quiet (no saga, no processing payment) within the run's bound."""
    if state.quiet:
        return []
    return [
        Violation(
            ViolationKind.UNRESOLVED,
            f"still not quiet {state.quiet_after:.1f} s after the faults stopped",
            {"still_open": state.still_open[:50]},
        )
    ]
