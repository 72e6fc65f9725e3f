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
