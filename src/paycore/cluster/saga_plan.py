"""Saga planning: each cross-shard transfer of a batch checked, then turned into step 1.

A transfer A(s) -> B(d) is refused up front with the code one shard holding both
accounts would give (the request's fields, then A, then B, read just now), except the
refusals that depend on A's balance: those the source shard decides in step 1's own
transaction. An accepted item becomes step 1 (``hold_request``: a hold of A crediting
s's clearing account for d, plus its outbox row, leased to the request that drives the
next steps, ``paycore.cluster.saga_drive``). The clearing accounts step 1 credits are
created here too, once per node and account.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from paycore.cluster.routing import Router
from paycore.cluster.settlement import SAGA_KEY, clearing_account_id, hold_request, parse_clearing
from paycore.cluster.split import Split, fail, gather_all
from paycore.errors import ErrorCode
from paycore.ledger.model import SYSTEM_TENANT, Account, AccountRequest, TransferRequest
from paycore.ledger.rules import TransferResult, WorkingSet
from paycore.money import MAX_AMOUNT
from paycore.storage.base import CreateAccounts, OutboxWrite
from paycore.storage.store import Store

__all__ = ["ensure_clearing", "ensure_split_clearing", "one_shard_refusal", "plan_sagas"]

_E = ErrorCode


async def plan_sagas(
    store: Router,
    requests: Sequence[TransferRequest],
    target: Mapping[int, str],
    cross: Mapping[int, str],
    split: Split,
    *,
    tenant: str | None = None,
) -> None:
    """Check B on its shard (racy, cheap), then turn each cross-shard item into step 1.

    ``tenant`` (the API caller's): a B of another tenant is answered as a missing one.
    Not racy: an account's tenant never changes, and accounts are never deleted; A's
    tenant is checked by its own shard in step 1's transaction."""
    wanted = {i: s for i, s in cross.items() if i not in split.upfront}
    by_shard: dict[str, list[str]] = {}
    for index, shard in wanted.items():
        credit = requests[index].credit_account_id
        assert credit is not None
        by_shard.setdefault(shard, []).append(credit)
        debit = requests[index].debit_account_id
        assert debit is not None
        by_shard.setdefault(target[index], []).append(debit)
    # A retry of a transfer that already exists is answered by its source shard
    # ("exists", or different fields), never by a fresh look at B: B may have been
    # closed since, and the answer to a retry must not change. Both reads at once, one
    # read call per shard.
    ids_by_shard: dict[str, list[str]] = {}
    for index in wanted:
        ids_by_shard.setdefault(target[index], []).append(requests[index].id)
    shards = list(by_shard.keys() | ids_by_shard.keys())
    parts = await gather_all(
        store.shards[s].accounts_and_transfers(by_shard.get(s, []), ids_by_shard.get(s, []))
        for s in shards
    )
    found: dict[str, Account] = {}
    stored: set[str] = set()
    for accounts, transfers in parts:
        found.update({k: a for k, a in accounts.items() if tenant is None or a.tenant == tenant})
        stored |= transfers.keys()
    exists = {i for i in wanted if requests[i].id in stored}
    now = store.clock_ns()
    for index in wanted:
        r = requests[index]
        b = found.get(r.credit_account_id or "")
        refusal = (
            None
            if index in exists and b is not None
            else one_shard_refusal(r, found, tenant, now) or _saga_refusal(r, b)
        )
        if refusal is not None:
            if refusal.code is None:
                split.upfront[index] = refusal
                continue
            # The debit account's shard answers it, after the checks of the id itself
            # (a transfer stored or a refusal kept under it answers first, as on one
            # shard), and keeps it when one shard would (B missing, closed, of another
            # currency...). Written as step 1 would be, so a resend once B is there
            # meets it.
            a = found.get(r.debit_account_id or "")
            currency = b.currency if b else a.currency if a else r.currency or ""
            split.rewritten[index] = hold_request(r, target[index], cross[index], currency)[0]
            split.decided[index] = (refusal.code, refusal.detail)
            continue
        b = found[r.credit_account_id or ""]
        hold, row = hold_request(r, target[index], cross[index], b.currency)
        # Leased to this request, which runs the next steps itself (``saga_drive.drive``).
        if store.drive_sagas:
            lease = store.clock_ns() + int(store.drive_lease_seconds * 1_000_000_000)
            row = msgspec.structs.replace(row, claimed_by=store.owner, claimed_until=lease)
        split.rewritten[index] = hold
        split.outbox[index] = OutboxWrite(0, row)
        split.sagas.add(index)


def _saga_refusal(r: TransferRequest, b: Account | None) -> TransferResult | None:
    if r.metadata is not None and SAGA_KEY in r.metadata:
        return fail(r.id, _E.INVALID_REQUEST, f"metadata key {SAGA_KEY!r} is reserved")
    if r.debit_account_id == r.credit_account_id:
        return fail(r.id, _E.ACCOUNTS_MUST_BE_DIFFERENT)
    if b is None:
        return fail(r.id, _E.ACCOUNT_NOT_FOUND, f"credit account {r.credit_account_id!r} not found")
    if r.currency is not None and r.currency != b.currency:
        return fail(
            r.id,
            _E.CURRENCY_MISMATCH,
            f"transfer is {r.currency}, credit account is {b.currency}",
        )
    if b.flags.closed:
        return fail(r.id, _E.ACCOUNT_CLOSED, f"credit account {b.id!r} is closed")
    return None


async def ensure_split_clearing(store: Router, split: Split) -> None:
    """Create the clearing accounts the saga's steps use, once per node and account: the
    one step 1 credits and, before step 1 too, the one step 2 debits on the target (so
    that the credit leg, not the account's creation, is the target shard's first write
    after step 1 and can keep the transfer's timestamp: ``ledger.saga_history``)."""
    pairs: set[tuple[str, str, str]] = set()
    for index in split.sagas:
        account = split.rewritten[index].credit_account_id
        assert account is not None
        parsed = parse_clearing(account)
        if parsed is not None:
            home, peer, currency = parsed
            pairs |= {(home, peer, currency), (peer, home, currency)}
    await store.ensure_clearing(pairs)


async def ensure_clearing(
    shards: Mapping[str, Store], known: set[str], pairs: set[tuple[str, str, str]]
) -> None:
    """Create the clearing accounts ``(home, peer, currency)``, once per node and
    account (``known``: the ones this node created or found already)."""
    wanted: dict[str, set[tuple[str, str]]] = {}
    for home, peer, currency in pairs:
        account = clearing_account_id(home, peer, currency)
        if account not in known:
            wanted.setdefault(home, set()).add((account, currency))
    if not wanted:
        return
    homes = list(wanted)
    answers = await gather_all(
        shards[h].execute(
            CreateAccounts(
                tuple(
                    AccountRequest(a, c, metadata={"role": "clearing"}, tenant=SYSTEM_TENANT)
                    for a, c in sorted(wanted[h])
                )
            )
        )
        for h in homes
    )
    for results in answers:
        for result in results:
            if result.ok:
                known.add(result.id)


# Refusals that depend on the debit account's balance: the source shard decides them in
# step 1's own transaction (and keeps them under the id), never a read ahead of it.
_DECIDED_ON_SOURCE = frozenset({_E.INSUFFICIENT_FUNDS, _E.EXCEEDS_CREDIT_LIMIT, _E.OVERFLOW})


def one_shard_refusal(
    r: TransferRequest, accounts: Mapping[str, Account], tenant: str | None, now: int
) -> TransferResult | None:
    """What one shard holding both accounts (as read just now) would refuse ``r`` with, so
    that a transfer across shards gets the same code, checked in the same order (the
    request's own fields, then the debit account, then the credit account)."""
    both = [a for k in (r.debit_account_id, r.credit_account_id) if k and (a := accounts.get(k))]
    ws = WorkingSet(both, [], [], now=now, last_timestamp=0)
    (result,) = ws.apply_transfers([r], tenant=tenant)
    if result.ok:
        return None
    if result.code is _E.OVERFLOW and result.transfer is None:
        # The credit account's counters are the target's to keep, not the source's:
        # refused here, as step 2 would refuse them after step 1 had held the money.
        credit = accounts.get(r.credit_account_id or "")
        debit = accounts.get(r.debit_account_id or "")
        if credit is not None and debit is not None and _credit_overflows(r, debit, credit):
            return result
    if result.code in _DECIDED_ON_SOURCE:
        return None
    return result


def _credit_overflows(r: TransferRequest, debit: Account, credit: Account) -> bool:
    amount = r.amount or 0
    limit = debit.flags.debit_limit()
    if r.flags.balancing and limit is not None:
        amount = min(amount, debit.available + limit)
    return credit.credits_pending + credit.credits_posted + amount > MAX_AMOUNT
