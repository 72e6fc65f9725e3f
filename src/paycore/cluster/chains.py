"""Linked chains across shards: one plan over every shard, legs prepared, one decision.

A chain whose items all live on one shard is one local transaction there, as always.
A chain touching several shards runs in five steps, driven by the request:

1. plan: every account and hold the chain names is read from its shard, and the ledger
   rules run over the whole chain in memory, exactly as one shard would: each item's
   answer, and each amount (balancing, partial posts) fixed. A chain the rules refuse
   is answered so, with nothing written;
2. cut: each item becomes legs on the shards it touches, in chain order per shard:
   one shard: the item itself;
   A(s) -> B(d): on s the saga's hold A -> clearing:s:d with its outbox row already
   ``credited``, on d its credit clearing:d:s -> B: the chain decides both steps;
   a client's hold A(s) -> B(d): both pending legs, row ``open``;
   a post or void of a client's hold across shards: the source's resolution and the
   target's same post or void (row ``resolved``);
3. prepare on every shard but the coordinator, in parallel (``PrepareChain``): legs
   tried, kept, the money they need reserved and the holds they resolve locked, so that
   nothing can make them fail later;
4. decide on the coordinator (``DecideChain``): its own legs applied and the decision
   recorded in one transaction, the commit point;
5. finish on the others (``FinishChain``): apply (or drop) the kept legs; then step 3 of
   the plain cross-shard items' sagas (posting their holds), as for any transfer.

Each shard applies its legs in chain order, so an account funded by an earlier item can
spend it in a later one (its credit leg is posted, on its own shard, before its debit).
Nothing is visible before the decision; a failure before it leaves nothing anywhere.
After it, every participant applies its legs: the request does, or, if it died, the
relay's recovery (``Settlement.recover_chains``), which asks the coordinator and decides
``aborted`` there if no decision was ever made.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from paycore.cluster.id_reservation import reserve_ids
from paycore.cluster.namespaces import refusal_of_client_item
from paycore.cluster.routing import Router
from paycore.cluster.settlement import (
    SAGA_KEY,
    SagaState,
    credit_leg,
    hold_request,
    present_transfer,
    resolve_request,
    saga_info,
)
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import (
    PendingStatus,
    Transfer,
    TransferFlags,
    TransferRequest,
    TransferStatus,
    TransferView,
)
from paycore.ledger.rules import TransferResult, WorkingSet
from paycore.storage.base import (
    ChainOutcome,
    ChainRefusals,
    DecideChain,
    FinishChain,
    KeepChainRefusals,
    OutboxRow,
    OutboxWrite,
    PrepareChain,
)

__all__ = ["Router", "chain_spans", "run_chain"]

log = logging.getLogger(__name__)
_E = ErrorCode
_HOLD_STATES = {
    TransferStatus.PENDING: PendingStatus.PENDING,
    TransferStatus.IN_FLIGHT: PendingStatus.PENDING,
    TransferStatus.POSTED: PendingStatus.POSTED,
    TransferStatus.VOIDED: PendingStatus.VOIDED,
    TransferStatus.EXPIRED: PendingStatus.EXPIRED,
}


@dataclass
class _Cut:
    """A planned chain cut into per-shard legs."""

    legs: dict[str, list[TransferRequest]] = field(default_factory=dict)
    items: dict[str, list[int]] = field(default_factory=dict)  # shard -> item per leg
    outbox: dict[str, list[OutboxWrite]] = field(default_factory=dict)
    credited: dict[str, list[OutboxRow]] = field(default_factory=dict)  # step 3 left
    clearing: set[tuple[str, str, str]] = field(default_factory=set)
    # item -> (shard, leg) of its client-facing leg (the source's): its stored transfer
    first: dict[int, tuple[str, int]] = field(default_factory=dict)

    def add(
        self, shard: str, item: int, leg: TransferRequest, row: OutboxRow | None = None
    ) -> None:
        legs = self.legs.setdefault(shard, [])
        if row is not None:
            self.outbox.setdefault(shard, []).append(OutboxWrite(len(legs), row))
        self.first.setdefault(item, (shard, len(legs)))
        legs.append(leg)
        self.items.setdefault(shard, []).append(item)

    def writers(self) -> dict[int, str]:
        """Item -> the shard storing its client-facing leg (the one its id is bound to)."""
        return {item: shard for item, (shard, _) in self.first.items()}

    def guarded(self, shard: str) -> tuple[str, ...]:
        """The ids of the client-facing legs ``shard`` stores (an item's id)."""
        return tuple(self.legs[s][leg].id for s, leg in self.first.values() if s == shard)


def _shards_of(
    router: Router,
    r: TransferRequest,
    holds: Mapping[str, tuple[str, TransferView]],
    opened: Mapping[str, set[str]] | None = None,
) -> set[str]:
    if r.flags.post_pending or r.flags.void_pending:
        found = holds.get(r.pending_id or "")
        if found is None and opened and r.pending_id in opened:  # opened earlier in the batch
            return set(opened[r.pending_id or ""])
        if found is None:  # where the router sends it to be refused: its debit's shard
            debit = r.debit_account_id
            return {router.shard_for(debit)} if debit else {router.first_shard}
        info = saga_info(found[1].transfer.metadata)
        if info is not None and info.get("role") == "hold" and info.get("pending"):
            return {found[0], str(info.get("shard"))}
        return {found[0]}
    # As the router places it: its debit's shard, else its credit's, else the first.
    named = [a for a in (r.debit_account_id, r.credit_account_id) if a]
    return {router.shard_for(a) for a in named} or {router.first_shard}


async def chain_spans(
    router: Router,
    requests: Sequence[TransferRequest],
    opened: Mapping[str, set[str]] | None = None,
) -> tuple[bool, dict[str, tuple[str, TransferView]]]:
    """Whether a chain touches more than one shard; with the holds it names. ``opened``:
    the shards of transfers earlier items of the same batch create (not stored yet)."""
    pending = {r.pending_id for r in requests if r.pending_id is not None}
    holds = await router.find_holds(pending) if pending else {}
    shards: set[str] = set()
    for r in requests:
        shards |= _shards_of(router, r, holds, opened)
    return len(shards) > 1, holds


async def run_chain(
    router: Router,
    requests: Sequence[TransferRequest],
    holds: Mapping[str, tuple[str, TransferView]],
    *,
    tenant: str | None,
    internal: bool,
) -> list[TransferResult]:
    """Apply one linked chain spanning shards, all or nothing (see the module docstring)."""
    missing = {r.pending_id for r in requests if r.pending_id and r.pending_id not in holds}
    if missing:  # holds an earlier segment of the same batch created, after it was cut
        holds = {**holds, **await router.find_holds(missing)}
    results = await _plan(router, requests, holds, tenant=tenant, internal=internal)
    if not all(r.ok for r in results):
        return results
    cut = _cut(router, requests, results, holds)
    if not cut.legs:  # every item existed already: a repeated chain
        return results
    taken, _ = await asyncio.gather(
        _reserve_ids(router, requests, cut), router.ensure_clearing(cut.clearing)
    )
    if taken is not None:
        return _failed(requests, *taken)
    order = sorted(cut.legs, key=lambda s: (-len(cut.legs[s]), s))
    coordinator, participants = order[0], order[1:]
    chain_id = f"chain.{uuid.uuid4().hex}"
    refused = await _prepare(router, chain_id, coordinator, participants, cut, tenant=tenant)
    if refused is not None:
        return _failed(requests, *refused)
    try:
        decided: ChainOutcome = await router.shards[coordinator].execute(
            DecideChain(
                chain_id,
                tuple(participants),
                tuple(cut.legs[coordinator]),
                tuple(cut.outbox.get(coordinator, ())),
                guarded=cut.guarded(coordinator),
            )
        )
    except Exception:
        # Decided or not, we cannot tell: the recovery will, and a retry of the same
        # items finds them (or applies them once: every leg is idempotent by its id).
        log.warning("chain %s: no answer from its coordinator %s", chain_id, coordinator)
        raise
    committed = decided.state == "committed"
    finished = await asyncio.gather(
        *(router.shards[p].execute(FinishChain(chain_id, committed)) for p in participants),
        return_exceptions=True,
    )
    late = False
    for shard, outcome in zip(participants, finished, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            late = True  # the relay's recovery applies it after the lease
            log.warning("chain %s: %s not finished yet: %s", chain_id, shard, outcome)
    if not committed:
        failed = next((r for r in decided.results if not r.ok), None)
        code = failed.code if failed is not None and failed.code else _E.TRANSFER_IN_FLIGHT
        index = next(
            (cut.items[coordinator][i] for i, r in enumerate(decided.results) if not r.ok),
            0,
        )
        return _failed(requests, index, code, failed.detail if failed is not None else "")
    settled = await _settle_sagas(router, cut)
    in_flight = late or not settled
    applied = {coordinator: decided.results}
    for shard, outcome in zip(participants, finished, strict=True):
        if isinstance(outcome, ChainOutcome):
            applied[shard] = outcome.results
    answers = []
    stored: dict[str, Transfer] = {}  # id -> as stored, for a later item naming it again
    for index, (r, q) in enumerate(zip(results, requests, strict=True)):
        where = cut.first.get(index)
        legs = applied.get(where[0], []) if where is not None else []
        answer = r
        if where is not None and where[1] < len(legs) and legs[where[1]].transfer is not None:
            shown, _ = present_transfer(legs[where[1]].transfer)  # as stored: its timestamp
            answer = msgspec.structs.replace(r, transfer=shown)
            stored[q.id] = shown
        elif r.exists and q.id in stored:  # made by an earlier item of this chain
            answer = msgspec.structs.replace(r, transfer=stored[q.id])
        answers.append(
            msgspec.structs.replace(answer, in_flight=in_flight and _crosses(router, q, holds))
        )
    return answers


def _crosses(
    router: Router, r: TransferRequest, holds: Mapping[str, tuple[str, TransferView]]
) -> bool:
    return len(_shards_of(router, r, holds)) > 1


async def _plan(
    router: Router,
    requests: Sequence[TransferRequest],
    holds: Mapping[str, tuple[str, TransferView]],
    *,
    tenant: str | None,
    internal: bool,
) -> list[TransferResult]:
    """The chain's answer as one shard would give it, from what the shards hold now."""
    for index, r in enumerate(requests):
        refusal = refusal_of_client_item(r, internal=internal)
        if refusal is not None:
            return _failed(requests, index, *refusal)
        if r.metadata is not None and SAGA_KEY in r.metadata:
            return _failed(
                requests, index, _E.INVALID_REQUEST, f"metadata key {SAGA_KEY!r} is reserved"
            )
    ids = sorted({r.id for r in requests} | {r.pending_id for r in requests if r.pending_id})
    views = await router.get_transfers(ids)
    account_ids = {a for r in requests for a in (r.debit_account_id, r.credit_account_id) if a}
    for view in views.values():
        account_ids |= {view.transfer.debit_account_id, view.transfer.credit_account_id}
    accounts = await router.get_accounts(sorted(account_ids))
    pendings: list[tuple[Transfer, PendingStatus, str | None]] = []
    unsettled: set[str] = set()
    for view in views.values():
        t = view.transfer
        if t.flags.pending and view.status in _HOLD_STATES:
            pendings.append((t, _HOLD_STATES[view.status], view.resolved_by))
            if view.status is TransferStatus.IN_FLIGHT:
                unsettled.add(t.id)
    for r in requests:  # a saga's hold is a transfer, not a hold, for clients
        found = holds.get(r.pending_id or "")
        if found is not None:
            info = saga_info(found[1].transfer.metadata)
            if info is not None and not (info.get("role") == "hold" and info.get("pending")):
                unsettled.discard(found[1].transfer.id)
    # The refusals kept under the items' ids answer first, as on one shard; the one this
    # plan makes is kept on the failing item's debit shard.
    shards = list(router.shards)
    kept = await asyncio.gather(
        *(router.shards[s].execute(ChainRefusals(tuple(ids))) for s in shards)
    )
    ws = WorkingSet(
        accounts.values(),
        [v.transfer for v in views.values()],
        pendings,
        now=router.clock_ns(),
        last_timestamp=0,
        refusals=[f for part in kept for f in part],
    )
    ws.locked_holds = unsettled  # answered transfer_in_flight, as their shard would
    results = ws.apply_transfers(requests, tenant=tenant)
    if ws.new_refusals and not all(r.ok for r in results):
        by_id = {r.id: r for r in requests}
        for made in ws.new_refusals:
            item = by_id.get(made.id)
            debit = item.debit_account_id if item is not None else None
            home = router.shard_for(debit) if debit else shards[0]
            await router.shards[home].execute(KeepChainRefusals((made,)))
    return results


def _cut(
    router: Router,
    requests: Sequence[TransferRequest],
    results: Sequence[TransferResult],
    holds: Mapping[str, tuple[str, TransferView]],
) -> _Cut:
    cut = _Cut()
    found = dict(holds)  # and the holds this chain opens, as their source keeps them
    for index, (r, result) in enumerate(zip(requests, results, strict=True)):
        t = result.transfer
        if result.exists or t is None:
            continue
        flags = r.flags  # linked kept as sent: each shard applies its legs as one
        if r.flags.post_pending or r.flags.void_pending:
            _cut_resolution(cut, index, r, t, flags, holds=found)
            continue
        mine = msgspec.structs.replace(r, amount=t.amount, flags=flags)
        source = router.shard_for(t.debit_account_id)
        target = router.shard_for(t.credit_account_id)
        if source == target:
            cut.add(source, index, mine)
            if r.flags.pending:
                found[r.id] = (source, _view_of(mine, t))
            continue
        cut.clearing |= {(source, target, t.currency), (target, source, t.currency)}
        hold, row = hold_request(mine, source, target, t.currency)
        if r.flags.pending:
            found[r.id] = (source, _view_of(hold, t))
        row = msgspec.structs.replace(row, amount=t.amount)
        client_hold = r.flags.pending
        stored = SagaState.OPEN if client_hold else SagaState.CREDITED
        cut.add(source, index, hold, msgspec.structs.replace(row, state=stored.value))
        # B's side shows the client's flags too (the chain writes this leg itself).
        credit = credit_leg(row, source)
        both = msgspec.structs.replace(
            credit.flags, linked=r.flags.linked, balancing=r.flags.balancing
        )
        cut.add(target, index, msgspec.structs.replace(credit, flags=both))
        if not client_hold:
            cut.credited.setdefault(source, []).append(
                msgspec.structs.replace(row, state=SagaState.CREDITED.value)
            )
    return cut


def _view_of(leg: TransferRequest, planned: Transfer) -> TransferView:
    """A hold this chain opens, as its source shard will keep it (for a later item of the
    chain that posts or voids it)."""
    kept = msgspec.structs.replace(
        planned,
        debit_account_id=leg.debit_account_id or planned.debit_account_id,
        credit_account_id=leg.credit_account_id or planned.credit_account_id,
        metadata=leg.metadata,
    )
    return TransferView(kept, TransferStatus.PENDING)


def _cut_resolution(
    cut: _Cut,
    index: int,
    r: TransferRequest,
    t: Transfer,
    flags: TransferFlags,
    *,
    holds: Mapping[str, tuple[str, TransferView]],
) -> None:
    shard, view = holds[r.pending_id or ""]
    amount = t.amount if r.flags.post_pending else None
    mine = msgspec.structs.replace(r, amount=amount, flags=flags)
    info = saga_info(view.transfer.metadata)
    if info is None or not (info.get("role") == "hold" and info.get("pending")):
        cut.add(shard, index, mine)
        return
    cut.add(shard, index, resolve_request(mine, view.transfer))
    note = {
        "role": "credit",
        "debit_account_id": info.get("debit_account_id"),
        "credit_account_id": info.get("credit_account_id"),
        "shard": shard,
        "client_metadata": r.metadata is not None,
    }
    mirror = msgspec.structs.replace(
        mine,
        debit_account_id=None,
        credit_account_id=None,
        metadata={**(r.metadata or {}), SAGA_KEY: note},
    )
    cut.add(str(info.get("shard")), index, mirror)


async def _reserve_ids(
    router: Router, requests: Sequence[TransferRequest], cut: _Cut
) -> tuple[int, ErrorCode, str] | None:
    """Bind each new item's id to the shard storing it, on the shard the id hashes to, as
    for any transfer (``paycore.cluster.id_reservation``): a chain's transfer sent again
    alone then finds it, and an id taken elsewhere refuses the chain. The first refusal
    (item index, code, detail), or None."""
    target = cut.writers()
    wanted: dict[str, list[int]] = {}
    for index in sorted(target):
        owner = router.shard_map.shard_for(requests[index].id)
        if owner != target[index]:
            wanted.setdefault(owner, []).append(index)
    if not wanted:
        return None
    refused = await reserve_ids(router.shards, requests, target, wanted)
    if not refused:
        return None
    index = min(refused)
    return (
        index,
        refused[index].code or _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
        refused[index].detail,
    )


async def _prepare(
    router: Router,
    chain_id: str,
    coordinator: str,
    participants: Sequence[str],
    cut: _Cut,
    *,
    tenant: str | None,
) -> tuple[int, ErrorCode, str] | None:
    """Prepare every participant; on any refusal or fault, abort the chain everywhere and
    return the refusal (item index, code, detail); a fault is raised after the abort."""
    outcomes = await asyncio.gather(
        *(
            router.shards[p].execute(
                PrepareChain(
                    chain_id,
                    coordinator,
                    tuple(cut.legs[p]),
                    tuple(cut.outbox.get(p, ())),
                    tenant=tenant,
                    guarded=cut.guarded(p),
                )
            )
            for p in participants
        ),
        return_exceptions=True,
    )
    refusal: tuple[int, ErrorCode, str] | None = None
    fault: BaseException | None = None
    for shard, outcome in zip(participants, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            fault = fault or outcome
            continue
        for leg, result in enumerate(outcome):
            if not result.ok and refusal is None:
                refusal = (cut.items[shard][leg], result.code or _E.INTERNAL_ERROR, result.detail)
    if refusal is None and fault is None:
        return None
    # Decide "aborted" first, so that a participant's recovery can never commit it.
    await router.shards[coordinator].execute(
        DecideChain(chain_id, tuple(participants), commit=False)
    )
    await asyncio.gather(
        *(router.shards[p].execute(FinishChain(chain_id, commit=False)) for p in participants),
        return_exceptions=True,
    )
    if fault is not None:
        if isinstance(fault, Exception):
            raise UnavailableError(f"a linked chain could not be prepared: {fault}") from fault
        raise fault
    return refusal


async def _settle_sagas(router: Router, cut: _Cut) -> bool:
    """Step 3 (posting the source's hold) of the chain's plain cross-shard items."""
    sources = list(cut.credited)
    if not sources:
        return True
    outcomes = await asyncio.gather(
        *(router.driver.settle(s, cut.credited[s]) for s in sources), return_exceptions=True
    )
    done = True
    for source, outcome in zip(sources, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            log.warning("chain sagas on %s left to the relay: %s", source, outcome)
            done = False
        elif any(
            outcome.get(row.transfer_id) is not SagaState.COMPLETED for row in cut.credited[source]
        ):
            done = False
    return done


def _failed(
    requests: Sequence[TransferRequest], index: int, code: ErrorCode, detail: str = ""
) -> list[TransferResult]:
    """A chain refused because of item ``index``: the others answer linked_event_failed."""
    return [
        TransferResult(id=r.id, code=code, detail=detail)
        if i == index
        else TransferResult(id=r.id, code=_E.LINKED_EVENT_FAILED)
        for i, r in enumerate(requests)
    ]
