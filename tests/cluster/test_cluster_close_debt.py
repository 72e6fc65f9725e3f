"""Closing an account that owes, its debt paid by an account on another shard (issue 13).

``POST /v1/accounts/{id}/close`` with ``transfer_balance_to`` B, the closing account A
owing money: B pays A's debt into A and A closes. On one shard that is one transaction;
across shards it is a saga (``paycore.cluster.close_across``): B's hold on B's shard,
the credit of A that closes A on A's shard, then B's hold posted (or voided). Every test
runs the same requests once with A and B on one shard and once on two, and compares what
a client sees: the answer (code, detail, the account), both accounts' counters, their
listings and balance history. The transfer's id is the only difference: ``close_`` and
40 hex digits either way, derived from the account alone on one shard, from the account,
the payer and an attempt number across shards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from cluster_support import counters, ids_on, move

from paycore.cluster.close_across import debt_transfer_id
from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import OPEN_STATES, closes_credit, credit_leg
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import DEFAULT_TENANT, AccountFlags, AccountRequest, TransferStatus
from paycore.ledger.rules import AccountResult
from paycore.ops.audit import audit_cluster
from paycore.storage.apply import remainder_transfer
from paycore.storage.base import (
    ClaimOutbox,
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    Idempotency,
    StoredResponse,
)
from paycore.workers.relay import RelayWorker

DEBT = 300
ONE_SHARD = ("shard-2", "shard-2")
ACROSS = ("shard-0", "shard-1")


class Pair:
    """A debtor A (no limits) owing ``DEBT`` to a lender on its shard, and a payer B
    (no-overdraft, or ``payer_flags``) holding ``funds`` from a bank on its shard; ids
    are placed on the chosen shards, roles are what the comparisons show."""

    def __init__(self, store: ShardedStore, shards: tuple[str, str], tag: str) -> None:
        self.store = store
        home, payer = shards
        self.roles: dict[str, str] = {}
        for role, shard in [
            ("A", home),
            ("lender", home),
            ("B", payer),
            ("bank", payer),
            ("B2", payer),
            ("eur", payer),
            ("ghost", payer),
            ("foreign", payer),
        ]:
            (self.roles[role],) = ids_on(store, shard, 1, prefix=f"{tag}-{role}-")

    @property
    def a(self) -> str:
        return self.roles["A"]

    @property
    def b(self) -> str:
        return self.roles["B"]

    async def open(
        self,
        *,
        funds: int = 1_000,
        debt: int = DEBT,
        history: bool = False,
        payer_flags: AccountFlags | None = None,
    ) -> None:
        r = self.roles
        free = AccountFlags(history=history)
        payer = payer_flags or AccountFlags(no_overdraft=True, history=history)
        requests = (
            AccountRequest(r["A"], "USD", flags=free),
            AccountRequest(r["lender"], "USD"),
            AccountRequest(r["bank"], "USD"),
            AccountRequest(r["B"], "USD", flags=payer),
            AccountRequest(r["B2"], "USD", flags=AccountFlags(no_overdraft=True)),
            AccountRequest(r["eur"], "EUR"),
            AccountRequest(r["foreign"], "USD", tenant="acme"),
        )
        results = await self.store.execute(CreateAccounts(requests))
        assert all(x.ok for x in results), results
        if debt:
            assert await self.send(move(f"{r['A']}-debt", r["A"], r["lender"], debt))
        if funds:
            assert await self.send(move(f"{r['B']}-fund", r["bank"], r["B"], funds))

    async def send(self, *requests: Any) -> bool:
        results = await self.store.execute(CreateTransfers(tuple(requests)))
        return all(x.ok and not x.in_flight for x in results)

    async def close(self, to_role: str = "B", **kw: Any) -> AccountResult:
        result: AccountResult = await self.store.execute(
            CloseAccount(self.a, transfer_balance_to=self.roles[to_role], **kw)
        )
        return result

    def shown(self, text: str) -> str:
        """``text`` with the ids replaced by their roles (and any close id by ``close``)."""
        for role, account_id in sorted(self.roles.items(), key=lambda kv: -len(kv[1])):
            text = text.replace(account_id, role)
        return "close" if text.startswith("close_") else text

    def answer(self, result: AccountResult) -> tuple[Any, ...]:
        """What a client reads of a close's answer, ids as roles."""
        account = result.account
        return (
            result.code,
            self.shown(result.detail),
            result.exists,
            None if account is None else (self.shown(account.id), counters(account)),
            None if account is None else account.flags,
        )

    async def ledger(self) -> dict[str, Any]:
        """Every account's counters, listing and balance history, ids as roles."""
        ids = [i for role, i in self.roles.items() if role != "ghost"]
        found = await self.store.get_accounts(ids)
        out: dict[str, Any] = {}
        for role, account_id in self.roles.items():
            if role == "ghost":
                continue
            page = await self.store.account_transfers(account_id, limit=100)
            listing = [
                (
                    self.shown(v.transfer.id),
                    self.shown(v.transfer.debit_account_id),
                    self.shown(v.transfer.credit_account_id),
                    v.transfer.amount,
                    v.transfer.flags,
                    v.transfer.metadata,
                    v.status,
                )
                for v in page.data
            ]
            history = [
                msgspec.structs.astuple(h)[2:] for h in await self.store.balance_history(account_id)
            ]
            account = found[account_id]
            out[role] = (counters(account), account.flags, listing, history)
        return out


