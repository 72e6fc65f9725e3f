"""What paycore keeps for itself is refused to clients alike on one shard and on several:
``paycore:`` metadata keys (a saga's note, which decides how a transfer is stamped and
recorded in balance history) and ``xs.`` transfer ids (the settlement's steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from paycore.api.app import create_app
from paycore.cluster.topology import build_store
from paycore.config import Settings


@pytest.mark.parametrize("shards", [1, 4])
async def test_reserved_metadata_keys_and_settlement_ids_are_refused(
    tmp_path: Path, shards: int
) -> None:
    settings = Settings(data_dir=str(tmp_path), embedded_shards=shards, auth="open")
    app = create_app(build_store(settings), settings, start_workers=False)
    async with AsyncTestClient(app) as client:
        for account in ("r-a", "r-b"):
            made = await client.post("/v1/accounts", json={"id": account, "currency": "USD"})
            assert made.status_code == 201, made.text
        move = {"debit_account_id": "r-a", "credit_account_id": "r-b", "amount": 5,
                "currency": "USD"}  # fmt: skip
        forged = {**move, "id": "r-1", "metadata": {"paycore:xs": {"role": "credit",
                                                                   "timestamp": 5}}}  # fmt: skip
        refused = await client.post("/v1/transfers", json=forged)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "invalid_request"
        assert "'paycore:' are reserved" in refused.json()["detail"]
        batch = await client.post(
            "/v1/transfers/batch", json={"transfers": [{**move, "id": "xs.post.1"}, forged]}
        )
        assert batch.status_code == 200, batch.text
        errors = [item["error"]["code"] for item in batch.json()["results"]]
        assert errors == ["invalid_request", "invalid_request"]
        for transfer_id in ("r-1", "xs.post.1"):
            assert (await client.get(f"/v1/transfers/{transfer_id}")).status_code == 404
        balance = (await client.get("/v1/accounts/r-b")).json()["balance"]
        assert balance["credits_posted"] == 0
        # The same transfer without the reserved key goes through.
        fine = await client.post("/v1/transfers", json={**move, "id": "r-2", "metadata": {"a": 1}})
        assert fine.status_code == 201, fine.text


@pytest.mark.parametrize("shards", [1, 4])
async def test_every_reserved_id_prefix_is_refused_for_accounts_and_transfers(
    tmp_path: Path, shards: int
) -> None:
    """``clearing:``, ``psp:``, ``xs.`` and ``pm.``: no client account or transfer takes
    such an id, with the same answer on one shard and on four; nothing is written."""
    settings = Settings(data_dir=str(tmp_path), embedded_shards=shards, auth="open")
    app = create_app(build_store(settings), settings, start_workers=False)
    async with AsyncTestClient(app) as client:
        for account in ("q-a", "q-b"):
            made = await client.post("/v1/accounts", json={"id": account, "currency": "USD"})
            assert made.status_code == 201, made.text
        move = {"debit_account_id": "q-a", "credit_account_id": "q-b", "amount": 5,
                "currency": "USD"}  # fmt: skip
        for prefix in ("clearing:", "psp:", "xs.", "pm."):
            refused = await client.post(
                "/v1/accounts", json={"id": f"{prefix}acc", "currency": "USD"}
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "invalid_request"
            assert f"starting with {prefix!r} are reserved" in refused.json()["detail"]
            assert (await client.get(f"/v1/accounts/{prefix}acc")).status_code == 404
            transfer = await client.post("/v1/transfers", json={**move, "id": f"{prefix}t1"})
            assert transfer.status_code == 422, transfer.text
            assert transfer.json()["code"] == "invalid_request"
            assert (await client.get(f"/v1/transfers/{prefix}t1")).status_code == 404
        balance = (await client.get("/v1/accounts/q-b")).json()["balance"]
        assert balance["credits_posted"] == 0
