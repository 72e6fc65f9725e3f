"""Topology from settings: the embedded one-shard default (or N files), [[shards]] and
[[placement]]."""

from __future__ import annotations

from pathlib import Path

import pytest

from paycore.cluster.topology import build_store, shard_map_of
from paycore.config import Settings, load_settings, shard_specs
from paycore.ledger.model import AccountRequest
from paycore.storage.base import CreateAccounts


def test_no_config_means_one_sqlite_shard_holding_every_slot(
    tmp_path: Path, product_embedded_default: int
) -> None:
    """Without a topology, one SQLite file in data_dir holds the 4,096 slots."""
    assert product_embedded_default == 1
    specs = shard_specs(Settings(data_dir=str(tmp_path)))
    assert [(s.name, s.path, s.slots) for s in specs] == [
        ("shard-0", tmp_path / "shard-0.sqlite3", ((0, 4095),))
    ]
    assert set(build_store(Settings(data_dir=str(tmp_path))).shards) == {"shard-0"}


def test_embedded_shards_split_the_slots_evenly_over_that_many_files(tmp_path: Path) -> None:
    """``embedded_shards = 4``: four SQLite files in data_dir share the slots evenly."""
    specs = shard_specs(Settings(data_dir=str(tmp_path), embedded_shards=4))
    assert [s.name for s in specs] == ["shard-0", "shard-1", "shard-2", "shard-3"]
    assert [s.path for s in specs] == [tmp_path / f"shard-{i}.sqlite3" for i in range(4)]
    assert [s.slots for s in specs] == [((0, 1023),), ((1024, 2047),), ((2048, 3071),),
                                        ((3072, 4095),)]  # fmt: skip


async def test_a_data_directory_keeps_the_shards_it_was_written_with(tmp_path: Path) -> None:
    """A data directory written with four shards opens with four when nothing is said,
    and another count is refused (its accounts would be looked for in the wrong files);
    a one-shard ledger holding accounts cannot be split by a setting either."""
    four = build_store(Settings(data_dir=str(tmp_path / "four"), embedded_shards=4))
    await four.start()
    await four.stop()
    assert len(shard_specs(Settings(data_dir=str(tmp_path / "four")))) == 4
    with pytest.raises(ValueError, match="holds a ledger of 4 shard file"):
        shard_specs(Settings(data_dir=str(tmp_path / "four"), embedded_shards=2))
    one = build_store(Settings(data_dir=str(tmp_path / "one"), embedded_shards=1))
    await one.start()
    await one.execute(CreateAccounts((AccountRequest("a", "USD"),)))
    await one.stop()
    with pytest.raises(ValueError, match="holds a ledger of 1 shard file"):
        shard_specs(Settings(data_dir=str(tmp_path / "one"), embedded_shards=4))
    assert len(shard_specs(Settings(data_dir=str(tmp_path / "one"), embedded_shards=1))) == 1
    empty = build_store(Settings(data_dir=str(tmp_path / "empty"), embedded_shards=1))
    await empty.start()
    await empty.stop()  # a fresh file with no account may still grow into four
    assert len(shard_specs(Settings(data_dir=str(tmp_path / "empty"), embedded_shards=4))) == 4


