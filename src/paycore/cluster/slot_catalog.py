"""The slot map as the shards keep it: versioned, in ``slot_maps`` (migration 0022).

Every shard keeps the versions it was told of; the key shard's newest is the cluster's
map. A node reads it at start (``adopt``) and every ``REFRESH_SECONDS`` after that; the
config's ``[[shards]] slots`` (or the even split of the embedded files) only seed
version 1 of a new ledger. While a range moves, the map names it ``moving``: routers
then refuse new writes for its accounts (503, retryable). A shard's own newest version
is its fence
(``paycore.storage.slot_fence``): ``ownership`` tells it which accounts that version
places on it, by the same rules the router places them with (``placement``).

A map is stored as JSON: ``{"ranges": [[first, last, shard], ...], "prefixes": [[prefix,
shard or null], ...]}``, ranges in slot order, prefixes as configured.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from paycore.cluster import placement
from paycore.cluster.namespaces import CLEARING_PREFIX, PSP_PREFIX
from paycore.cluster.shardmap import PrefixRule, ShardMap, SlotRange

__all__ = [
    "REFRESH_SECONDS",
    "decode_map",
    "decode_moving",
    "encode_map",
    "ownership",
    "same_map",
]

# How often a node looks for a newer map: a write routed by an older one is refused by
# the shard (and retried by the client), so this bounds a stale node's refusals.
REFRESH_SECONDS: Final = 1.0
# Ids that name their home shard instead of hashing to a slot.
_HOMED: Final = (CLEARING_PREFIX, PSP_PREFIX)


class _Stored(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    ranges: list[tuple[int, int, str]]
    prefixes: list[tuple[str, str | None]] = []
    # Slot ranges being moved (``paycore.cluster.slot_moves``): still on their shard, but
    # routers take no new write for them (a post or void of a hold still goes).
    moving: list[tuple[int, int]] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Stored)


def encode_map(shard_map: ShardMap, moving: Sequence[tuple[int, int]] = ()) -> str:
    stored = _Stored(
        [(r.first, r.last, r.shard) for r in shard_map.ranges],
        [(p.prefix, p.shard) for p in shard_map.prefixes],
        list(moving),
    )
    return _encoder.encode(stored).decode()


def decode_moving(text: str) -> tuple[tuple[int, int], ...]:
    """The slot ranges a stored map says are moving."""
    return tuple(_decoder.decode(text).moving)


@functools.lru_cache(maxsize=32)
def decode_map(text: str) -> ShardMap:
    stored = _decoder.decode(text)
    return ShardMap(
        (SlotRange(first, last, shard) for first, last, shard in stored.ranges),
        [PrefixRule(prefix, shard) for prefix, shard in stored.prefixes],
    )


def same_map(a: ShardMap, b: ShardMap) -> bool:
    return encode_map(a) == encode_map(b)


@functools.lru_cache(maxsize=64)
def ownership(shard: str, text: str) -> Callable[[str], bool]:
    """Whether the stored map ``text`` places an account id on ``shard`` (clearing and
    processor accounts: on their home shard)."""
    shard_map = decode_map(text)
    shards = frozenset(shard_map.shards) | {shard}

    @functools.lru_cache(maxsize=1 << 16)
    def owns(account_id: str) -> bool:
        if account_id.startswith(_HOMED) and placement.home_of(account_id) is None:
            return True  # a malformed clearing or processor id: the rules refuse it here
        return placement.shard_for(shard_map, shards, account_id) == shard

    return owns
