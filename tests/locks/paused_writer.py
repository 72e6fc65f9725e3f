"""A child of the fencing test: a lock holder that writes to the ledger under its token.

``paused_writer.py URL LOCK DB TTL``: takes LOCK for TTL seconds, announces its token to
the SQLite shard DB, prints ``holding TOKEN``, then ``checked`` once its lease looked
fine (``held.check()``), waits 0.5 s (the test SIGSTOPs it here, past its lease), then
writes a transfer with its token and prints ``wrote`` or ``fenced TOKEN-SEEN``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from paycore.errors import FencedError
from paycore.ledger.model import TransferRequest
from paycore.locks import HeldLease, open_lock_service
from paycore.storage.base import AdvanceFence, CreateTransfers, Fence
from paycore.storage.sqlite import SQLiteStore


async def main(url: str, lock: str, db: Path, ttl: float) -> None:
    store = SQLiteStore(db)
    await store.start()
    try:
        async with open_lock_service(url) as locks:
            lease = await locks.acquire(lock, ttl, wait=10)
            assert lease is not None
            held = HeldLease(locks, lease, ttl).start()
            fence = Fence(lock, lease.fencing_token)
            await store.execute(AdvanceFence(fence))
            print(f"holding {lease.fencing_token}", flush=True)
            held.check()  # the lease is fine: the worker goes on to write...
            print("checked", flush=True)
            await asyncio.sleep(0.5)  # ...and is paused right here, past its lease
            write = CreateTransfers(
                (TransferRequest("stale-write", "a", "b", 1, "USD"),), fence=fence
            )
            try:
                await store.execute(write)
            except FencedError as exc:
                print(f"fenced {exc.detail}", flush=True)
            else:
                print("wrote", flush=True)
    finally:
        await store.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