async def both(cluster: ShardedStore, tag: str, **opened: Any) -> tuple[Pair, Pair]:
    """The same pair on one shard and across two, opened alike."""
    one, across = Pair(cluster, ONE_SHARD, f"{tag}1"), Pair(cluster, ACROSS, f"{tag}x")
    await asyncio.gather(one.open(**opened), across.open(**opened))
    return one, across


async def same(one: Pair, across: Pair) -> None:
    assert await across.ledger() == await one.ledger()
    report = await audit_cluster(one.store.shards, stuck_seconds=3600)
    assert report.ok, report.violations
    assert report.sagas_open == 0


async def test_a_debt_paid_from_another_shard_closes_the_account_as_on_one_shard(
    cluster: ShardedStore,
) -> None:
    """B pays A's whole debt and A closes: the same answer, counters, listings and balance
    history as on one shard; the transfer shows B -> A posted with one timestamp on both
    sides; a repeated close answers the closed account and moves nothing more."""
    one, across = await both(cluster, "ok", history=True)
    answers = [await one.close(), await across.close()]
    assert answers[0].ok, answers[0]
    assert across.answer(answers[1]) == one.answer(answers[0])
    assert answers[1].account is not None
    assert (answers[1].account.flags.closed, answers[1].account.balance) == (True, 0)
    await same(one, across)
    found = await cluster.get_accounts([one.a, one.b, across.a, across.b])
    assert (found[across.a].balance, found[across.b].balance) == (0, 1_000 - DEBT)
    paid = debt_transfer_id(found[across.a], across.b, 0)
    view = await cluster.get_transfer(paid)
    assert view is not None
    assert (view.status, view.transfer.debit_account_id, view.transfer.credit_account_id) == (
        TransferStatus.POSTED,
        across.b,
        across.a,
    )
    stamps = set()
    for account_id in (across.a, across.b):
        page = await cluster.account_transfers(account_id, limit=100)
        stamps |= {v.transfer.timestamp for v in page.data if v.transfer.id == paid}
    assert stamps == {view.transfer.timestamp}
    # One shard's id is the account's own (``remainder_transfer``); across shards the
    # debt's id is another close_ id, of the same form.
    one_id = remainder_transfer(found[one.a], one.b).id
    assert await cluster.get_transfer(one_id) is not None
    assert paid != remainder_transfer(found[across.a], across.b).id
    assert (paid[:6], len(paid)) == ("close_", len(one_id))
    again = [await one.close(), await across.close()]
    assert across.answer(again[1]) == one.answer(again[0])
    assert (again[1].ok, again[1].exists) == (True, True)
    await same(one, across)


