"""The embedded shards of one process share a writer thread; each still answers a write
only after its WAL is on disk (``synchronous=FULL``'s promise), through a sync of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.sqlite import SQLiteStore


async def test_every_answer_follows_an_fdatasync_of_its_shards_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On four embedded shards each acknowledged write was preceded by an fsync of its WAL."""
    synced: list[str] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        real(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr("paycore.storage.sqlite.os.fdatasync", recording)
    store = build_store(Settings(data_dir=str(tmp_path), embedded_shards=4))
    await store.start()
    try:
        shards = [s for s in store.shard_stores.values() if isinstance(s, SQLiteStore)]
        assert len(shards) == 4
        assert len({s._writer._thread for s in shards}) == 1
        wal = {s.name: f"{s.path.name}-wal" for s in shards}
        first_of = {
            name: next(f"a{i}" for i in range(1000) if store.shard_of(f"a{i}") == name)
            for name in wal
        }
        for name, account in first_of.items():
            synced.clear()
            await store.execute(CreateAccounts((AccountRequest(account, "USD"),)))
            assert [Path(p).name for p in synced][-1:] == [wal[name]], name
        debit, credit = first_of[shards[0].name], first_of[shards[1].name]
        synced.clear()
        (result,) = await store.execute(CreateTransfers((TransferRequest("t1", debit, credit, 5),)))
        assert result.ok
        assert {Path(p).name for p in synced} >= {wal[shards[0].name], wal[shards[1].name]}
    finally:
        await store.stop()


async def test_a_lone_shard_keeps_sqlites_own_fsync(tmp_path: Path) -> None:
    """A shard with a thread of its own commits with synchronous=FULL, syncing in the commit."""
    store = SQLiteStore(tmp_path / "one.db")
    await store.start()
    try:
        assert store._session is not None
        (mode,) = store._session.conn.execute("PRAGMA synchronous").fetchone()
        assert mode == 2  # FULL
    finally:
        await store.stop()
