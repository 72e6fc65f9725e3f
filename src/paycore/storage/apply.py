"""How a group of commands becomes one transaction, whatever the database.

Backends implement ``LedgerTx`` (a handful of set-based reads and writes on one open
transaction); ``apply_group`` does the rest, identically for SQLite and PostgreSQL:
idempotency lookups and answers, loading the working set a run of transfer commands
needs, applying the pure rules, writing back what changed. It runs on the writer's
thread, so the ``LedgerTx`` methods are synchronous.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, get_args

import msgspec

from paycore.errors import (
    ErrorCode,
    FencedError,
    IdempotencyError,
    PaycoreError,
    UnavailableError,
)
from paycore.ledger.model import (
    SETTLEMENT_METADATA_KEY,
    Account,
    PendingStatus,
    Transfer,
    TransferRequest,
)
from paycore.ledger.rules import (
    AccountResult,
    TransferResult,
    WorkingSet,
    close_account,
    new_account,
)
from paycore.ledger.saga_history import is_closing_hold
from paycore.ledger.tenancy import id_prefix
from paycore.storage.base import (
    FINISHED_OUTBOX_STATES,
    AdvanceFence,
    ClaimOutbox,
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    OutboxRow,
    PeekIdempotency,
    PurgeIdempotency,
    PurgeOutbox,
    ReleaseTransferIds,
    ReserveTransferIds,
    SetOutboxStates,
    StoredResponse,
)
from paycore.storage.chain_legs import (
    ChainCommand,
    account_has_chain,
    apply_chain_command,
    load_chain_guards,
    locked_holds,
)
from paycore.storage.codec import T_COLUMNS, transfer_from_row
from paycore.storage.deliveries import DeliveryCommand, apply_delivery_command
from paycore.storage.event_stream import AdvanceStreamCursor, apply_stream_command
from paycore.storage.fx_quotes import CreateFxQuote, apply_fx_command
from paycore.storage.group_commit import Job
from paycore.storage.keys import KeyCommand, apply_key_command
from paycore.storage.payments import PaymentCommand, apply_payment_command
from paycore.storage.reconciliation import (
    ReconciliationCommand,
    apply_reconciliation_command,
)
from paycore.storage.saga_holds import load_saga_holds
from paycore.storage.slot_fence import (
    Ownership,
    RecordSlotMap,
    admit_owned,
    apply_slot_map_command,
)
from paycore.storage.slot_moves import SlotMoveCommand, apply_slot_move_command
from paycore.storage.store import Command
from paycore.storage.tx import GroupClock, LedgerTx, WriteSession
from paycore.storage.webhook_endpoints import EndpointCommand, apply_endpoint_command

__all__ = [
    "HANDLED_ELSEWHERE",
    "apply_group",
    "backfill_chain",
    "command_weight",
    "run_group",
]

log = logging.getLogger(__name__)


def run_group(
    session: WriteSession,
    now: Callable[[], int],
    jobs: Sequence[Job],
    ownership: Ownership | None = None,
) -> None:
    """Run ``jobs`` in one transaction; if that fails, each job in its own.

    Every job ends with an outcome or an error. Nothing is answered before the
    commit returned, so a job that gets an outcome is durable; a job that gets an
    error changed nothing (the transaction rolled back or never committed).
    """
    try:
        with session.errors():
            last = session.begin()
            try:
                clock = GroupClock(now(), last)
                if ownership is not None:
                    jobs = admit_owned(session, session.store, ownership, jobs)
                apply_group(session, clock, jobs)
                session.commit(clock.last_timestamp)
            except BaseException:
                with contextlib.suppress(Exception):
                    session.rollback()
                raise
    except Exception as exc:
        for job in jobs:
            job.outcome, job.error = None, None
        if isinstance(exc, UnavailableError):  # the shard is down, not a command: fail fast
            for job in jobs:
                job.error = exc
            return
        if len(jobs) > 1:  # isolate the command that broke the group
            for job in jobs:
                run_group(session, now, [job], ownership)
            return
        if not isinstance(exc, PaycoreError):
            log.error("unexpected error in a shard writer", exc_info=exc)
            exc = PaycoreError(ErrorCode.INTERNAL_ERROR, type(exc).__name__)
        jobs[0].error = exc


_BACKFILL_PAGE = 10_000


def backfill_chain(session: WriteSession, page: int = _BACKFILL_PAGE) -> int:
    """Chain the transfers written before migration 0009, once; returns how many.

    Runs at a store's start, before its writer, in one transaction holding the shard's
    write turn, so a node starting at the same time waits and then finds nothing to do.
    The rows are those up to the last timestamp recorded by the migration
    (``chain_backfill_until``), in timestamp order, read and updated by pages; the marker
    is removed in the same transaction. Rows added later without a chain position stay
    unchained, for the audit to report.
    """
    with session.errors():
        last = session.begin()
        try:
            marker = session.run_sql(
                "SELECT value FROM shard_meta WHERE key = 'chain_backfill_until'"
            )
            if not marker:
                session.rollback()
                return 0
            until = int(marker[0][0])
            if session.chain.seq != 0:  # chained rows already: the old ones cannot go first
                log.error("shard %s: transfers were chained before the backfill", session.store)
                session.rollback()
                return 0
            after, count = -1, 0
            query = (
                f"SELECT {T_COLUMNS}, m.metadata FROM transfers t "
                "LEFT JOIN transfer_metadata m ON m.id = t.id WHERE t.chain_seq IS NULL "
                "AND t.timestamp > ? AND t.timestamp <= ? ORDER BY t.timestamp LIMIT ?"
            )
            while rows := session.run_sql(query, (after, until, page)):
                transfers = [transfer_from_row(row, row[10]) for row in rows]
                links = session.chain.extend(transfers)
                session.set_chain_links(
                    [(t.timestamp, seq, h) for t, (seq, h) in zip(transfers, links, strict=True)]
                )
                after = transfers[-1].timestamp
                count += len(transfers)
            session.run_sql("DELETE FROM shard_meta WHERE key = 'chain_backfill_until'")
            session.commit(last)
        except BaseException:
            with contextlib.suppress(Exception):
                session.rollback()
            raise
    if count:
        log.info("chained %d transfers written before the history chain existed", count)
    return count


def command_weight(command: Command) -> int:
    """How much work a command is, so that one group stays bounded."""
    if isinstance(command, CreateTransfers | CreateAccounts):
        return max(1, len(command.requests))
    return 1


def apply_group(tx: LedgerTx, clock: GroupClock, jobs: Sequence[Job]) -> None:
    """Run every job's command in ``tx``; set each job's outcome or error."""
    jobs = _admit_fenced(tx, clock, jobs)
    answered: dict[str, tuple[str, StoredResponse, int]] = {}
    i = 0
    while i < len(jobs):
        if isinstance(jobs[i].command, CreateTransfers):
            j = i
            while j < len(jobs) and isinstance(jobs[j].command, CreateTransfers):
                j += 1
            _apply_transfer_run(tx, clock, jobs[i:j], answered)
            i = j
            continue
        job = jobs[i]
        if not _replayed(tx, clock, job, answered):
            _finish(tx, clock, job, _apply_other(tx, clock, job.command), answered)
        i += 1


def _admit_fenced(tx: LedgerTx, clock: GroupClock, jobs: Sequence[Job]) -> Sequence[Job]:
    """Refuse jobs whose fencing token is older than the newest seen for their lock (in
    this transaction, so no newer holder can write in between); record newer tokens.
    Returns the jobs that may run."""
    newest: dict[str, int] = {}
    admitted: list[Job] = []
    for job in jobs:
        fence = getattr(job.command, "fence", None)
        if fence is None:
            admitted.append(job)
            continue
        if fence.name not in newest:
            newest[fence.name] = tx.fence_token(fence.name) or 0
        if fence.token < newest[fence.name]:
            job.error = FencedError(
                f"lock {fence.name!r}: token {fence.token} is older than "
                f"{newest[fence.name]}, which a newer holder wrote with"
            )
            continue
        if fence.token > newest[fence.name]:
            newest[fence.name] = fence.token
            tx.set_fence_token(fence.name, fence.token, clock.now)
        if isinstance(job.command, AdvanceFence):
            job.outcome = None  # recording the token was the whole command
            continue
        admitted.append(job)
    return admitted


def _apply_transfer_run(
    tx: LedgerTx,
    clock: GroupClock,
    jobs: Sequence[Job],
    answered: dict[str, tuple[str, StoredResponse, int]],
) -> None:
    """Consecutive transfer commands share one working set: one load, one write."""
    requests = [r for job in jobs for r in job.command.requests]
    ws = _load_working_set(tx, clock, requests)
    foreign = _foreign_ids(tx, ws, jobs)  # one read for the whole run
    for job in jobs:
        if not _replayed(tx, clock, job, answered):
            ws.foreign_ids = foreign if job.command.guard_ids else {}
            ws.decided = {i: (code, detail) for i, code, detail in job.command.refuse}
            kept = len(ws.new_refusals)
            if job.command.closes_credit_account:
                results = _credit_and_close(tx, clock, ws, job.command)
            else:
                results = _apply_transfers(tx, clock, ws, job.command)
            if not job.command.keep_refusals:
                _forget_refusals(ws, kept)
            if job.command.outbox:
                _write_outbox(tx, clock, job.command, results)
            if job.command.settlement:
                _reopen_closed_by_voids(tx, ws, job.command.requests, results)
            _finish(tx, clock, job, results, answered)
    _hand_over_resolved_holds(tx, clock, ws.changed_pendings.values(), ws.settled_holds)
    tx.write(ws)
    clock.last_timestamp = ws.last_timestamp


def _credit_and_close(
    tx: LedgerTx, clock: GroupClock, ws: WorkingSet, command: CreateTransfers
) -> list[TransferResult]:
    """Step 2 of a debt paid from another shard (``paycore.cluster.close_across``): the
    credit leg pays the whole debt of its credit account, which closes in this same
    transaction. Refused unless the account, as it stands now, could be closed by that
    credit: open, no holds, no chain moving its money, and owing exactly the amount (the
    account missing or closed is refused by the rules themselves, as ever). The refusal
    is kept for good under ``refusals_key``, so the payer's hold is voided on its
    strength; a retry of a leg written before answers ``exists``, the account closed."""
    assert command.refusals_key is not None
    (r,) = command.requests
    credited = ws.accounts.get(r.credit_account_id or "")
    if credited is not None and r.id not in ws.transfers:
        account = credited.to_account()  # as this transaction's earlier items left it
        why: tuple[ErrorCode, str] | None = None
        if account.flags.closed:
            pass  # the rules answer account_closed
        elif (
            account.debits_pending
            or account.credits_pending
            or credited.reserved
            or account_has_chain(tx, account.id)
        ):
            why = (
                ErrorCode.ACCOUNT_HAS_PENDING_TRANSFERS,
                f"account {account.id!r} has holds or a chain in progress: not closed",
            )
        elif account.balance + (r.amount or 0) != 0:
            why = (
                ErrorCode.ACCOUNT_HAS_BALANCE,
                f"account {account.id!r} stands at {account.balance} {account.currency}, "
                f"not -{r.amount}: its debt changed, not closed",
            )
        if why is not None:
            ws.decided = {0: why}
    results = _apply_transfers(tx, clock, ws, command)
    (result,) = results
    if result.ok and not result.exists and credited is not None:
        account = credited.account
        credited.account = msgspec.structs.replace(
            account, flags=msgspec.structs.replace(account.flags, closed=True)
        )
        tx.set_account_flags(credited.account)
    return results


def _forget_refusals(ws: WorkingSet, since: int) -> None:
    """Drop the refusals a command's items added to ``ws`` (``keep_refusals`` false)."""
    for refusal in ws.new_refusals[since:]:
        ws.refusals.pop((refusal.tenant, refusal.id), None)
    del ws.new_refusals[since:]


