"""A lock holder paused past its lease (SIGSTOP) cannot write after the next holder took
over: the store refuses its token, in the write's own transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.locks import open_lock_service
from paycore.locks.testing import RedisServer
from paycore.storage.base import CreateAccounts, CreateTransfers, Fence
from paycore.storage.sqlite import SQLiteStore

CHILD = Path(__file__).with_name("paused_writer.py")
TTL = 0.4


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, f"child ended early: {proc.stderr.read() if proc.stderr else ''}"
    return line


@pytest.mark.slow
async def test_a_holder_paused_past_its_lease_cannot_write_after_the_next_one(
    redis_server: RedisServer, tmp_path: Path, lock_name: str
) -> None:
    db = tmp_path / "shard.sqlite3"
    store = SQLiteStore(db)
    await store.start()
    try:
        await store.execute(
            CreateAccounts((AccountRequest("a", "USD"), AccountRequest("b", "USD")))
        )
        with subprocess.Popen(  # noqa: ASYNC220 - the child is driven line by line
            [sys.executable, str(CHILD), redis_server.url, lock_name, str(db), str(TTL)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                old_token = int(_line(child).split()[1])
                assert _line(child) == "checked"
                os.kill(child.pid, signal.SIGSTOP)  # paused between its check and its write
                paused_at = time.monotonic()
                async with open_lock_service(redis_server.url) as locks:
                    lease = await locks.acquire(lock_name, 5.0, wait=5 * TTL)
                    assert lease is not None, "the paused holder's lease never ran out"
                    assert lease.fencing_token > old_token
                    assert time.monotonic() - paused_at >= TTL * 0.9
                    fenced = Fence(lock_name, lease.fencing_token)
                    write = CreateTransfers(
                        (TransferRequest("new-write", "a", "b", 2, "USD"),), fence=fenced
                    )
                    assert (await store.execute(write))[0].ok
                    os.kill(child.pid, signal.SIGCONT)
                    outcome = _line(child)
                    await locks.release(lease)
            finally:
                os.kill(child.pid, signal.SIGCONT)
                child.wait(timeout=10)
        assert outcome.startswith("fenced"), outcome
        assert await store.get_transfer("stale-write") is None
        assert (await store.get_accounts(["b"]))["b"].credits_posted == 2
    finally:
        await store.stop()