# name: (how the pair is opened, what happens before the close, the target's role,
# the close's tenant)
REFUSALS: dict[str, tuple[dict[str, Any], tuple[Any, ...], str, str | None]] = {
    "payer short of funds": ({"funds": 100}, (), "B", None),
    "payer over its credit limit": (
        {"funds": 100, "payer_flags": AccountFlags(credit_limit=50)},
        (),
        "B",
        None,
    ),
    "payer missing": ({}, (), "ghost", None),
    "payer of another currency": ({}, (), "eur", None),
    "payer closed": ({"funds": 0}, ("close B2",), "B2", None),
    "debtor holding a hold": ({}, ("hold",), "B", None),
    "payer of another tenant": ({}, (), "foreign", DEFAULT_TENANT),
}


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_a_refused_debt_payment_across_shards_is_refused_as_on_one_shard(
    cluster: ShardedStore, name: str
) -> None:
    """Each refusal has one shard's code and detail, and nothing moves or closes; no
    refusal is kept: once the cause is gone, the same close succeeds, as on one shard."""
    opened, before, to, tenant = REFUSALS[name]
    one, across = await both(cluster, f"r{list(REFUSALS).index(name)}-", **opened)
    for pair in (one, across):
        for step in before:
            if step == "close B2":
                assert (await cluster.execute(CloseAccount(pair.roles["B2"]))).ok
            if step == "hold":
                held = move(f"{pair.a}-hold", pair.a, pair.roles["lender"], 5, pending=True)
                assert await pair.send(held)
    closes: dict[str, Any] = {} if tenant is None else {"tenant": tenant}
    answers = [await one.close(to, **closes), await across.close(to, **closes)]
    assert not answers[0].ok, answers[0]
    assert across.answer(answers[1]) == one.answer(answers[0])
    await same(one, across)
    found = await cluster.get_accounts([one.a, across.a])
    assert not any(a.flags.closed for a in found.values())
    # Nothing kept: B funded (or the hold voided), the close goes through on both.
    if name.startswith("payer short") or name.startswith("payer over"):
        for pair in (one, across):
            assert await pair.send(move(f"{pair.b}-more", pair.roles["bank"], pair.b, 1_000))
        answers = [await one.close(to), await across.close(to)]
        assert answers[0].ok, answers[0]
        assert across.answer(answers[1]) == one.answer(answers[0])
        await same(one, across)


def _render(result: Any) -> StoredResponse:
    assert isinstance(result, AccountResult)
    return StoredResponse(200 if result.ok else 409, (result.code or "ok").encode())


async def test_an_idempotent_debt_close_across_shards_pays_once_then_replays(
    cluster: ShardedStore,
) -> None:
    pair = Pair(cluster, ACROSS, "idem")
    await pair.open()
    idem = Idempotency("default:close-debt", "fp", _render)
    command = CloseAccount(pair.a, transfer_balance_to=pair.b)
    first, replayed = await cluster.execute_idempotent(command, idem)
    assert (first.body, replayed) == (b"ok", False)
    again, replayed = await cluster.execute_idempotent(command, idem)
    assert (again, replayed) == (first, True)
    found = await cluster.get_accounts([pair.a, pair.b])
    assert found[pair.a].flags.closed
    assert (found[pair.a].balance, found[pair.b].balance) == (0, 1_000 - DEBT)


async def test_a_debt_that_changes_under_its_saga_is_paid_by_a_new_attempt(
    relay_path: ShardedStore,
) -> None:
    """The request stops after step 1 (B's money held): a retry answers 503 while it is
    in flight. A's debt grows meanwhile, so step 2 (by the relay) is refused and B's hold
    voided: nothing moved, A open. The next close pays the new debt under the next
    attempt's id, which the voided one does not block."""
    cluster = relay_path
    pair = Pair(cluster, ACROSS, "race")
    await pair.open()
    with pytest.raises(UnavailableError):
        await pair.close()
    found = await cluster.get_accounts([pair.a, pair.b])
    assert not found[pair.a].flags.closed
    assert counters(found[pair.b]) == (DEBT, 0, 0, 1_000)
    with pytest.raises(UnavailableError):
        await pair.close()
    assert await pair.send(move("more-debt", pair.a, pair.roles["lender"], 50))
    await RelayWorker(cluster, lease_seconds=0.001).drain()
    found = await cluster.get_accounts([pair.a, pair.b])
    assert not found[pair.a].flags.closed
    assert (found[pair.a].balance, counters(found[pair.b])) == (-DEBT - 50, (0, 0, 0, 1_000))
    first = debt_transfer_id(found[pair.a], pair.b, 0)
    voided = await cluster.get_transfer(first)
    assert voided is not None
    assert voided.status is TransferStatus.VOIDED
    cluster.drive_sagas = True
    closed = await pair.close()
    assert closed.ok, closed
    found = await cluster.get_accounts([pair.a, pair.b])
    assert found[pair.a].flags.closed
    assert (found[pair.a].balance, found[pair.b].balance) == (0, 1_000 - DEBT - 50)
    paid = await cluster.get_transfer(debt_transfer_id(found[pair.a], pair.b, 1))
    assert paid is not None
    assert (paid.status, paid.transfer.amount) == (TransferStatus.POSTED, DEBT + 50)
    report = await audit_cluster(cluster.shards, stuck_seconds=3600)
    assert report.ok, report.violations
    assert report.sagas_open == 0