def _load_working_set(
    tx: LedgerTx, clock: GroupClock, requests: Sequence[TransferRequest]
) -> WorkingSet:
    ids: set[str] = set()
    pending_ids: set[str] = set()
    account_ids: set[str] = set()
    for r in requests:
        ids.add(r.id)
        if r.pending_id is not None:
            pending_ids.add(r.pending_id)
        if r.debit_account_id is not None:
            account_ids.add(r.debit_account_id)
        if r.credit_account_id is not None:
            account_ids.add(r.credit_account_id)
    transfers = tx.transfers_by_ids(ids | pending_ids)
    for t in transfers:
        # A repeated id, or the transfer a post/void names: whose it is decides what
        # the caller may see of it (holds' accounts are needed anyway).
        if t.id in ids or t.id in pending_ids:
            account_ids.add(t.debit_account_id)
            account_ids.add(t.credit_account_id)
    holds = [t for t in transfers if t.flags.pending and t.id in pending_ids]
    pendings: list[tuple[Transfer, PendingStatus, str | None]] = []
    if holds:
        for t in holds:
            account_ids.add(t.debit_account_id)
            account_ids.add(t.credit_account_id)
        status = tx.pending_statuses(t.id for t in holds)
        pendings = [(t, *status[t.id]) for t in holds]
    split_holds = [t.id for t in holds if is_client_split_hold(t)]
    accounts = tx.accounts_by_ids(account_ids, with_metadata=False).values()
    ws = WorkingSet(
        accounts,
        transfers,
        pendings,
        now=clock.now,
        last_timestamp=clock.last_timestamp,
        refusals=tx.refusals_by_ids(ids),  # the items' own ids: one read for the run
    )
    if split_holds:
        states = outbox_states(tx, split_holds)
        ws.settled_holds = {i for i in split_holds if states.get(i) == _OPEN}
    load_chain_guards(tx, ws, pending_ids)
    load_saga_holds(tx.run_sql, ws, pending_ids)
    return ws


