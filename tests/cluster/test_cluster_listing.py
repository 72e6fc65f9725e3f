"""Account listings in a cluster show a cross-shard transfer once, as the client's
transfer from A to B, on both accounts; the settlement's own rows stay hidden."""

from __future__ import annotations

import asyncio

from cluster_support import move

from paycore.cluster.router import ShardedStore
from paycore.ledger.model import TransferStatus
from paycore.storage.base import CreateTransfers
from paycore.workers.relay import RelayWorker


async def test_a_settled_saga_is_listed_once_on_each_side(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    s0, s1 = list(wallets)[:2]
    a, b = wallets[s0][0], wallets[s1][0]
    relay = RelayWorker(cluster, interval_seconds=0.01)
    await relay.start()
    try:
        (result,) = await cluster.execute(CreateTransfers((move("saga-1", a, b, 40),)))
        assert result.ok
        assert not result.in_flight
        for _ in range(500):
            view = await cluster.get_transfer("saga-1")
            if view is not None and view.status is TransferStatus.POSTED:
                break
            await asyncio.sleep(0.01)
    finally:
        await relay.stop()
    for account in (a, b):
        page = await cluster.account_transfers(account, limit=100)
        sagas = [v for v in page.data if not v.transfer.id.startswith("fund-")]
        assert [
            (v.transfer.id, v.transfer.debit_account_id, v.transfer.credit_account_id)
            for v in sagas
        ] == [("saga-1", a, b)], page.data
        assert [v.status for v in sagas] == [TransferStatus.POSTED]
