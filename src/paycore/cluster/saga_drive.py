"""Saga driving: the request runs its sagas' steps 2 and 3 itself, so its answer is final.

Step 1 of a cross-shard transfer (hold + outbox row, ``paycore.cluster.saga_plan``) is
written by the command's own transaction on the source shard; then, before answering,
the request settles the rows it wrote (``drive``), releases the target legs of the holds
that expired (``mirror_expiries``), and answers a repeated saga item as the saga stands
now. What a fault interrupts is left to the relay: the rows are leased to the request
for a few seconds only (``paycore.cluster.settlement``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from paycore.cluster.concurrently import gather_outcomes
from paycore.cluster.routing import Router
from paycore.cluster.settlement import SagaState, saga_info
from paycore.cluster.split import Split, fail
from paycore.errors import ErrorCode
from paycore.ledger.model import Transfer, TransferStatus
from paycore.storage.base import OutboxRow, PeekIdempotency

__all__ = ["drive", "mirror_expiries"]

# The router's logger, as before the split: what a node logs keeps its source.
log = logging.getLogger("paycore.cluster.router")

_SETTLED = frozenset({SagaState.COMPLETED, SagaState.OPEN, SagaState.RESOLVED})


def _resolving_row(hold: Transfer) -> OutboxRow:
    """The outbox row of a client's cross-shard hold that its source just resolved (the
    store moved it to ``resolving`` in that transaction), as the settlement reads it."""
    info = saga_info(hold.metadata) or {}
    return OutboxRow(
        transfer_id=hold.id,
        target_shard=str(info.get("shard", "")),
        debit_account_id=str(info.get("debit_account_id", "")),
        credit_account_id=str(info.get("credit_account_id", "")),
        amount=hold.amount,
        currency=hold.currency,
        code=hold.code,
        metadata=None,
        state=SagaState.RESOLVING.value,
        created_at=hold.timestamp,
    )


async def drive(store: Router, split: Split, merged: list[Any]) -> list[Any]:
    """Run the remaining steps of the sagas this command started (and of the holds it
    posted or voided) before answering, so the answer is final: ``posted``,
    ``pending`` or the precise refusal. A step a fault stopped stays ``in_flight``
    for the relay to finish (its rows are leased to this request for a few seconds)."""
    rows: dict[str, list[OutboxRow]] = {}
    waiting: dict[int, tuple[str, str]] = {}  # index -> (source, transfer id)
    retried: list[int] = []
    for i in split.sagas:
        result = merged[i]
        if not result.ok or result.transfer is None:
            continue
        if result.exists:
            retried.append(i)
            continue
        source = split.target[i]
        row = msgspec.structs.replace(
            split.outbox[i].row,
            amount=result.transfer.amount,
            currency=result.transfer.currency,
            created_at=result.transfer.timestamp,
        )
        rows.setdefault(source, []).append(row)
        waiting[i] = (source, row.transfer_id)
    for i in sorted(split.decided):
        # Refused up front unless its id was taken: an "exists" answer is a repeat of a
        # saga (maybe this batch's own), answered as one once the sagas have settled.
        result = merged[i]
        if result.ok and result.exists and result.transfer is not None:
            retried.append(i)
    for i, (source, hold) in split.resolves.items():
        result = merged[i]
        if result.ok and not result.exists:
            rows.setdefault(source, []).append(_resolving_row(hold.transfer))
            waiting[i] = (source, hold.transfer.id)
    if rows and store.drive_sagas:
        await _settle_own(store, rows, waiting, merged)
    elif rows:
        for source in rows:
            for listener in store.saga_listeners:
                listener(source)
    if retried:  # after this command's own sagas: the same id twice in one batch
        await _answer_retries(store, split, merged, retried)
    return merged


async def _settle_own(
    store: Router,
    rows: dict[str, list[OutboxRow]],
    waiting: dict[int, tuple[str, str]],
    merged: list[Any],
) -> None:
    """Steps 2 and 3 of the sagas this command wrote; each item answers what it reached."""
    sources = list(rows)
    outcomes = await gather_outcomes(
        store.driver.settle(source, rows[source]) for source in sources
    )
    reached: dict[str, SagaState] = {}
    for source, outcome in zip(sources, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            log.warning("sagas from %s left to the relay: %s", source, outcome)
            continue
        reached.update(outcome)
    late: set[str] = set()
    for i, (source, transfer_id) in waiting.items():
        state = reached.get(transfer_id)
        refusal = store.driver.refusals.pop(transfer_id, None)
        if state is SagaState.COMPENSATED and refusal is not None:
            merged[i] = fail(merged[i].id, refusal[0], refusal[1])
        elif state in _SETTLED:
            merged[i] = msgspec.structs.replace(merged[i], in_flight=False)
        else:
            merged[i] = msgspec.structs.replace(merged[i], in_flight=True)
            late.add(source)
    for source in late:
        for listener in store.saga_listeners:
            listener(source)


async def mirror_expiries(store: Router, expired: Mapping[str, list[str]]) -> None:
    """Release at once the target legs of the clients' cross-shard holds that just
    expired on their source (the relay would within its interval)."""
    for shard, ids in expired.items():
        if not ids:
            continue
        views = await store.shards[shard].get_transfers(ids)
        rows = [
            _resolving_row(v.transfer)
            for v in views.values()
            if (info := saga_info(v.transfer.metadata)) is not None
            and info.get("role") == "hold"
            and info.get("pending")
        ]
        if rows:
            try:
                await store.driver.settle(shard, rows)
            except Exception as exc:  # noqa: BLE001 - the relay finishes it
                log.warning("expired holds on %s left to the relay: %s", shard, exc)


async def _answer_retries(
    store: Router, split: Split, merged: list[Any], retried: list[int]
) -> None:
    """A repeated saga item answers as the saga stands now: settled, in flight, or the
    refusal step 2 kept for good (a compensated saga moved nothing)."""
    ids = [merged[i].id for i in retried]
    views = await store.get_transfers(ids)
    for i in retried:
        view = views.get(merged[i].id)
        if view is None or view.status is TransferStatus.IN_FLIGHT:
            continue
        if view.status is TransferStatus.VOIDED and not view.transfer.flags.pending:
            info = saga_info(split.rewritten[i].metadata) or {}
            target = str(info.get("shard", ""))
            seen = (
                await store.shards[target].execute(
                    PeekIdempotency(f"saga:{split.target[i]}:{merged[i].id}")
                )
                if target in store.shards
                else None
            )
            if seen is not None:
                refusal = msgspec.json.decode(seen[1].body)
                merged[i] = fail(merged[i].id, ErrorCode(refusal["code"]), refusal["detail"])
                continue
        merged[i] = msgspec.structs.replace(merged[i], in_flight=False)
