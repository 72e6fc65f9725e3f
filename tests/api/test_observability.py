"""The observability kit: the alert rules and the dashboard in ``deploy/`` over the
metrics a running app exports at ``/metrics`` (shard backlog, open payments, webhook
outcomes, job leaders, event-stream lag), read when scraped."""

from __future__ import annotations

import asyncio
import fcntl
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import yaml
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from api.nodes import SHARDS, SharedShards, running_node
from api.support import ManualClock
from backends import AnyStore, LedgerDatabase
from paycore.api import create_app
from paycore.config import EventStreamConfig, Settings
from paycore.errors import UnavailableError
from paycore.locks import LocalLockService
from paycore.ops.audit import AuditReport
from paycore.ops.audit_metrics import audit_metrics_text
from paycore.payments.intents import PaymentStatus
from paycore.resilience.breaker import State as BreakerState
from paycore.storage.event_stream import LOGS
from paycore.tools.local_cluster.toolbox import default_tools_dir

ROOT: Final = Path(__file__).resolve().parents[2]
RULES: Final = ROOT / "deploy" / "prometheus" / "paycore-alerts.yml"
DASHBOARD: Final = ROOT / "deploy" / "grafana" / "paycore.json"
RULE_TESTS: Final = ROOT / "deploy" / "prometheus" / "paycore-alerts.test.yml"
_NAME: Final = re.compile(r"\b(?:paycore|pg)_[a-z0-9_]+\b")
# Named by the rules yet exported by something else than the app, with the reason.
NOT_FROM_THE_APP: Final = {
    # postgres_exporter's standard metric: paycore exports no replication metric.
    "pg_replication_lag": "postgres_exporter",
}
SEVERITIES: Final = {"info", "warning", "critical"}
CARD: Final = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _names_in(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in _NAME.findall(expr)}


