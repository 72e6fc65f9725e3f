"""Id reservation: a transfer id is unique across shards.

An id hashes to a shard of its own (the slot hash of account ids). When that is not the
shard writing the transfer, the id is first bound there to the writing shard
(``ReserveTransferIds``: one command per shard for a whole batch, in parallel); an id
already bound to another shard is refused. The writing shard checks, in the same
transaction as the write, that no reservation binds the id elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from paycore.cluster.shardmap import ShardMap
from paycore.cluster.split import Split, fail, gather_all
from paycore.errors import ErrorCode
from paycore.ledger.model import TransferRequest, is_valid_id
from paycore.ledger.rules import TransferResult
from paycore.storage.base import ReleaseTransferIds, ReserveTransferIds
from paycore.storage.store import Store

__all__ = ["ids_to_reserve", "release_fenced", "reserve_ids"]

_E = ErrorCode


def ids_to_reserve(
    shard_map: ShardMap,
    requests: Sequence[TransferRequest],
    target: Mapping[int, str],
    split: Split,
) -> dict[str, list[int]]:
    """Per shard, the items whose id hashes there but are written elsewhere.

    An id hashing to its own writing shard needs no reservation: that shard checks
    the reservations made on it in the transaction writing the transfer.
    """
    wanted: dict[str, list[int]] = {}
    for index, r in enumerate(requests):
        # An invalid id (a NUL in it, say) is refused by the shard writing it: nothing to
        # bind, and a PostgreSQL shard could not even store it.
        if index not in split.upfront and is_valid_id(r.id):
            owner = shard_map.shard_for(r.id)
            if owner != target[index]:
                wanted.setdefault(owner, []).append(index)
    return wanted


async def reserve_ids(
    shards: Mapping[str, Store],
    requests: Sequence[TransferRequest],
    target: Mapping[int, str],
    wanted: Mapping[str, list[int]],
) -> dict[int, TransferResult]:
    """Bind each wanted item's id to the shard writing it, on the shard the id hashes
    to; returns the refusals of items whose id is bound elsewhere."""
    owners = list(wanted)
    answers = await gather_all(
        shards[o].execute(
            ReserveTransferIds(o, tuple((requests[i].id, target[i]) for i in wanted[o]))
        )
        for o in owners
    )
    refused: dict[int, TransferResult] = {}
    for owner, bound in zip(owners, answers, strict=True):
        for index, shard in zip(wanted[owner], bound, strict=True):
            if shard != target[index]:
                refused[index] = fail(
                    requests[index].id,
                    _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
                    f"transfer id {requests[index].id!r} is taken by a transfer "
                    f"stored on shard {shard!r}",
                )
    return refused


async def release_fenced(
    shards: Mapping[str, Store],
    requests: Sequence[TransferRequest],
    split: Split,
    fenced: Sequence[str],
) -> None:
    """Unbind the ids this request bound to shards that then refused its write by their
    slot fence (they wrote none of it): the client's retry, routed by the new map, is
    written where the account lives now. An id such a shard holds already stays bound."""
    entries = {
        owner: [requests[i].id for i in indices if split.target.get(i) in fenced]
        for owner, indices in split.reserved.items()
    }
    entries = {owner: ids for owner, ids in entries.items() if ids}
    if not entries:
        return
    held: set[str] = set()
    for shard in fenced:
        held |= (
            await shards[shard].get_transfers([i for ids in entries.values() for i in ids])
        ).keys()
    await gather_all(
        shards[owner].execute(
            ReleaseTransferIds(
                tuple(
                    (i, split.target[index])
                    for index in split.reserved[owner]
                    if (i := requests[index].id) in ids and i not in held
                )
            )
        )
        for owner, ids in entries.items()
    )
