"""The HA promises on a real cluster (2 shards x 2 PostgreSQL under Patroni, Redis,
nginx, 3 API nodes): break one part at a time under a steady write load through nginx.

Each drill checks, from the clients' side and from the ledger: every transfer that got
a 2xx is present (same amount), no request got a definite refusal it should not have,
every request got a definite answer when retried with its key, and ``paycore audit`` is
clean. The figures print with ``-s``; ``paycore cluster drill`` runs longer versions.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import psycopg
import pytest

from paycore.tools.local_cluster.control import LocalCluster
from paycore.tools.local_cluster.drill import DrillReport, run_drill

pytestmark = pytest.mark.slow

# The goal for the write-unavailability window of a shard whose primary died.
FAILOVER_GOAL_SECONDS = 15.0


def _show(report: DrillReport) -> None:
    print(f"\n[drill {report.name}] {report.as_dict()}")
    assert report.ok, (report.as_dict(), report.audit_output[-2000:])


def test_the_cluster_serves_through_nginx_with_a_synchronous_standby_per_shard(
    ha_cluster: LocalCluster,
) -> None:
    state = ha_cluster.state()
    assert state is not None
    assert state["status"] == "running"
    assert all(p["alive"] for p in state["processes"])
    for shard in range(ha_cluster.spec.shards):
        roles = sorted(m.role for m in ha_cluster.shard(shard).members)
        assert roles == ["leader", "sync_standby"], roles
    answer = httpx.get(f"{ha_cluster.url}/readyz", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["locks"]["backend"] == "redis"
    assert answer.json()["auth"] == "api_keys"
    # Every other route needs the cluster's key (made at the first up, mode 600).
    assert ha_cluster.layout.api_key_file.stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{ha_cluster.url}/v1/accounts/nobody", timeout=5).status_code == 401
    found = httpx.get(f"{ha_cluster.url}/v1/accounts/nobody", timeout=5, headers=ha_cluster.headers)
    assert found.status_code == 404


def test_an_api_node_killed_under_load_costs_no_request_and_no_duplicate(
    ha_cluster: LocalCluster,
) -> None:
    report = asyncio.run(run_drill(ha_cluster, "api-node", before=2.0, after=3.0))
    _show(report)
    assert report.acked > 50


def test_redis_restarted_under_load_costs_nothing_and_workers_resume(
    ha_cluster: LocalCluster,
) -> None:
    report = asyncio.run(run_drill(ha_cluster, "redis", before=2.0, after=3.0))
    _show(report)
    # The workers lead again: every job has a leader on some node...
    wanted = {
        (job, f"s{k}")
        for job in ("relay", "maintenance", "payments", "webhooks")
        for k in range(ha_cluster.spec.shards)
    }
    deadline = time.monotonic() + 30
    while True:
        leaders = set()
        for url in ha_cluster.api_urls:
            ready = httpx.get(f"{url}/readyz", timeout=5).json()
            jobs = ready.get("workers", {}).get("jobs", [])
            leaders |= {(j["job"], j["shard"]) for j in jobs if j["leader"]}
        if leaders == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert leaders == wanted
    # ...and a cross-shard transfer (settled by the relay job) completes.
    _settles_a_cross_shard_transfer(ha_cluster)


def test_a_killed_primary_fails_over_loses_nothing_and_rejoins_as_a_standby(
    ha_cluster: LocalCluster,
) -> None:
    old = ha_cluster.primary_member(0)
    assert old is not None
    old_port = ha_cluster.ports.postgres[0][old]
    # Watch the old primary through the whole failover and rejoin: whenever it accepts a
    # connection while the other member leads, it must be read-only (never two primaries).
    stop = threading.Event()
    writable: list[str] = []
    watcher = threading.Thread(
        target=_watch_for_second_primary, args=(ha_cluster, old, old_port, stop, writable)
    )
    watcher.start()
    try:
        report = asyncio.run(run_drill(ha_cluster, "primary", shard=0, before=2.0, after=3.0))
    finally:
        stop.set()
        watcher.join()
    _show(report)
    window = report.write_gap_seconds["s0"]
    print(f"[drill primary] shard s0 took no writes for {window:.2f} s")
    assert window < FAILOVER_GOAL_SECONDS
    new = ha_cluster.primary_member(0)
    assert new is not None
    assert new != old
    # The old primary comes back as a standby of the new one (Patroni, pg_rewind) ...
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        members = {m.name: m for m in ha_cluster.shard(0).members}
        old_member = members.get(f"s0-pg{old}")
        if old_member and old_member.role == "sync_standby" and old_member.state == "streaming":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"old primary did not rejoin: {[m.as_dict() for m in members.values()]}")
    # ... and never takes writes as a second primary.
    with psycopg.connect(
        f"host=127.0.0.1 port={old_port} user=postgres dbname=paycore", autocommit=True
    ) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE split_brain (x int)")
    assert not writable, writable
    # The shard is whole again: a cross-shard transfer settles through it.
    _settles_a_cross_shard_transfer(ha_cluster)


def _watch_for_second_primary(
    cluster: LocalCluster, old: int, port: int, stop: threading.Event, writable: list[str]
) -> None:
    """Record every moment the old primary took writes while another member led."""
    while not stop.is_set():
        before = cluster.primary_member(0)
        try:
            with psycopg.connect(
                f"host=127.0.0.1 port={port} user=postgres dbname=paycore connect_timeout=1",
                autocommit=True,
            ) as conn:
                in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            leader = cluster.primary_member(0)
            others_led = before not in (None, old) and leader not in (None, old)
            if in_recovery == (False,) and others_led:
                writable.append(
                    f"{time.monotonic():.1f}: old primary writable, s0-pg{leader} leads"
                )
        except psycopg.OperationalError:
            pass  # down (killed, restarting): takes no writes
        stop.wait(0.2)


def _settles_a_cross_shard_transfer(cluster: LocalCluster) -> None:
    from paycore.cluster.shardmap import ShardMap

    shard_of = ShardMap.even(["s0", "s1"]).shard_for
    stamp = int(time.time() * 1000)
    names = (f"x{stamp}-{n}" for n in range(1000))
    a = next(n for n in names if shard_of(n) == "s0")
    b = next(n for n in names if shard_of(n) == "s1")
    with httpx.Client(base_url=cluster.url, timeout=10, headers=cluster.headers) as client:
        for account in (a, b):
            assert (
                client.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code
                == 201
            )
        created = client.post(
            "/v1/transfers",
            json={
                "id": f"{a}-to-{b}",
                "debit_account_id": a,
                "credit_account_id": b,
                "amount": 125,
                "currency": "USD",
            },
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = client.get(f"/v1/transfers/{a}-to-{b}").json()["status"]
            if status == "posted":
                break
            time.sleep(0.3)
        assert status == "posted"
        assert client.get(f"/v1/accounts/{b}").json()["balance"]["credits_posted"] == 125
