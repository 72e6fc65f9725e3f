"""The cluster's generated configuration, checked without starting anything (nginx -t
aside, which validates the generated nginx.conf with the real nginx)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from paycore.tools.local_cluster.layout import ClusterLayout
from paycore.tools.local_cluster.nginx import nginx_config
from paycore.tools.local_cluster.patroni import patroni_config
from paycore.tools.local_cluster.runtime import node_settings, shard_dsn
from paycore.tools.local_cluster.spec import (
    BALANCE_METHODS,
    BalanceMethod,
    ClusterSpec,
    PortPlan,
    load_cluster_spec,
)
from paycore.tools.local_cluster.toolbox import Toolbox, ToolMissingError

PLAN = PortPlan.from_base(ClusterSpec(), 30000)


def test_the_port_plan_is_fixed_by_the_base_and_has_no_duplicates() -> None:
    spec = ClusterSpec(shards=3, postgres_per_shard=3, api_nodes=4)
    plan = PortPlan.from_base(spec, 40000)
    ports = [
        plan.etcd_client,
        plan.etcd_peer,
        plan.redis,
        plan.nginx,
        *plan.acquirers,
        *plan.api,
        *(p for shard in plan.postgres for p in shard),
        *(p for shard in plan.patroni_rest for p in shard),
    ]
    assert len(ports) == len(set(ports)) == PortPlan.count(spec)
    assert ports == list(range(40000, 40000 + len(ports)))
    assert plan == PortPlan.from_base(spec, 40000)


def test_a_spec_file_is_read_and_bad_values_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        '[cluster]\nshards = 3\napi_nodes = 2\ndata_dir = "c"\n'
        'balance = "least_conn"\n[cluster.node]\nleader_ttl_seconds = 3.0\n'
    )
    spec = load_cluster_spec(config)
    assert (spec.shards, spec.api_nodes, spec.balance) == (3, 2, "least_conn")
    assert spec.data_dir == str(tmp_path / "c")
    assert spec.node == {"leader_ttl_seconds": 3.0}
    for bad, message in (
        ('balance = "fastest"', "balance"),
        ("shards = 0", "shards"),
        ('balance = "weighted"\nweights = [1, 2]', "weights has 2 entries for 3 API nodes"),
        ("patroni_ttl_seconds = 20\npatroni_retry_timeout_seconds = 10", "loop_wait"),
        ("unknown_key = 1", "unknown_key"),
    ):
        config.write_text(f"[cluster]\n{bad}\n")
        with pytest.raises(ValueError, match=message):
            load_cluster_spec(config)


def test_nodes_reach_every_member_of_a_shard_and_keep_the_writable_one() -> None:
    dsn = shard_dsn(PLAN, 1)
    members = PLAN.postgres[1]
    assert f"port={members[0]},{members[1]}" in dsn
    assert "host=127.0.0.1,127.0.0.1" in dsn
    assert "target_session_attrs=read-write" in dsn
    settings = node_settings(
        ClusterSpec(node={"relay_interval_seconds": 0.2}), PLAN, ClusterLayout(Path("/nonexistent"))
    )
    assert [s["name"] for s in settings["shards"]] == ["s0", "s1"]
    assert settings["locks_url"] == f"redis://127.0.0.1:{PLAN.redis}/0"
    assert settings["migrate_on_start"] is False
    assert settings["relay_interval_seconds"] == 0.2  # [cluster.node] overrides
    assert [p["name"] for p in settings["processors"]] == ["sim-a", "sim-b"]


def test_patroni_keeps_acknowledged_commits_through_a_failover() -> None:
    config = patroni_config(
        ClusterSpec(), PLAN, shard=0, member=1, member_dir=Path("/d/s0-pg1"), bindir=Path("/pg/bin")
    )
    dcs = config["bootstrap"]["dcs"]
    # Only a standby that was in sync may be promoted, and a crashed primary is failed
    # over at once instead of restarted in place.
    assert dcs["synchronous_mode"] is True
    assert dcs["primary_start_timeout"] == 0
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert dcs["postgresql"]["parameters"]["idle_in_transaction_session_timeout"] == "3s"
    assert config["postgresql"]["listen"] == f"127.0.0.1:{PLAN.postgres[0][1]}"
    assert config["scope"] == "paycore-s0"
    assert config["name"] == "s0-pg1"
    assert msgspec.json.decode(msgspec.json.encode(config)) == config  # JSON is YAML
    single = patroni_config(
        ClusterSpec(postgres_per_shard=1),
        PortPlan.from_base(ClusterSpec(postgres_per_shard=1), 30000),
        shard=0,
        member=0,
        member_dir=Path("/d"),
        bindir=Path("/b"),
    )
    assert single["bootstrap"]["dcs"]["synchronous_mode"] is False


@pytest.mark.parametrize("balance", BALANCE_METHODS)
def test_the_generated_nginx_config_is_valid_for_every_balance_method(
    balance: BalanceMethod, tmp_path: Path, tools_dir: Path
) -> None:
    spec = ClusterSpec(balance=balance, weights=(5, 1, 1) if balance == "weighted" else ())
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "temp" / sub).mkdir(parents=True)
    text = nginx_config(
        spec,
        listen_port=PLAN.nginx,
        api_ports=PLAN.api,
        prefix=tmp_path,
        error_log=tmp_path / "error.log",
    )
    expected = {
        "least_conn": "least_conn;",
        "random_two": "random two least_conn;",
        "weighted": "weight=5",
        "round_robin": "max_fails=2 fail_timeout=5s;",
    }[balance]
    assert expected in text
    assert "proxy_next_upstream error timeout non_idempotent;" in text
    assert text.count("server 127.0.0.1:") == 3
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    nginx = Toolbox(tools_dir).find("nginx").path
    checked = subprocess.run(
        [str(nginx), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_a_missing_program_is_named_with_the_package_that_provides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    box = Toolbox(tmp_path / "tools")
    with pytest.raises(ToolMissingError, match="Debian's 'etcd-server' package"):
        box.find("etcd")
    with pytest.raises(ToolMissingError, match="patroni"):
        box.find("patroni")
    assert any("cluster tools install" in problem for problem in box.missing())


def test_cluster_up_installs_nothing_and_says_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "tools"
    env = {**os.environ, "PATH": "/nonexistent", "PAYCORE_TOOLS_DIR": str(empty)}
    done = subprocess.run(
        [sys.executable, "-m", "paycore", "cluster", "up", "--data-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "etcd-server" in done.stderr
    assert "patroni" in done.stderr
    assert not empty.exists()  # nothing fetched


def test_status_of_a_directory_without_a_cluster_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "paycore", "cluster", "status", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no cluster" in done.stderr


def test_the_deployment_example_config_is_a_valid_paycore_config() -> None:
    from paycore.config import load_settings, shard_specs

    root = Path(__file__).resolve().parents[2]
    settings = load_settings(root / "deploy" / "paycore.toml", env={})
    specs = shard_specs(settings)
    assert [s.name for s in specs] == ["s0", "s1"]
    assert all("target_session_attrs=read-write" in (s.dsn or "") for s in specs)
    assert settings.migrate_on_start is False
