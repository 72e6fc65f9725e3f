"""A real store of each backend against the reference model, under random operations.

Each machine instance owns a fresh database (a SQLite file, or a PostgreSQL
database), a store on it, an ``asyncio.Runner`` to drive it, and a hand-moved clock.
After every step the whole shard is read in one snapshot and compared with the
model, and the ledger's promises are audited.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from backends import AnyStore, LedgerDatabase
from paycore.errors import ErrorCode, IdempotencyError
from paycore.ledger.model import AccountFlags, AccountRequest, TransferRequest
from paycore.ledger.rules import AccountResult, TransferResult
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    PurgeIdempotency,
    StoredResponse,
)
from reference_model import KEPT, LedgerModel, Outcome
from store.support import NS, ManualClock, audit, read_state
from strategies import account_requests, transfer_batches

T = TypeVar("T")

# Created first in every run: funding sources, wallets with limits, another currency.
BASE_ACCOUNTS = (
    AccountRequest("bank", "USD"),
    AccountRequest("wallet-1", "USD", flags=AccountFlags(no_overdraft=True, history=True)),
    AccountRequest("wallet-2", "USD", flags=AccountFlags(no_overdraft=True)),
    AccountRequest("credit", "USD", flags=AccountFlags(credit_limit=300, history=True)),
    AccountRequest("bank-eur", "EUR"),
    AccountRequest("wallet-eur", "EUR", flags=AccountFlags(no_overdraft=True)),
)
ACCOUNT_IDS = [*(r.id for r in BASE_ACCOUNTS), "acc-1", "acc-2", "acc-3"]
IDEMPOTENCY_KEYS = ["key-1", "key-2", "key-3"]
RETENTION_SECONDS = 30

_encoder = msgspec.json.Encoder()


def _render(result: Any) -> StoredResponse:
    return StoredResponse(200, _encoder.encode(result))


def _fingerprint(command: CreateTransfers) -> str:
    return hashlib.sha256(_encoder.encode(command)).hexdigest()


def _code(value: ErrorCode | None) -> str | None:
    return None if value is None else value.value


class LedgerMachine(RuleBasedStateMachine):
    """Random commands against one store; the reference model says what must happen."""

    def __init__(self, database: LedgerDatabase) -> None:
        super().__init__()
        self.database = database
        self.clock = ManualClock()
        self.runner = asyncio.Runner()
        self.store = self._open()
        self.model = LedgerModel()
        self.sent: dict[str, TransferRequest] = {}
        self.first_command: dict[str, CreateTransfers] = {}
        self.batches = 0
        self.last_timestamp = 0

    def teardown(self) -> None:
        try:
            self.run(self.store.stop())
        finally:
            self.runner.close()
            self.database.drop()

    # -- plumbing -----------------------------------------------------------------------

    def _open(self) -> AnyStore:
        store = self.database.store(clock=self.clock)
        self.runner.run(store.start())
        return store

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await awaitable

        return self.runner.run(wrapper())

    def _batch(
        self, data: st.DataObject, extra_holds: dict[str, int] | None = None
    ) -> list[TransferRequest]:
        self.batches += 1
        holds = {i: t.amount for i, t in self.model.transfers.items() if t.flags.pending}
        return data.draw(
            transfer_batches(
                prefix=f"b{self.batches}",
                accounts={i: a.currency for i, a in self.model.accounts.items()},
                holds={**holds, **(extra_holds or {})},
                open_holds=[
                    *(i for i, h in self.model.holds.items() if h.status == "pending"),
                    *(extra_holds or {}),
                ],
                transfers=sorted(set(self.model.transfers) - set(holds)),
                sent=self.sent,
            )
        )

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
                if not got.exists:
                    assert got.account.timestamp > self.last_timestamp
                    self.last_timestamp = got.account.timestamp

    def _check_transfers(self, batch: list[TransferRequest], results: list[TransferResult]) -> None:
        now = self.clock.now
        expected = self.model.apply_batch(batch, now)
        assert [r.id for r in results] == [r.id for r in batch]
        for request, got, want in zip(batch, results, expected, strict=True):
            assert (_code(got.code), got.exists) == (want.code, want.exists), (
                f"{request}: store says {got.code}/{got.exists}, model {want.code}/{want.exists}"
            )
            if want.code in KEPT:  # a refused id is resent too: it must answer the same
                self.sent.setdefault(request.id, request)
            if not got.ok:
                continue
            self.sent.setdefault(request.id, request)
            t, m = got.transfer, self.model.transfers[request.id]
            assert t is not None
            assert (
                t.debit_account_id,
                t.credit_account_id,
                t.amount,
                t.currency,
                t.code,
                t.flags,
                t.pending_id,
                t.timeout_seconds,
                t.metadata,
            ) == (
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
            if got.exists:
                assert t.timestamp == m.timestamp
            else:  # a new transfer: its timestamp is after every earlier one, and not early
                assert t.timestamp > self.last_timestamp
                assert t.timestamp >= now
                self.last_timestamp = t.timestamp
                self.model.stamp(t.id, t.timestamp)

    # -- rules ----------------------------------------------------------------------------

    @initialize()
    def base_accounts(self) -> None:
        requests = list(BASE_ACCOUNTS)
        results = self.run(self.store.execute(CreateAccounts(tuple(requests))))
        self._check_accounts(requests, results, self.model.create_accounts(requests))

    @rule(data=st.data())
    def create_accounts(self, data: st.DataObject) -> None:
        requests = data.draw(st.lists(account_requests(ACCOUNT_IDS), min_size=1, max_size=3))
        results = self.run(self.store.execute(CreateAccounts(tuple(requests))))
        self._check_accounts(requests, results, self.model.create_accounts(requests))

    @rule(data=st.data())
    def transfer_batch(self, data: st.DataObject) -> None:
        batch = self._batch(data)
        results = self.run(self.store.execute(CreateTransfers(tuple(batch))))
        self._check_transfers(batch, results)

    @rule(data=st.data(), n=st.integers(2, 4))
    def concurrent_batches(self, data: st.DataObject, n: int) -> None:
        """Several callers at once: the writer may run them in one transaction."""
        batches: list[list[TransferRequest]] = []
        for _ in range(n):
            drawn_holds = {
                r.id: r.amount for b in batches for r in b if r.flags.pending and r.amount
            }
            batches.append(self._batch(data, drawn_holds))

        async def together() -> list[list[TransferResult]]:
            return list(
                await asyncio.gather(
                    *(self.store.execute(CreateTransfers(tuple(b))) for b in batches)
                )
            )

        for batch, results in zip(batches, self.run(together()), strict=True):
            self._check_transfers(batch, results)

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
        self._check_transfers(list(command.requests), results)
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
        expired = self.run(self.store.execute(ExpirePending()))
        assert len(expired) == len(set(expired))
        assert set(expired) == self.model.expire(self.clock.now)

    @rule(
        account_id=st.sampled_from([*ACCOUNT_IDS, "ghost"]),
        to=st.none() | st.sampled_from([*ACCOUNT_IDS, "ghost"]),
        go=st.integers(0, 4),
    )
    def close_account(self, account_id: str, to: str | None, go: int) -> None:
        if go:  # closing is final: do it in one step out of five
            return
        got = self.run(self.store.execute(CloseAccount(account_id, transfer_balance_to=to)))
        want = self.model.close_account(account_id, to, self.clock.now)
        assert (_code(got.code), got.exists) == (want.code, want.exists)
        if got.ok:
            assert got.account is not None
            assert got.account.flags.closed

    @rule()
    def purge_idempotency(self) -> None:
        assert self.run(self.store.execute(PurgeIdempotency())) == self.model.purge(self.clock.now)

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data())
    def read_transfer(self, data: st.DataObject) -> None:
        transfer_id = data.draw(st.sampled_from(sorted(self.model.transfers)))
        view = self.run(self.store.get_transfer(transfer_id))
        assert view is not None
        assert view.transfer.amount == self.model.transfers[transfer_id].amount
        assert view.status.value == self.model.status(transfer_id)
        hold = self.model.holds.get(transfer_id)
        assert view.resolved_by == (hold.resolved_by if hold else None)

    @rule(
        account_id=st.sampled_from(ACCOUNT_IDS),
        limit=st.integers(1, 4),
        descending=st.booleans(),
        side=st.sampled_from(["both", "debits", "credits"]),
    )
    def page_through_account_transfers(
        self, account_id: str, limit: int, descending: bool, side: str
    ) -> None:
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
        mine.sort(key=lambda t: t.timestamp or 0, reverse=descending)
        assert seen == [t.id for t in mine]

    @rule(go=st.integers(0, 3))
    def reopen(self, go: int) -> None:
        """Stop the store and open the file again: nothing committed may be lost."""
        if go:
            return
        self.run(self.store.stop())
        self.store = self._open()

    # -- after every step -----------------------------------------------------------------

    @invariant()
    def shard_equals_model_and_keeps_promises(self) -> None:
        state = self.run(self.store.with_snapshot(read_state))
        assert audit(state) == []
        model = self.model
        assert set(state.accounts) == set(model.accounts)
        for account_id, m in model.accounts.items():
            a = state.accounts[account_id]
            got = (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
            assert got == m.counters(), account_id
            assert a.flags.closed == m.closed
            assert (a.flags.no_overdraft, a.flags.credit_limit, a.flags.history) == (
                m.no_overdraft,
                m.credit_limit,
                m.history,
            )
        assert {t.id for t in state.transfers} == set(model.transfers)
        assert {i: (s.value, r) for i, (s, r) in state.pendings.items()} == {
            i: (h.status, h.resolved_by) for i, h in model.holds.items()
        }
        history: dict[str, list[tuple[int, int, int, int]]] = {i: [] for i in model.history}
        for h in state.history:
            history[h.account_id].append(
                (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
            )
        assert history == model.history


def test_the_store_matches_the_reference_model(
    new_database: Callable[[], LedgerDatabase],
) -> None:
    """Random commands on a store give the model's results and leave a ledger that keeps
    every promise, after every step."""
    default = settings.default
    assert default is not None  # the profile tests/conftest.py loads
    run_state_machine_as_test(
        # Hypothesis documents a factory here (its annotation says a class).
        lambda: LedgerMachine(new_database()),  # type: ignore[arg-type]
        settings=settings(
            default,
            max_examples=max(50, default.max_examples // 2),
            stateful_step_count=50,
        ),
    )
