"""``paycore shards status``: the slot map and what each shard holds, read, never made."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from backends import StoreFactory
from paycore.cli import main
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers


def status_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["shards", "status", "--json", *argv]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


async def _fill(data_dir: Path, ids: list[str]) -> dict[str, str]:
    store = build_store(Settings(data_dir=str(data_dir), embedded_shards=4))
    await store.start()
    try:
        await store.execute(CreateAccounts(tuple(AccountRequest(i, "USD") for i in ids)))
        await store.execute(
            CreateTransfers(
                tuple(
                    TransferRequest(f"st-t{i}", ids[i], ids[i + 1], 1) for i in range(len(ids) - 1)
                )
            )
        )
        return {i: store.shard_for(i) for i in ids}
    finally:
        await store.stop()


def test_status_counts_each_shards_rows_and_covers_every_slot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four embedded shards: the slot ranges cover 0..4095 once, the accounts made are all
    counted (with the clearing accounts cross-shard transfers add), and nothing is open."""
    monkeypatch.setenv("PAYCORE_EMBEDDED_SHARDS", "4")
    ids = [f"st-{i}" for i in range(40)]
    shard_of = asyncio.run(_fill(tmp_path, ids))
    report = status_json(capsys, "--data-dir", str(tmp_path))
    shards = report["shards"]
    assert [s["name"] for s in shards] == ["shard-0", "shard-1", "shard-2", "shard-3"]
    slots = sorted(tuple(r) for s in shards for r in s["slots"])
    assert slots[0][0] == 0
    assert slots[-1][1] == 4095
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(slots))
    assert sum(s["slot_count"] for s in shards) == report["slots"] == 4096
    for s in shards:
        own = sum(1 for shard in shard_of.values() if shard == s["name"])
        usage = s["usage"]
        clearing = usage["accounts"] - own  # clearing accounts of the sagas made there
        assert 0 <= clearing <= 6, (s["name"], usage)
        assert usage["open_sagas"] == 0
        assert usage["bytes"] > 0
    assert sum(s["usage"]["transfers"] for s in shards) >= len(ids) - 1


def test_status_of_a_missing_ledger_shows_it_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No shard file yet: every shard is reported without usage, and no file appears."""
    monkeypatch.setenv("PAYCORE_EMBEDDED_SHARDS", "2")
    where = tmp_path / "nothing-here"
    report = status_json(capsys, "--data-dir", str(where))
    assert [s["usage"] for s in report["shards"]] == [None, None]
    assert not where.exists()
    assert main(["shards", "status", "--data-dir", str(where)]) == 0
    assert "missing" in capsys.readouterr().out


async def test_usage_of_one_shard_on_each_backend(make_store: StoreFactory) -> None:
    """A shard's usage counts its accounts and transfer rows, on SQLite and PostgreSQL."""
    store = make_store()
    await store.start()
    try:
        before = await store.usage()
        await store.execute(
            CreateAccounts((AccountRequest("u-a", "EUR"), AccountRequest("u-b", "EUR")))
        )
        await store.execute(CreateTransfers((TransferRequest("u-t", "u-a", "u-b", 5),)))
        after = await store.usage()
    finally:
        await store.stop()
    assert (after.accounts - before.accounts, after.transfers - before.transfers) == (2, 1)
    assert after.open_sagas == 0
    assert after.bytes > 0