async def test_a_close_retried_between_step_2_and_step_3_answers_503_then_closed(
    relay_path: ShardedStore,
) -> None:
    """Step 2 closed A, B's hold is not posted yet: a retry of the close answers 503 (its
    outcome is not visible everywhere yet), then, once the relay posted it, the closed
    account, as one shard's repeated close."""
    cluster = relay_path
    pair = Pair(cluster, ACROSS, "mid")
    await pair.open()
    with pytest.raises(UnavailableError):
        await pair.close()
    payer, home = cluster.shard_for(pair.b), cluster.shard_for(pair.a)
    rows = await cluster.shards[payer].execute(ClaimOutbox("test", OPEN_STATES, 0.001, 10))
    (row,) = rows
    assert closes_credit(row)
    leg = CreateTransfers(
        (credit_leg(row, payer),), refusals_key=f"saga:{payer}:", closes_credit_account=True
    )
    (credited,) = await cluster.shards[home].execute(leg)
    assert credited.ok, credited
    found = await cluster.get_accounts([pair.a, pair.b])
    assert found[pair.a].flags.closed
    assert counters(found[pair.b]) == (DEBT, 0, 0, 1_000)
    with pytest.raises(UnavailableError):
        await pair.close()
    await asyncio.sleep(0.01)  # the test's claim of the row ends
    await RelayWorker(cluster, lease_seconds=0.001).drain()
    again = await pair.close()
    assert (again.ok, again.exists) == (True, True)
    found = await cluster.get_accounts([pair.a, pair.b])
    assert (found[pair.a].balance, counters(found[pair.b])) == (0, (0, DEBT, 0, 1_000))
    assert (await audit_cluster(cluster.shards, stuck_seconds=3600)).ok


async def test_two_closes_at_once_from_payers_on_two_shards_pay_the_debt_once(
    cluster: ShardedStore,
) -> None:
    """Both payers may hold the money; A's shard lets one close A, the other's credit is
    refused (A closed) and its hold voided. Each close answers the closed account (or
    503 while the other's saga ends), and a retry answers the closed account."""
    pair = Pair(cluster, ACROSS, "twice")
    await pair.open()
    (other,) = ids_on(cluster, "shard-3", 1, prefix="twice-other-")
    flags = AccountFlags(no_overdraft=True)
    (opened,) = await cluster.execute(CreateAccounts((AccountRequest(other, "USD", flags=flags),)))
    assert opened.ok
    pair.roles["other"] = other
    assert await pair.send(move("fund-other", pair.roles["bank"], other, 1_000))
    answers = await asyncio.gather(pair.close("B"), pair.close("other"), return_exceptions=True)
    for answer in answers:
        assert isinstance(answer, UnavailableError | AccountResult), answer
        assert isinstance(answer, UnavailableError) or answer.ok, answer
    closers = [a for a in answers if isinstance(a, AccountResult) and not a.exists]
    assert len(closers) <= 1, answers
    await RelayWorker(cluster, lease_seconds=0.001).drain()
    for to in ("B", "other"):
        again = await pair.close(to)
        assert (again.ok, again.exists) == (True, True), again
    found = await cluster.get_accounts([pair.a, pair.b, other])
    assert found[pair.a].flags.closed
    assert found[pair.a].balance == 0
    assert sorted([found[pair.b].balance, found[other].balance]) == [1_000 - DEBT, 1_000]
    report = await audit_cluster(cluster.shards, stuck_seconds=3600)
    assert report.ok, report.violations
    assert report.sagas_open == 0


