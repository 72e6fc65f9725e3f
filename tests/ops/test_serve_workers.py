"""``paycore serve --workers N``: N uvicorn worker processes on one port, each a full
node, over PostgreSQL shards and Redis locks; refused, before anything starts, where the
workers would not share one state (SQLite shards, in-process locks, the embedded
simulated acquirers).

Which worker answered a request is read from ``/proc`` (no API for it): the server end
of each client connection is a socket whose inode one worker's ``/proc/<pid>/fd`` holds.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from paycore.cli import main
from paycore.config import Settings, ShardConfig
from paycore.locks.testing import RedisServer, free_port
from paycore.ops.serve import worker_refusals
from paycore.tools.bench.workers import connection_owner, wait_workers

if TYPE_CHECKING:
    from fix_postgres import PostgresServer

_SHARDS = ("s0", "s1")
_REPLAYED = "idempotent-replayed"


def _pg(name: str) -> ShardConfig:
    return ShardConfig(name=name, backend="postgres", dsn=f"host=127.0.0.1 dbname={name}")


# -- refusals (no server) ---------------------------------------------------------------


def test_the_embedded_default_is_refused_for_each_of_its_three_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite files, in-process locks and in-process acquirers: exit 2, one line naming
    each, and nothing made in the data directory."""
    data = tmp_path / "data"
    assert main(["serve", "--workers", "2", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("paycore serve: --workers 2 refused: ")
    assert "SQLite" in err
    assert "locks_url is 'local'" in err
    assert "simulated acquirers embedded in each process" in err
    assert not data.exists()


def test_a_sqlite_shard_among_postgres_ones_is_refused(tmp_path: Path) -> None:
    """One SQLite [[shards]] table is enough to refuse, and the reason names it."""
    settings = Settings(
        shards=(_pg("s0"), ShardConfig(name="s1", path=str(tmp_path / "s1.sqlite3"))),
        locks_url="redis://127.0.0.1:1/0",
    )
    (reason,) = worker_refusals(settings)
    assert "shard(s) s1 are SQLite" in reason
    assert "written by one process" in reason


def test_local_locks_are_refused_over_postgres_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL shards with locks_url = "local": refused at start (exit 2), saying why
    (two workers would both elect themselves), before any connection is tried."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        '[[shards]]\nname = "s0"\nbackend = "postgres"\ndsn = "host=127.0.0.1 port=1 dbname=x"\n'
    )
    assert main(["serve", "--workers", "3", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--workers 3 refused: locks_url is 'local'" in err
    assert "run it twice" in err
    assert "SQLite" not in err
    assert "acquirers" not in err


def test_the_embedded_acquirers_are_refused_on_their_own() -> None:
    """The in-process simulated acquirers keep a state per process: refused even where
    nothing else is (the rule ``build_payment_service`` follows, asked directly)."""
    settings = Settings(locks_url="redis://127.0.0.1:1/0")
    reasons = worker_refusals(settings)
    assert any("simulated acquirers embedded in each process" in r for r in reasons)
    off = Settings(locks_url="redis://127.0.0.1:1/0", embedded_processors=False)
    assert not any("acquirers" in r for r in worker_refusals(off))


def test_postgres_shards_with_shared_locks_and_http_processors_are_accepted() -> None:
    """Every shard PostgreSQL, Redis (or PostgreSQL) locks, processors over HTTP: nothing
    refused."""
    for locks in ("redis://127.0.0.1:6379/0", "host=127.0.0.1 dbname=locks"):
        settings = Settings(shards=(_pg("s0"), _pg("s1")), locks_url=locks)
        assert worker_refusals(settings) == []


def test_workers_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    """--workers 0 is a usage error."""
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--workers", "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_worker_that_cannot_start_stops_the_node_with_exit_status_3(tmp_path: Path) -> None:
    """A shard that cannot be reached fails each worker's start-up: the supervisor stops
    and the command exits 3, as one process does, naming the worker."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        'locks_url = "redis://127.0.0.1:1/0"\n[[shards]]\nname = "s0"\nbackend = "postgres"\n'
        'dsn = "host=127.0.0.1 port=1 dbname=x connect_timeout=2"\n'
    )
    command = [
        sys.executable, "-m", "paycore.cli", "serve", "--config", str(config), "--workers", "2",
        "--port", str(free_port()), "--log-level", "warning",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "failed to start" in done.stderr.splitlines()[-1]


# -- two workers over PostgreSQL and Redis -----------------------------------------------


def _call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    sent = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
    answer = conn.getresponse()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()


@dataclass
class _Served:
    process: subprocess.Popen[bytes]
    port: int
    config: Path
    env: dict[str, str]
    log: Path
    workers: list[int] = field(default_factory=list)

    def connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        status, _, _ = _call(conn, "GET", "/healthz")
        assert status == 200
        return conn


def _owner(served: _Served, conn: http.client.HTTPConnection) -> int:
    owner = connection_owner(served.workers, conn)
    assert owner is not None
    return owner


@pytest.fixture
def served(
    tmp_path: Path, postgres_server: PostgresServer, own_redis: RedisServer
) -> Iterator[_Served]:
    """``paycore serve --workers 2`` over two PostgreSQL shards and Redis locks, stopped
    (SIGTERM to the supervisor) and its databases released after the test."""
    dsns = [postgres_server.ledger_database() for _ in _SHARDS]
    config = tmp_path / "paycore.toml"
    config.touch(mode=0o600)
    shards = "".join(
        f'\n[[shards]]\nname = "{name}"\nbackend = "postgres"\ndsn = "{dsn}"\n'
        for name, dsn in zip(_SHARDS, dsns, strict=True)
    )
    config.write_text(
        f'locks_url = "{own_redis.url}"\nleader_ttl_seconds = 2.0\n'
        f"rate_limit_per_second = 0\n{shards}"
    )
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    command = [
        sys.executable, "-m", "paycore.cli", "serve", "--config", str(config),
        "--data-dir", str(tmp_path / "data"), "--port", str(port), "--open", "--workers", "2",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    served = _Served(process, port, config, env, log)
    try:
        try:
            served.workers = wait_workers(process.pid, 2, port)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in served.workers:  # the supervisor stops its workers before it exits
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
        for dsn in dsns:
            postgres_server.release_ledger_database(dsn)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _pairs(served: _Served, n: int) -> list[tuple[http.client.HTTPConnection, ...]]:
    """``n`` pairs of connections, the first of each pair to one worker, the second to
    the other (new connections until both workers have taken enough)."""
    by_worker: dict[int, list[http.client.HTTPConnection]] = {pid: [] for pid in served.workers}
    for _ in range(200):
        if all(len(conns) >= n for conns in by_worker.values()):
            break
        conn = served.connect()
        by_worker[_owner(served, conn)].append(conn)
    first, second = by_worker.values()
    for extra in first[n:] + second[n:]:
        extra.close()
    taken = {pid: len(conns) for pid, conns in by_worker.items()}
    assert len(first) >= n, taken
    assert len(second) >= n, taken
    return list(zip(first[:n], second[:n], strict=True))


def _leaders(answers: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    count: dict[tuple[str, str], int] = {}
    for body in answers:
        for job in body["workers"]["jobs"]:
            key = (job["job"], job["shard"])
            count[key] = count.get(key, 0) + int(job["leader"])
    return count


def _one_leader_each(conns: tuple[http.client.HTTPConnection, ...]) -> dict[tuple[str, str], int]:
    """Each job's leaders among the workers behind ``conns`` (one connection per worker),
    once each job has exactly one; never two at once meanwhile."""
    deadline = time.monotonic() + 30
    while True:
        leaders = _leaders([json.loads(_call(c, "GET", "/readyz")[2]) for c in conns])
        if leaders and all(n == 1 for n in leaders.values()):
            return leaders
        assert all(n <= 1 for n in leaders.values()), leaders
        assert time.monotonic() < deadline, leaders
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_serve_one_ledger_with_one_effect_and_one_leader_per_job(
    served: _Served,
) -> None:
    """Both worker processes answer concurrent transfers on two PostgreSQL shards; a
    retry under the same Idempotency-Key sent to the other worker replays the first
    answer; balances equal the acknowledged transfers, the audit is clean, and each
    background job (per shard) has exactly one leader across the two workers, again
    after one worker is SIGKILLed and the supervisor replaces it."""
    pairs = _pairs(served, 3)
    setup = pairs[0][0]
    users = [f"u{i}" for i in range(8)]
    for account in ("bank", *users):
        flags = {} if account == "bank" else {"flags": {"no_overdraft": True}}
        status, _, body = _call(
            setup, "POST", "/v1/accounts", {"id": account, "currency": "USD", **flags}
        )
        assert status == 201, body
    expected = dict.fromkeys(("bank", *users), 0)
    for user in users:
        status, _, body = _call(
            setup,
            "POST",
            "/v1/transfers",
            {"id": f"fund-{user}", "debit_account_id": "bank", "credit_account_id": user,
             "amount": 2_000, "currency": "USD"},
        )  # fmt: skip
        assert status == 201, body
        expected["bank"] -= 2_000
        expected[user] += 2_000

    lock = threading.Lock()
    failures: list[str] = []
    answered_by: dict[int, int] = {}

    def client(index: int, conns: tuple[http.client.HTTPConnection, ...]) -> None:
        rng = random.Random(index)
        owners = [_owner(served, c) for c in conns]
        try:
            for i in range(40):
                payer, payee = rng.sample(users, 2)
                amount = rng.randint(1, 400)
                body = {
                    "id": f"t{index}-{i}", "debit_account_id": payer,
                    "credit_account_id": payee, "amount": amount, "currency": "USD",
                }  # fmt: skip
                headers = {"Idempotency-Key": f"k{index}-{i}"}
                order = [0, 1] if rng.random() < 0.5 else [1, 0]
                first = _call(conns[order[0]], "POST", "/v1/transfers", body, headers)
                retry = _call(conns[order[1]], "POST", "/v1/transfers", body, headers)
                with lock:
                    for which in order:
                        answered_by[owners[which]] = answered_by.get(owners[which], 0) + 1
                    if first[0] == 201:
                        expected[payer] -= amount
                        expected[payee] += amount
                    elif first[0] != 409 or b"insufficient_funds" not in first[2]:
                        failures.append(f"{first[0]} {first[2]!r}")
                    if (retry[0], retry[2]) != (first[0], first[2]) or (
                        retry[1].get(_REPLAYED) != "true"
                    ):
                        failures.append(f"retry {retry[0]} {retry[1]} {retry[2]!r}")
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            with lock:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i, p)) for i, p in enumerate(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(answered_by) == served.workers
    assert all(n >= 40 for n in answered_by.values()), answered_by

    for account, net in expected.items():
        status, _, body = _call(setup, "GET", f"/v1/accounts/{account}")
        assert status == 200, body
        balance = json.loads(body)["balance"]
        assert balance["credits_posted"] - balance["debits_posted"] == net, account
        assert balance["debits_pending"] == balance["credits_pending"] == 0, account

    audit = subprocess.run(
        [sys.executable, "-m", "paycore.cli", "audit", "--config", str(served.config)],
        env=served.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # Each job on each shard: one leader among the two workers, once elections settled.
    leaders = _one_leader_each(pairs[0])
    assert set(_SHARDS) <= {shard for _, shard in leaders}
    log = served.log.read_text()
    for pid in served.workers:  # a start-up line per worker; no access line from uvicorn
        assert f"worker process {pid} serves" in log
    assert "uvicorn.access" not in log
    for pair in pairs:
        for conn in pair:
            conn.close()

    # A worker killed: the supervisor starts another; the jobs it led move, one leader each.
    killed = served.workers[0]
    os.kill(killed, signal.SIGKILL)
    served.workers = wait_workers(served.process.pid, 2, served.port)
    assert killed not in served.workers
    fresh = _pairs(served, 1)[0]
    assert set(_SHARDS) <= {shard for _, shard in _one_leader_each(fresh)}
    status, _, body = _call(fresh[1], "GET", f"/v1/accounts/{users[0]}")
    assert status == 200, body
    for conn in fresh:
        conn.close()