_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def _exported(text: str) -> set[str]:
    """Every series name an exposition declares (``_total``, ``_bucket`` ... included): a
    labelled counter with no child yet (no refusal so far) has its TYPE line only."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@asynccontextmanager
async def _serving(
    store: AnyStore, settings: Settings, *, workers: bool = True
) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(store, settings, start_workers=workers)
    async with AsyncTestClient(app=app) as client:
        yield client


async def _scrape(client: AsyncTestClient[Any]) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def _until(client: AsyncTestClient[Any], name: str, value: float, **labels: str) -> str:
    """The scrape once ``name{labels}`` reads ``value`` (the jobs campaign in the background)."""
    async with asyncio.timeout(10):
        while True:
            text = await _scrape(client)
            if _value(text, name, **labels) == value:
                return text
            await asyncio.sleep(0.05)


async def _traffic(client: AsyncTestClient[Any]) -> None:
    """Accounts, a transfer, a card payment and a 404: every kind of series appears."""
    for account in ("bank", "m1"):
        assert (
            await client.post("/v1/accounts", json={"currency": "USD", "id": account})
        ).is_success
    moved = await client.post(
        "/v1/transfers",
        json={"id": "t1", "debit_account_id": "bank", "credit_account_id": "m1", "amount": 5,
              "currency": "USD"},
    )  # fmt: skip
    assert moved.status_code == 201, moved.text
    paid = await client.post(
        "/v1/payments",
        json={"amount": 500, "currency": "USD", "merchant_account_id": "m1",
              "capture": "automatic", "source": {"card": CARD}},
    )  # fmt: skip
    assert paid.status_code == 201, paid.text
    assert (await client.get("/v1/accounts/nobody")).status_code == 404


# -- the files ------------------------------------------------------------------------------


def test_every_alert_rule_has_a_duration_a_severity_and_annotations() -> None:
    """Each rule is an alert with an expression, a ``for:`` duration, a known severity and
    a summary and description (the structure ``promtool`` checks, and our conventions)."""
    rules = _rules()
    assert len(rules) >= 7
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert isinstance(rule["expr"], str), rule
        assert rule["expr"].strip(), rule
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule
        assert rule["labels"]["severity"] in SEVERITIES, rule
        assert rule["annotations"]["summary"], rule
        assert rule["annotations"]["description"], rule


def test_the_rules_cover_what_operators_are_paged_for() -> None:
    """Breaker open, saga backlog and age, payments stuck in processing, webhook failures,
    replication lag, a shard without a primary and audit violations each have a rule."""
    named = {name for rule in _rules() for name in _NAME.findall(rule["expr"])}
    assert {
        "paycore_processor_breaker_state",
        "paycore_saga_backlog",
        "paycore_saga_oldest_age_seconds",
        "paycore_payments_oldest_age_seconds",
        "paycore_webhook_events_total",
        "pg_replication_lag",
        "paycore_shard_up",
        "paycore_audit_violations",
    } <= named


def test_the_dashboard_reads_its_datasource_from_a_variable() -> None:
    """Every panel and query names ``${DS_PROMETHEUS}``, which the dashboard defines, so
    it imports into any Grafana whatever its datasource is called."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def _promtool() -> Path | None:
    """``promtool`` on PATH, or unpacked from Debian's ``prometheus`` package into the
    tools directory (fetched once, as ``paycore.tools.browser`` fetches Chromium)."""
    found = shutil.which("promtool")
    if found:
        return Path(found)
    root = default_tools_dir() / "promtool" / "root"
    binary = root / "usr" / "bin" / "promtool"
    if binary.is_file():
        return binary
    apt_get, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt_get is None or dpkg_deb is None:
        return None
    debs = default_tools_dir() / "promtool" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # One fetch at a time (test workers, the cluster tools' install): the same lock.
    with (default_tools_dir() / ".install.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        try:
            subprocess.run(
                [apt_get, "download", "prometheus"], cwd=debs, check=True, capture_output=True,
                timeout=120,
            )  # fmt: skip
            for deb in debs.glob("prometheus_*.deb"):
                subprocess.run([dpkg_deb, "-x", str(deb), str(root)], check=True, timeout=120)
        except (subprocess.SubprocessError, OSError):
            return None
    return binary if binary.is_file() else None


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = _promtool()
    if found is None:
        pytest.skip("promtool is not obtainable here (no PATH entry, no apt)")
    return found


def test_promtool_accepts_the_alert_rules(promtool: Path) -> None:
    """``promtool check rules`` parses every rule and its PromQL."""
    done = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_unit_tests_fire_every_alert_and_only_when_due(promtool: Path) -> None:
    """``promtool test rules`` passes deploy/prometheus/paycore-alerts.test.yml, which
    has, for every alert, a case where it fires (labels, timing, rendered annotations)
    and one where it must not (yet)."""
    done = subprocess.run(
        [str(promtool), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cases = [case for test in _rule_tests() for case in test["alert_rule_test"]]
    names = {rule["alert"] for rule in _rules()}
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == names
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == names


def _rule_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return tests


_SERIES: Final = re.compile(r"^([a-z_:][a-z0-9_:]*)\{(.*)\}$")
_LABEL: Final = re.compile(r'([a-z_]+)="([^"]*)"')


def test_the_rule_tests_feed_series_as_paycore_exports_them() -> None:
    """Every input series of the rule tests is one a rule names, and its label values are
    ones paycore exports (breaker states, payment statuses, webhook outcomes, event
    logs, job names): a test that passes on series paycore never sends proves nothing."""
    known: dict[str, set[str]] = {
        "state": {s.value for s in BreakerState},
        "status": {s.value for s in PaymentStatus},
        "outcome": {"delivered", "retried", "failed"},
        "log": set(LOGS),
        "job": {"relay", "maintenance", "payments", "webhooks", "events"},
    }
    named = _names_in([rule["expr"] for rule in _rules()])
    for test in _rule_tests():
        for series in test["input_series"]:
            found = _SERIES.match(series["series"])
            assert found, series
            assert found[1] in named, series
            for label, value in _LABEL.findall(found[2]):
                assert value in known.get(label, {value}), series


def test_promtool_parses_every_dashboard_query(promtool: Path, tmp_path: Path) -> None:
    """Each panel's query is valid PromQL (checked as a recording rule, with Grafana's
    ``$__rate_interval`` as 5m)."""
    exprs = [e.replace("$__rate_interval", "5m") for e in _panel_exprs()]
    rules = [{"record": f"dashboard:query_{n}", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- against a running app --------------------------------------------------------------------


async def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    store: AnyStore, make_store: Any, settings: Settings, tmp_path: Path
) -> None:
    """A real app over a real store, with its jobs and payment service, after some
    traffic, exports every series the rules and the panels name; the event stream's lag
    appears once ``[events]`` is configured, the audit's in ``paycore audit``'s textfile,
    and only postgres_exporter's replication lag comes from elsewhere."""
    async with _serving(store, settings) as client:
        await _traffic(client)
        text = await _until(client, "paycore_job_leader", 1.0, job="webhooks")
    exported = _exported(text)
    # The lag is read from the shard: an app with ``[events]`` and no jobs (so no NATS).
    streaming = msgspec.structs.replace(
        settings, events=EventStreamConfig(nats_url="nats://127.0.0.1:1")
    )
    async with _serving(make_store(clock=ManualClock()), streaming, workers=False) as client:
        exported |= _exported(await _scrape(client))
    audit = audit_metrics_text({"shard-0": _clean_report()}, cross_shard=0, ok=True, now=1.0)
    exported |= _exported(audit)
    named = _names_in([rule["expr"] for rule in _rules()]) | _names_in(_panel_exprs())
    missing = named - exported - set(NOT_FROM_THE_APP)
    assert not missing, f"named by deploy/ but not exported: {sorted(missing)}"


def _clean_report() -> AuditReport:
    return AuditReport(
        ok=True, now=0, accounts=0, transfers=0, holds_pending=0, balance_rows=0, totals=[],
        violations=[], violation_count=0,
    )  # fmt: skip


async def test_an_open_saga_and_a_processing_payment_show_with_their_age(
    store: AnyStore, database: LedgerDatabase, settings: Settings, clock: ManualClock
) -> None:
    """An unfinished outbox row shows in the shard's saga backlog and a payment left in
    ``processing`` in the open payments, each with the age of the oldest."""
    async with _serving(store, settings, workers=False) as client:
        text = await _scrape(client)
        assert _value(text, "paycore_saga_backlog", shard="shard-0") == 0
        assert _value(text, "paycore_saga_oldest_age_seconds", shard="shard-0") == 0
        database.query(
            "INSERT INTO outbox (transfer_id, target_shard, debit_account_id, credit_account_id, "
            "amount, currency, code, state, created_at, updated_at) "
            "VALUES ('x1', 'shard-1', 'a', 'b', 10, 'USD', 0, 'held', ?, ?)",
            clock.now,
            clock.now,
        )
        database.query(
            "INSERT INTO payments (id, merchant_account_id, amount, currency, capture_method, "
            "status, source_type, version, created_at, updated_at) "
            "VALUES ('p1', 'm1', 100, 'USD', 'automatic', 'processing', 'card', 1, ?, ?)",
            clock.now,
            clock.now,
        )
        clock.advance(90)
        text = await _scrape(client)
    assert _value(text, "paycore_saga_backlog", shard="shard-0") == 1
    assert _value(text, "paycore_saga_oldest_age_seconds", shard="shard-0") == 90
    assert _value(text, "paycore_payments_open", shard="shard-0", status="processing") == 1
    age = _value(text, "paycore_payments_oldest_age_seconds", shard="shard-0", status="processing")
    assert age == 90
    assert _value(text, "paycore_payments_open", shard="shard-0", status="requires_capture") == 0
    assert _value(text, "paycore_shard_up", shard="shard-0") == 1


async def test_a_shard_that_does_not_answer_is_down_and_shows_no_backlog(
    store: AnyStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store's ping fails, the scrape still answers: ``paycore_shard_up`` 0 and
    no backlog series for that shard."""
    async with _serving(store, settings, workers=False) as client:

        async def down() -> None:
            raise UnavailableError("shard shard-0: no primary", retry_after=5)

        monkeypatch.setattr(store, "ping", down)
        text = await _scrape(client)
    assert _value(text, "paycore_shard_up", shard="shard-0") == 0
    assert _value(text, "paycore_saga_backlog", shard="shard-0") is None


async def test_the_leading_node_shows_leadership_and_webhook_outcomes(
    store: AnyStore, settings: Settings
) -> None:
    """With the embedded lock service the node leads every job of its shard: each
    ``paycore_job_leader`` is 1, and the webhook sender's counters are exported."""
    async with _serving(store, settings) as client:
        text = await _until(client, "paycore_job_leader", 1.0, job="payments", shard="shard-0")
        text = await _until(client, "paycore_job_leader", 1.0, job="webhooks", shard="shard-0")
        text = await _until(client, "paycore_job_leader", 1.0, job="maintenance", shard="shard-0")
    for outcome in ("delivered", "retried", "failed"):
        assert _value(text, "paycore_webhook_events_total", shard="shard-0", outcome=outcome) == 0
    assert _value(text, "paycore_webhook_requests_total", shard="shard-0") == 0


async def test_a_node_without_jobs_exports_no_leadership(
    store: AnyStore, settings: Settings
) -> None:
    """A node that runs no background jobs says nothing about leaders (not 0: another
    node may lead), so ``sum by (job, shard)`` counts only the nodes that campaign."""
    async with _serving(store, settings, workers=False) as client:
        text = await _scrape(client)
    assert _value(text, "paycore_job_leader") is None
    assert "paycore_event_stream_lag_seconds" not in text  # no [events]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_of_two_nodes_only_the_leader_shows_each_job_led(
    shared_shards: SharedShards,
) -> None:
    """Two nodes campaign for every job of four shards over one lock service: for each
    job and shard exactly one node's ``paycore_job_leader`` is 1 and the other's 0, and
    both report every shard up."""
    settings = shared_shards.settings()
    locks = LocalLockService()
    async with (
        running_node(settings, locks=locks, start_workers=True) as first,
        running_node(settings, locks=locks, start_workers=True) as second,
    ):
        async with asyncio.timeout(10):
            while True:
                texts = [(await n.client.get("/metrics")).text for n in (first, second)]
                led = [_leaders(text) for text in texts]
                jobs = set(led[0]) | set(led[1])
                if len(jobs) == 16 and all(led[0][j] + led[1][j] == 1 for j in jobs):
                    break
                await asyncio.sleep(0.05)
    assert {shard for _, shard in jobs} == set(SHARDS)
    assert {job for job, _ in jobs} == {"relay", "maintenance", "payments", "webhooks"}
    for text in texts:
        for shard in SHARDS:
            assert _value(text, "paycore_shard_up", shard=shard) == 1
            assert _value(text, "paycore_saga_backlog", shard=shard) == 0


def _leaders(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["job"], s.labels["shard"]): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "paycore_job_leader"
    }
