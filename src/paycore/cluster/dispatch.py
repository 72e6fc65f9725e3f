"""Dispatch: a write command cut per shard, each item sent to the shard that writes it.

An account goes to its shard; a transfer to its debit account's shard (a post or void:
to the shard holding its hold, found by one read per shard, or taken from an earlier
item of the same batch). On the way, an item is refused up front when it names what
paycore keeps, when its chain is open or fails, or when its id is taken; a cross-shard
transfer becomes step 1 of a saga (``paycore.cluster.saga_plan``), its id reserved on
the shard it hashes to (``paycore.cluster.id_reservation``). The result is a ``Split``
and one command per shard, run by the router in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from paycore.cluster.concurrently import gather_outcomes
from paycore.cluster.id_reservation import ids_to_reserve, reserve_ids
from paycore.cluster.namespaces import refusal_of_account, refusal_of_client_item
from paycore.cluster.routing import Router
from paycore.cluster.saga_plan import ensure_split_clearing, plan_sagas
from paycore.cluster.settlement import (
    SAGA_KEY,
    client_view_accounts,
    resolve_request,
    saga_info,
)
from paycore.cluster.split import Split, check_chains, fail
from paycore.errors import ErrorCode
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.ledger.rules import AccountResult
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.store import Command

__all__ = ["split_command"]

_E = ErrorCode


async def split_command(store: Router, command: Command) -> tuple[Split, dict[str, Command]]:
    """``command`` cut per shard: its ``Split`` and the command each shard runs."""
    if isinstance(command, CreateAccounts):
        split = _split_accounts(store, command.requests)
        return split, {
            shard: CreateAccounts(tuple(command.requests[i] for i in indices))
            for shard, indices in split.parts.items()
        }
    if isinstance(command, CreateTransfers):
        split = await _split_transfers(
            store, command.requests, internal=command.internal, tenant=command.tenant
        )
        await ensure_split_clearing(store, split)
        parts: dict[str, Command] = {}
        for shard, indices in split.parts.items():
            requests = tuple(split.rewritten.get(i, command.requests[i]) for i in indices)
            writes = tuple(
                msgspec.structs.replace(split.outbox[i], index=j)
                for j, i in enumerate(indices)
                if i in split.outbox
            )
            refuse = tuple(
                (j, *split.decided[i]) for j, i in enumerate(indices) if i in split.decided
            )
            parts[shard] = CreateTransfers(
                requests,
                writes,
                guard_ids=True,
                fence=command.fence,
                tenant=command.tenant,
                refuse=refuse,
            )
        return split, parts
    raise TypeError(f"cannot route {type(command).__name__}")


def _split_accounts(store: Router, requests: Sequence[AccountRequest]) -> Split:
    split = Split(len(requests))
    for index, request in enumerate(requests):
        if (why := refusal_of_account(request)) is not None:
            split.upfront[index] = AccountResult(request.id, code=_E.INVALID_REQUEST, detail=why)
        else:
            split.add(store.shard_for(request.id), index)
    return split


async def _split_transfers(
    store: Router,
    requests: Sequence[TransferRequest],
    *,
    internal: bool = False,
    tenant: str | None = None,
) -> Split:
    split = Split(len(requests))
    target: dict[int, str] = {}  # index -> shard the item is written on
    cross: dict[int, str] = {}  # index -> shard of the credit account (cross-shard)
    created_here: dict[str, int] = {}  # transfer id -> index of the batch item creating it
    lookups: set[str] = set()
    for index, r in enumerate(requests):
        if (refused := refusal_of_client_item(r, internal=internal)) is not None:
            split.upfront[index] = fail(r.id, *refused)
        if r.flags.post_pending or r.flags.void_pending:
            earlier = None if r.pending_id is None else created_here.get(r.pending_id)
            if earlier is not None:
                target[index] = target[earlier]
                if earlier in cross:
                    split.upfront[index] = fail(
                        r.id,
                        _E.TRANSFER_IN_FLIGHT,
                        f"hold {r.pending_id!r} spans shards and is created by this same "
                        "batch: post or void it in a later request",
                    )
            elif r.pending_id is not None:
                lookups.add(r.pending_id)
            continue
        debit, credit = r.debit_account_id, r.credit_account_id
        home = store.shard_for(debit or credit or "") if (debit or credit) else store.first_shard
        target[index] = home
        created_here.setdefault(r.id, index)
        if debit is not None and credit is not None and index not in split.upfront:
            other = store.shard_for(credit)
            if other != home:
                cross[index] = other
    await _route_resolutions(store, requests, target, lookups, split)
    check_chains(requests, target, cross, split)
    await _plan_and_reserve(store, requests, target, cross, split, tenant=tenant)
    # An item the planning refused fails its chain, as on one shard.
    check_chains(requests, target, cross, split)
    for index in range(len(requests)):
        if index not in split.upfront:
            split.add(target[index], index)
        else:
            split.sagas.discard(index)
    return split


async def _route_resolutions(
    store: Router,
    requests: Sequence[TransferRequest],
    target: dict[int, str],
    lookups: set[str],
    split: Split,
) -> None:
    """Send each post or void not yet placed to the shard holding its hold."""
    found = await store.find_holds(lookups)
    for index, r in enumerate(requests):
        if index in target:
            continue
        hold = None if r.pending_id is None else found.get(r.pending_id)
        if hold is None:
            debit = r.debit_account_id
            target[index] = store.shard_for(debit) if debit else store.first_shard
        else:
            target[index] = hold[0]
            info = saga_info(hold[1].transfer.metadata)
            if info is None:
                continue
            if not (info.get("role") == "hold" and info.get("pending")):
                split.upfront[index] = fail(
                    r.id, _E.PENDING_TRANSFER_NOT_PENDING, "a cross-shard transfer, not a hold"
                )
            elif not client_view_accounts(r, hold[1].transfer):
                split.upfront[index] = fail(
                    r.id, _E.INVALID_REQUEST, "the accounts differ from the pending transfer"
                )
            elif r.metadata is not None and SAGA_KEY in r.metadata:
                split.upfront[index] = fail(
                    r.id, _E.INVALID_REQUEST, f"metadata key {SAGA_KEY!r} is reserved"
                )
            else:  # a client's hold across shards: resolved on its source, then mirrored
                split.rewritten[index] = resolve_request(r, hold[1].transfer)
                split.resolves[index] = hold


async def _plan_and_reserve(
    store: Router,
    requests: Sequence[TransferRequest],
    target: Mapping[int, str],
    cross: Mapping[int, str],
    split: Split,
    *,
    tenant: str | None = None,
) -> None:
    """Plan the sagas and reserve the ids; an item whose id is taken is refused.

    The two need each other's results only at the end, so
    their round trips overlap (an id reserved for an item the planning refuses is
    harmless: it stays bound to the shard its debit account is on).
    """
    wanted = ids_to_reserve(store.shard_map, requests, target, split)
    split.reserved = wanted
    plan = plan_sagas(store, requests, target, cross, split, tenant=tenant)
    if wanted:
        outcomes = await gather_outcomes(
            [plan, reserve_ids(store.shards, requests, target, wanted)]
        )
        for outcome in outcomes:  # both ended, then the first error
            if isinstance(outcome, BaseException):
                raise outcome
        taken = outcomes[1]
        assert isinstance(taken, dict)
    else:  # every id hashes to the shard writing it: nothing to reserve elsewhere
        await plan
        taken = {}
    if taken:
        for index, refusal in taken.items():
            split.upfront[index] = refusal
            split.sagas.discard(index)
        check_chains(requests, target, cross, split)  # fail the refused one's chain