def test_toml_topology_with_ranges_dsns_and_placement(tmp_path: Path) -> None:
    """[[shards]] with slot ranges and a multi-host DSN, [[placement]] prefix rules."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        "port = 9000\n"
        '[[shards]]\nname = "a"\nbackend = "sqlite"\npath = "x/a.db"\nslots = "0-99, 200-4095"\n'
        '[[shards]]\nname = "b"\nbackend = "postgres"\n'
        'dsn = "host=db1,db2 dbname=b target_session_attrs=read-write"\nslots = "100-199"\n'
        '[[placement]]\nprefix = "merchant:"\nshard = "b"\n'
    )
    settings = load_settings(config, env={"PAYCORE_PORT": "9100", "PAYCORE_SHARDS": "x"})
    assert settings.port == 9100  # scalars still follow the environment
    specs = shard_specs(settings)
    assert specs[0].slots == ((0, 99), (200, 4095))
    assert specs[1].dsn is not None
    assert "db1,db2" in specs[1].dsn
    shard_map = shard_map_of(settings)
    assert shard_map.shard_for("merchant:7") == "b"
    assert {shard_map.shard_for(f"w{i}") for i in range(200)} == {"a", "b"}


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ('[[shards]]\nname = "a"\nslots = "0-10"\n', "slot"),
        ('[[shards]]\nname = "a b"\n', "shard name"),
        ('[[shards]]\nname = "a"\nbackend = "postgres"\n', "dsn"),
        ('[[shards]]\nname = "a"\nbackend = "mysql"\n', "backend"),
        ('[[shards]]\nname = "a"\nslots = "0-4095"\n[[shards]]\nname = "b"\n', "every"),
    ],
)
def test_bad_topologies_are_refused(tmp_path: Path, shards: str, message: str) -> None:
    """Gaps in the slots, bad names, missing DSNs and unknown backends fail at start-up."""
    config = tmp_path / "paycore.toml"
    config.write_text(shards)
    with pytest.raises(ValueError, match=message):
        shard_map_of(load_settings(config, env={}))


def test_lock_timeout_per_shard_with_a_global_default(tmp_path: Path) -> None:
    """A postgres shard's lock_timeout_seconds reaches its store; without one it takes the
    global setting, itself overridable by the environment."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        "lock_timeout_seconds = 3\n"
        '[[shards]]\nname = "a"\nbackend = "postgres"\ndsn = "host=db1 dbname=a"\n'
        "lock_timeout_seconds = 5\n"
        '[[shards]]\nname = "b"\nbackend = "postgres"\ndsn = "host=db2 dbname=b"\n'
        '[[shards]]\nname = "c"\nbackend = "postgres"\ndsn = "host=db3 dbname=c"\n'
        "lock_timeout_seconds = 0.25\n"
    )
    settings = load_settings(config, env={})
    assert [s.lock_timeout_seconds for s in shard_specs(settings)] == [5, 3, 0.25]
    store = build_store(settings)
    timeouts = {name: s._lock_timeout_ms for name, s in store.shards.items()}  # type: ignore[attr-defined]
    assert timeouts == {"a": 5000, "b": 3000, "c": 250}
    env = load_settings(config, env={"PAYCORE_LOCK_TIMEOUT_SECONDS": "1.5"})
    assert [s.lock_timeout_seconds for s in shard_specs(env)] == [5, 1.5, 0.25]
    assert Settings().lock_timeout_seconds == 10.0


@pytest.mark.parametrize(
    "config",
    [
        "lock_timeout_seconds = 0\n",
        "lock_timeout_seconds = -2\n",
        "lock_timeout_seconds = inf\n",
        "lock_timeout_seconds = nan\n",
        "lock_timeout_seconds = 3e6\n",  # past what PostgreSQL takes (2^31-1 ms)
        '[[shards]]\nname = "a"\nbackend = "postgres"\ndsn = "x"\nlock_timeout_seconds = 0\n',
        '[[shards]]\nname = "a"\nbackend = "postgres"\ndsn = "x"\nlock_timeout_seconds = -1\n',
        '[[shards]]\nname = "a"\nbackend = "postgres"\ndsn = "x"\nlock_timeout_seconds = nan\n',
        '[[shards]]\nname = "a"\nbackend = "postgres"\ndsn = "x"\nlock_timeout_seconds = "soon"\n',
        '[[shards]]\nname = "a"\nbackend = "sqlite"\nlock_timeout_seconds = 5\n',
    ],
)
def test_bad_lock_timeouts_are_refused(tmp_path: Path, config: str) -> None:
    """Zero, negative, infinite, NaN, too long, not a number, or on a SQLite shard (whose
    writer waits by its busy timeout): refused at start-up, naming the setting."""
    path = tmp_path / "paycore.toml"
    path.write_text(config)
    with pytest.raises(ValueError, match="lock_timeout_seconds"):
        build_store(load_settings(path, env={}))


def test_a_bad_lock_timeout_from_the_environment_is_refused(tmp_path: Path) -> None:
    for raw in ("0", "-1", "soon"):
        with pytest.raises(ValueError, match="lock_timeout_seconds"):
            shard_specs(load_settings(None, env={"PAYCORE_LOCK_TIMEOUT_SECONDS": raw}))
