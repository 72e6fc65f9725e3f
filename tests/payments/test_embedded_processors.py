"""The embedded default (no config) pays by card through simulated acquirers inside the
process, with the simulator's test cards, so `paycore serve` works on a fresh machine."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import AsyncTestClient

from paycore.api.app import create_app
from paycore.cluster.topology import build_store
from paycore.config import Settings

GOOD, DECLINED = "4242424242424242", "4000000000009995"


def card(number: str) -> dict[str, object]:
    return {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}


async def test_card_payments_work_with_no_processor_configured(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), auth="open")
    app = create_app(build_store(settings), settings, start_workers=False)
    async with AsyncTestClient(app) as client:
        made = await client.post("/v1/accounts", json={"id": "shop", "currency": "USD"})
        assert made.status_code == 201, made.text
        paid = await client.post(
            "/v1/payments",
            json={
                "amount": 1250,
                "currency": "USD",
                "merchant_account_id": "shop",
                "capture": "automatic",
                "source": {"card": card(GOOD)},
            },
        )
        assert paid.status_code == 201, paid.text
        assert paid.json()["status"] == "succeeded"
        assert paid.json()["processor"] in {"sim-a", "sim-b"}
        refused = await client.post(
            "/v1/payments",
            json={
                "amount": 50,
                "currency": "USD",
                "merchant_account_id": "shop",
                "capture": "automatic",
                "source": {"card": card(DECLINED)},
            },
        )
        assert refused.json()["status"] == "failed", refused.text
        shop = (await client.get("/v1/accounts/shop")).json()
        assert shop["balance"]["credits_posted"] == 1250


# -- the in-process transport answers as the simulator's HTTP app does ----------------------


def _script(year: int) -> list[tuple[str, str, dict[str, object] | None]]:
    """Every processor endpoint, approved, declined, failed and malformed, and the status
    of what exists and of what does not."""

    def auth(reference: str, number: str, amount: int = 700) -> dict[str, object]:
        c = {"number": number, "exp_month": 12, "exp_year": year, "cvc": "123"}
        return {"reference": reference, "amount": amount, "currency": "USD", "card": c}

    return [
        ("POST", "/v1/authorizations", auth("a1.x:y", GOOD)),
        ("POST", "/v1/authorizations", auth("a2", DECLINED)),
        ("POST", "/v1/authorizations", auth("a3", "4000000000000119")),
        ("POST", "/v1/authorizations", {"reference": "bad"}),
        ("POST", "/v1/authorizations/a1.x:y/captures",
         {"capture_reference": "c1", "amount": 500}),
        ("POST", "/v1/authorizations/a1.x:y/refunds", {"refund_reference": "r1", "amount": 200}),
        ("POST", "/v1/authorizations/a1.x:y/refunds", {"refund_reference": "r2", "amount": 999}),
        ("POST", "/v1/authorizations", auth("a4", GOOD)),
        ("POST", "/v1/authorizations/a4/void", None),
        ("POST", "/v1/authorizations/nope/void", None),
        ("POST", "/v1/payouts", {"reference": "p1", "amount": 300, "currency": "USD",
                                  "destination": "GB00CLOSED00000000"}),
        ("POST", "/v1/payouts", {"reference": "p2", "amount": 300, "currency": "USD",
                                  "destination": "GB29NWBK60161331926819"}),
        ("GET", "/v1/operations/a1.x:y", None),
        ("GET", "/v1/operations/p2", None),
        ("GET", "/v1/operations/missing", None),
    ]  # fmt: skip


async def test_the_in_process_transport_answers_as_the_simulators_app() -> None:
    """The embedded acquirers skip the web framework, not the simulator: the same script
    through ``SimulatorTransport`` and through the simulator's ASGI app gets the same
    status, body and Retry-After, request by request, including while it is down."""
    import datetime

    import httpx

    from api.support import asgi_transport
    from paycore.payments.processors.simulator.app import Simulator
    from paycore.payments.processors.simulator.app import create_app as simulator_app
    from paycore.payments.processors.simulator.config import SimulatorConfig
    from paycore.payments.processors.simulator.transport import SimulatorTransport

    year = datetime.datetime.now(datetime.UTC).year + 2
    app = simulator_app("sim-x", SimulatorConfig())
    in_process = SimulatorTransport(Simulator("sim-x", SimulatorConfig()))
    via_app = httpx.AsyncClient(transport=asgi_transport(app), base_url="http://s")
    direct = httpx.AsyncClient(transport=in_process, base_url="http://s")
    async with via_app, direct:
        for down in (False, True):
            if down:
                for sim in (app.state.simulator, in_process.simulator):
                    sim.behaviour.update({"outages": [{"start": 0, "duration": 3600}]})
            for method, path, body in _script(year):
                answers = [
                    await client.request(method, path, json=body) for client in (via_app, direct)
                ]
                first, second = answers
                assert first.json()["processor"] == "sim-x", first.text  # not a routing 404
                assert (second.status_code, second.json()) == (first.status_code, first.json()), (
                    method,
                    path,
                    down,
                )
                assert second.headers.get("retry-after") == first.headers.get("retry-after")
        unknown = await direct.get("/v1/nothing")
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "not_found"
