"""``paycore migrate`` and ``migrate_on_start``: every shard of a topology is brought to the
current schema (SQLite files and PostgreSQL databases), a dry run changes nothing, a
failing shard is reported without holding the others back, passwords are never
printed, and a node that may not migrate refuses a schema that lags."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import psycopg
import pytest

from paycore.cli import main
from paycore.cluster.topology import build_store
from paycore.config import Settings, ShardSpec, load_settings
from paycore.errors import UnavailableError
from paycore.ops.migrate import migrate_shards
from paycore.storage import postgres as postgres_module
from paycore.storage import sqlite as sqlite_module
from paycore.storage.postgres import PostgresStore, migrate_postgres
from paycore.storage.sqlite import SQLiteStore

ALL = [name for _, name, _ in sqlite_module._migrations()]
UNREACHABLE = "host=127.0.0.1 port=1 user=postgres password=s3cret dbname=x connect_timeout=5"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that rich prints each name on one line."""
    monkeypatch.setenv("COLUMNS", "250")


def _recorded_sqlite(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
    return [name for (name,) in rows]


def _recorded_postgres(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
    return [name for (name,) in rows]


def _sqlite_spec(path: Path, name: str = "s0") -> ShardSpec:
    return ShardSpec(name, "sqlite", path, None, ((0, 4095),))


def _migrate_up_to(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the file only the migrations up to ``version``, as an older paycore did."""
    every = sqlite_module._migrations()
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "_migrations", lambda: [m for m in every if m[0] <= version])
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            sqlite_module.migrate(conn)
        finally:
            conn.close()


# -- the command on the embedded default --------------------------------------------------------


def test_migrate_brings_every_embedded_shard_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The four embedded files get every migration; a second run has nothing to do."""
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for i in range(4):
        assert _recorded_sqlite(tmp_path / f"shard-{i}.sqlite3") == ALL
        assert f"shard-{i}" in out
    assert "0004_collate_c.sql" in out
    assert "every shard is up to date" in out

    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 5  # four rows and the summary
    assert "0001_ledger.sql" not in out


def test_dry_run_lists_what_is_missing_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run creates no file and applies nothing; on an older file it names exactly
    the migrations that file lacks."""
    assert main(["migrate", "--data-dir", str(tmp_path / "new"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "new").exists()
    assert all(name in out for name in ALL)
    assert "dry run: nothing was changed" in out

    old = tmp_path / "old.sqlite3"
    _migrate_up_to(old, 2, monkeypatch)
    before = old.read_bytes()
    (result,) = migrate_shards([_sqlite_spec(old)], dry_run=True)
    assert result.ok
    assert result.pending == tuple(ALL[2:])
    assert result.applied == ()
    assert old.read_bytes() == before
    assert _recorded_sqlite(old) == ALL[:2]


def test_a_failing_migration_reports_what_made_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations commit one by one: a failure names the ones applied before it and the
    ones still missing; the failed one leaves no trace."""
    path = tmp_path / "x.sqlite3"
    _migrate_up_to(path, 2, monkeypatch)
    broken = (99, "0099_broken.sql", "CREATE TABLE accounts (x INTEGER)")
    every = sqlite_module._migrations()
    monkeypatch.setattr(sqlite_module, "_migrations", lambda: [*every, broken])
    (result,) = migrate_shards([_sqlite_spec(path)])
    assert not result.ok
    assert result.error is not None
    assert "already exists" in result.error
    assert result.applied == tuple(ALL[2:])
    assert result.pending == ("0099_broken.sql",)
    assert _recorded_sqlite(path) == ALL


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[[shards]\n", "bad config"),  # not TOML
        ('[[shards]]\nname = "a"\nslots = "0-10"\n', "slot"),
        ('[[shards]]\nname = "a"\nbackend = "postgres"\n', "dsn"),
        ("lock_timeout_seconds = 0\n", "lock_timeout_seconds"),
        ("outbox_retention_hours = -1\n", "outbox_retention_hours"),
        ("bogus = 1\n", "bogus"),
    ],
)
def test_a_bad_config_exits_2_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, message: str
) -> None:
    path = tmp_path / "paycore.toml"
    path.write_text(config)
    data = tmp_path / "data"
    assert main(["migrate", "--config", str(path), "--data-dir", str(data)]) == 2
    captured = capsys.readouterr()
    assert "bad config" in captured.err
    assert message in captured.err
    assert captured.out == ""
    assert not data.exists()


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


# -- PostgreSQL shards ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_mixed_topology_is_migrated_and_passwords_stay_hidden(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SQLite and a PostgreSQL shard are both migrated; the DSN is printed without its
    password (the test server trusts any, so it may be set)."""
    dsn = f"{postgres_dsn} password=s3cret"
    config = tmp_path / "paycore.toml"
    config.write_text(
        f'[[shards]]\nname = "lite"\npath = "{tmp_path / "lite.sqlite3"}"\n'
        f'[[shards]]\nname = "pg"\nbackend = "postgres"\ndsn = "{dsn}"\n'
    )
    config.chmod(0o600)  # it holds a password: any wider is refused
    assert main(["migrate", "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert _recorded_postgres(postgres_dsn) == []  # the dry run did not even record
    assert not (tmp_path / "lite.sqlite3").exists()
    assert out.count("0004_collate_c.sql") == 2

    assert main(["migrate", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert _recorded_postgres(postgres_dsn) == ALL
    assert _recorded_sqlite(tmp_path / "lite.sqlite3") == ALL
    assert "password=***" in out
    assert "s3cret" not in out
    assert migrate_postgres(postgres_dsn) == []


@pytest.mark.postgres
def test_an_unreachable_shard_is_reported_and_the_others_are_migrated(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One shard down: the others are migrated, its row says why, the exit status is 1."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        f'[[shards]]\nname = "up"\nbackend = "postgres"\ndsn = "{postgres_dsn}"\n'
        f'[[shards]]\nname = "down"\nbackend = "postgres"\ndsn = "{UNREACHABLE}"\n'
    )
    config.chmod(0o600)  # it holds a password: any wider is refused
    assert main(["migrate", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert _recorded_postgres(postgres_dsn) == ALL
    assert "1 shard(s) not migrated: down" in out
    assert "s3cret" not in out


@pytest.mark.parametrize(
    "dsn",
    [
        UNREACHABLE,
        "postgresql://postgres:s3cret@127.0.0.1:1/x?connect_timeout=5",
        "host=127.0.0.1 password s3cret",  # unparsable: libpq would quote the password
    ],
)
def test_errors_never_show_the_password(dsn: str) -> None:
    (result,) = migrate_shards([ShardSpec("pg", "postgres", None, dsn, ((0, 4095),))])
    assert result.error is not None
    assert "s3cret" not in result.error
    assert "s3cret" not in result.location


# -- migrate_on_start = false ---------------------------------------------------------------------


def test_migrate_on_start_is_a_setting_defaulting_to_true() -> None:
    assert Settings().migrate_on_start is True
    assert load_settings(None, env={"PAYCORE_MIGRATE_ON_START": "false"}).migrate_on_start is False


def test_embedded_shards_is_read_from_the_environment() -> None:
    """``PAYCORE_EMBEDDED_SHARDS`` sets the embedded shard count (its default, None, is
    decided at start-up: it was once skipped as not a scalar); a bad value is refused."""
    assert load_settings(None, env={}).embedded_shards is None
    assert load_settings(None, env={"PAYCORE_EMBEDDED_SHARDS": "4"}).embedded_shards == 4
    with pytest.raises(msgspec.ValidationError):
        load_settings(None, env={"PAYCORE_EMBEDDED_SHARDS": "four"})


@pytest.mark.usefixtures("product_embedded_default")  # `paycore migrate` reads the environment
async def test_a_sqlite_node_that_may_not_migrate_refuses_a_lagging_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without migrate_on_start a missing file is not created and an older one is not
    changed: start-up fails naming what is missing; after ``paycore migrate`` it starts."""
    settings = Settings(data_dir=str(tmp_path), embedded_shards=1, migrate_on_start=False)
    store = build_store(settings)
    with pytest.raises(UnavailableError, match=r"0001_ledger\.sql.*paycore migrate"):
        await store.start()
    assert not (tmp_path / "shard-0.sqlite3").exists()

    path = tmp_path / "shard-0.sqlite3"
    _migrate_up_to(path, 2, monkeypatch)
    with pytest.raises(UnavailableError) as caught:
        await SQLiteStore(path, migrate=False).start()
    assert "0001" not in caught.value.detail
    assert "0003_transfer_ids.sql, 0004_collate_c.sql" in caught.value.detail
    assert _recorded_sqlite(path) == ALL[:2]

    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    store = build_store(settings)
    await store.start()
    await store.stop()


@pytest.mark.postgres
async def test_a_postgres_node_that_may_not_migrate_refuses_a_lagging_schema(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = postgres_module._migrations()
    with monkeypatch.context() as patch:
        patch.setattr(postgres_module, "_migrations", lambda: [m for m in every if m[0] <= 3])
        migrate_postgres(postgres_dsn)
    store = PostgresStore(postgres_dsn, migrate=False)
    with pytest.raises(UnavailableError, match=r"lacks migration\(s\) 0004_collate_c.sql[,;]"):
        await store.start()
    assert len(_recorded_postgres(postgres_dsn)) == 3

    (result,) = migrate_shards([ShardSpec("pg", "postgres", None, postgres_dsn, ((0, 4095),))])
    assert result.applied == tuple(name for version, name, _ in every if version >= 4)
    await store.start()
    await store.stop()


def test_topology_passes_migrate_on_start_to_every_store(tmp_path: Path) -> None:
    config = tmp_path / "paycore.toml"
    config.write_text(
        "migrate_on_start = false\n"
        '[[shards]]\nname = "a"\n'
        '[[shards]]\nname = "b"\nbackend = "postgres"\ndsn = "host=db dbname=b"\n'
    )
    store = build_store(load_settings(config, env={}))
    assert [s._migrate for s in store.shards.values()] == [False, False]  # type: ignore[attr-defined]
    defaults = build_store(Settings(data_dir=str(tmp_path)))
    assert all(s._migrate for s in defaults.shards.values())  # type: ignore[attr-defined]