def _run_legs(
    tx: LedgerTx, clock: GroupClock, command: CreateTransfers, write: bool, guarded: Sequence[str]
) -> tuple[list[TransferResult], WorkingSet]:
    """A linked chain's legs on this shard (``paycore.storage.chain_legs``): tried, and with
    ``write`` written when every one passed; a ``guarded`` id bound to another shard is
    refused, as a plain transfer's is."""
    ws = _load_working_set(tx, clock, command.requests)
    if guarded:
        ws.foreign_ids = tx.reserved_ids(guarded)
    if not write:
        ws.track_drawdown()
    results = ws.apply_transfers(
        command.requests, settlement=command.settlement, tenant=command.tenant, chains=False
    )
    if write and all(r.ok for r in results):
        if command.outbox:
            _write_outbox(tx, clock, command, results)
        # A chain resolves both legs of a cross-shard hold itself (one it opened too):
        # nothing is left to hand over.
        changed = ws.changed_pendings.values()
        split = {p.transfer.id for p in changed if is_client_split_hold(p.transfer)}
        _hand_over_resolved_holds(tx, clock, changed, ws.settled_holds | split, "resolved")
        tx.write(ws)
        clock.last_timestamp = ws.last_timestamp
    return results, ws


# Outbox states (``paycore.cluster.settlement.SagaState``) the store itself acts on.
_OPEN = "open"
_CHUNK = 500


