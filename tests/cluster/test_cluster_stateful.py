"""The reference model against a 4-shard cluster: shards must be invisible (issue 13).

The same ``LedgerModel`` that ``tests/store/test_store_stateful.py`` runs against one
shard here runs against a ``ShardedStore`` of four shards (SQLite files or PostgreSQL
databases, one shared hand-moved clock), with the accounts placed in one of two ways:

* ``spread``: the accounts live on all four shards, some pairs together and most apart
  (a bank and a wallet on shard-0, a wallet on shard-1, a credit account on shard-2,
  the euro accounts on shards 3 and 1, ...), so transfers, holds, posts, voids, expiry
  and linked chains cross shards all the time;
* ``one_shard``: every account on shard-0 (transfer ids still hash to every shard), the
  control: what a single shard answers.

The model is one shard, so the cluster must give exactly its answers. The test only
talks to the cluster as a client does, through the ``Store`` protocol: after every
step it compares every item's result (ok or error code, never ``in_flight`` in this
fault-free run), every account's counters (``get_accounts``), every transfer's fields,
timestamp and status (``get_transfers``/``get_transfer``), every account's listing
(``account_transfers``: the client's transfers only, each once, with get_transfer's
timestamp and status, in strictly increasing timestamp order, and a transfer
acknowledged after another one listed after it), the balance history of ``history``
accounts, and conservation over every account of every shard, clearing accounts
included (``audit_cluster``). It never reads a shard directly, so it does not depend
on how cross-shard work is carried out.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypedDict, TypeVar, cast

import msgspec
import pytest
from cluster_support import SHARDS, ClusterDatabases
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from paycore.cluster.close_across import debt_transfer_id
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.errors import ErrorCode, IdempotencyError
from paycore.ledger.model import (
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
    TransferStatus,
)
from paycore.ledger.rules import AccountResult, TransferResult
from paycore.ops.audit import (
    ClusterAuditReport,
    ClusterViolationKind,
    ViolationKind,
    audit_cluster,
)
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    PurgeIdempotency,
    StoredResponse,
)
from reference_model import LedgerModel, MTransfer, Outcome
from store.support import NS, ManualClock
from strategies import account_requests, transfer_batches

T = TypeVar("T")

# Examples per backend, and steps per example, sized to keep the whole suite near its 20
# minutes of CI: spread over the shards (every kind of cross-shard saga) about 30 s on
# SQLite and 40 s on PostgreSQL on this 2-core machine (round trips to four databases at
# every step). The examples are derandomized: the same ones every run, so a deeper search
# is HYPOTHESIS_PROFILE=long (x10), not more CI time.
EXAMPLES = {"sqlite": 20, "postgres": 10}
# All accounts on one shard: the routing around the single-shard path that the store's own
# state machine covers (tests/store/test_store_stateful.py); half as many again.
ONE_SHARD_EXAMPLES = {"sqlite": 10, "postgres": 5}
STEPS = 50
_DEFAULT = settings.default
assert _DEFAULT is not None  # the profile tests/conftest.py loads
if _DEFAULT.max_examples > 100:  # the "long" profile
    EXAMPLES = {k: v * 10 for k, v in EXAMPLES.items()}
    ONE_SHARD_EXAMPLES = {k: v * 10 for k, v in ONE_SHARD_EXAMPLES.items()}
# Shrinking a failing run takes Hypothesis minutes here (every step reads the whole
# cluster), so it is off unless CLUSTER_MODEL_SHRINK=1: a red run then ends at once and
# prints its steps unshrunk (the examples are derandomized: the same ones every run).
PHASES = (
    tuple(Phase)
    if os.environ.get("CLUSTER_MODEL_SHRINK") == "1"
    else (
        Phase.explicit,
        Phase.reuse,
        Phase.generate,
    )
)

# The accounts by role: their request, and the shard each placement puts them on.
BASE = {
    "bank": AccountRequest("", "USD"),
    "wallet-1": AccountRequest("", "USD", flags=AccountFlags(no_overdraft=True, history=True)),
    "wallet-2": AccountRequest("", "USD", flags=AccountFlags(no_overdraft=True)),
    "credit": AccountRequest("", "USD", flags=AccountFlags(credit_limit=300, history=True)),
    "bank-eur": AccountRequest("", "EUR"),
    "wallet-eur": AccountRequest("", "EUR", flags=AccountFlags(no_overdraft=True)),
}
EXTRA = ("acc-1", "acc-2", "acc-3")  # opened (or not) by the create_accounts rule
GHOST = "ghost"  # never opened: a missing account on a chosen shard
PLACEMENTS = {
    "spread": {
        "bank": 0,
        "wallet-1": 0,  # with the bank: same-shard pairs too
        "wallet-2": 1,
        "credit": 2,
        "bank-eur": 3,
        "wallet-eur": 1,
        "acc-1": 2,
        "acc-2": 3,
        "acc-3": 0,
        GHOST: 3,
    },
    # shard-0: where today's router sends a post or void of a hold it cannot find.
    "one_shard": dict.fromkeys([*BASE, *EXTRA, GHOST], 0),
}
# Funding at the start: the bank pays the wallets (on shard-0 and shard-1 when spread);
# the credit account starts owing a little (a debt the wallets can pay to close it).
FUNDING = (
    ("bank", "wallet-1", 1_000),
    ("bank", "wallet-2", 1_000),
    ("bank-eur", "wallet-eur", 900),
    ("credit", "wallet-2", 100),
)
IDEMPOTENCY_KEYS = ["key-1", "key-2", "key-3"]
RETENTION_SECONDS = 30


class _AuditBounds(TypedDict):
    grace_seconds: float
    stuck_seconds: float


# Large enough that a clock moved by hand never makes the auditor call a hold overdue
# or a saga stuck: this test checks answers and conservation, not the workers' pace.
AUDIT_BOUNDS: _AuditBounds = {"grace_seconds": 10.0**9, "stuck_seconds": 10.0**9}

_encoder = msgspec.json.Encoder()


def _render(result: Any) -> StoredResponse:
    return StoredResponse(200, _encoder.encode(result))


def _fingerprint(command: CreateTransfers) -> str:
    return hashlib.sha256(_encoder.encode(command)).hexdigest()


def _code(value: ErrorCode | None) -> str | None:
    return None if value is None else value.value


def _with(request: TransferRequest, **changes: Any) -> TransferRequest:
    return msgspec.structs.replace(request, **changes)


def placed_ids(store: ShardedStore, placement: str) -> dict[str, str]:
    """Role -> an account id the store puts on the shard the placement names."""
    ids = {}
    for role, shard in PLACEMENTS[placement].items():
        i = 0
        while store.shard_for(f"{role}.{i}") != SHARDS[shard]:
            i += 1
        ids[role] = f"{role}.{i}"
    return ids


@st.composite
def linked_chains(
    draw: st.DrawFn,
    *,
    prefix: str,
    accounts: dict[str, tuple[str, bool]],
    open_holds: dict[str, int],
    resolved_holds: list[str],
    ghost: str,
) -> list[TransferRequest]:
    """A linked chain of 2-5 items mixing plain, balancing and pending transfers (with
    and without timeout) and posts (full, partial, too much) and voids of holds, the
    chain's own included; an item often spends what an earlier one gave its debit
    account. Now and then an item meant to fail is put in (overdraft, missing account,
    currency mismatch, a hold already resolved), or the chain is left open; now and
    then a plain item stands before or after it. ``accounts``: id -> (currency,
    no_overdraft)."""
    ids = sorted(accounts)
    holds = dict(open_holds)
    chain: list[TransferRequest] = []
    last_credit: str | None = None
    resolved = list(resolved_holds)

    def pair() -> tuple[str, str]:
        debit = (
            last_credit
            if last_credit is not None and draw(st.booleans())
            else draw(st.sampled_from(ids))
        )
        peers = [a for a in ids if a != debit and accounts[a][0] == accounts[debit][0]]
        return debit, draw(st.sampled_from(peers or [a for a in ids if a != debit]))

    for i in range(draw(st.integers(2, 4))):
        tid = f"{prefix}-{i}"
        kinds = ["plain", "plain", "pending", "balancing"] + ["post", "void"] * bool(holds)
        kind = draw(st.sampled_from(kinds))
        if kind in ("post", "void"):
            hold = draw(st.sampled_from(sorted(holds)))
            held = holds.pop(hold)
            resolved.append(hold)
            if kind == "post":
                amount = draw(st.sampled_from([None, held, max(held // 2, 1), held + 1]))
                flags = TransferFlags(post_pending=True)
            else:
                amount = None
                flags = TransferFlags(void_pending=True)
            chain.append(TransferRequest(tid, pending_id=hold, amount=amount, flags=flags))
            continue
        debit, credit = pair()
        amount = draw(st.integers(1, 400))
        pending = kind == "pending"
        timeout = draw(st.sampled_from([0, 0, 1, 5, 60])) if pending else 0
        flags = TransferFlags(pending=pending, balancing=kind == "balancing")
        chain.append(TransferRequest(tid, debit, credit, amount, None, 0, flags, None, timeout))
        if pending:
            holds[tid] = amount
        last_credit = credit
    failure = draw(st.sampled_from([None, None, "overdraft", "ghost", "currency", "resolved"]))
    if failure is not None:
        tid = f"{prefix}-f"
        guarded = [a for a in ids if accounts[a][1]]
        usd = [a for a in ids if accounts[a][0] == "USD"]
        eur = [a for a in ids if accounts[a][0] == "EUR"]
        if failure == "overdraft" and guarded:
            debit = draw(st.sampled_from(guarded))
            credit = draw(st.sampled_from([a for a in ids if a != debit]))
            bad = TransferRequest(tid, debit, credit, 10**12)
        elif failure == "currency" and usd and eur:
            bad = TransferRequest(tid, draw(st.sampled_from(usd)), draw(st.sampled_from(eur)), 5)
        elif failure == "resolved" and resolved:
            bad = TransferRequest(
                tid,
                pending_id=draw(st.sampled_from(resolved)),
                flags=TransferFlags(void_pending=True),
            )
        else:
            bad = TransferRequest(tid, draw(st.sampled_from(ids)), ghost, 5)
        chain.insert(draw(st.integers(0, len(chain))), bad)
    open_end = draw(st.integers(0, 9)) == 0  # the batch ends inside the chain
    chain = [
        _with(r, flags=msgspec.structs.replace(r.flags, linked=open_end or j < len(chain) - 1))
        for j, r in enumerate(chain)
    ]
    if draw(st.booleans()):
        debit, credit = pair()
        extra = TransferRequest(f"{prefix}-x", debit, credit, draw(st.integers(1, 50)))
        chain = [extra, *chain] if open_end or draw(st.booleans()) else [*chain, extra]
    return chain


class ClusterMachine(RuleBasedStateMachine):
    """Random commands against a 4-shard cluster; the reference model says what a client
    must see."""

    def __init__(self, databases: ClusterDatabases, placement: str) -> None:
        super().__init__()
        self.databases = databases
        self.clock = ManualClock()
        self.runner = asyncio.Runner()
        self.store = self._open()
        self.ids = placed_ids(self.store, placement)
        # Timestamps are in one order across accounts only when no transfer crosses
        # shards (each shard has its own clock; see _check_listing).
        self.one_shard = placement == "one_shard"
        self.account_pool = [self.ids[r] for r in (*BASE, *EXTRA)]
        self.model = LedgerModel()
        self.sent: dict[str, TransferRequest] = {}
        self.first_command: dict[str, CreateTransfers] = {}
        self.batches = 0
        # When each transfer was acknowledged: (step, batch of the step); a transfer
        # acknowledged in an earlier step must come later in every listing it shares.
        self.step = 0
        self.acked: dict[str, tuple[int, int]] = {}
        self.chained: set[str] = set()  # transfers made by an item of a linked chain
        self.reordered: set[str] = set()  # see expire_pending
        self.high_water = self.clock.now  # the latest the clock has shown

    def teardown(self) -> None:
        try:
            self.run(self.store.stop())
        finally:
            self.runner.close()
            self.databases.drop()

    # -- plumbing -----------------------------------------------------------------------

    def _open(self) -> ShardedStore:
        store = build_store(self.databases.settings(synchronous="NORMAL"), clock=self.clock)
        self.runner.run(store.start())
        return store

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await awaitable

        return self.runner.run(wrapper())

    def _deghost(self, batch: list[TransferRequest]) -> list[TransferRequest]:
        """The shared strategies name a missing account ``ghost``: put it on the shard the
        placement chose for it (else its hash would decide, and differ by placement)."""
        ghost = self.ids[GHOST]
        return [
            _with(
                r,
                debit_account_id=ghost if r.debit_account_id == "ghost" else r.debit_account_id,
                credit_account_id=ghost if r.credit_account_id == "ghost" else r.credit_account_id,
            )
            for r in batch
        ]

    def _batch(
        self, data: st.DataObject, max_size: int = 6, only: set[str] | None = None
    ) -> list[TransferRequest]:
        """A batch from the shared strategy; ``only``: the accounts it may touch (the
        holds it may post or void are those between them)."""
        self.batches += 1
        model = self.model
        accounts = {i: a.currency for i, a in model.accounts.items() if only is None or i in only}
        holds = {i: t.amount for i, t in model.transfers.items() if t.flags.pending}
        mine = {
            i: amount
            for i, amount in holds.items()
            if {model.transfers[i].debit, model.transfers[i].credit} <= set(accounts)
        }
        batch = data.draw(
            transfer_batches(
                prefix=f"b{self.batches}",
                accounts=accounts,
                holds=mine,
                open_holds=[i for i in mine if model.holds[i].status == "pending"],
                transfers=sorted(set(model.transfers) - set(holds)),
                sent=self.sent,
                max_size=max_size,
            )
        )
        return self._deghost(batch)

    def _check_accounts(
        self, requests: list[AccountRequest], results: list[AccountResult], expected: list[Outcome]
    ) -> None:
        assert [r.id for r in results] == [r.id for r in requests]
        for request, got, want in zip(requests, results, expected, strict=True):
            assert (_code(got.code), got.exists) == (want.code, want.exists), request
            if got.ok:
                assert got.account is not None
                model = self.model.accounts[request.id]
                assert (got.account.currency, got.account.flags.credit_limit) == (
                    model.currency,
                    model.credit_limit,
                )

    def _check_transfers(
        self,
        batch: list[TransferRequest],
        results: list[TransferResult],
        now: int,
        expected: list[Outcome] | None = None,
        order: int = 0,
    ) -> None:
        """Apply ``batch`` to the model (unless ``expected`` is given: it was) and compare
        each item's answer, the transfer it returns, and its timestamp."""
        if expected is None:
            expected = self.model.apply_batch(batch, now)
        assert [r.id for r in results] == [r.id for r in batch]
        if any(r.flags.linked for r in batch):
            self.chained |= {r.id for r in batch}
        for request, got, want in zip(batch, results, expected, strict=True):
            assert (_code(got.code), got.exists) == (want.code, want.exists), (
                f"{request}: cluster says {_code(got.code)}/exists={got.exists} "
                f"({got.detail!r}), model {want.code}/exists={want.exists}"
            )
            assert not got.in_flight, f"{request}: answered in_flight in a fault-free run"
            if not got.ok:
                continue
            self.sent.setdefault(request.id, request)
            t, m = got.transfer, self.model.transfers[request.id]
            assert t is not None
            assert _fields(t) == _model_fields(m), request
            if got.exists:
                assert t.timestamp == m.timestamp, request
            else:  # a new transfer: not stamped before it was asked for
                assert t.timestamp >= now, request
                self.model.stamp(t.id, t.timestamp)
                self.acked[t.id] = (self.step, order)

    def _send(self, batch: list[TransferRequest]) -> None:
        now = self.clock.now
        results = self.run(self.store.execute(CreateTransfers(tuple(batch))))
        self._check_transfers(batch, results, now)

    # -- rules ----------------------------------------------------------------------------

    @initialize()
    def base_accounts(self) -> None:
        requests = [_with_id(r, self.ids[role]) for role, r in BASE.items()]
        results = self.run(self.store.execute(CreateAccounts(tuple(requests))))
        self._check_accounts(requests, results, self.model.create_accounts(requests))
        funding = [
            TransferRequest(f"fund-{i}", self.ids[a], self.ids[b], amount)
            for i, (a, b, amount) in enumerate(FUNDING)
        ]
        self._send(funding)

    @rule(data=st.data())
    def create_accounts(self, data: st.DataObject) -> None:
        requests = data.draw(st.lists(account_requests(self.account_pool), min_size=1, max_size=3))
        results = self.run(self.store.execute(CreateAccounts(tuple(requests))))
        self._check_accounts(requests, results, self.model.create_accounts(requests))

    @rule(data=st.data())
    def single_transfer(self, data: st.DataObject) -> None:
        self._send(self._batch(data, max_size=1))

    @rule(data=st.data())
    def transfer_batch(self, data: st.DataObject) -> None:
        self._send(self._batch(data))

    @rule(data=st.data())
    def linked_chain(self, data: st.DataObject) -> None:
        """A chain across shards, all of it or nothing."""
        self.batches += 1
        model = self.model
        chain = data.draw(
            linked_chains(
                prefix=f"c{self.batches}",
                accounts={i: (a.currency, a.no_overdraft) for i, a in model.accounts.items()},
                open_holds={
                    i: model.transfers[i].amount
                    for i, h in model.holds.items()
                    if h.status == "pending"
                },
                resolved_holds=sorted(i for i, h in model.holds.items() if h.status != "pending"),
                ghost=self.ids[GHOST],
            )
        )
        self._send(chain)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), change=st.sampled_from(["same", "amount", "code", "meta", "fewer"]))
    def repeat(self, data: st.DataObject, change: str) -> None:
        """An id sent again: the same fields give the original, other fields a refusal."""
        original = self.sent[data.draw(st.sampled_from(sorted(self.sent)))]
        again = {
            "same": original,
            "amount": _with(original, amount=(original.amount or 1) + 1),
            "code": _with(original, code=original.code + 1),
            "meta": _with(original, metadata={"changed": True}),
            "fewer": _with(original, amount=None, currency=None),
        }[change]
        self._send([again])

    @rule(data=st.data(), n=st.integers(2, 3))
    def concurrent_batches(self, data: st.DataObject, n: int) -> None:
        """Several callers at once, each on its own accounts: the answers must be those of
        the batches run one after the other.

        The batches touch disjoint accounts (and so disjoint holds) because what the
        model looks like afterwards must not depend on which one a shard ran first:
        Hypothesis draws the next steps from it, and a race decided differently on a
        replay would change them."""
        ids = sorted(self.model.accounts)
        batches = [
            self._own_holds(self._batch(data, only=set(ids[k::n])), set(ids[k::n]))
            for k in range(n)
        ]
        now = self.clock.now

        async def together() -> list[list[TransferResult]]:
            return list(
                await asyncio.gather(
                    *(self.store.execute(CreateTransfers(tuple(b))) for b in batches)
                )
            )

        results = self.run(together())
        order = self._serial_order(batches, results, now)
        for k, i in enumerate(order):
            self._check_transfers(batches[i], results[i], now, order=k)

    def _own_holds(self, batch: list[TransferRequest], only: set[str]) -> list[TransferRequest]:
        """Drop posts and voids of holds between accounts outside ``only`` (a batch across
        shards is not isolated from another: only its linked chains are atomic)."""
        kept = []
        for r in batch:
            hold = self.model.transfers.get(r.pending_id or "")
            if hold is not None and not {hold.debit, hold.credit} <= only:
                continue
            kept.append(r)
        return kept or batch[:0]

    def _serial_order(
        self, batches: list[list[TransferRequest]], results: list[list[TransferResult]], now: int
    ) -> tuple[int, ...]:
        """An order of the batches whose serial run gives the answers the cluster gave
        (codes and amounts); of several, the one the timestamps show, if it is one."""

        def answer(r: TransferResult | Outcome) -> tuple[Any, ...]:
            code = _code(r.code) if isinstance(r, TransferResult) else r.code
            t = r.transfer
            return (code, r.exists, None if t is None else t.amount)

        answers = [[answer(r) for r in rs] for rs in results]
        matching = []
        tried = {}
        for order in itertools.permutations(range(len(batches))):
            trial = copy.deepcopy(self.model)
            outcomes = {i: trial.apply_batch(batches[i], now) for i in order}
            tried[order] = [[answer(o) for o in outcomes[i]] for i in range(len(batches))]
            if tried[order] == answers:
                matching.append(order)
        assert matching, (
            f"no serial order of the {len(batches)} concurrent batches gives the cluster's "
            f"answers: {batches} -> {answers}; the model's, per order: {tried}"
        )

        def first_stamp(i: int) -> int:
            stamps = [r.transfer.timestamp for r in results[i] if r.transfer and not r.exists]
            return min(stamps, default=0)

        by_time = tuple(sorted(range(len(batches)), key=first_stamp))
        return by_time if by_time in matching else matching[0]

    @rule(data=st.data(), key=st.sampled_from(IDEMPOTENCY_KEYS))
    def idempotent_batch(self, data: st.DataObject, key: str) -> None:
        first = self.first_command.get(key)
        if first is not None and data.draw(st.booleans()):
            command = first
        else:
            command = CreateTransfers(tuple(self._batch(data)))
        fingerprint = _fingerprint(command)
        now = self.clock.now
        expected = self.model.idempotency_lookup(key, fingerprint, now)
        idempotency = Idempotency(key, fingerprint, _render, RETENTION_SECONDS)
        if expected == "reused":
            with pytest.raises(IdempotencyError) as raised:
                self.run(self.store.execute_idempotent(command, idempotency))
            assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
            return
        response, replayed = self.run(self.store.execute_idempotent(command, idempotency))
        if isinstance(expected, bytes):
            assert replayed
            assert response.body == expected
            return
        assert not replayed
        results = msgspec.json.decode(response.body, type=list[TransferResult])
        self._check_transfers(list(command.requests), results, now)
        self.model.idempotency_store(key, fingerprint, response.body, now, RETENTION_SECONDS)
        self.first_command.setdefault(key, command)

    @rule(
        step=st.sampled_from([NS // 1000, NS // 2, NS, 2 * NS, 5 * NS, 31 * NS, 61 * NS]),
        sweep=st.booleans(),
    )
    def advance_clock(self, step: int, sweep: bool) -> None:
        self.clock.advance(ns=step)
        if sweep:
            self.expire_pending()

    @rule(step=st.sampled_from([-NS, -1]))
    def clock_goes_back(self, step: int) -> None:
        """Wall clocks jump back; timestamps must stay strictly increasing anyway."""
        self.high_water = max(self.high_water, self.clock.now)
        self.clock.advance(ns=step)

    @precondition(lambda self: bool(self._deadlines()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 1]), sweep=st.booleans())
    def advance_to_a_deadline(self, data: st.DataObject, offset: int, sweep: bool) -> None:
        """Stand exactly at (or one nanosecond around) a hold's expiry."""
        deadline = data.draw(st.sampled_from(self._deadlines()))
        self.clock.now = max(self.clock.now, deadline + offset)
        if sweep:
            self.expire_pending()

    def _deadlines(self) -> list[int]:
        deadlines = []
        for hold_id, hold in sorted(self.model.holds.items()):
            at = self.model.expires_at(hold_id)
            if hold.status == "pending" and at is not None and at >= self.clock.now:
                deadlines.append(at)
        return deadlines

    @rule()
    def expire_pending(self) -> None:
        """The expiry pass (what ``MaintenanceWorker`` sends): the client's holds past
        their timeout are expired, each once, whatever shards their accounts are on."""
        expired = self.run(self.store.execute(ExpirePending()))
        assert len(expired) == len(set(expired)), expired
        # Only the client's transfers are compared: how a cross-shard hold is carried
        # out (and so whether helpers expire with it) is the implementation's business.
        released = self.model.expire(self.clock.now)
        assert {i for i in expired if i in self.model.transfers} == released
        # An account's shard writes the expiries of its own holds in the pass, and the
        # release of its legs of holds from other shards after them (README: a shard's
        # history is in its write order): an account with one of those among several
        # expiries of a pass may show them in another order than the model's.
        touching: dict[str, list[str]] = {}
        for hold_id in released:
            t = self.model.transfers[hold_id]
            for account_id in (t.debit, t.credit):
                touching.setdefault(account_id, []).append(t.debit)
        for account_id, sources in touching.items():
            home = self.store.shard_for(account_id)
            if len(sources) > 1 and any(self.store.shard_for(d) != home for d in sources):
                self.reordered.add(account_id)

    @rule(
        role=st.sampled_from([*BASE, *EXTRA, GHOST]),
        to=st.sampled_from([None, None, *BASE, *EXTRA, GHOST]),
        go=st.integers(0, 4),
    )
    def close_account(self, role: str, to: str | None, go: int) -> None:
        """A close, with or without an account taking its balance (or paying its debt),
        on its shard or another."""
        if go:  # closing is final: do it in one step out of five
            return
        self._close(self.ids[role], None if to is None else self.ids[to])

    @precondition(lambda self: bool(self._owing()))
    @rule(data=st.data(), go=st.integers(0, 4))
    def close_paying_a_debt(self, data: st.DataObject, go: int) -> None:
        """An account that owes closes, another account (on its shard or another) paying
        its debt; refused as one shard refuses it (the payer short of funds, missing,
        closed, of another currency...)."""
        if go:
            return
        account_id = data.draw(st.sampled_from(self._owing()))
        owing = self.model.accounts[account_id]
        payers = [*sorted(set(self.model.accounts) - {account_id}), self.ids[GHOST]]
        able = [  # most often one that can pay: open, same currency, funds enough
            i
            for i in payers[:-1]
            if (m := self.model.accounts[i]).currency == owing.currency
            and not m.closed
            and m.cpo - m.dpo - m.dp >= owing.dpo - owing.cpo
        ]
        self._close(account_id, data.draw(st.sampled_from(able * 3 + payers)))

    def _owing(self) -> list[str]:
        accounts = self.model.accounts.items()
        return sorted(i for i, m in accounts if not m.closed and m.cpo < m.dpo)

    def _close(self, account_id: str, target: str | None) -> None:
        now = self.clock.now
        before = set(self.model.transfers)
        got = self.run(self.store.execute(CloseAccount(account_id, transfer_balance_to=target)))
        want = self.model.close_account(account_id, target, now)
        assert (_code(got.code), got.exists) == (want.code, want.exists), (account_id, target)
        if got.ok:
            assert got.account is not None
            assert got.account.flags.closed
        for moved in set(self.model.transfers) - before:
            assert target is not None
            self._record_close(moved, account_id, target)

    def _record_close(self, model_id: str, account_id: str, target: str) -> None:
        """The transfer a close moved the balance with, as the store wrote it: one shard's
        id (the account's own ``close_`` id), or across shards for a debt, the payer's
        first attempt's (``close_across.debt_transfer_id``); its timestamp the store's."""
        m = self.model.transfers.pop(model_id)
        transfer_id = model_id
        if m.credit == account_id and self.store.shard_for(target) != self.store.shard_for(
            account_id
        ):
            account = self.run(self.store.get_accounts([account_id]))[account_id]
            transfer_id = debt_transfer_id(account, target, 0)
        m.id = transfer_id
        self.model.transfers[transfer_id] = m
        view = self.run(self.store.get_transfer(transfer_id))
        assert view is not None, transfer_id
        assert view.transfer.timestamp >= self.clock.now, transfer_id
        self.model.stamp(transfer_id, view.transfer.timestamp)
        self.acked[transfer_id] = (self.step, 0)

    @rule()
    def purge_idempotency(self) -> None:
        purged = self.run(self.store.execute(PurgeIdempotency()))
        # At least the client's keys past retention (the cluster may keep records of
        # its own under other keys); that they are gone is checked by idempotent_batch.
        assert purged >= self.model.purge(self.clock.now)

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data())
    def read_transfer(self, data: st.DataObject) -> None:
        transfer_id = data.draw(st.sampled_from(sorted(self.model.transfers)))
        view = self.run(self.store.get_transfer(transfer_id))
        assert view is not None, transfer_id
        m = self.model.transfers[transfer_id]
        assert _fields(view.transfer) == _model_fields(m), transfer_id
        assert view.transfer.timestamp == m.timestamp, transfer_id
        assert view.status.value == self.model.status(transfer_id), transfer_id
        hold = self.model.holds.get(transfer_id)
        assert view.resolved_by == (hold.resolved_by if hold else None), transfer_id

    @rule(
        role=st.sampled_from([*BASE, *EXTRA]),
        limit=st.integers(1, 4),
        descending=st.booleans(),
        side=st.sampled_from(["both", "debits", "credits"]),
    )
    def page_through_account_transfers(
        self, role: str, limit: int, descending: bool, side: str
    ) -> None:
        """Pages of a listing, followed by their cursor, give the whole listing once."""
        account_id = self.ids[role]
        seen: list[str] = []
        cursor = None
        while True:
            page = self.run(
                self.store.account_transfers(
                    account_id, limit=limit, cursor=cursor, descending=descending, side=side
                )
            )
            assert len(page.data) <= limit
            seen += [v.transfer.id for v in page.data]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        mine = [
            t
            for t in self.model.transfers.values()
            if (side != "credits" and t.debit == account_id)
            or (side != "debits" and t.credit == account_id)
        ]
        # In the order of the account's own shard (see _check_listing).
        mine.sort(
            key=lambda t: (
                (t.timestamp or 0) if self.one_shard else (self._own_stamp(account_id, t.id) or 0)
            ),
            reverse=descending,
        )
        assert seen == [t.id for t in mine], (account_id, side, descending)

    @rule(go=st.integers(0, 3))
    def reopen(self, go: int) -> None:
        """Stop every shard and open them again: nothing acknowledged may be lost."""
        if go:
            return
        self.run(self.store.stop())
        self.store = self._open()

    # -- after every step -----------------------------------------------------------------

    @invariant()
    def a_client_sees_the_model(self) -> None:
        self.step += 1
        model = self.model
        # Accounts: the four counters and the flags, ghosts absent.
        wanted = [*self.account_pool, self.ids[GHOST]]
        accounts = self.run(self.store.get_accounts(wanted))
        assert set(accounts) == set(model.accounts)
        for account_id, m in model.accounts.items():
            a = accounts[account_id]
            got = (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
            assert got == m.counters(), f"{account_id} (dp, dpo, cp, cpo)"
            assert (a.flags.closed, a.flags.no_overdraft, a.flags.credit_limit) == (
                m.closed,
                m.no_overdraft,
                m.credit_limit,
            ), account_id
        # Transfers: fields, the one timestamp, the status (never in flight here).
        views = self.run(self.store.get_transfers(sorted(model.transfers)))
        assert set(views) == set(model.transfers)
        for transfer_id, view in views.items():
            expected = model.transfers[transfer_id]
            assert _fields(view.transfer) == _model_fields(expected), transfer_id
            assert view.transfer.timestamp == expected.timestamp, f"{transfer_id}: timestamp"
            assert view.status is not TransferStatus.IN_FLIGHT, transfer_id
            assert view.status.value == model.status(transfer_id), transfer_id
        # Listings: the client's transfers, each once, as get_transfer shows them.
        for account_id in model.accounts:
            self._check_listing(account_id)
        # Balance history of history accounts: one record per change, as the model, on
        # every placement (a saga's steps are recorded as one transfer).
        for account_id, changes in model.history.items():
            records = self.run(self.store.balance_history(account_id, limit=10_000))
            got_history = [
                (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
                for h in records
            ]
            # Known gap (README): a batch's items touching one account are applied on its
            # shard in the order of the saga's steps (local items first, credit legs
            # after), so its rows follow the model's only where that order is the batch's.
            mine = [t.id for t in model.transfers.values() if account_id in (t.debit, t.credit)]
            in_shard = sorted(mine, key=lambda i: self._own_stamp(account_id, i) or 0)
            if account_id in self.reordered:  # the same rows and end, maybe another order
                assert got_history[-1:] == changes[-1:], f"{account_id}: balance history"
                assert len(got_history) == len(changes), f"{account_id}: balance history"
            elif self.one_shard or in_shard == sorted(
                mine, key=lambda i: self.acked.get(i, (0, 0))
            ):
                assert got_history == changes, f"{account_id}: balance history"
            stamps = {h.timestamp for h in records}
            for t in model.transfers.values():
                if account_id in (t.debit, t.credit):
                    # Known gap (README): a cross-shard leg's balance record is kept at
                    # its own shard's timestamp of the leg.
                    own = self._own_stamp(account_id, t.id)
                    assert t.timestamp in stamps or own in stamps, (
                        f"{account_id}: no balance record at {t.id}"
                    )
        # Money: conserved per currency over every account of every shard.
        report = self.run(audit_cluster(self.store.shards, **AUDIT_BOUNDS))
        assert report.ok or self._clock_artefacts(report), [
            v for s in report.shards.values() for v in s.violations
        ]
        for totals in report.totals:
            assert totals.net_posted == 0, totals
            assert totals.debits_pending == totals.credits_pending, totals

    def _clock_artefacts(self, report: ClusterAuditReport) -> bool:
        """True when every violation is the auditor seeing a hold expired "before its
        timeout" because the clock was moved back after the expiry (a wall clock may
        do that; the auditor takes the clock it reads as the latest time)."""
        self.high_water = max(self.high_water, self.clock.now)
        if self.clock.now >= self.high_water:
            return False
        shard_level = {ClusterViolationKind.SHARD_VIOLATION}
        return all(v.kind in shard_level for v in report.violations) and all(
            v.kind is ViolationKind.HOLD_STATUS_INCONSISTENT and "before its timeout" in v.detail
            for shard in report.shards.values()
            for v in shard.violations
        )

    def _own_stamp(self, account_id: str, transfer_id: str) -> int | None:
        """The timestamp the account's own shard keeps for its leg of ``transfer_id``."""
        shard = self.store.shards[self.store.shard_for(account_id)]
        view = self.run(shard.get_transfer(transfer_id))
        return None if view is None else view.transfer.timestamp

    def _check_listing(self, account_id: str) -> None:
        page = self.run(self.store.account_transfers(account_id, limit=10_000))
        listed = [v.transfer.id for v in page.data]
        internal = [i for i in listed if i not in self.model.transfers]
        assert not internal, f"{account_id}: lists transfers the client never made {internal}"
        assert len(listed) == len(set(listed)), f"{account_id}: lists one twice {listed}"
        mine = {t.id for t in self.model.transfers.values() if account_id in (t.debit, t.credit)}
        assert set(listed) == mine, f"{account_id}: listing"
        stamps = [v.transfer.timestamp for v in page.data]
        for view in page.data:
            m = self.model.transfers[view.transfer.id]
            assert _fields(view.transfer) == _model_fields(m), f"{account_id}: {m.id}"
            # Known gap (README): the target leg of an item of a linked chain across shards
            # shows its own shard's timestamp.
            assert view.transfer.timestamp in (
                m.timestamp,
                self._own_stamp(account_id, m.id) if m.id in self.chained else None,
            ), f"{account_id}: {m.id} timestamp"
            assert view.status.value == self.model.status(m.id), f"{account_id}: {m.id} status"
        # In the order of the account's own shard (its cursor's order): a cross-shard
        # credit shows the transfer's one timestamp, set on another shard's clock, so the
        # shown timestamps are in order only where no transfer crosses shards.
        # Listed by the account's own shard, so each has a leg there: cast, not assert, to
        # keep the check as it was (sorted() refuses a None among the timestamps).
        own = cast("list[int]", [self._own_stamp(account_id, i) for i in listed])
        assert own == sorted(set(own)), f"{account_id}: not in its shard's order {listed}"
        if self.one_shard:
            assert stamps == sorted(set(stamps)), f"{account_id}: not in timestamp order"
        # A listing followed by its cursor must not miss a transfer acknowledged later:
        # one acknowledged in a later step has a larger timestamp.
        for earlier, later in itertools.combinations(listed, 2):
            assert self.acked[earlier][0] <= self.acked[later][0], (
                f"{account_id}: {later} (step {self.acked[later][0]}) is listed before "
                f"{earlier} (step {self.acked[earlier][0]}), acknowledged after it"
            )


def _with_id(request: AccountRequest, account_id: str) -> AccountRequest:
    return msgspec.structs.replace(request, id=account_id)


def _fields(t: Any) -> tuple[Any, ...]:
    return (
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.currency,
        t.code,
        t.flags,
        t.pending_id,
        t.timeout_seconds,
        t.metadata,
    )


def _model_fields(m: MTransfer) -> tuple[Any, ...]:
    return (
        m.debit,
        m.credit,
        m.amount,
        m.currency,
        m.code,
        m.flags,
        m.pending_id,
        m.timeout,
        m.metadata,
    )


@pytest.mark.parametrize("placement", ["spread", "one_shard"])
def test_the_cluster_matches_the_reference_model(
    backend: str, placement: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Random commands on a 4-shard cluster give a client exactly the model's answers,
    whether the accounts are spread over the shards or all on one."""
    server = request.getfixturevalue("postgres_server") if backend == "postgres" else None
    runs = itertools.count()

    def machine() -> ClusterMachine:
        databases = ClusterDatabases(backend, tmp_path / f"run{next(runs)}", server)
        return ClusterMachine(databases, placement)

    run_state_machine_as_test(
        machine,  # type: ignore[arg-type]  # a factory, as documented (annotated: a class)
        settings=settings(
            settings.default,
            max_examples=(EXAMPLES if placement == "spread" else ONE_SHARD_EXAMPLES)[backend],
            stateful_step_count=STEPS,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
