"""Slot hashing and slot-range placement (pure)."""

import zlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.cluster.shardmap import SLOTS, PrefixRule, ShardMap, SlotRange, slot_of

ids = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True)


def test_slot_hash_version_1_is_pinned() -> None:
    """The slot of an id is crc32 of its UTF-8 bytes mod 4096, forever (data depends on it)."""
    assert slot_of("wallet:1") == zlib.crc32(b"wallet:1") % 4096
    assert slot_of("acc_42") == 982


def test_hash_tag_colocates_related_accounts() -> None:
    """Ids sharing a {tag} share a slot; an empty tag hashes the whole id."""
    assert slot_of("{t1}:wallet:1") == slot_of("{t1}:fees") == slot_of("t1")
    assert slot_of("{}x") == zlib.crc32(b"{}x") % 4096


@given(ids)
def test_slot_is_in_range(account_id: str) -> None:
    """Every id maps to a slot in 0..4095."""
    assert 0 <= slot_of(account_id) < SLOTS


def test_slots_spread_evenly() -> None:
    """100,000 sequential ids fill four even shards within 5% of a quarter each."""
    shard_map = ShardMap.even(["s0", "s1", "s2", "s3"])
    counts = Counter(shard_map.shard_for(f"wallet:{i}") for i in range(100_000))
    assert set(counts) == {"s0", "s1", "s2", "s3"}
    for n in counts.values():
        assert abs(n - 25_000) < 1_250


def test_even_map_covers_all_slots_in_ranges() -> None:
    """ShardMap.even gives consecutive ranges that cover every slot once."""
    shard_map = ShardMap.even(["a", "b", "c"])
    assert [(r.first, r.last, r.shard) for r in shard_map.ranges] == [
        (0, 1364, "a"),
        (1365, 2729, "b"),
        (2730, 4095, "c"),
    ]


@pytest.mark.parametrize(
    "ranges",
    [
        [SlotRange(0, 2047, "a")],
        [SlotRange(0, 2047, "a"), SlotRange(2047, 4095, "b")],
        [SlotRange(0, 2000, "a"), SlotRange(2002, 4095, "b")],
        [SlotRange(0, 4096, "a")],
        [],
    ],
)
def test_bad_ranges_are_rejected(ranges: list[SlotRange]) -> None:
    """Gaps, overlaps and ranges beyond slot 4095 are configuration errors."""
    with pytest.raises(ValueError, match="slot"):
        ShardMap(ranges)


def test_prefix_rules_pin_ids_longest_prefix_first() -> None:
    """A prefix rule overrides the slot; the longest matching prefix wins."""
    shard_map = ShardMap(
        [SlotRange(0, 4095, "main")],
        [PrefixRule("merchant:", "m"), PrefixRule("merchant:big:", "big")],
    )
    assert shard_map.shard_for("merchant:big:1") == "big"
    assert shard_map.shard_for("merchant:7") == "m"
    assert shard_map.shard_for("wallet:7") == "main"
    assert shard_map.shards == ("main", "big", "m")


def test_a_placement_without_a_shard_keeps_a_prefix_together_in_its_own_slot() -> None:
    """``[[placement]] prefix = "t42:"`` puts every id with that prefix in the slot of the
    prefix: one shard for all of them, wherever the slot map puts that slot."""
    shard_map = ShardMap(ShardMap.even(["a", "b", "c", "d"]).ranges, [PrefixRule("t42:")])
    home = shard_map.shard_for("t42:")
    ids = [f"t42:wallet:{i}" for i in range(50)] + ["t42:fees"]
    assert {shard_map.shard_for(i) for i in ids} == {home}
    assert len({shard_map.shard_for(f"wallet:{i}") for i in range(50)}) == 4