@pytest.mark.parametrize("seen", [100, 0])
async def test_a_balance_that_turned_into_a_debt_before_step_1_is_paid_as_a_debt(
    cluster: ShardedStore, monkeypatch: pytest.MonkeyPatch, seen: int
) -> None:
    """The router read A holding money (or nothing), but A owes by step 1: A's shard
    refuses that plan (nothing written) and the close is planned again, as a debt paid
    by B."""
    pair = Pair(cluster, ACROSS, f"turn{seen}")
    await pair.open()
    real = cluster.get_accounts
    calls = 0

    async def stale(ids: list[str]) -> Any:
        nonlocal calls
        calls += 1
        found = await real(ids)
        if calls == 1:  # the first read: A as it was before it owed
            found[pair.a] = msgspec.structs.replace(found[pair.a], debits_posted=0)
        return found

    monkeypatch.setattr(cluster, "get_accounts", stale)
    closed = await pair.close()
    assert closed.ok, closed
    monkeypatch.undo()
    found = await cluster.get_accounts([pair.a, pair.b])
    assert found[pair.a].flags.closed
    assert (found[pair.a].balance, found[pair.b].balance) == (0, 1_000 - DEBT)
    assert (await audit_cluster(cluster.shards, stuck_seconds=3600)).ok


async def test_a_chain_in_progress_on_the_debtor_refuses_the_close_as_on_one_shard(
    relay_path: ShardedStore,
) -> None:
    """A linked chain across shards prepared with the debtor's money refuses its close
    (account_has_pending_transfers), as on one shard, before anything is held; one
    prepared after step 1 makes step 2 refuse the credit: the payer's hold is voided,
    nothing moved, and once the chain is finished the close goes through."""
    from paycore.storage.base import FinishChain, PrepareChain

    cluster = relay_path
    one, across = await both(cluster, "chain")
    for pair, chain in ((one, "chain.one"), (across, "chain.across")):
        home = cluster.shard_for(pair.a)
        leg = move(f"{chain}-leg", pair.a, pair.roles["lender"], 5)
        (prepared,) = await cluster.shards[home].execute(PrepareChain(chain, "shard-3", (leg,)))
        assert prepared.ok, prepared
    answers = [await one.close(), await across.close()]
    assert answers[0].code is ErrorCode.ACCOUNT_HAS_PENDING_TRANSFERS, answers[0]
    assert across.answer(answers[1]) == one.answer(answers[0])
    home = cluster.shard_for(across.a)
    await cluster.shards[home].execute(FinishChain("chain.across", False))
    with pytest.raises(UnavailableError):  # step 1 only: B's money held
        await across.close()
    leg = move("chain.again-leg", across.a, across.roles["lender"], 5)
    (prepared,) = await cluster.shards[home].execute(PrepareChain("chain.again", "shard-3", (leg,)))
    assert prepared.ok, prepared
    # The payer's shard's sagas only (a relay pass over A's shard would abort the chain,
    # whose coordinator never decides).
    assert await cluster.driver.run_shard(cluster.shard_for(across.b)) == 1
    found = await cluster.get_accounts([across.a, across.b])
    assert not found[across.a].flags.closed
    assert (found[across.a].balance, counters(found[across.b])) == (-DEBT, (0, 0, 0, 1_000))
    voided = await cluster.get_transfer(debt_transfer_id(found[across.a], across.b, 0))
    assert voided is not None
    assert voided.status is TransferStatus.VOIDED
    await cluster.shards[home].execute(FinishChain("chain.again", False))
    cluster.drive_sagas = True
    closed = await across.close()
    assert closed.ok, closed
    found = await cluster.get_accounts([across.a, across.b])
    assert (found[across.a].flags.closed, found[across.b].balance) == (True, 1_000 - DEBT)
    assert (await audit_cluster(cluster.shards, stuck_seconds=3600)).ok
