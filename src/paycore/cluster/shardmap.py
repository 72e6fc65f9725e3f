"""Where an account lives: 4,096 slots, assigned to shards by ranges.

Slot hash, version 1 (stable across processes, machines and Python versions; never
Python's ``hash()``)::

    slot = crc32(utf8(key)) mod 4096      key = the text inside the first {...} of the
                                          id if present and non-empty, else the whole id

The ``{...}`` hash tag (as in Redis Cluster) lets paycore's own keys share a slot;
client ids cannot carry braces (the API's id alphabet is ``[A-Za-z0-9_.:-]``). Clients'
related accounts are colocated by prefix rules (``[[placement]]`` in the config): with a
``shard``, ids starting with the prefix live there outright; without one, they hash as
the prefix itself does, so ``t42:wallet:7`` and ``t42:fees`` share the slot of ``t42:``
(and move with it when slot ranges move). Co-location only saves work (a transfer
between two such accounts is one local transaction): every operation has the same
answers whatever shards its accounts live on. Slots are assigned by ranges, so a shard
is split or moved later by reassigning a range, never by rehashing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SLOTS", "SLOT_HASH_VERSION", "PrefixRule", "ShardMap", "SlotRange", "slot_of"]

SLOTS = 4096
SLOT_HASH_VERSION = 1


def slot_of(account_id: str) -> int:
    """The slot (0..4095) of an account id, by slot hash version 1."""
    key = account_id
    start = account_id.find("{")
    if start != -1:
        end = account_id.find("}", start + 1)
        if end > start + 1:
            key = account_id[start + 1 : end]
    return zlib.crc32(key.encode()) % SLOTS


@dataclass(frozen=True, slots=True)
class SlotRange:
    """Slots ``first..last`` (inclusive) live on ``shard``."""

    first: int
    last: int
    shard: str


@dataclass(frozen=True, slots=True)
class PrefixRule:
    """Ids starting with ``prefix`` live on ``shard`` whatever their slot, or (``shard``
    None) in the slot of ``prefix``."""

    prefix: str
    shard: str | None = None


class ShardMap:
    """Maps account ids to shard names; validated to cover every slot exactly once."""

    def __init__(self, ranges: Iterable[SlotRange], prefixes: Sequence[PrefixRule] = ()) -> None:
        ordered = sorted(ranges, key=lambda r: r.first)
        expected = 0
        for r in ordered:
            if r.first != expected or r.last < r.first:
                raise ValueError(
                    f"slot ranges must cover 0..{SLOTS - 1} without gaps or overlaps; "
                    f"range {r.first}..{r.last} found where slot {expected} was expected"
                )
            expected = r.last + 1
        if expected != SLOTS:
            raise ValueError(f"slot ranges end at {expected - 1}, not {SLOTS - 1}")
        self.ranges: tuple[SlotRange, ...] = tuple(ordered)
        # Longest prefix first, so that a specific rule wins over a general one.
        self.prefixes = tuple(sorted(prefixes, key=lambda p: -len(p.prefix)))
        self._slot_to_shard: list[str] = []
        for r in ordered:
            self._slot_to_shard.extend([r.shard] * (r.last - r.first + 1))
        self.shards: tuple[str, ...] = tuple(
            dict.fromkeys([r.shard for r in ordered] + [p.shard for p in self.prefixes if p.shard])
        )

    @classmethod
    def even(cls, shards: Sequence[str]) -> ShardMap:
        """Split the slots into equal consecutive ranges, one per shard."""
        if not shards:
            raise ValueError("at least one shard is needed")
        n = len(shards)
        bounds = [SLOTS * i // n for i in range(n + 1)]
        return cls(SlotRange(bounds[i], bounds[i + 1] - 1, s) for i, s in enumerate(shards))

    def slot_for(self, account_id: str) -> int | None:
        """The slot that places ``account_id`` (None: a prefix rule pins it to a shard)."""
        for rule in self.prefixes:
            if account_id.startswith(rule.prefix):
                return None if rule.shard is not None else slot_of(rule.prefix)
        return slot_of(account_id)

    def shard_of_slot(self, slot: int) -> str:
        return self._slot_to_shard[slot]

    def shard_for(self, account_id: str) -> str:
        for rule in self.prefixes:
            if account_id.startswith(rule.prefix):
                if rule.shard is not None:
                    return rule.shard
                return self._slot_to_shard[slot_of(rule.prefix)]
        return self._slot_to_shard[slot_of(account_id)]
