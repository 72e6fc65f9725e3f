"""Acknowledged means durable: a writer killed with SIGKILL mid-run loses no acknowledged
batch, leaves no partial batch, and leaves a ledger that balances and replays exactly."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
from pathlib import Path

import pytest

from crash import run_and_kill
from paycore.storage.sqlite import SQLiteStore
from store.crash_child import batch_key, make_batch
from store.support import LedgerState, audit, read_state

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = 8
LINE_TIMEOUT = 20.0


def _run_and_kill(db: Path, round_no: int, rng: random.Random) -> tuple[set[int], str]:
    """Start the child, SIGKILL it at a random moment; returns the acknowledged batches."""
    if round_no in (3, 7):  # kill it by the clock: while it starts, or while it runs
        acks, settle = None, rng.uniform(0.0, 0.3) if round_no == 3 else rng.uniform(0.3, 0.8)
    else:  # after some batches, anywhere inside the next commit
        acks, settle = rng.randint(1, 25), rng.uniform(0.0, 0.03)
    argv = [sys.executable, str(CHILD), str(db), str(round_no)]
    acked, stderr = run_and_kill(argv, acks=acks, settle=settle, timeout=LINE_TIMEOUT)
    return {int(a) for a in acked}, stderr


async def _reopen(db: Path) -> LedgerState:
    store = SQLiteStore(db)
    await store.start()
    try:
        return await store.with_snapshot(read_state)
    finally:
        await store.stop()


def _idempotency_keys(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {k for (k,) in conn.execute("SELECT key FROM idempotency")}


@pytest.mark.slow
def test_a_killed_writer_loses_nothing_acknowledged_and_leaves_no_partial_batch(
    tmp_path: Path,
) -> None:
    """Across rounds of SIGKILL and reopen, batches are all-or-nothing and acks are durable."""
    db = tmp_path / "shard-0.sqlite3"
    rng = random.Random(20240601)
    acknowledged: dict[int, set[int]] = {}
    for round_no in range(ROUNDS):
        acked, stderr = _run_and_kill(db, round_no, rng)
        acknowledged[round_no] = acked
        state = asyncio.run(_reopen(db))

        assert audit(state) == [], stderr
        present: dict[str, set[str]] = {}
        for t in state.transfers:
            batch = t.id.rsplit(".", 1)[0]
            present.setdefault(batch, set()).add(t.id)
        keys = _idempotency_keys(db)
        for r in range(round_no + 1):
            committed = {int(b.split(".b")[1]) for b in present if b.startswith(f"r{r}.")}
            assert acknowledged[r] <= committed, f"round {r}: acknowledged batches lost"
            for index in committed | acknowledged[r]:
                _, created = make_batch(r, index)
                key = batch_key(r, index)
                assert present.get(key) == created, f"{key}: partial batch"
                assert key in keys, f"{key}: effect without its idempotency record"
        for key in keys:
            assert key in present, f"{key}: idempotency record without its effect"
