"""Cross-shard transfers: a saga of three local transactions, driven by an outbox.

A transfer ``T`` from account A (source shard ``s``) to account B (target shard ``d``)::

    step 1, on s (the router, in ONE transaction):
        hold T: debit A, credit  clearing:s:d:CUR   pending, never expires
        + outbox row T (state held)                  limits of A checked here, holds included
    step 2, on d (a relay):
        T: debit clearing:d:s:CUR, credit B          posted; idempotent by transfer id; a
                                                     refusal is kept under saga:s:T, so the
                                                     outcome (credited or rejected) is fixed
    step 3, on s (the relay, in ONE transaction):
        post T (id xs.post.<hash>) + row -> completed    if step 2 credited B
        void T (id xs.void.<hash>) + row -> compensated  if step 2 was rejected

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

Every saga transfer carries ``metadata["paycore:xs"]`` (its role and the real
accounts), so that reads can show the client's view: ``T`` from A to B, ``in_flight``
until step 3 posted the hold. The client's own metadata is kept beside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

import msgspec

from paycore.errors import FencedError, PaycoreError, UnavailableError
from paycore.ledger.model import (
    SETTLEMENT_METADATA_KEY,
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
    ClaimOutbox,
    CreateAccounts,
    CreateTransfers,
    Fence,
    OutboxRow,
    OutboxWrite,
    Store,
)
from paycore.storage.codec import decode_metadata, encode_metadata

__all__ = [
    "CLEARING_PREFIX",
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
    "credit_leg",
    "hold_request",
    "is_reserved",
    "parse_clearing",
    "parse_psp",
    "present_transfer",
    "present_view",
    "psp_account_id",
    "resolution",
    "saga_info",
]

log = logging.getLogger(__name__)

CLEARING_PREFIX: Final = "clearing:"
SAGA_KEY: Final = SETTLEMENT_METADATA_KEY
# The payments' system accounts, ``psp:<home shard>:<processor>:<currency>`` (money due
# from or to a processor), live on their home shard like clearing accounts; the ledger
# transfers of payments carry ids starting with ``pm.``. Both are reserved for paycore's
# own services (see ``paycore.payments.accounts``), never taken by a client.
PSP_PREFIX: Final = "psp:"
PAYMENT_TRANSFER_PREFIX: Final = "pm."


class SagaState(StrEnum):
    """Lifecycle of a cross-shard transfer (the ``state`` of its outbox row).

    held         step 1 committed: A's hold and the outbox row exist; stored
    credited     step 2 credited B on the target shard; known to the relay only
                 (the target's idempotency record keeps it durably)
    rejected     step 2 was refused for good (B missing, closed, other currency...);
                 known to the relay only, like ``credited``
    completed    step 3 posted the hold; final, stored
    compensated  step 3 voided the hold; final, stored
    """

    HELD = "held"
    CREDITED = "credited"
    REJECTED = "rejected"
    COMPLETED = "completed"
    COMPENSATED = "compensated"


SAGA_TRANSITIONS: Final[dict[SagaState, frozenset[SagaState]]] = {
    SagaState.HELD: frozenset({SagaState.CREDITED, SagaState.REJECTED}),
    SagaState.CREDITED: frozenset({SagaState.COMPLETED}),
    SagaState.REJECTED: frozenset({SagaState.COMPENSATED}),
    SagaState.COMPLETED: frozenset(),
    SagaState.COMPENSATED: frozenset(),
}
OPEN_STATES: Final = (SagaState.HELD.value,)


class IllegalSagaTransition(ValueError):
    """A saga was asked to move along an edge its transition table does not have."""


def advance(state: SagaState, to: SagaState) -> SagaState:
    """The state after ``state -> to``; raises ``IllegalSagaTransition`` if not allowed."""
    if to not in SAGA_TRANSITIONS[state]:
        raise IllegalSagaTransition(f"saga cannot go from {state} to {to}")
    return to


# -- names ------------------------------------------------------------------------------


def clearing_account_id(home: str, peer: str, currency: str) -> str:
    """The clearing account on shard ``home`` for transfers to or from shard ``peer``."""
    return f"{CLEARING_PREFIX}{home}:{peer}:{currency}"


def parse_clearing(account_id: str) -> tuple[str, str, str] | None:
    """``(home, peer, currency)`` of a clearing account id, else None."""
    if not account_id.startswith(CLEARING_PREFIX):
        return None
    parts = account_id[len(CLEARING_PREFIX) :].split(":")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def psp_account_id(home: str, processor: str, currency: str) -> str:
    """The account on shard ``home`` for money due from or to ``processor`` in ``currency``."""
    return f"{PSP_PREFIX}{home}:{processor}:{currency}"


def parse_psp(account_id: str) -> tuple[str, str, str] | None:
    """``(home, processor, currency)`` of a processor account id, else None."""
    if not account_id.startswith(PSP_PREFIX):
        return None
    parts = account_id[len(PSP_PREFIX) :].split(":")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def is_reserved(account_id: str | None) -> bool:
    """Ids starting with ``clearing:`` (the settlement's) or ``psp:`` (the payments')
    belong to paycore, never to a client."""
    return account_id is not None and account_id.startswith((CLEARING_PREFIX, PSP_PREFIX))


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
    r: TransferRequest, source: str, target: str, currency: str
) -> tuple[TransferRequest, OutboxRow]:
    """Step 1 for client request ``r``: the hold and (to write with it) the outbox row."""
    assert r.debit_account_id is not None
    assert r.credit_account_id is not None
    info = {
        "role": "hold",
        "debit_account_id": r.debit_account_id,
        "credit_account_id": r.credit_account_id,
        "shard": target,
    }
    hold = TransferRequest(
        id=r.id,
        debit_account_id=r.debit_account_id,
        credit_account_id=clearing_account_id(source, target, currency),
        amount=r.amount,
        currency=r.currency,
        code=r.code,
        flags=TransferFlags(pending=True, balancing=r.flags.balancing),
        timeout_seconds=0,  # a saga hold never expires by itself
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
        state=SagaState.HELD.value,
    )
    return hold, row


def _client_metadata(row: OutboxRow) -> dict[str, Any] | None:
    return decode_metadata(row.metadata)


def credit_leg(row: OutboxRow, source: str) -> TransferRequest:
    """Step 2: debit the target's clearing account for ``source``, credit B."""
    info = {
        "role": "credit",
        "debit_account_id": row.debit_account_id,
        "credit_account_id": row.credit_account_id,
        "shard": source,
    }
    return TransferRequest(
        id=row.transfer_id,
        debit_account_id=clearing_account_id(row.target_shard, source, row.currency),
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        currency=row.currency,
        code=row.code,
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


# -- what readers see -----------------------------------------------------------------------


def present_transfer(t: Transfer) -> tuple[Transfer, bool]:
    """The client's view of a stored transfer: ``(transfer, is_saga_hold)``."""
    info = saga_info(t.metadata)
    if info is None:
        return t, False
    meta = {k: v for k, v in (t.metadata or {}).items() if k != SAGA_KEY}
    client_meta = meta if info.get("client_metadata") else None
    role = info.get("role")
    shown = msgspec.structs.replace(
        t,
        debit_account_id=str(info.get("debit_account_id", t.debit_account_id)),
        credit_account_id=str(info.get("credit_account_id", t.credit_account_id)),
        metadata=client_meta,
    )
    if role == "hold":
        flags = TransferFlags(balancing=t.flags.balancing)
        return msgspec.structs.replace(shown, flags=flags, timeout_seconds=0), True
    return shown, False


def present_view(view: TransferView) -> TransferView:
    """A read view as the client sees it: a saga's hold is its transfer, ``in_flight``
    until posted, ``voided`` when compensated."""
    transfer, is_hold = present_transfer(view.transfer)
    if transfer is view.transfer:
        return view
    status = view.status
    if is_hold and status is TransferStatus.PENDING:
        status = TransferStatus.IN_FLIGHT
    return TransferView(transfer, status, view.resolved_by if not is_hold else None)


def present_result(result: TransferResult) -> TransferResult:
    """A step-1 result as the client sees it: its transfer, in flight."""
    if result.transfer is None:
        return result
    transfer, is_hold = present_transfer(result.transfer)
    return msgspec.structs.replace(result, transfer=transfer, in_flight=is_hold)


# -- the relay's work -------------------------------------------------------------------------


class Settlement:
    """Steps 2 and 3 for outbox rows claimed on a source shard (see the module docstring).

    Safe to run on several nodes at once: rows are leased by ``ClaimOutbox`` (a crashed
    relay's rows are retaken when the lease ends), step 2's outcome is fixed by its
    idempotency record on the target, and step 3 rides on derived transfer ids.
    """

    def __init__(
        self,
        shards: Mapping[str, Store],
        *,
        owner: str,
        lease_seconds: float = 30.0,
        batch_limit: int = 8189,
    ) -> None:
        self.shards = shards
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.batch_limit = batch_limit
        self._clearing: set[str] = set()
        self.completed = 0
        self.compensated = 0
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
        return len(rows)

    async def settle(
        self, source: str, rows: Sequence[OutboxRow], fence: Fence | None = None
    ) -> None:
        """Steps 2 and 3 for ``rows`` (claimed by this relay) of shard ``source``."""
        await self._ensure_clearing(source, rows)
        by_target: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_target.setdefault(row.target_shard, []).append(row)
        targets = list(by_target)
        outcomes = await asyncio.gather(
            *(self._credit(source, t, by_target[t], fence) for t in targets),
            return_exceptions=True,
        )
        decided: list[tuple[OutboxRow, SagaState]] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, FencedError) or not isinstance(outcome, PaycoreError):
                    raise outcome  # deposed: the new leader settles what is left
                    raise outcome
                self.retries += 1  # retried on this relay's next pass (it keeps the lease)
                log.info("sagas %s -> %s: step 2 not done yet: %s", source, target, outcome)
                continue
            for row, credited in zip(by_target[target], outcome, strict=True):
                state = advance(SagaState(row.state), credited)
                final = (
                    SagaState.COMPLETED if state is SagaState.CREDITED else SagaState.COMPENSATED
                )
                decided.append((row, advance(state, final)))
        if decided:
            await self._resolve(source, decided, fence)

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
        """Step 2 for ``rows`` in one command on ``target``; refusals are kept for good
        under ``saga:<source>:<transfer id>``, so a retry never turns one into a credit."""
        store = self.shards.get(target)
        if store is None:
            raise UnavailableError(f"sagas from {source}: unknown shard {target}")
        legs = tuple(credit_leg(row, source) for row in rows)
        results: list[TransferResult] = await store.execute(
            CreateTransfers(legs, refusals_key=f"saga:{source}:", fence=fence)
        )
        states = []
        for row, result in zip(rows, results, strict=True):
            if result.ok:
                states.append(SagaState.CREDITED)
            else:
                log.info("saga %s: credit refused for good: %s", row.transfer_id, result.code)
                states.append(SagaState.REJECTED)
        return states

    async def _resolve(
        self, source: str, decided: Sequence[tuple[OutboxRow, SagaState]], fence: Fence | None
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
            elif result.exists:
                continue  # settled before (by this relay's earlier attempt or another one)
            elif state is SagaState.COMPLETED:
                self.completed += 1
            else:
                self.compensated += 1