def is_client_split_hold(t: Transfer) -> bool:
    """A client's hold whose legs live on two shards: this one is its source's."""
    note = None if t.metadata is None else t.metadata.get(SETTLEMENT_METADATA_KEY)
    return isinstance(note, dict) and note.get("role") == "hold" and bool(note.get("pending"))


def outbox_states(tx: LedgerTx, ids: Sequence[str]) -> dict[str, str]:
    """The outbox state of each of ``ids`` that has a row."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        part = list(ids[start : start + _CHUNK])
        marks = ", ".join("?" * len(part))
        query = f"SELECT transfer_id, state FROM outbox WHERE transfer_id IN ({marks})"
        found.update({str(row[0]): str(row[1]) for row in tx.run_sql(query, part)})
    return found


def _hand_over_resolved_holds(
    tx: LedgerTx,
    clock: GroupClock,
    changed: Iterable[Any],
    settled: set[str],
    state: str = "resolving",
) -> None:
    """A client's cross-shard hold posted, voided or expired here (its source) hands the
    same resolution to its target through its outbox row, in this same transaction."""
    ids = [
        state.transfer.id
        for state in changed
        if state.status is not PendingStatus.PENDING and state.transfer.id in settled
    ]
    if ids:
        tx.set_outbox_states([(i, state) for i in ids], clock.now)


def _set_outbox_states(tx: LedgerTx, clock: GroupClock, command: SetOutboxStates) -> list[bool]:
    current = outbox_states(tx, [change[0] for change in command.changes])
    moved: list[bool] = []
    changes: list[tuple[str, str]] = []
    for transfer_id, before, after in command.changes:
        ok = current.get(transfer_id) == before
        if ok:
            current[transfer_id] = after
            changes.append((transfer_id, after))
        moved.append(ok)
    if changes:
        tx.set_outbox_states(changes, clock.now)
    return moved


_REFUSAL_SECONDS = 10 * 365 * 24 * 3600
_refusal_encoder = msgspec.json.Encoder()


def _apply_transfers(
    tx: LedgerTx, clock: GroupClock, ws: WorkingSet, command: CreateTransfers
) -> list[TransferResult]:
    """Apply a command's items; with ``refusals_key``, refusals are kept for good.

    The rules keep the refusals that depend on state under their ids themselves
    (``paycore.ledger.refusals``). ``refusals_key`` (the settlement's step 2) keeps
    every refusal, validation ones included, because the relay voids the hold on the
    strength of it: no later code or rule may ever turn that credit into a success.
    """
    prefix = command.refusals_key
    if prefix is None:
        return ws.apply_transfers(
            command.requests, settlement=command.settlement, tenant=command.tenant
        )
    results: list[TransferResult | None] = [None] * len(command.requests)
    todo: list[int] = []
    refused_before = tx.idempotency_records(prefix + r.id for r in command.requests)
    for index, request in enumerate(command.requests):
        seen = refused_before.get(prefix + request.id)
        if seen is None:
            todo.append(index)
            continue
        refusal = msgspec.json.decode(seen[1].body)
        results[index] = TransferResult(
            id=request.id, code=ErrorCode(refusal["code"]), detail=refusal["detail"]
        )
    applied = ws.apply_transfers(
        [command.requests[i] for i in todo], settlement=command.settlement, tenant=command.tenant
    )
    expires_at = min(clock.now + _REFUSAL_SECONDS * 1_000_000_000, 2**63 - 1)
    for index, result in zip(todo, applied, strict=True):
        results[index] = result
        if result.code is not None:
            body = _refusal_encoder.encode({"code": result.code.value, "detail": result.detail})
            tx.save_idempotency(
                prefix + result.id, "refusal", StoredResponse(409, body), clock.now, expires_at
            )
    return [r for r in results if r is not None]


def _foreign_ids(tx: LedgerTx, ws: WorkingSet, jobs: Sequence[Job]) -> dict[str, str]:
    """The new ids of the run's guarded commands reserved here for transfers stored on
    other shards (reservations cannot change within the writer's transaction)."""
    new = {
        r.id
        for job in jobs
        if job.command.guard_ids
        for r in job.command.requests
        if r.id not in ws.transfers
    }
    return tx.reserved_ids(new) if new else {}


def _close(tx: LedgerTx, clock: GroupClock, command: CloseAccount) -> AccountResult:
    """Close; with ``transfer_balance_to``, a balance first moves there, in this transaction
    (its refusal, e.g. ``insufficient_funds`` of a target paying a debt, refuses the close)."""
    account_id, to = command.account_id, command.transfer_balance_to
    account = tx.accounts_by_ids([account_id], with_metadata=True).get(account_id)
    if account is not None and account_has_chain(tx, account_id):
        return AccountResult(
            id=account_id,
            code=ErrorCode.ACCOUNT_HAS_PENDING_TRANSFERS,
            detail="a linked chain across shards is moving money of this account",
        )
    result = close_account(account, account_id, command.tenant)
    if result.code is ErrorCode.ACCOUNT_HAS_BALANCE and account is not None and to is not None:
        if command.remainder_hold is not None:
            return _close_with_remainder_hold(tx, clock, command, account)
        request = free_remainder(
            account, to, lambda ids: {t.id: t for t in tx.transfers_by_ids(ids)}
        )
        ws = _load_working_set(tx, clock, [request])
        ws.foreign_ids = tx.reserved_ids([request.id])  # an id bound to another shard: refused
        (moved,) = ws.apply_transfers([request], tenant=command.tenant)
        if not moved.ok or moved.exists:  # exists: the derived id taken, by a client
            code = moved.code or ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
            detail = f"transfer_balance_to {to!r}: {moved.detail or code.value}"
            return AccountResult(id=account_id, code=code, detail=detail)
        tx.write(ws)
        clock.last_timestamp = ws.last_timestamp
        account = tx.accounts_by_ids([account_id], with_metadata=True)[account_id]
        result = close_account(account, account_id, command.tenant)
    if result.ok and not result.exists and result.account is not None:
        tx.set_account_flags(result.account)
    return result


def _close_with_remainder_hold(
    tx: LedgerTx, clock: GroupClock, command: CloseAccount, account: Account
) -> AccountResult:
    """Close ``account`` and hold its whole (positive) balance for the clearing account
    of ``transfer_balance_to``'s shard, with the saga's outbox row: step 1 of the saga
    that credits the target (``paycore.cluster.close_across``)."""
    assert command.remainder_hold is not None
    assert command.remainder_row is not None
    if account.balance < 0:
        # It owes now (the router read a positive balance): the debt is paid from the
        # target's shard instead; this answer makes the router plan the close again.
        return AccountResult(
            id=account.id,
            code=ErrorCode.ACCOUNT_HAS_BALANCE,
            detail=f"account {account.id!r} owes {-account.balance} {account.currency} now",
        )
    request = msgspec.structs.replace(command.remainder_hold, amount=account.balance)
    ws = _load_working_set(tx, clock, [request])
    ws.foreign_ids = tx.reserved_ids([request.id])  # an id bound to another shard: refused
    (held,) = ws.apply_transfers([request])
    if not held.ok or held.exists or held.transfer is None:
        code = held.code or ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
        detail = f"transfer_balance_to {command.transfer_balance_to!r}: {held.detail or code}"
        return AccountResult(id=account.id, code=code, detail=detail)
    tx.write(ws)
    clock.last_timestamp = ws.last_timestamp
    t = held.transfer
    tx.insert_outbox(
        [
            msgspec.structs.replace(
                command.remainder_row,
                amount=t.amount,
                currency=t.currency,
                created_at=t.timestamp,
                updated_at=clock.now,
            )
        ]
    )
    account = tx.accounts_by_ids([account.id], with_metadata=True)[account.id]
    closed = msgspec.structs.replace(
        account, flags=msgspec.structs.replace(account.flags, closed=True)
    )
    tx.set_account_flags(closed)
    return AccountResult(id=account.id, account=closed)


def _reopen_closed_by_voids(
    tx: LedgerTx,
    ws: WorkingSet,
    requests: Sequence[TransferRequest],
    results: Sequence[TransferResult],
) -> None:
    """A void of a closing hold (its target refused the remainder) reopens the account
    it closed: the close did not happen, as its answer says."""
    for r, result in zip(requests, results, strict=True):
        if not result.ok or result.exists or not r.flags.void_pending:
            continue
        hold = ws.transfers.get(r.pending_id or "")
        if hold is None or not is_closing_hold(hold):
            continue
        state = ws.accounts[hold.debit_account_id]
        account = state.account
        if account.flags.closed:
            flags = msgspec.structs.replace(account.flags, closed=False)
            state.account = msgspec.structs.replace(account, flags=flags)
            tx.set_account_flags(state.account)


def remainder_transfer(account: Account, to: str, attempt: int = 0) -> TransferRequest:
    """The transfer that leaves ``account``'s posted balance at zero, ``to`` on the other
    side (a debt is paid by ``to``). Its id is derived from the account, which closes at
    most once: ``close_`` and 40 hex digits, in the account's tenant's namespace (the
    tenant reads it as its own; another tenant's ``close_...`` is another id).

    ``attempt`` > 0: a close whose remainder went to another shard and was refused there
    voided its hold and reopened the account, and that hold keeps attempt 0's id for
    good; the next close takes the next attempt's id (``free_remainder``)."""
    balance = account.balance
    seed = f"{account.tenant}\x00{account.id}".encode()
    if attempt:
        seed += f"\x00{attempt}".encode()
    return TransferRequest(
        id=id_prefix(account.tenant) + "close_" + hashlib.sha256(seed).hexdigest()[:40],
        debit_account_id=account.id if balance > 0 else to,
        credit_account_id=to if balance > 0 else account.id,
        amount=abs(balance),
        currency=account.currency,
    )


def free_remainder(
    account: Account, to: str, stored: Callable[[list[str]], Mapping[str, Transfer]]
) -> TransferRequest:
    """``remainder_transfer`` of the first attempt whose id no earlier closing hold of
    ``account`` holds (such a hold was voided: the account is open again). ``stored``
    reads transfers by id on the account's shard."""
    attempt = 0
    while True:
        request = remainder_transfer(account, to, attempt)
        earlier = stored([request.id]).get(request.id)
        if earlier is None or not (
            is_closing_hold(earlier) and earlier.debit_account_id == account.id
        ):
            return request  # free, or a client's transfer: refused as it always was
        attempt += 1


def _reserve(tx: LedgerTx, clock: GroupClock, command: ReserveTransferIds) -> list[str]:
    ids = {transfer_id for transfer_id, _ in command.entries}
    bound = tx.reserved_ids(ids)
    free = ids - bound.keys()
    # Stored here before anyone reserved it elsewhere, or refused here: the id's answer
    # is on this shard, so a retry routed elsewhere (another debit account, hence other
    # fields) must not be written there.
    for t in tx.transfers_by_ids(free):
        bound[t.id] = command.shard
    for refusal in tx.refusals_by_ids(free):
        bound[refusal.id] = command.shard
    new: list[tuple[str, str]] = []
    for transfer_id, shard in command.entries:
        if transfer_id not in bound:
            bound[transfer_id] = shard
            new.append((transfer_id, shard))
    if new:
        tx.reserve_ids(new, clock.now)
    return [bound[transfer_id] for transfer_id, _ in command.entries]


def _write_outbox(
    tx: LedgerTx, clock: GroupClock, command: CreateTransfers, results: Sequence[TransferResult]
) -> None:
    """Saga rows ride on their item: written only when that item is newly written."""
    inserts: list[OutboxRow] = []
    changes: list[tuple[str, str]] = []
    for write in command.outbox:
        result = results[write.index]
        if not result.ok or result.exists or result.transfer is None:
            continue
        if write.insert:
            t = result.transfer
            # created_at is the transfer's own timestamp: the target's leg shows it too,
            # so the client sees one timestamp for the transfer on both shards.
            inserts.append(
                msgspec.structs.replace(
                    write.row,
                    amount=t.amount,
                    currency=t.currency,
                    created_at=t.timestamp,
                    updated_at=clock.now,
                )
            )
        else:
            changes.append((write.row.transfer_id, write.row.state))
    if inserts:
        tx.insert_outbox(inserts)
    if changes:
        tx.set_outbox_states(changes, clock.now)


def _apply_other(tx: LedgerTx, clock: GroupClock, command: Command) -> Any:
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"unknown command {command!r}")
    return handler(tx, clock, command)


def _purge_outbox(tx: LedgerTx, clock: GroupClock, command: PurgeOutbox) -> int:
    # Clamped at -1: a retention longer than the clock's age purges nothing.
    before = max(-1, clock.now - int(command.retention_seconds * 1_000_000_000))
    return tx.purge_outbox(FINISHED_OUTBOX_STATES, before, command.limit)


def _claim_outbox(tx: LedgerTx, clock: GroupClock, command: ClaimOutbox) -> list[OutboxRow]:
    until = clock.now + int(command.lease_seconds * 1_000_000_000)
    return tx.claim_outbox(command.owner, command.open_states, clock.now, until, command.limit)


def _peek_idempotency(
    tx: LedgerTx, clock: GroupClock, command: PeekIdempotency
) -> tuple[str, StoredResponse] | None:
    seen = tx.idempotency_record(command.key)
    if seen is None or seen[2] <= clock.now:
        return None
    return seen[0], seen[1]


def _chain_command(tx: LedgerTx, clock: GroupClock, command: ChainCommand) -> Any:
    return apply_chain_command(tx, clock, command, _run_legs)


def _create_accounts(
    tx: LedgerTx, clock: GroupClock, command: CreateAccounts
) -> list[AccountResult]:
    known = tx.accounts_by_ids([r.id for r in command.requests], with_metadata=True)
    results = []
    created: list[Account] = []
    for request in command.requests:
        existing = known.get(request.id)
        # An account that exists takes no timestamp: asking for one again (the clearing
        # accounts, at every saga) would move the shard's clock for nothing.
        timestamp = clock.next_timestamp() if existing is None else 0
        result = new_account(request, existing, timestamp)
        results.append(result)
        if result.ok and not result.exists and result.account is not None:
            known[result.id] = result.account
            created.append(result.account)
    tx.insert_accounts(created)
    return results


def _expire(tx: LedgerTx, clock: GroupClock, limit: int) -> list[str]:
    holds = tx.due_holds(clock.now, limit)
    if not holds:
        return []
    # A client's hold across shards (it has an outbox row) expires here, on its source,
    # once both legs exist; its row then hands the expiry to the target.
    rows = outbox_states(tx, [t.id for t in holds])
    locked = locked_holds(tx, [t.id for t in holds])  # a prepared chain resolves them
    holds = [t for t in holds if rows.get(t.id, _OPEN) == _OPEN and t.id not in locked]
    if not holds:
        return []
    ids = {t.debit_account_id for t in holds} | {t.credit_account_id for t in holds}
    ws = WorkingSet(
        tx.accounts_by_ids(ids, with_metadata=False).values(),
        holds,
        [(t, PendingStatus.PENDING, None) for t in holds],
        now=clock.now,
        last_timestamp=clock.last_timestamp,
    )
    # Its rows of a ``history`` account show that account's holds in flight as posted.
    load_saga_holds(tx.run_sql, ws, ())
    expired = ws.expire_due()
    _hand_over_resolved_holds(tx, clock, expired, set(rows))
    tx.write(ws)
    clock.last_timestamp = ws.last_timestamp
    return [state.transfer.id for state in expired]


def _replayed(
    tx: LedgerTx,
    clock: GroupClock,
    job: Job,
    answered: dict[str, tuple[str, StoredResponse, int]],
) -> bool:
    """Answer ``job`` from the stored response if its key was seen; True if done."""
    idem: Idempotency | None = job.idempotency
    if idem is None:
        return False
    seen = answered.get(idem.key) or tx.idempotency_record(idem.key)
    if seen is None or seen[2] <= clock.now:  # unknown, or past its retention
        return False
    if seen[0] != idem.fingerprint:
        job.error = IdempotencyError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was first used with a different request",
        )
    else:
        job.outcome = (seen[1], True)
    return True


