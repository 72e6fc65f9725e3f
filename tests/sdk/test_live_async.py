"""``AsyncPaycore`` against a real ``paycore serve``: the same surface, awaited."""

from __future__ import annotations

import asyncio

import pytest

from paycore_client import AsyncPaycore, InsufficientFundsError, NotFoundError
from sdk.support import LiveServer

CARD = {"number": "5555555555554444", "exp_month": 11, "exp_year": 2041, "cvc": "321"}


async def test_the_async_client_end_to_end(live_server: LiveServer, uid: str) -> None:
    """Accounts, a hold posted in part, a batch, a paged walk, a payment and a refund."""
    async with AsyncPaycore(live_server.write_key, base_url=live_server.base_url) as client:
        wallet, shop, source = await asyncio.gather(
            client.accounts.create(id=f"{uid}-w", currency="USD", flags={"no_overdraft": True}),
            client.accounts.create(id=f"{uid}-shop", currency="USD"),
            client.accounts.create(id=f"{uid}-src", currency="USD"),
        )
        await client.transfers.create(
            id=f"{uid}-fund",
            debit_account_id=source.id,
            credit_account_id=wallet.id,
            amount=900,
            currency="USD",
        )
        hold = await client.transfers.create(
            id=f"{uid}-h",
            debit_account_id=wallet.id,
            credit_account_id=shop.id,
            amount=600,
            currency="USD",
            pending=True,
        )
        posted = await client.transfers.post_pending(hold.id, amount=450)
        assert posted.amount == 450
        assert (await client.accounts.retrieve(wallet.id)).balance.available == 450

        batch = await client.transfers.create_batch(
            [
                {
                    "id": f"{uid}-b{n}",
                    "debit_account_id": wallet.id,
                    "credit_account_id": shop.id,
                    "amount": 100,
                    "currency": "USD",
                }
                for n in range(5)
            ]
        )
        assert [r.status for r in batch.results[:4]] == ["posted"] * 4
        assert batch.results[4].error is not None
        assert batch.results[4].error.code == "insufficient_funds"

        page = await client.accounts.transfers(wallet.id, limit=2, side="debits")
        amounts = [t.amount async for t in page.auto_paging_iter()]
        assert amounts == [600, 450, 100, 100, 100, 100]  # the hold, its post, the batch
        listed = await client.transfers.list(account_id=shop.id, status="pending", limit=1)
        assert [t.id async for t in listed.auto_paging_iter()] == []

        with pytest.raises(InsufficientFundsError):
            await client.transfers.create(
                id=f"{uid}-x",
                debit_account_id=wallet.id,
                credit_account_id=shop.id,
                amount=51,
                currency="USD",
            )

        payment = await client.payments.create(
            amount=2_000,
            currency="USD",
            merchant_account_id=shop.id,
            source={"card": CARD},  # type: ignore[typeddict-item]
        )
        assert payment.status == "succeeded"
        refund = await client.refunds.create(payment_id=payment.id)
        assert refund.amount == 2_000
        assert (await client.payments.retrieve(payment.id)).amount_refunded == 2_000
        with pytest.raises(NotFoundError) as missing:
            await client.payouts.retrieve("po_missing")
        assert (missing.value.request_id or "").startswith("req_")  # the server's id
