"""The process test_move_crash kills: a move of slots, SIGKILLed at one point.

Usage: ``python move_crash_child.py CONFIG FIRST LAST TARGET KILL_POINT``

It opens the store of ``CONFIG`` (as ``paycore serve --config`` reads it), prints
``armed``, wraps the shard stores' ``execute`` so that right after the kill point's
command returned (committed) the process SIGKILLs itself, and runs the move. Reaching
the end alive prints ``survived`` (the kill point was never met: the test fails).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paycore.cluster import slot_moves
from paycore.cluster.topology import build_store
from paycore.config import load_settings
from paycore.storage.slot_fence import RecordSlotMap
from paycore.storage.slot_moves import ImportMoved, RecordMove, RetireMoved


def _state(state: str) -> Callable[[Any], bool]:
    return lambda c: isinstance(c, RecordMove) and c.row.state == state


# Each point: the command after which the mover dies.
KILL_POINTS: dict[str, Callable[[Any], bool]] = {
    "fenced": lambda c: isinstance(c, RecordSlotMap) and '"moving"' in c.shard_map,
    "draining": _state("draining"),
    "copied_in_part": lambda c: isinstance(c, ImportMoved) and bool(c.accounts),
    "target_switched": lambda c: isinstance(c, ImportMoved) and c.switch is not None,
    "switching": _state("switching"),
    "retired_in_part": lambda c: isinstance(c, RetireMoved),
}


async def main(config: Path, first: int, last: int, target: str, point: str) -> None:
    store = build_store(load_settings(config))
    await store.start()
    matches = KILL_POINTS[point]
    for shard in store.shards.values():
        run = shard.execute

        async def execute(command: Any, run: Any = run) -> Any:
            result = await run(command)
            if matches(command):
                print(f"killed after {type(command).__name__}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        shard.execute = execute  # type: ignore[method-assign]
    print("armed", flush=True)
    await slot_moves.move_slots(store, first, last, target, adopt_seconds=0.0)
    print("survived", flush=True)


if __name__ == "__main__":
    _, config, first, last, target, point = sys.argv
    asyncio.run(main(Path(config), int(first), int(last), target, point))
