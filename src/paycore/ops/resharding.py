"""``paycore shards move`` and ``paycore shards add``: moving slot ranges while serving.

The protocol is ``paycore.cluster.slot_moves``; this module opens the settings' shards,
runs one move (or resumes or aborts the unfinished one), and plans the moves that give
a new shard its share of the slots. A shard is added by naming it in the settings
(``[[shards]]`` with its ``dsn`` or ``path``) or, on the embedded layout, by creating the
next file ``shard-<N>.sqlite3`` here; it gets slots only by moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from pathlib import Path

from paycore.cluster import slot_moves
from paycore.cluster.placement import home_of
from paycore.cluster.router import ShardedStore
from paycore.cluster.shardmap import SLOTS, ShardMap
from paycore.cluster.topology import build_store
from paycore.config import Settings, embedded_shard_count
from paycore.storage.base import ShardSnapshot

__all__ = [
    "Move",
    "balance",
    "balance_moves",
    "busy_slots",
    "create_embedded_shard",
    "next_embedded_shard",
    "run_moves",
    "stored_map",
]

Move = tuple[int, int, str]  # (first slot, last slot, target shard)


def balance_moves(
    shard_map: ShardMap, shards: list[str], new: str, busy: Collection[int] = ()
) -> list[Move]:
    """The moves that give ``new`` an even share of the slots: each shard holding more
    than its share gives the top of its slots, in slot order, but for ``busy`` ones (a
    pending hold there would make the move wait: they stay, others go instead)."""
    share = SLOTS // len(shards)
    per_slot = [shard_map.shard_of_slot(s) for s in range(SLOTS)]
    counts = {name: per_slot.count(name) for name in shards}
    wanted = share - counts.get(new, 0)
    moves: list[Move] = []
    for donor in sorted(counts, key=lambda n: -counts[n]):
        if donor == new or wanted <= 0:
            continue
        give = min(counts[donor] - share, wanted)
        free = [s for s in range(SLOTS) if per_slot[s] == donor and s not in busy]
        slots = free[-give:] if give > 0 else []
        wanted -= len(slots)
        for first, last in _runs(slots):
            moves.append((first, last, new))
    return sorted(moves)


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for slot in slots:
        if runs and runs[-1][1] == slot - 1:
            runs[-1] = (runs[-1][0], slot)
        else:
            runs.append((slot, slot))
    return runs


def next_embedded_shard(settings: Settings) -> str:
    """The name of the next file of the embedded layout."""
    return f"shard-{embedded_shard_count(settings)}"


async def create_embedded_shard(settings: Settings) -> str:
    """Create the next file of the embedded layout (migrated, empty); its name."""
    from paycore.storage.sqlite import SQLiteStore  # noqa: PLC0415

    name = next_embedded_shard(settings)
    store = SQLiteStore(
        Path(settings.data_dir) / f"{name}.sqlite3", name=name, synchronous=settings.synchronous
    )
    await store.start()
    await store.stop()
    return name


async def run_moves(
    settings: Settings,
    moves: list[Move] | None = None,
    *,
    wait_seconds: float = 30.0,
    abort: bool = False,
    say: Callable[[str], None] = print,
) -> list[slot_moves.MoveReport]:
    """Open the shards of ``settings`` and run ``moves`` one by one (or abort the
    unfinished move); a MoveBlocked stops at the move that cannot go."""
    router: ShardedStore = build_store(settings)
    await router.start()
    try:
        if abort:
            say(await slot_moves.abort_move(router))
            return []
        reports = []
        for first, last, target in moves or []:
            reports.append(
                await slot_moves.move_slots(
                    router, first, last, target, wait_seconds=wait_seconds, say=say
                )
            )
        return reports
    finally:
        await router.stop()


async def busy_slots(router: ShardedStore) -> set[int]:
    """The slots of accounts with a pending hold: a move of them waits for the hold."""

    def read(snap: ShardSnapshot) -> list[str]:
        return [
            str(a)
            for row in snap.rows(
                "SELECT t.debit_account_id, t.credit_account_id FROM pending_transfers p "
                "JOIN transfers t ON t.id = p.id WHERE p.status = 'pending'"
            )
            for a in row
        ]

    held = await asyncio.gather(*(s.with_snapshot(read) for s in router.shards.values()))
    slots = {
        router.shard_map.slot_for(a) for accounts in held for a in accounts if home_of(a) is None
    }
    return {s for s in slots if s is not None}


async def balance(
    settings: Settings, new: str, *, wait_seconds: float = 30.0, say: Callable[[str], None] = print
) -> int:
    """Move ``new`` its share of the slots, around the slots of pending holds; a move a
    new hold blocked is planned again (three times). Returns the slots ``new`` holds."""
    router: ShardedStore = build_store(settings)
    await router.start()
    try:
        for _ in range(3):
            moves = balance_moves(
                router.shard_map, sorted(router.shards), new, await busy_slots(router)
            )
            try:
                for first, last, target in moves:
                    say(f"move slots {first}-{last} ({router.shard_map.shard_of_slot(first)}) "
                        f"-> {target}")  # fmt: skip
                    await slot_moves.move_slots(
                        router, first, last, target, wait_seconds=wait_seconds, say=say
                    )
                break
            except slot_moves.MoveBlocked as blocked:
                say(f"{blocked}; planning again around it")
        return sum(1 for s in range(SLOTS) if router.shard_map.shard_of_slot(s) == new)
    finally:
        await router.stop()


async def stored_map(settings: Settings) -> tuple[ShardMap, list[str]]:
    """The slot map the shards keep (adopted as a node would) and the shards' names."""
    router = build_store(settings)
    await router.start()
    try:
        return router.shard_map, list(router.shards)
    finally:
        await router.stop()
