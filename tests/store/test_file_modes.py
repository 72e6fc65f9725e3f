"""A shard's SQLite files hold every balance and transfer: they are created readable by
their owner only (0600: the database and its -wal, -shm and -journal files), in a data
directory created 0700, whatever the umask (they were 0644 and 0755 under umask 022). A
file made before, still readable by others, is left as it is but named in a warning.
The local cluster's config files are 0600 from their first byte."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from paycore.config import Settings, shard_specs
from paycore.ledger.model import AccountRequest
from paycore.ops.migrate import migrate_shards
from paycore.storage.base import CreateAccounts
from paycore.storage.sqlite import SQLiteStore
from paycore.tools.local_cluster.layout import write_private
from paycore.tools.local_cluster.patroni import write_config


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The usual umask, which lets files be created readable by everyone."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_shard_s_files_and_directory_are_its_owner_s_only(tmp_path: Path) -> None:
    data = tmp_path / "data" / "here"
    store = SQLiteStore(data / "shard-0.sqlite3")
    await store.start()
    try:
        (made,) = await store.execute(CreateAccounts((AccountRequest("a", "USD"),)))
        assert made.ok
        assert await store.get_accounts(["a"])  # a reader connection is open too
        files = sorted(p.name for p in data.iterdir())
        assert files == ["shard-0.sqlite3", "shard-0.sqlite3-shm", "shard-0.sqlite3-wal"]
        assert {name: _mode(data / name) for name in files} == dict.fromkeys(files, 0o600)
        assert _mode(data) == 0o700
    finally:
        await store.stop()
    assert _mode(data / "shard-0.sqlite3") == 0o600


def test_migrate_creates_the_files_the_same_way(tmp_path: Path) -> None:
    """``paycore migrate`` may be the first to create a shard's file."""
    data = tmp_path / "fresh"
    results = migrate_shards(shard_specs(Settings(data_dir=str(data), embedded_shards=2)))
    assert all(r.ok for r in results), results
    assert sorted(p.name for p in data.iterdir()) == ["shard-0.sqlite3", "shard-1.sqlite3"]
    assert {_mode(p) for p in data.iterdir()} == {0o600}
    assert _mode(data) == 0o700


async def test_an_existing_file_others_can_read_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its mode is the operator's choice (a backup user may read it): not changed, but said."""
    path = tmp_path / "shard-0.sqlite3"
    path.touch(mode=0o644)
    store = SQLiteStore(path)
    with caplog.at_level(logging.WARNING, logger="paycore.storage.sqlite"):
        await store.start()
    await store.stop()
    assert _mode(path) == 0o644
    assert f"{path} is readable by others (mode 0644)" in caplog.text
    assert "chmod 600" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="paycore.storage.sqlite"):
        await store.start()
    await store.stop()
    assert "readable by others" not in caplog.text


def test_cluster_config_files_are_never_readable_by_others(tmp_path: Path) -> None:
    """``cluster up``'s node.toml and patroni.json name the database's users: created 0600
    before a byte is written (they were written 0644, then chmod-ed: a write that failed
    in between left them readable), and an older, wider file is narrowed."""
    toml = tmp_path / "node.toml"
    with pytest.raises(UnicodeEncodeError):
        write_private(toml, "dsn = '\ud800'\n")  # fails while writing
    assert _mode(toml) == 0o600
    write_private(toml, "port = 8000\n")
    assert (_mode(toml), toml.read_text()) == (0o600, "port = 8000\n")
    path = tmp_path / "patroni.json"
    path.touch(mode=0o644)
    write_config(path, {"name": "s0-pg0"})
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"name": "s0-pg0"}
