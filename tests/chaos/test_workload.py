"""The workload's linked chains and its record of cross-shard work, without a cluster."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from paycore.chaos.history import Outcome
from paycore.chaos.workload import Topology, Workload, WorkloadOptions, _Answer


@pytest.fixture
async def workload() -> AsyncIterator[Workload]:
    """A workload over two shards with its wallets placed (no HTTP is sent)."""
    w = Workload(
        ["http://127.0.0.1:9"],
        Topology(shards=("s0", "s1"), processors=()),
        WorkloadOptions(),
        tag="t",
    )
    for shard in w.topology.shards:
        w.wallets[shard] = w._ids_on(shard, "w", 4)
    yield w
    await w.aclose()


async def test_chains_are_linked_and_resolve_only_their_own_holds(workload: Workload) -> None:
    """Every chain links all its items but the last; a post or void names a hold made
    earlier in the same chain and posts at most its amount; most chains span shards."""
    rng = random.Random(7)
    spanning = 0
    for _ in range(300):
        items = workload._chain_items(rng)
        assert len(items) >= 2
        assert [bool(i.get("linked")) for i in items] == [True] * (len(items) - 1) + [False]
        holds: dict[str, int] = {}
        shards = set()
        for item in items:
            if "pending_id" in item:
                assert item["pending_id"] in holds
                assert item.get("amount", 0) <= holds.pop(item["pending_id"])
                continue
            if item.get("pending"):
                holds[item["id"]] = item["amount"]
            shard_map = workload.topology.shard_map()
            shards |= {shard_map.shard_for(item["debit_account_id"])}
            shards |= {shard_map.shard_for(item["credit_account_id"])}
        spanning += len(shards) > 1
    assert spanning > 150


async def test_cross_shard_work_is_recorded_until_settled(workload: Workload) -> None:
    """Cross-shard items are remembered with the status they were answered with (unknown
    when the answer was lost); same-shard ones and refused ones are not."""
    a, b = workload.wallets["s0"][:2]
    c = workload.wallets["s1"][0]
    items = [
        {"id": "x1", "debit_account_id": a, "credit_account_id": c},
        {"id": "x2", "debit_account_id": a, "credit_account_id": b},
        {"id": "x3", "debit_account_id": c, "credit_account_id": a},
        {"id": "x4", "pending_id": "x1"},
    ]
    results = [
        {"id": "x1", "status": "in_flight"},
        {"id": "x2", "status": "posted"},
        {"id": "x3", "error": {"code": "insufficient_funds"}},
        {"id": "x4", "status": "posted"},
    ]
    answer = _Answer(Outcome.OK, 200, {"results": results})
    workload._note(items, answer, {"x1": items[0]})
    assert workload.cross == {"x1": "in_flight", "x4": "posted"}
    workload._note([items[2]], _Answer(Outcome.INFO, None, None), {})
    assert workload.cross["x3"] == "unknown"
