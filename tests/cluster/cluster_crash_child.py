"""The process test_cluster_crash kills: the API and its relay over 4 shards.

Usage: ``python cluster_crash_child.py CONFIG ROUND``

``CONFIG`` is a paycore TOML file (the topology: 4 SQLite files, or 4 PostgreSQL
databases, and the relay's knobs), read as ``paycore serve --config`` reads it.

Serves the real app in-process (``AsgiClient``: lifespan, maintenance and relay
workers), creates its accounts (idempotently), prints ``ready``, then sends
cross-shard transfers from 8 concurrent clients and prints ``ack <id>`` (flushed) for
each 201 answer. It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import msgspec

from paycore.api import create_app
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import load_settings
from paycore.tools.demo.asgi_client import AsgiClient

CLIENTS = 8
# A quick relay and short leases, so sagas a kill left open are retaken soon.
RELAY_KNOBS = {
    "relay_interval_seconds": 0.05,
    "relay_lease_seconds": 0.5,
    "maintenance_interval_seconds": 0.2,
}


def accounts_by_shard(store: ShardedStore) -> dict[str, list[str]]:
    """Three wallets per shard, with fixed ids (the same in every round)."""
    found: dict[str, list[str]] = {name: [] for name in store.shards}
    i = 0
    while any(len(v) < 3 for v in found.values()):
        candidate = f"cw{i}"
        shard = store.shard_for(candidate)
        if len(found[shard]) < 3:
            found[shard].append(candidate)
        i += 1
    return found


async def main(config: Path, round_no: int) -> None:
    settings = load_settings(config, env={})  # the file only: no PAYCORE_* from outside
    store = build_store(settings)
    placed = accounts_by_shard(store)
    app = create_app(store, settings)
    encode = msgspec.json.encode
    async with AsgiClient(app) as client:
        for ids in placed.values():
            for account in ids:
                response = await client.request(
                    "POST", "/v1/accounts", encode({"id": account, "currency": "USD"})
                )
                assert response.status in (200, 201), response
        print("ready", flush=True)
        shards = list(placed)
        counter = iter(range(10**9))

        async def worker(k: int) -> None:
            rng = random.Random(f"{round_no}/{k}")
            while True:
                n = next(counter)
                src, dst = rng.sample(shards, 2)
                body = {
                    "id": f"r{round_no}.{n}",
                    "debit_account_id": rng.choice(placed[src]),
                    "credit_account_id": rng.choice(placed[dst]),
                    "amount": rng.randint(1, 1000),
                    "currency": "USD",
                }
                response = await client.request("POST", "/v1/transfers", encode(body))
                if response.status == 201:
                    print(f"ack {body['id']}", flush=True)
                else:
                    print(f"refused {response.status} {response.body[:200]!r}", file=sys.stderr)

        await asyncio.gather(*(worker(k) for k in range(CLIENTS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
