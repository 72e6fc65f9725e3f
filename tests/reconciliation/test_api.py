"""``/v1/reconciliation`` over HTTP: an operator's admin key imports the simulator's
settlement report (the service ``paycore reconcile`` runs), lists reports and
exceptions page by page, resolves one; Idempotency-Keys, bad input that changes
nothing, and who may call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from paycore.api import create_app
from paycore.api.auth import ApiKeys, Scope
from paycore.cluster.topology import build_store
from paycore.config import ReconciliationConfig, Settings
from paycore.payments.processors.http_connector import SimulatorConnector
from paycore.payments.processors.simulator.app import Simulator
from paycore.payments.processors.simulator.config import SimulatorConfig
from paycore.payments.processors.simulator.settlement import SettlementAnomalies
from paycore.payments.processors.simulator.transport import SimulatorTransport
from paycore.payments.service import PaymentService
from paycore.storage.store import Store
from reconciliation.support import PROCESSOR, assert_ledger_clean, balances

REPORTS = "/v1/reconciliation/reports"
EXCEPTIONS = "/v1/reconciliation/exceptions"
ANOMALIES = SettlementAnomalies(seed=3, duplicate=0.2, amount_difference=0.2, unknown=2)
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}


@dataclass
class Desk:
    client: AsyncTestClient[Any]
    store: Store
    simulator: Simulator

    def report(self, anomalies: SettlementAnomalies = ANOMALIES) -> str:
        return self.simulator.settlement(datetime.now(UTC).date(), anomalies)

    async def trade(self, n: int) -> None:
        assert (
            await self.client.post("/v1/accounts", json={"id": "shop", "currency": "USD"})
        ).is_success
        for i in range(n):
            body = {"amount": 1000 + i, "currency": "USD", "merchant_account_id": "shop",
                    "capture": "automatic", "source": {"card": CARD}}  # fmt: skip
            paid = await self.client.post("/v1/payments", json=body)
            assert paid.json()["status"] == "succeeded", paid.text


@asynccontextmanager
async def open_desk(tmp_path: Path, **overrides: Any) -> AsyncIterator[Desk]:
    """An app on a two-shard embedded store whose card payments go to the simulator
    ``sim-r`` in process, whose reports the tests import."""
    settings = Settings(data_dir=str(tmp_path / "data"), embedded_shards=2, **overrides)
    store = build_store(settings)
    simulator = Simulator(PROCESSOR, SimulatorConfig())
    transport = SimulatorTransport(simulator)
    connector = SimulatorConnector(PROCESSOR, f"http://{PROCESSOR}", transport=transport)
    service = PaymentService(store, {PROCESSOR: connector})
    app = create_app(store, settings, payments=service, start_workers=False)
    async with AsyncTestClient(app=app) as client:
        yield Desk(client, store, simulator)


async def _all(client: Any, path: str, limit: int, **headers: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, page by page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = f"{'&' if '?' in path else '?'}limit={limit}" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = (await client.get(path + query, headers=headers)).json()
        items += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_an_operator_imports_lists_and_resolves_over_http(tmp_path: Path) -> None:
    """201 with the report's figures, booked and conserved; again: 200 already_imported
    and nothing changes; the report and its exceptions listed page by page; one
    resolved with a note (again: the first note kept)."""
    async with open_desk(tmp_path, auth="open") as desk:
        await desk.trade(12)
        text = desk.report()
        imported = await desk.client.post(REPORTS, json={"processor": PROCESSOR, "report": text})
        assert imported.status_code == 201, imported.text
        result = imported.json()
        assert result["already_imported"] is False
        assert result["lines"] == result["matched"] + sum(result["exceptions"].values())
        assert result["exceptions"]["unknown_reference"] == 2
        assert result["transfers"] >= 2
        before = await balances(desk.store)
        again = await desk.client.post(REPORTS, json={"processor": PROCESSOR, "report": text})
        assert again.status_code == 200
        assert again.json()["already_imported"] is True
        assert await balances(desk.store) == before

        reports = (await desk.client.get(f"{REPORTS}?processor={PROCESSOR}")).json()["data"]
        assert [(r["batch_id"], r["lines"]) for r in reports] == [
            (result["batch_id"], result["lines"])
        ]
        queued = await _all(desk.client, EXCEPTIONS, 2)
        assert len(queued) == sum(result["exceptions"].values())
        assert len({e["id"] for e in queued}) == len(queued)
        assert all(e["status"] == "open" for e in queued)
        unknown = next(e for e in queued if e["reason"] == "unknown_reference")

        resolve = f"{EXCEPTIONS}/{unknown['id']}/resolve"
        done = await desk.client.post(resolve, json={"note": "not ours: asked the acquirer"})
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["note"]) == (
            "resolved",
            "not ours: asked the acquirer",
        )
        twice = await desk.client.post(resolve, json={"note": "other"})
        assert twice.json()["note"] == "not ours: asked the acquirer"
        still_open = await _all(desk.client, f"{EXCEPTIONS}?status=open", 50)
        assert len(still_open) == len(queued) - 1
        missing = await desk.client.post(f"{EXCEPTIONS}/rx_{'0' * 24}/resolve", json={"note": "x"})
        assert missing.json()["code"] == "reconciliation_exception_not_found"
        await assert_ledger_clean(desk.store)


async def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A report that does not parse (422 invalid_report), an unknown processor (422
    unknown_processor), a body too large (413), another text under an imported batch
    (409 report_conflict), a blank note (422): each a problem, none a write."""
    async with open_desk(tmp_path, auth="open", max_body_bytes=64 * 1024) as desk:
        await desk.trade(4)
        text = desk.report(SettlementAnomalies())
        before = await balances(desk.store)

        async def post(body: Any) -> httpx.Response:
            return await desk.client.post(REPORTS, json=body)

        bad = await post({"processor": PROCESSOR, "report": text.replace(",10.00,", ",10.0,")})
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_report")
        assert "line 2" in bad.json()["detail"]
        unknown = await post({"processor": "sim-zz", "report": text})
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_processor")
        shape = await post({"processor": "no:such", "report": text})
        assert (shape.status_code, shape.json()["code"]) == (422, "invalid_request")
        huge = await post({"processor": PROCESSOR, "report": text * 400})
        assert (huge.status_code, huge.json()["code"]) == (413, "request_too_large")
        assert await balances(desk.store) == before
        assert (await desk.client.get(REPORTS)).json()["data"] == []

        assert (await post({"processor": PROCESSOR, "report": text})).status_code == 201
        booked = await balances(desk.store)
        lines = text.splitlines()
        lines.insert(1, lines[1])  # the first line twice: another text, same batch
        conflict = await post({"processor": PROCESSOR, "report": "\n".join(lines) + "\n"})
        assert (conflict.status_code, conflict.json()["code"]) == (409, "report_conflict")
        assert await balances(desk.store) == booked
        queued = (await desk.client.get(EXCEPTIONS)).json()["data"]
        assert queued == []
        blank = await desk.client.post(f"{EXCEPTIONS}/rx_{'0' * 24}/resolve", json={"note": " "})
        assert (blank.status_code, blank.json()["code"]) == (422, "invalid_request")


