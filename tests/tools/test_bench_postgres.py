"""``paycore bench`` over PostgreSQL: pgbench beside paycore, cross-shard, accounts sweep.

Tiny sizes on the session's test server (``fix_postgres``): these check what the report
holds and that every audit is clean, never how fast anything is (that is the bench's
own job, with its numbers printed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fix_postgres import PostgresServer
from paycore.cli import main
from paycore.config import load_settings
from paycore.tools.bench.options import add_arguments, command_line, resolve_options
from paycore.tools.bench.pgbench import pgbench_result
from paycore.tools.bench.postgres import settings_toml
from paycore.tools.local_postgres import LocalPostgres, find_bindir, public_tables

pytestmark = pytest.mark.postgres

TINY = [
    "--accounts", "60", "--batch-size", "20", "--transfers", "40",
    "--clients", "4", "--duration", "0.5",
    "--pgbench-clients", "2", "--pgbench-scale", "1", "--pgbench-duration", "1",
    "--sweep-transfers", "40",
]  # fmt: skip


def _config(path: Path, dsns: list[str]) -> Path:
    shards = "".join(
        f'\n[[shards]]\nname = "s{i}"\nbackend = "postgres"\ndsn = "{dsn}"\n'
        for i, dsn in enumerate(dsns)
    )
    path.write_text(shards)
    return path


def _bench_databases(server: PostgresServer) -> list[str]:
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'paycore_bench_%'"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def two_empty(postgres_server: PostgresServer) -> Iterator[list[str]]:
    """Two fresh, empty databases (DSNs), dropped afterwards."""
    dsns = [postgres_server.new_database() for _ in range(2)]
    yield dsns
    for dsn in dsns:
        postgres_server.drop_database(dsn)


@pytest.mark.slow
def test_bench_over_postgres_config(
    tmp_path: Path,
    two_empty: list[str],
    postgres_server: PostgresServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every part on two configured shards: pgbench, the in-process batches (uniform, hot,
    within a shard, across shards), HTTP through ``paycore serve --config``, the accounts
    sweep; audits clean, targets and the server's settings reported."""
    config = _config(tmp_path / "bench.toml", two_empty)
    out_json = tmp_path / "bench.json"
    status = main(
        ["bench", "--config", str(config), *TINY, "--accounts-sweep", "30,90",
         "--json", str(out_json)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads(out_json.read_text())
    assert report["backend"] == "postgres"
    assert report["ok"] is True
    names = [r["name"] for r in report["results"]]
    pgbench_found = "pgbench-tpcb" in names
    if not pgbench_found:  # the row is skipped, with the package to install
        assert "postgresql-client" in report["skipped"]["pgbench-tpcb"]
    assert [n for n in names if n != "pgbench-tpcb"] == [
        "pg-inproc-uniform", "pg-inproc-hot", "pg-inproc-local", "pg-inproc-cross",
        "pg-http-uniform", "pg-http-hot", "pg-sweep-30", "pg-sweep-90",
    ]  # fmt: skip
    by_name = {r["name"]: r for r in report["results"]}
    for name in ("pg-inproc-uniform", "pg-inproc-hot", "pg-inproc-local", "pg-inproc-cross"):
        assert by_name[name]["transfers"] == 40, by_name[name]
        assert by_name[name]["errors"] == 0
    cross = by_name["pg-inproc-cross"]["detail"]
    assert cross["cross_shard_settled"] == 40  # counted once settled by the relay
    assert by_name["pg-inproc-local"]["detail"]["cross_shard_settled"] == 0
    assert all(by_name[n]["transfers"] > 0 for n in ("pg-http-uniform", "pg-http-hot"))
    assert by_name["pg-sweep-90"]["detail"]["accounts"] == 90
    assert by_name["pg-sweep-90"]["detail"]["fresh_ledger"] is False  # the config's own
    assert report["audits"] == {
        "pg-inproc": True, "pg-http": True, "pg-sweep-30": True, "pg-sweep-90": True,
    }  # fmt: skip
    targets = {t["name"] for t in report["targets"]}
    assert {"PG cross-shard / single-shard", "PG cost per transfer vs accounts"} <= targets
    if pgbench_found:
        assert by_name["pgbench-tpcb"]["rate_per_s"] > 0
        assert {"PG batch / pgbench TPS", "PG HTTP / pgbench TPS"} <= targets
        assert report["postgres"]["pgbench_command"].startswith("pgbench -i -s 1 ")
    assert all(t["goal_ratio"] is not None and t["what"] for t in report["targets"])
    assert report["postgres"]["settings"]["fsync"] == "off"  # the test server's choice
    assert report["postgres"]["durable"] is False
    assert "NOT durable" in out
    assert report["command"].startswith(f"paycore bench --config {config}")
    assert _bench_databases(postgres_server) == []  # pgbench's database is dropped


def test_bench_refuses_a_database_that_is_not_empty(
    tmp_path: Path, two_empty: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured database that holds tables is never benchmarked (nor touched)."""
    with psycopg.connect(two_empty[1], autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (x int)")
    config = _config(tmp_path / "bench.toml", two_empty)
    assert main(["bench", "--config", str(config), *TINY, "--only", "inproc"]) == 2
    out = capsys.readouterr().out
    assert "not empty" in out
    assert "--create-databases" in out
    assert public_tables(two_empty[0]) == []
    assert public_tables(two_empty[1]) == ["precious"]


def test_bench_creates_and_drops_its_own_databases(
    tmp_path: Path, postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--create-databases: a fresh ledger per sweep size on the configured server, all
    dropped at the end; the configured database itself stays as it was."""
    used = postgres_server.new_database()
    try:
        with psycopg.connect(used, autocommit=True) as conn:
            conn.execute("CREATE TABLE precious (x int)")
        config = _config(tmp_path / "bench.toml", [used, used])
        out_json = tmp_path / "bench.json"
        status = main(
            ["bench", "--config", str(config), "--create-databases", *TINY, "--only", "sweep",
             "--accounts-sweep", "40,80", "--json", str(out_json)]
        )  # fmt: skip
        out = capsys.readouterr().out
        assert status == 0, out
        report = json.loads(out_json.read_text())
        assert [r["name"] for r in report["results"]] == ["pg-sweep-40", "pg-sweep-80"]
        assert all(r["detail"]["fresh_ledger"] for r in report["results"])
        assert all(r["detail"]["mode"] == "local" for r in report["results"])
        assert report["audits"] == {"pg-sweep-40": True, "pg-sweep-80": True}
        assert report["postgres"]["fresh_database_per_part"] is True
        assert _bench_databases(postgres_server) == []
        assert public_tables(used) == ["precious"]
    finally:
        postgres_server.drop_database(used)


@pytest.mark.slow
def test_bench_on_a_local_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--local-postgres 1 --pg-fast: a throwaway server, labelled not durable; one shard
    has no cross-shard row (said, not crashed)."""
    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries")
    out_json = tmp_path / "bench.json"
    status = main(
        ["bench", "--local-postgres", "1", "--pg-fast", *TINY, "--only", "inproc",
         "--json", str(out_json)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads(out_json.read_text())
    assert [r["name"] for r in report["results"]] == ["pg-inproc-uniform", "pg-inproc-hot"]
    assert "pg-inproc-cross" in report["skipped"]
    assert report["audits"] == {"pg-inproc": True}
    assert report["postgres"]["source"] == "local"
    assert report["postgres"]["pg_fast"] is True
    assert report["postgres"]["settings"]["fsync"] == "off"
    assert "--pg-fast" in out
    assert report["command"].startswith("paycore bench --local-postgres 1 --pg-fast")


def test_local_postgres_starts_serves_and_cleans_up() -> None:
    """The reusable throwaway server: durable by default, databases, gone after stop."""
    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries")
    with LocalPostgres() as pg:
        root = pg.root
        assert root is not None
        dsn = pg.create_database("things")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        pg.drop_database("things")
    assert not root.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pg-fast"], "--pg-fast"),
        (["--accounts-sweep", "10,100"], "only with --config or --local-postgres"),
        (["--only", "pgbench"], "only with --config or --local-postgres"),
        (["--local-postgres", "2", "--accounts-sweep", "ten"], "--accounts-sweep"),
        (["--local-postgres", "0"], "--local-postgres N"),
        (["--workers", "2"], "--workers: only with --config or --local-postgres"),
        (["--local-postgres", "2", "--workers", "0"], "--workers N"),
    ],
)
def test_bench_option_mistakes_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().out


def test_bench_config_must_name_postgres_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bench.toml"
    config.write_text('[[shards]]\nname = "a"\nbackend = "sqlite"\npath = "x.sqlite3"\n')
    assert main(["bench", "--config", str(config)]) == 2
    assert 'not backend = "postgres"' in capsys.readouterr().out


def test_settings_toml_reads_back(tmp_path: Path) -> None:
    """The config handed to ``paycore serve`` is the bench's settings, exactly."""
    source = tmp_path / "in.toml"
    source.write_text(
        'relay_interval_seconds = 0.25\nauth = "open"\n'
        '[[shards]]\nname = "s0"\nbackend = "postgres"\ndsn = "host=a dbname=\\"q\\""\n'
        'slots = "0-99"\n[[shards]]\nname = "s1"\nbackend = "postgres"\ndsn = "dbname=b"\n'
        'slots = "100-4095"\n[[placement]]\nprefix = "m:"\nshard = "s1"\n'
    )
    settings = load_settings(source, env={})
    copy = tmp_path / "out.toml"
    copy.write_text(settings_toml(settings))
    assert load_settings(copy, env={}) == settings


def test_pgbench_output_is_read(tmp_path: Path) -> None:
    stdout = (
        "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 16\n"
        "number of clients: 16\nnumber of threads: 2\nduration: 10 s\n"
        "number of transactions actually processed: 23936\n"
        "number of failed transactions: 0 (0.000%)\nlatency average = 6.687 ms\n"
        "initial connection time = 29.018 ms\n"
        "tps = 2392.671643 (without initial connection time)\n"
    )
    (tmp_path / "pgbench.123").write_text(
        "".join(f"0 {i} {1000 * (i + 1)} 0 1700000000 {i}\n" for i in range(100))
    )
    result = pgbench_result("pgbench-tpcb", stdout, tmp_path, 10)
    assert result.transfers == 23936
    assert result.rate_per_s == pytest.approx(2392.671643)
    assert result.seconds == pytest.approx(23936 / 2392.671643)
    assert result.p50_ms == pytest.approx(51.0)
    assert result.p99_ms == pytest.approx(100.0)
    assert result.errors == 0
    assert result.detail["latency_average_ms"] == pytest.approx(6.687)


def test_resolved_options_reproduce_the_run() -> None:
    """The printed command, fed back, resolves to the same options."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--local-postgres", "2", "--quick", "--accounts-sweep", "100,1000"])
    options = resolve_options(args)
    command = command_line(options, args)
    again = parser.parse_args(command.split()[2:])
    assert resolve_options(again) == options


def test_the_workers_option_is_in_the_printed_command() -> None:
    """``--workers 2`` resolves, and the printed command carries it back."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--local-postgres", "2", "--quick", "--workers", "2"])
    options = resolve_options(args)
    command = command_line(options, args)
    assert "--workers 2" in command
    assert resolve_options(parser.parse_args(command.split()[2:])) == options
