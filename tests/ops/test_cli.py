"""The ``paycore`` command line: demo, audit and bench end to end."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.support import post, transfer
from paycore.cli import main
from paycore.ledger.model import Account, AccountFlags, AccountRequest
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.chain import ChainLinker
from paycore.storage.codec import T_COLUMNS, transfer_from_row
from paycore.storage.sqlite import SQLiteStore


def _make_ledger(data_dir: Path) -> Path:
    async def build() -> None:
        store = SQLiteStore(data_dir / "shard-0.sqlite3")
        await store.start()
        try:
            await store.execute(
                CreateAccounts(
                    (
                        AccountRequest("bank", "USD"),
                        AccountRequest("w1", "USD", flags=AccountFlags(no_overdraft=True)),
                    )
                )
            )
            results = await store.execute(
                CreateTransfers(
                    (
                        transfer("f1", "bank", "w1", 1_000),
                        transfer("h1", "w1", "bank", 300, pending=True),
                        post("p1", "h1", 200),
                    )
                )
            )
            assert all(r.ok for r in results)
        finally:
            await store.stop()

    asyncio.run(build())
    return data_dir / "shard-0.sqlite3"


@pytest.mark.usefixtures("product_embedded_default")  # one shard file, as made here
def test_audit_exits_0_on_a_clean_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``paycore audit`` on an untouched ledger prints the totals and exits 0."""
    _make_ledger(tmp_path)
    assert main(["audit", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "audit clean" in out
    assert "USD" in out


@pytest.mark.usefixtures("product_embedded_default")  # one shard file, as made here
def test_audit_exits_1_on_a_doctored_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A counter edited in the database makes ``paycore audit`` exit 1 and name the account."""
    path = _make_ledger(tmp_path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE accounts SET credits_posted = credits_posted + 5 WHERE id = 'w1'")
    conn.close()
    assert main(["audit", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "counter_mismatch" in out
    assert "w1" in out


@pytest.mark.usefixtures("product_embedded_default")  # one shard file, as made here
def test_audit_metrics_file_is_node_exporter_textfile(tmp_path: Path) -> None:
    """``--metrics-file`` writes the violations, the verdict and the time of the run in
    the text format node_exporter's textfile collector reads, clean or not."""
    path = _make_ledger(tmp_path / "data")
    metrics = tmp_path / "paycore_audit.prom"
    command = ["audit", "--data-dir", str(tmp_path / "data"), "--metrics-file", str(metrics)]
    assert main(command) == 0
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert [s.value for s in families["paycore_audit_violations"].samples] == [0]
    assert families["paycore_audit_ok"].samples[0].value == 1
    assert families["paycore_audit_last_run_timestamp_seconds"].samples[0].value > 0
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE accounts SET credits_posted = credits_posted + 5 WHERE id = 'w1'")
    conn.close()
    assert main(command) == 1
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["paycore_audit_violations"].samples[0].value > 0
    assert families["paycore_audit_ok"].samples[0].value == 0
    assert not list(tmp_path.glob(".*.tmp"))  # written through a renamed temporary file


@pytest.mark.usefixtures("product_embedded_default")  # one shard file, as made here
def test_audit_json_is_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` prints only the report, as JSON."""
    _make_ledger(tmp_path)
    assert main(["audit", "--data-dir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["transfers"] == 3
    assert report["violations"] == []


@pytest.mark.usefixtures("product_embedded_default")  # one shard file, as made here
def test_audit_reads_the_data_dir_from_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config`` takes the data directory from the TOML settings."""
    _make_ledger(tmp_path / "data")
    config = tmp_path / "paycore.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert main(["audit", "--config", str(config)]) == 0
    assert "audit clean" in capsys.readouterr().out


def test_audit_without_a_ledger_exits_2(tmp_path: Path) -> None:
    """Auditing a directory with no ledger is a usage error, and creates nothing."""
    assert main(["audit", "--data-dir", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``paycore`` alone shows the commands and exits 2."""
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A small demo through the in-process API keeps every promise and exits 0; its
    payments act ran through three simulator processes and told the outage's story."""
    out_json = tmp_path / "demo.json"
    status = main(
        [
            "demo", "--data-dir", str(tmp_path / "demo"), "--wallets", "30",
            "--clients", "8", "--duration", "1.5", "--seed", "7", "--json", str(out_json),
            "--payments-duration", "8", "--payment-clients", "8",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "every promise held" in out
    assert "run it with --serve" in out  # where the console is
    result = json.loads(out_json.read_text())
    assert result["ok"] is True
    assert result["transfers"] > 0
    assert result["audit"]["ok"] is True
    assert all(p["broken"] == 0 and p["checks"] > 0 for p in result["promises"]), result
    assert result["cross_shard_act"]["ok"] is True
    assert main(["audit", "--data-dir", str(tmp_path / "demo")]) == 0

    # The payments act: acq-a went down, its breaker opened, the others took its
    # traffic, every good card succeeded, and it came back through half-open probes.
    payments = result["payments"]
    assert "payments act" in out
    assert "timeline (per second)" in out
    assert payments["card_payments"] > 50
    assert payments["payments_per_s"] > 0
    assert payments["outage_good_payments"] > 0
    assert payments["outage_success_rate"] >= 99.0
    assert 0 < payments["time_to_open_s"] < 1.0
    assert 0 <= payments["time_to_close_s"] <= payments["breaker"]["wait_in_open_s"] + 1.0
    moves = [(t["from_state"], t["to_state"]) for t in payments["transitions"]
             if t["processor"] == "acq-a"]  # fmt: skip
    assert moves[0] == ("closed", "open")
    assert moves[-2:] == [("open", "half_open"), ("half_open", "closed")]
    down, up = payments["outage_s"]
    opened = down + payments["time_to_open_s"]
    # Whole seconds inside the open window (8 s act: a window of about 2 s, so at least
    # one whole second even when a loaded machine delays the breaker's opening).
    during = [r for r in payments["timeline"] if opened <= r["second"] and r["second"] + 1 <= up]
    assert during, payments["timeline"]
    assert all(r["served"]["acq-a"] == 0 for r in during)  # traffic shifted...
    assert all(r["served"]["acq-b"] + r["served"]["acq-c"] > 0 for r in during)  # ...here
    assert payments["refunds"] > 0
    assert payments["payouts"] + payments["topups"] > 0
    assert payments["timeouts"] > 0
    assert payments["verified"]["processor_lookups"] >= payments["card_payments"]
    names = {p["name"] for p in result["promises"]}
    assert any(n.startswith("no double charge") for n in names)
    assert any(n.startswith("no card number") for n in names)
    logs = sorted(p.name for p in (tmp_path / "demo" / "acquirers").iterdir())
    assert logs == ["acq-a.log", "acq-b.log", "acq-c.log"]

    # The reconciliation act: the clean reports matched whole, acq-b's anomalies were
    # each queued (the promises checked them one by one), and a wallet paid in euros.
    assert "reconciliation act" in out
    rows = {row["processor"]: row for row in result["reconciliation"]["rows"]}
    assert sorted(rows) == ["acq-a", "acq-b", "acq-c"]
    for name in ("acq-a", "acq-c"):
        assert rows[name]["matched"] == rows[name]["lines"] > 0
        assert rows[name]["exceptions"] == {}
    assert rows["acq-b"]["exceptions"] == rows["acq-b"]["injected"] != {}
    assert rows["acq-b"]["suspense"] != 0
    assert "EUR to demo.shop-eur" in result["reconciliation"]["fx_payment"]
    assert any(n.startswith("settlement reports reconcile") for n in names)


def test_demo_cross_shard_act_holds_and_chains_between_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's cross-shard act, on the default 4 SQLite shards: a hold between wallets
    on two shards shows on both (debits_pending, credits_pending), a partial capture and
    a void release the rest on both sides, a chain over three shards runs through a wallet
    that starts empty, and a chain whose last item fails changes nothing; the demo checks
    every answer and balance against the one-shard contract and exits 0."""
    out_json = tmp_path / "demo.json"
    status = main(
        [
            "demo", "--data-dir", str(tmp_path / "demo"), "--wallets", "20",
            "--clients", "4", "--duration", "0.5", "--seed", "5", "--no-payments",
            "--json", str(out_json),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "cross-shard act" in out
    result = json.loads(out_json.read_text())
    act = result["cross_shard_act"]
    assert act["ok"] is True
    shards = {w["label"]: w["shard"] for w in act["wallets"]}
    assert len(set(shards.values())) == 4  # A, B, E, C: one per shard
    fund, hold, capture, hold2, void, chain, failed = act["steps"]
    assert all(s["balances"] == s["expected_balances"] for s in act["steps"])
    assert all(s["answers"] == s["expected_answers"] for s in act["steps"])

    def at(step: dict[str, Any], label: str) -> list[int]:
        balances: list[int] = step["balances"][label]  # dp, dpo, cp, cpo (pending/posted)
        return balances

    assert fund["answers"] == ["posted"] * 3
    assert at(fund, "E") == [0, 0, 0, 0]
    assert hold["answers"] == ["201 pending 40.00"]
    assert at(hold, "A") == [4_000, 0, 0, 10_000]
    assert at(hold, "B") == [0, 0, 4_000, 10_000]
    assert capture["answers"] == ["201 posted 25.00"]  # A -> B, the client's own accounts
    assert at(capture, "A") == [0, 2_500, 0, 10_000]  # the 15.00 left is released...
    assert at(capture, "B") == [0, 0, 0, 12_500]  # ...on both sides
    assert at(hold2, "A")[0] == 1_000
    assert at(hold2, "B")[2] == 1_000
    assert void["answers"] == ["201 voided 10.00"]
    assert at(void, "A") == at(capture, "A")
    assert at(void, "B") == at(capture, "B")
    assert chain["answers"] == ["posted", "posted"]
    assert at(chain, "E") == [0, 3_000, 0, 3_000]  # received and passed on, in one chain
    assert at(chain, "A")[1] == 5_500
    assert at(chain, "C")[3] == 13_000
    assert failed["answers"] == ["linked_event_failed", "linked_event_failed", "insufficient_funds"]
    assert failed["balances"] == chain["balances"]  # nothing moved
    (promise,) = [p for p in result["promises"] if p["name"].startswith("holds and linked chains")]
    assert promise["checks"] > 0
    assert promise["broken"] == 0
    (cross,) = [p for p in result["promises"] if p["name"].startswith("cross-shard transfers")]
    assert cross["checks"] == result["cross_shard_transfers"] > 0
    assert cross["broken"] == 0
    assert main(["audit", "--data-dir", str(tmp_path / "demo")]) == 0


def test_demo_refuses_a_used_data_dir(tmp_path: Path) -> None:
    """The demo never runs on a ledger that already exists."""
    _make_ledger(tmp_path)
    assert main(["demo", "--data-dir", str(tmp_path), "--duration", "0.1"]) == 2


def test_bench_quick_inprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The in-process bench measures uniform and hot batches, and on several shards
    local and cross-shard ones (counted once settled), and audits them clean."""
    out_json = tmp_path / "bench.json"
    status = main(
        [
            "bench", "--quick", "--only", "inproc", "--transfers", "4000", "--shards", "4",
            "--batch-size", "1000", "--accounts", "500", "--json", str(out_json),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "reproduce" in out
    report = json.loads(out_json.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["inproc-uniform", "inproc-hot", "inproc-local", "inproc-cross"]
    assert all(r["transfers"] == 4000 and r["errors"] == 0 for r in report["results"])
    assert report["audits"] == {"inproc": True}
    assert report["command"].startswith("paycore bench --quick")


@pytest.mark.slow
def test_bench_http_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The HTTP bench starts ``paycore serve``, drives it from another process, reads its RSS."""
    out_json = tmp_path / "bench.json"
    status = main(
        [
            "bench", "--only", "http", "--accounts", "50", "--clients", "4",
            "--duration", "0.5", "--json", str(out_json),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads(out_json.read_text())
    assert [r["name"] for r in report["results"]] == ["http-uniform", "http-hot"]
    assert all(r["transfers"] > 0 and r["errors"] == 0 for r in report["results"])
    assert report["server_rss_mb"]["peak_mb"] > 0
    assert report["audits"] == {"http": True}


@pytest.mark.slow
def test_bench_payments_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The payments bench pays a merchant by card through ``paycore serve`` on the embedded
    default from another process; the merchant holds exactly what succeeded, the audit
    is clean, and the server's CPU per payment is reported."""
    out_json = tmp_path / "bench.json"
    status = main(
        [
            "bench", "--only", "payments", "--clients", "4", "--duration", "0.5",
            "--json", str(out_json),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    report = json.loads(out_json.read_text())
    (result,) = report["results"]
    assert result["name"] == "http-payments"
    assert result["transfers"] > 0, result
    assert result["errors"] == 0, result
    assert result["detail"]["server_cpu_ms_per_payment"] > 0
    assert report["audits"] == {"payments-merchant": True, "payments": True}
    assert "card payments" in {t["name"] for t in report["targets"]}


def test_demo_exits_1_when_a_promise_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the balance limits switched off in the rules, the demo reports the overdrafts."""
    from paycore.ledger import rules

    original = rules.AccountState.__init__

    def no_limits(self: rules.AccountState, account: Account) -> None:
        original(self, account)
        self.limit = None

    monkeypatch.setattr(rules.AccountState, "__init__", no_limits)
    status = main(
        [
            "demo", "--data-dir", str(tmp_path / "demo"), "--wallets", "10",
            "--clients", "4", "--duration", "1", "--seed", "3", "--no-payments",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 1, out
    assert "payments act" not in out
    assert "PROMISE BROKEN" in out
    assert "insufficient_funds" in out
    assert "limit_exceeded" in out
    # The cross-shard act's failing chain went through: the act says so.
    assert "the cross-shard act broke the contract" in out


def _rechain_sqlite(path: Path, shard: str = "shard-0") -> None:
    """Recompute every chain hash and the head over the rows as they are now (an attacker
    with write access to the file)."""
    conn = sqlite3.connect(path)
    with conn:
        linker = ChainLinker(shard, 0, None)
        rows = conn.execute(
            f"SELECT {T_COLUMNS}, m.metadata FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id ORDER BY t.timestamp"
        ).fetchall()
        for row in rows:
            t = transfer_from_row(row, row[10])
            ((seq, digest),) = linker.extend([t])
            conn.execute(
                "UPDATE transfers SET chain_seq = ?, chain_hash = ? WHERE id = ?",
                (seq, digest, t.id),
            )
        conn.execute(
            "UPDATE shard_meta SET value = ?, digest = ? WHERE key = 'chain_head'",
            (linker.seq, linker.hash),
        )
    conn.close()


@pytest.mark.usefixtures("product_embedded_default")  # one shard file, as made here
def test_audit_checkpoint_records_heads_and_catches_a_rewritten_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint FILE`` records each shard's verified chain head; a later run over a
    history rewritten with every hash recomputed exits 1 and leaves the checkpoint as is."""
    path = _make_ledger(tmp_path / "data")
    checkpoint = tmp_path / "heads.json"
    data = ["audit", "--data-dir", str(tmp_path / "data"), "--checkpoint", str(checkpoint)]
    assert main(data) == 0
    out = capsys.readouterr().out
    assert "history chain of shard-0: 3 records verified" in out
    recorded = json.loads(checkpoint.read_text())
    assert recorded["version"] == 1
    assert recorded["shards"]["shard-0"]["seq"] == 3
    assert main(data) == 0  # the chain still passes through its own head
    capsys.readouterr()

    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE transfers SET amount = 900 WHERE id = 'f1'")
        conn.execute("UPDATE accounts SET credits_posted = 900 WHERE id = 'w1'")
        conn.execute("UPDATE accounts SET debits_posted = 900 WHERE id = 'bank'")
    conn.close()
    _rechain_sqlite(path)
    before = checkpoint.read_text()
    assert main(["audit", "--data-dir", str(tmp_path / "data")]) == 0  # fooled without it
    capsys.readouterr()
    assert main([*data, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [v["kind"] for v in report["violations"]] == ["history_checkpoint_mismatch"]
    assert report["chain"]["ok"] is False
    assert checkpoint.read_text() == before


def test_demo_serve_leaves_the_console_running(tmp_path: Path, free_tcp_port: int) -> None:
    """``paycore demo --serve`` ends by printing the console's URL and an admin key of the
    demo's tenant, and serves the demo's own ledger (its four shards) until SIGTERM."""
    command = [
        sys.executable, "-m", "paycore.cli", "demo", "--data-dir", str(tmp_path / "demo"),
        "--wallets", "20", "--clients", "4", "--duration", "1", "--seed", "3",
        "--no-payments", "--serve", "--port", str(free_tcp_port),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as demo:
        try:
            assert demo.stdout is not None
            url = None
            for line in demo.stdout:  # the demo's report, then the console line
                if line.startswith("console: "):
                    url = line.split()[1]
                    break
            assert url == f"http://127.0.0.1:{free_tcp_port}/console", url
            key_line = demo.stdout.readline()
            assert key_line.startswith("admin key of tenant 'demo'"), key_line
            key = key_line.split()[-1]
            deadline = time.monotonic() + 30
            while True:
                try:
                    page = httpx.get(url, timeout=2, follow_redirects=True)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the console never answered"
                    time.sleep(0.2)
            assert page.status_code == 200  # its login page
            assert "paycore" in page.text.lower()
            accounts = httpx.get(
                f"http://127.0.0.1:{free_tcp_port}/v1/accounts?limit=100",
                headers={"Authorization": f"Bearer {key}"},
            )
            assert accounts.status_code == 200, accounts.text
            assert len(accounts.json()["data"]) > 20  # the demo's wallets, across 4 shards
        finally:
            demo.send_signal(signal.SIGTERM)
            demo.wait(timeout=30)