async def test_an_import_under_an_idempotency_key_answers_once(tmp_path: Path) -> None:
    """The same key and body: the first answer again (201, replayed), though the batch
    is imported by now; the same key with another report: 409 idempotency_key_reused,
    and that report is not imported."""
    async with open_desk(tmp_path, auth="open") as desk:
        await desk.trade(5)
        body = {"processor": PROCESSOR, "report": desk.report()}
        key = {"Idempotency-Key": "import-1"}
        first = await desk.client.post(REPORTS, json=body, headers=key)
        assert first.status_code == 201
        before = await balances(desk.store)
        replay = await desk.client.post(REPORTS, json=body, headers=key)
        assert (replay.status_code, replay.content) == (201, first.content)
        assert replay.headers["Idempotent-Replayed"] == "true"
        other = desk.report(SettlementAnomalies(seed=1, unknown=1))
        other = other.replace(first.json()["batch_id"], "another-batch")
        reused = await desk.client.post(
            REPORTS, json={"processor": PROCESSOR, "report": other}, headers=key
        )
        assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_key_reused")
        assert await balances(desk.store) == before
        assert len((await desk.client.get(REPORTS)).json()["data"]) == 1


async def test_only_the_operators_admin_keys_may_reconcile(tmp_path: Path) -> None:
    """An admin key of tenant default: yes; its write-only key: 403 forbidden_scope;
    another tenant's admin key: 403 forbidden_scope (the reports are the platform's)."""
    async with open_desk(tmp_path, reconciliation=ReconciliationConfig()) as desk:
        keys = ApiKeys(desk.store)
        operator = await keys.create("default", frozenset({Scope.ADMIN}))
        writer = await keys.create("default", frozenset({Scope.READ, Scope.WRITE}))
        tenant = await keys.create("alice", frozenset({Scope.ADMIN}))

        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        ok = await desk.client.get(EXCEPTIONS, headers=auth(operator.token))
        assert ok.status_code == 200, ok.text
        for token in (writer.token, tenant.token):
            for method, path in (("GET", REPORTS), ("GET", EXCEPTIONS), ("POST", REPORTS)):
                answer = await desk.client.request(
                    method, path, headers=auth(token), json={"processor": PROCESSOR, "report": "x"}
                )
                assert (answer.status_code, answer.json()["code"]) == (403, "forbidden_scope")
