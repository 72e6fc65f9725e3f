"""Cross-shard transfers: sagas of local transactions, driven by an outbox.

A transfer ``T`` from account A (source shard ``s``) to account B (target shard ``d``)::

    step 1, on s (the router, in ONE transaction):
        hold T: debit A, credit  clearing:s:d:CUR   pending; limits of A checked here,
        + outbox row T (state held)                  holds included
    step 2, on d (the request itself; the relay after a fault):
        T: debit clearing:d:s:CUR, credit B          posted; idempotent by transfer id; a
                                                     refusal is kept under saga:s:T, so the
                                                     outcome (credited or rejected) is fixed
    step 3, on s (in ONE transaction):
        post T (id xs.post.<hash>) + row -> completed    if step 2 credited B
        void T (id xs.void.<hash>) + row -> compensated  if step 2 was rejected

A client's hold (``pending``) between shards is the same saga with a pending leg on each
side, and the source's hold as the one that decides::

    step 1, on s: hold T: debit A, credit clearing:s:d  (the client's timeout) + row held_pending
    step 2, on d: hold T: debit clearing:d:s, credit B  pending, no timeout (never expires alone)
    step 3, on s: row -> open                            both legs exist: the hold is usable
    then, on s, in the transaction that posts (in full or part), voids or expires T:
                  row -> resolving
    and on d:     the same post (same id, same amount) or void of d's leg; row -> resolved

So A shows the hold as debits_pending and B as credits_pending, exactly as on one shard;
only the source shard decides (a post, a void, or the expiry job there), and the target
follows. Until step 3 the hold is ``in_flight`` and cannot be posted or voided
(``transfer_in_flight``, retryable); it does not expire either (it expires once open).

The request that creates a saga (or posts or voids a hold) drives every step itself and
answers once they are done: ``posted`` (or ``pending``), never ``in_flight``, unless a
fault interrupted it. Its rows are leased to the request for a few seconds; after that
the relay (``paycore.workers.relay``) finishes what a crash or a fault left.

Clearing accounts (``clearing:<home shard>:<peer shard>:<currency>``, no limits) are
created on demand on their home shard; ids starting with ``clearing:`` are reserved.
While T is in flight the money shows as pending on A (and on s's clearing account);
once no saga is open, every pair of clearing accounts nets to zero. Nothing is ever
posted and then reversed: a rejected credit voids the hold, which never posted.

Validation before step 1 (in the router): B is read on d; if it is missing, closed or
of another currency the transfer is refused at once with the code a single-shard
transfer would get. The read is racy (B may be closed a moment later), so step 2 may
still be rejected; the hold is then voided (compensated) and the transfer shows as
``voided``. A's existence, currency, closed flag and limits are checked by the ledger
rules in step 1 itself.

A close with ``transfer_balance_to`` across shards rides on a saga
(``paycore.cluster.close_across``): a positive remainder on step 1 (a closing hold, whose
void reopens the account); a debt on step 2, whose outbox row carries
``OUTBOX_CLOSES_CREDIT``: its credit leg pays the account's whole debt and closes it in
one transaction, refused (and the payer's hold voided) unless the account still owes
exactly that, with no holds.

Every saga transfer carries ``metadata["paycore:xs"]`` (its role, the real accounts and
the client's timestamp), so that reads can show the client's view: ``T`` from A to B,
with one timestamp (step 1's) on both shards. The client's own metadata is kept beside it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

import msgspec

from paycore.cluster.concurrently import gather_all, gather_outcomes
from paycore.cluster.namespaces import (
    CLEARING_PREFIX,
    PAYMENT_TRANSFER_PREFIX,
    PSP_PREFIX,
    SAGA_KEY,
    clearing_account_id,
    is_reserved,
    parse_clearing,
    parse_psp,
    psp_account_id,
)
from paycore.errors import ErrorCode, FencedError, PaycoreError, UnavailableError
from paycore.ledger.model import (
    SYSTEM_TENANT,
    AccountRequest,
    Transfer,
    TransferFlags,
    TransferRequest,
    TransferStatus,
    TransferView,
)
from paycore.ledger.rules import TransferResult
from paycore.storage.base import (
    OUTBOX_CLOSES_CREDIT,
    ChainOutcome,
    ClaimOutbox,
    CreateAccounts,
    CreateTransfers,
    DecideChain,
    Fence,
    FinishChain,
    OutboxRow,
    OutboxWrite,
    SetOutboxStates,
    StaleChains,
)
from paycore.storage.codec import (
    decode_metadata,
    encode_metadata,
    transfer_flags_bits,
    transfer_flags_from_bits,
)
from paycore.storage.store import Store

__all__ = [
    "CLEARING_PREFIX",
    "LIVE_STATES",
    "OPEN_STATES",
    "PAYMENT_TRANSFER_PREFIX",
    "PSP_PREFIX",
    "SAGA_KEY",
    "SAGA_TRANSITIONS",
    "IllegalSagaTransition",
    "SagaState",
    "Settlement",
    "advance",
    "clearing_account_id",
    "client_view_accounts",
    "closes_credit",
    "credit_leg",
    "hold_request",
    "is_bookkeeping",
    "is_reserved",
    "mirror",
    "parse_clearing",
    "parse_psp",
    "present_transfer",
    "present_view",
    "psp_account_id",
    "resolution",
    "resolve_request",
    "saga_info",
]

log = logging.getLogger(__name__)


class SagaState(StrEnum):
    """Lifecycle of a cross-shard transfer (the ``state`` of its outbox row).

    held          a transfer's step 1 committed: A's hold and the row exist; stored
    held_pending  the same for a client's hold; stored
    credited      step 2 credited B on the target shard; known to the relay only
                  (the target's idempotency record keeps it durably)
    prepared      step 2 wrote B's pending leg of a hold; known to the relay only
    rejected      step 2 was refused for good (B missing, closed, other currency...);
                  known to the relay only, like ``credited``
    completed     step 3 posted the transfer's hold; final, stored
    compensated   step 3 voided the hold; final, stored
    open          both legs of a client's hold exist; the source decides; stored
    resolving     the source posted, voided or expired the hold; d's leg follows; stored
    resolved      d's leg mirrors the source's resolution; final, stored
    """

    HELD = "held"
    HELD_PENDING = "held_pending"
    CREDITED = "credited"
    PREPARED = "prepared"
    REJECTED = "rejected"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    OPEN = "open"
    RESOLVING = "resolving"
    RESOLVED = "resolved"


SAGA_TRANSITIONS: Final[dict[SagaState, frozenset[SagaState]]] = {
    SagaState.HELD: frozenset({SagaState.CREDITED, SagaState.REJECTED}),
    SagaState.HELD_PENDING: frozenset({SagaState.PREPARED, SagaState.REJECTED}),
    SagaState.CREDITED: frozenset({SagaState.COMPLETED}),
    SagaState.PREPARED: frozenset({SagaState.OPEN}),
    SagaState.REJECTED: frozenset({SagaState.COMPENSATED}),
    SagaState.COMPLETED: frozenset(),
    SagaState.COMPENSATED: frozenset(),
    SagaState.OPEN: frozenset({SagaState.RESOLVING}),
    SagaState.RESOLVING: frozenset({SagaState.RESOLVED}),
    SagaState.RESOLVED: frozenset(),
}
# Every state but the final ones: what the audit accounts for in clearing accounts.
LIVE_STATES: Final = (
    SagaState.HELD.value,
    SagaState.CREDITED.value,
    SagaState.HELD_PENDING.value,
    SagaState.OPEN.value,
    SagaState.RESOLVING.value,
)
# The states with work left for the request or the relay (the relay claims these rows).
# ``credited`` is stored only by a linked chain across shards, which does step 2 in its
# own commit (``paycore.cluster.chains``).
OPEN_STATES: Final = (
    SagaState.HELD.value,
    SagaState.HELD_PENDING.value,
    SagaState.CREDITED.value,
    SagaState.RESOLVING.value,
)


class IllegalSagaTransition(ValueError):
    """A saga was asked to move along an edge its transition table does not have."""


def advance(state: SagaState, to: SagaState) -> SagaState:
    """The state after ``state -> to``; raises ``IllegalSagaTransition`` if not allowed."""
    if to not in SAGA_TRANSITIONS[state]:
        raise IllegalSagaTransition(f"saga cannot go from {state} to {to}")
    return to


_EXPIRED_BY: Final = "xs.expire."


def _derived_id(action: str, transfer_id: str) -> str:
    return f"xs.{action}." + hashlib.sha256(transfer_id.encode()).hexdigest()[:40]


# -- the transfers of a saga ----------------------------------------------------------------


def _meta(client: dict[str, Any] | None, info: dict[str, Any]) -> dict[str, Any]:
    meta = dict(client or {})
    meta[SAGA_KEY] = {**info, "client_metadata": client is not None}
    return meta


def saga_info(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The settlement's note on a saga transfer, or None for any other transfer."""
    if not metadata:
        return None
    info = metadata.get(SAGA_KEY)
    return info if isinstance(info, dict) else None


def hold_request(
    r: TransferRequest,
    source: str,
    target: str,
    currency: str,
    *,
    closing: bool = False,
    closes_credit: bool = False,
) -> tuple[TransferRequest, OutboxRow]:
    """Step 1 for client request ``r``: the hold and (to write with it) the outbox row.

    A client's hold keeps its own timeout; a transfer's hold never expires by itself.
    ``closing``: the remainder of an account closed in the same transaction, which a
    void of the hold reopens (``paycore.cluster.close_across``). ``closes_credit``: the
    payment of the credit account's whole debt, which step 2 closes with the credit
    (the row's ``OUTBOX_CLOSES_CREDIT`` bit, ``paycore.cluster.close_across``)."""
    assert r.debit_account_id is not None
    assert r.credit_account_id is not None
    client_hold = r.flags.pending
    info: dict[str, Any] = {
        "role": "hold",
        "debit_account_id": r.debit_account_id,
        "credit_account_id": r.credit_account_id,
        "shard": target,
    }
    if client_hold:
        info["pending"] = True
    if closing:
        info["closing"] = True
    hold = TransferRequest(
        id=r.id,
        debit_account_id=r.debit_account_id,
        credit_account_id=clearing_account_id(source, target, currency),
        amount=r.amount,
        currency=r.currency,
        code=r.code,
        flags=TransferFlags(pending=True, balancing=r.flags.balancing, linked=r.flags.linked),
        timeout_seconds=r.timeout_seconds if client_hold else 0,
        metadata=_meta(r.metadata, info),
    )
    row = OutboxRow(
        transfer_id=r.id,
        target_shard=target,
        debit_account_id=r.debit_account_id,
        credit_account_id=r.credit_account_id,
        amount=r.amount or 0,  # the written hold's amount replaces it
        currency=currency,
        code=r.code,
        metadata=encode_metadata(r.metadata),
        state=(SagaState.HELD_PENDING if client_hold else SagaState.HELD).value,
        flags=transfer_flags_bits(TransferFlags(linked=r.flags.linked, balancing=r.flags.balancing))
        | (OUTBOX_CLOSES_CREDIT if closes_credit else 0),
        timeout_seconds=r.timeout_seconds if client_hold else 0,
    )
    return hold, row


def resolve_request(r: TransferRequest, hold: Transfer) -> TransferRequest:
    """A client's post or void of the cross-shard hold ``hold`` (stored on its source), as
    written there: marked with the saga's note, so that reads show it from A to B."""
    info = saga_info(hold.metadata) or {}
    note = {
        "role": "resolve",
        "debit_account_id": info.get("debit_account_id", hold.debit_account_id),
        "credit_account_id": info.get("credit_account_id", hold.credit_account_id),
        "shard": info.get("shard", ""),
        # The accounts as the client named them (or not): its request's fingerprint.
        "given": [r.debit_account_id, r.credit_account_id],
    }
    # The client names A and B (its view); the hold itself joins A and a clearing account.
    return msgspec.structs.replace(
        r, debit_account_id=None, credit_account_id=None, metadata=_meta(r.metadata, note)
    )


def client_view_accounts(r: TransferRequest, hold: Transfer) -> bool:
    """A post or void naming accounts names the ones the client sees on ``hold``."""
    info = saga_info(hold.metadata) or {}
    return r.debit_account_id in (None, info.get("debit_account_id")) and (
        r.credit_account_id in (None, info.get("credit_account_id"))
    )


def _client_metadata(row: OutboxRow) -> dict[str, Any] | None:
    return decode_metadata(row.metadata)


def closes_credit(row: OutboxRow) -> bool:
    """Step 2 of ``row`` pays its credit account's whole debt and closes it."""
    return bool(row.flags & OUTBOX_CLOSES_CREDIT)


def credit_leg(row: OutboxRow, source: str) -> TransferRequest:
    """Step 2: debit the target's clearing account for ``source``, credit B (a pending leg
    for a client's hold)."""
    pending = row.state == SagaState.HELD_PENDING.value
    info: dict[str, Any] = {
        "role": "credit",
        "debit_account_id": row.debit_account_id,
        "credit_account_id": row.credit_account_id,
        "shard": source,
        "timestamp": row.created_at,
    }
    if pending:
        info["pending"] = True
        if row.timeout_seconds:  # shown on B's side; only the source's hold expires
            info["timeout_seconds"] = row.timeout_seconds
    if closes_credit(row):
        info["closes"] = True  # B pays its debt and closes with it (``close_across``)
    kept = transfer_flags_from_bits(row.flags)
    return TransferRequest(
        id=row.transfer_id,
        debit_account_id=clearing_account_id(row.target_shard, source, row.currency),
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        currency=row.currency,
        code=row.code,
        flags=TransferFlags(pending=pending, linked=kept.linked, balancing=kept.balancing),
        metadata=_meta(_client_metadata(row), info),
    )


def resolution(row: OutboxRow, state: SagaState) -> tuple[TransferRequest, OutboxRow]:
    """Step 3: post (``completed``) or void (``compensated``) the hold, and the row's state."""
    post = state is SagaState.COMPLETED
    info = {
        "role": "post" if post else "void",
        "debit_account_id": row.debit_account_id,
        "credit_account_id": row.credit_account_id,
        "shard": row.target_shard,
    }
    request = TransferRequest(
        id=_derived_id("post" if post else "void", row.transfer_id),
        pending_id=row.transfer_id,
        flags=TransferFlags(post_pending=post, void_pending=not post),
        metadata=_meta(None, info),
    )
    return request, msgspec.structs.replace(row, state=state.value)


def mirror(row: OutboxRow, source: str, hold: TransferView, by: Transfer | None) -> TransferRequest:
    """What the target does once the source resolved a client's hold: the same post (same
    id and amount) or void of its own leg; a void with a derived id after an expiry."""
    status = hold.status
    if status is TransferStatus.EXPIRED or by is None:
        note: dict[str, Any] = {"role": "expire", "shard": source}
        return TransferRequest(
            id=_derived_id("expire", row.transfer_id),
            pending_id=row.transfer_id,
            flags=TransferFlags(void_pending=True),
            metadata=_meta(None, note),
        )
    post = status is TransferStatus.POSTED
    shown, _ = present_transfer(by)
    info: dict[str, Any] = {
        "role": "credit",
        "debit_account_id": row.debit_account_id,
        "credit_account_id": row.credit_account_id,
        "shard": source,
        "timestamp": by.timestamp,
    }
    if by.flags.linked:
        # Shown as the client sent it; not set on the mirror itself, where it would link
        # this mirror to the next one of its batch.
        info["linked"] = True
    return TransferRequest(
        id=by.id,
        pending_id=row.transfer_id,
        amount=by.amount if post else None,
        code=by.code,
        flags=TransferFlags(post_pending=post, void_pending=not post),
        metadata=_meta(shown.metadata, info),
    )


# -- what readers see -----------------------------------------------------------------------

# Roles of the transfers a saga writes. The source's (the hold, a client's post or void of
# it) are the client's transfers; the target's credit legs show the same transfer from B's
# side; the others (step 3, an expiry's mirror) are bookkeeping, never shown.
SOURCE_ROLES: Final = frozenset({"hold", "resolve"})
HIDDEN_ROLES: Final = frozenset({"post", "void", "expire"})


def is_bookkeeping(t: Transfer) -> bool:
    """A saga's own transfer that no client asked for (hidden from listings)."""
    info = saga_info(t.metadata)
    return info is not None and info.get("role") in HIDDEN_ROLES


def present_transfer(t: Transfer) -> tuple[Transfer, bool]:
    """The client's view of a stored transfer: ``(transfer, is_saga_hold)``."""
    info = saga_info(t.metadata)
    if info is None:
        return t, False
    meta = {k: v for k, v in (t.metadata or {}).items() if k != SAGA_KEY}
    client_meta = meta if info.get("client_metadata") else None
    role = info.get("role")
    timestamp = info.get("timestamp")
    timeout = info.get("timeout_seconds")
    shown = msgspec.structs.replace(
        t,
        debit_account_id=str(info.get("debit_account_id", t.debit_account_id)),
        credit_account_id=str(info.get("credit_account_id", t.credit_account_id)),
        metadata=client_meta,
        timestamp=timestamp if isinstance(timestamp, int) and timestamp > 0 else t.timestamp,
        timeout_seconds=timeout if isinstance(timeout, int) else t.timeout_seconds,
    )
    if info.get("linked") is True:  # a mirror of a client's linked post or void
        shown = msgspec.structs.replace(
            shown, flags=msgspec.structs.replace(shown.flags, linked=True)
        )
    if role == "hold":
        if info.get("pending"):  # a client's hold: pending, with its own timeout
            return shown, True
        flags = TransferFlags(balancing=t.flags.balancing, linked=t.flags.linked)
        return msgspec.structs.replace(shown, flags=flags, timeout_seconds=0), True
    return shown, False


def present_view(view: TransferView, *, settled: bool = True) -> TransferView:
    """A read view as the client sees it. A transfer's hold is the transfer: ``in_flight``
    until posted, ``voided`` when compensated; a client's hold is ``in_flight`` until
    both its legs exist (``settled``), then has the hold's own status."""
    transfer, is_hold = present_transfer(view.transfer)
    if transfer is view.transfer:
        return view
    status = view.status
    client_hold = is_hold and transfer.flags.pending
    if is_hold and status is TransferStatus.PENDING and not (client_hold and settled):
        status = TransferStatus.IN_FLIGHT
    if status is TransferStatus.VOIDED and (view.resolved_by or "").startswith(_EXPIRED_BY):
        status = TransferStatus.EXPIRED  # the target's leg, released after the source expired
    resolved_by = view.resolved_by if client_hold or not is_hold else None
    if resolved_by is not None and resolved_by.startswith("xs."):
        resolved_by = None
    return TransferView(transfer, status, resolved_by)


def present_result(result: TransferResult) -> TransferResult:
    """A step-1 result as the client sees it: its transfer, in flight."""
    if result.transfer is None:
        return result
    transfer, is_hold = present_transfer(result.transfer)
    return msgspec.structs.replace(result, transfer=transfer, in_flight=is_hold)


# -- the relay's work -------------------------------------------------------------------------


class Settlement:
    """Steps 2 and 3 for outbox rows of a source shard (see the module docstring).

    Run by the request that wrote step 1 (its rows leased to it) and by the relay for rows
    whose lease ended. Safe to run on several nodes at once: rows are leased by
    ``ClaimOutbox``, step 2's outcome is fixed by its refusal record on the target, step 3
    and the mirrors ride on transfer ids, and state changes are conditional.
    """

    def __init__(
        self,
        shards: Mapping[str, Store],
        *,
        owner: str,
        lease_seconds: float = 30.0,
        batch_limit: int = 8189,
        keep_refusals: bool = False,
    ) -> None:
        self.shards = shards
        # Step 2's refusals by transfer id, for a request that answers with them (the
        # request pops its own; the relay keeps none).
        self.keep_refusals = keep_refusals
        self.refusals: dict[str, tuple[ErrorCode, str]] = {}
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.batch_limit = batch_limit
        self._clearing: set[str] = set()
        self.completed = 0
        self.compensated = 0
        self.resolved = 0
        self.retries = 0

    async def run_shard(self, source: str, fence: Fence | None = None) -> int:
        """One pass over ``source``'s open outbox rows; returns how many were claimed.

        ``fence``: the token of this relay's leadership of ``source``; every write of
        the pass carries it, so a deposed relay that has not noticed yet writes nothing.
        """
        rows: list[OutboxRow] = await self.shards[source].execute(
            ClaimOutbox(self.owner, OPEN_STATES, self.lease_seconds, self.batch_limit, fence=fence)
        )
        if rows:
            await self.settle(source, rows, fence)
        return len(rows) + await self.recover_chains(source, fence)

    async def recover_chains(self, shard: str, fence: Fence | None = None) -> int:
        """Finish the linked chains prepared on ``shard`` whose request did not come back
        within the lease: their coordinator's decision is asked for (and made there,
        ``aborted``, if it never was), then applied here. Returns how many."""
        stale: list[tuple[str, str]] = await self.shards[shard].execute(
            StaleChains(self.lease_seconds, self.batch_limit)
        )
        for chain_id, coordinator in stale:
            decided: ChainOutcome = await self.shards[coordinator].execute(
                DecideChain(chain_id, (), commit=False)
            )
            commit = decided.state == "committed"
            log.warning(
                "chain %s: finishing on %s after its request: %s", chain_id, shard, decided.state
            )
            await self.shards[shard].execute(FinishChain(chain_id, commit))
        return len(stale)

    async def settle(
        self, source: str, rows: Sequence[OutboxRow], fence: Fence | None = None
    ) -> dict[str, SagaState]:
        """The remaining steps for ``rows`` of shard ``source``; returns the state each
        row reached (rows whose target could not be reached now are absent)."""
        later = (SagaState.RESOLVING.value, SagaState.CREDITED.value)
        fresh = [r for r in rows if r.state not in later]
        resolving = [r for r in rows if r.state == SagaState.RESOLVING.value]
        credited = [(r, SagaState.COMPLETED) for r in rows if r.state == SagaState.CREDITED.value]
        reached: dict[str, SagaState] = {}
        jobs = []
        if fresh:
            jobs.append(self._settle_fresh(source, fresh, fence, reached))
        if resolving:
            jobs.append(self._settle_resolving(source, resolving, fence, reached))
        if credited:
            jobs.append(self._resolve(source, credited, fence, reached))
        for outcome in await gather_outcomes(jobs):
            if isinstance(outcome, BaseException):
                raise outcome
        return reached

    async def _settle_fresh(
        self,
        source: str,
        rows: Sequence[OutboxRow],
        fence: Fence | None,
        reached: dict[str, SagaState],
    ) -> None:
        if not rows:
            return
        await self._ensure_clearing(source, rows)
        by_target: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_target.setdefault(row.target_shard, []).append(row)
        targets = list(by_target)
        outcomes = await gather_outcomes(
            self._credit(source, t, by_target[t], fence) for t in targets
        )
        decided: list[tuple[OutboxRow, SagaState]] = []
        opened: list[OutboxRow] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._left_for_later(outcome, f"sagas {source} -> {target}: step 2")
                continue
            for row, step2 in zip(by_target[target], outcome, strict=True):
                state = advance(SagaState(row.state), step2)
                if state is SagaState.PREPARED:
                    opened.append(row)
                    continue
                final = (
                    SagaState.COMPLETED if state is SagaState.CREDITED else SagaState.COMPENSATED
                )
                decided.append((row, advance(state, final)))
        jobs = []
        if decided:
            jobs.append(self._resolve(source, decided, fence, reached))
        if opened:
            changes = tuple(
                (r.transfer_id, SagaState.HELD_PENDING.value, SagaState.OPEN.value) for r in opened
            )
            jobs.append(self._set_states(source, changes, fence, reached))
        for done in await gather_outcomes(jobs):
            if isinstance(done, BaseException):
                raise done

    def _left_for_later(self, error: BaseException, step: str) -> None:
        """A target shard did not take a step now: retried later (by the relay, once the
        lease ends). A fenced write (deposed: the new leader settles what is left) or an
        unexpected error is raised."""
        if isinstance(error, FencedError) or not isinstance(error, PaycoreError):
            raise error
        self.retries += 1
        log.info("%s not done yet: %s", step, error)

    async def _set_states(
        self,
        shard: str,
        changes: tuple[tuple[str, str, str], ...],
        fence: Fence | None,
        reached: dict[str, SagaState],
    ) -> None:
        applied: list[bool] = await self.shards[shard].execute(SetOutboxStates(changes, fence))
        for (transfer_id, _, to), done in zip(changes, applied, strict=True):
            if done:
                reached[transfer_id] = SagaState(to)

    async def _settle_resolving(
        self,
        source: str,
        rows: Sequence[OutboxRow],
        fence: Fence | None,
        reached: dict[str, SagaState],
    ) -> None:
        """Mirror the source's resolution of clients' holds on their targets."""
        if not rows:
            return
        store = self.shards[source]
        holds = await store.get_transfers([r.transfer_id for r in rows])
        by_ids = [v.resolved_by for v in holds.values() if v.resolved_by is not None]
        resolving = await store.get_transfers(by_ids) if by_ids else {}
        by_target: dict[str, list[tuple[OutboxRow, TransferRequest]]] = {}
        for row in rows:
            hold = holds.get(row.transfer_id)
            if hold is None or hold.status is TransferStatus.PENDING:
                log.error("saga %s: resolving, but the hold is %s", row.transfer_id, hold)
                continue
            by = resolving.get(hold.resolved_by or "")
            request = mirror(row, source, hold, None if by is None else by.transfer)
            by_target.setdefault(row.target_shard, []).append((row, request))
        targets = list(by_target)
        outcomes = await gather_outcomes(
            self._mirror(t, [req for _, req in by_target[t]], fence) for t in targets
        )
        done: list[tuple[str, str, str]] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._left_for_later(outcome, f"holds {source} -> {target}: mirror")
                continue
            for (row, _), result in zip(by_target[target], outcome, strict=True):
                if result.ok:
                    done.append(
                        (row.transfer_id, SagaState.RESOLVING.value, SagaState.RESOLVED.value)
                    )
                else:
                    log.error(
                        "hold %s: mirror on %s refused: %s %s",
                        row.transfer_id,
                        target,
                        result.code,
                        result.detail,
                    )
        if done:
            await self._set_states(source, tuple(done), fence, reached)
            self.resolved += len(done)

    async def _mirror(
        self, target: str, requests: list[TransferRequest], fence: Fence | None
    ) -> list[TransferResult]:
        store = self.shards.get(target)
        if store is None:
            raise UnavailableError(f"holds: unknown shard {target}")
        results: list[TransferResult] = await store.execute(
            CreateTransfers(tuple(requests), settlement=True, fence=fence)
        )
        return results

    async def _ensure_clearing(self, source: str, rows: Sequence[OutboxRow]) -> None:
        wanted: dict[str, set[tuple[str, str]]] = {}
        for row in rows:
            account = clearing_account_id(row.target_shard, source, row.currency)
            if account not in self._clearing:
                wanted.setdefault(row.target_shard, set()).add((account, row.currency))
        for target, accounts in wanted.items():
            requests = tuple(
                AccountRequest(a, c, metadata={"role": "clearing"}, tenant=SYSTEM_TENANT)
                for a, c in sorted(accounts)
            )
            results = await self.shards[target].execute(CreateAccounts(requests))
            for result in results:
                if result.ok:
                    self._clearing.add(result.id)

    async def _credit(
        self, source: str, target: str, rows: Sequence[OutboxRow], fence: Fence | None
    ) -> list[SagaState]:
        """Step 2 for ``rows`` in one command on ``target`` (a leg that closes its account in
        one of its own); refusals are kept for good under ``saga:<source>:<transfer id>``,
        so a retry never turns one into a credit."""
        store = self.shards.get(target)
        if store is None:
            raise UnavailableError(f"sagas from {source}: unknown shard {target}")
        # A leg that closes its account is a command of its own, whose checks see the
        # account as the legs before it left it (``CreateTransfers.closes_credit_account``).
        groups = [[i for i, row in enumerate(rows) if not closes_credit(row)]]
        groups = [g for g in groups if g] + [[i] for i, r in enumerate(rows) if closes_credit(r)]
        answers = await gather_all(
            store.execute(
                CreateTransfers(
                    tuple(credit_leg(rows[i], source) for i in group),
                    refusals_key=f"saga:{source}:",
                    fence=fence,
                    closes_credit_account=closes_credit(rows[group[0]]),
                )
            )
            for group in groups
        )
        by_row: dict[int, TransferResult] = {}
        for group, answer in zip(groups, answers, strict=True):
            by_row.update(zip(group, answer, strict=True))
        results = [by_row[i] for i in range(len(rows))]
        states = []
        for row, result in zip(rows, results, strict=True):
            if result.ok:
                pending = row.state == SagaState.HELD_PENDING.value
                states.append(SagaState.PREPARED if pending else SagaState.CREDITED)
            else:
                log.info("saga %s: credit refused for good: %s", row.transfer_id, result.code)
                states.append(SagaState.REJECTED)
                if self.keep_refusals and result.code is not None:
                    self.refusals[row.transfer_id] = (result.code, result.detail)
        return states

    async def _resolve(
        self,
        source: str,
        decided: Sequence[tuple[OutboxRow, SagaState]],
        fence: Fence | None,
        reached: dict[str, SagaState],
    ) -> None:
        requests: list[TransferRequest] = []
        writes: list[OutboxWrite] = []
        for index, (row, state) in enumerate(decided):
            request, new_row = resolution(row, state)
            requests.append(request)
            writes.append(OutboxWrite(index, new_row, insert=False))
        results: list[TransferResult] = await self.shards[source].execute(
            CreateTransfers(tuple(requests), tuple(writes), settlement=True, fence=fence)
        )
        for (row, state), result in zip(decided, results, strict=True):
            if not result.ok:
                log.error(
                    "saga %s: step 3 (%s) refused: %s %s",
                    row.transfer_id,
                    state,
                    result.code,
                    result.detail,
                )
                continue
            reached[row.transfer_id] = state
            if result.exists:
                continue  # settled before (by this relay's earlier attempt or another one)
            if state is SagaState.COMPLETED:
                self.completed += 1
            else:
                self.compensated += 1