def _finish(
    tx: LedgerTx,
    clock: GroupClock,
    job: Job,
    result: Any,
    answered: dict[str, tuple[str, StoredResponse, int]],
) -> None:
    idem: Idempotency | None = job.idempotency
    if idem is None:
        job.outcome = result
        return
    response = idem.render(result)
    expires_at = min(clock.now + idem.retention_seconds * 1_000_000_000, 2**63 - 1)
    tx.save_idempotency(idem.key, idem.fingerprint, response, clock.now, expires_at)
    answered[idem.key] = (idem.fingerprint, response, expires_at)
    job.outcome = (response, False)


# Which function applies each command (``CreateTransfers`` runs are applied together by
# ``apply_group``, ``AdvanceFence`` by the fencing check). A feature's commands are the
# members of its union (``PaymentCommand``...), so a new one is dispatched without an
# edit here; a test checks that every command of ``Command`` has its handler.
_Handler = Callable[[LedgerTx, GroupClock, Any], Any]
_HANDLERS: dict[type, _Handler] = {
    CreateAccounts: _create_accounts,
    CloseAccount: _close,
    ExpirePending: lambda tx, clock, command: _expire(tx, clock, command.limit),
    PurgeIdempotency: lambda tx, clock, command: tx.purge_idempotency(clock.now, command.limit),
    PurgeOutbox: _purge_outbox,
    ClaimOutbox: _claim_outbox,
    ReserveTransferIds: _reserve,
    ReleaseTransferIds: lambda tx, clock, command: sum(
        len(tx.run_sql("DELETE FROM transfer_ids WHERE id = ? AND shard = ? RETURNING id", e))
        for e in command.entries
    ),
    SetOutboxStates: _set_outbox_states,
    PeekIdempotency: _peek_idempotency,
    **dict.fromkeys(get_args(ChainCommand), _chain_command),
    **dict.fromkeys(get_args(PaymentCommand), apply_payment_command),
    **dict.fromkeys(get_args(KeyCommand), apply_key_command),
    **dict.fromkeys(get_args(EndpointCommand), apply_endpoint_command),
    **dict.fromkeys(get_args(DeliveryCommand), apply_delivery_command),
    AdvanceStreamCursor: apply_stream_command,
    CreateFxQuote: lambda tx, clock, command: apply_fx_command(tx, command),
    RecordSlotMap: lambda tx, clock, command: apply_slot_map_command(tx, clock.now, command),
    **dict.fromkeys(get_args(SlotMoveCommand), apply_slot_move_command),
    **dict.fromkeys(
        get_args(ReconciliationCommand),
        lambda tx, clock, command: apply_reconciliation_command(tx, command),
    ),
}
HANDLED_ELSEWHERE: Final = (CreateTransfers, AdvanceFence)
