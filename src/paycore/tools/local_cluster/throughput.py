"""``paycore cluster bench``: transfers per second through nginx, and through one node.

It opens ``acct-0 .. acct-N-1`` (the load generator's accounts) through the cluster's
front door, then runs ``paycore.tools.loadgen`` in its own process for each target: nginx
(every API node behind it) and the first API node alone, so the two rates show what
the extra nodes and the proxy hop give and cost. Transfers go between random accounts,
so about half are cross-shard (settled by sagas).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from paycore.tools.local_cluster.control import LocalCluster

__all__ = ["open_accounts", "run_bench"]


async def open_accounts(
    url: str, count: int, headers: dict[str, str], *, concurrency: int = 32
) -> None:
    """Open acct-0 .. acct-{count-1} (idempotent: an existing one answers 201 or 409)."""
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, headers=headers) as client:

        async def one(n: int) -> None:
            async with semaphore:
                answer = await client.post(
                    "/v1/accounts",
                    json={"id": f"acct-{n}", "currency": "USD"},
                    headers={"Idempotency-Key": f"bench-open-acct-{n}"},
                )
                if answer.status_code not in (200, 201, 409):
                    raise RuntimeError(f"acct-{n}: {answer.status_code} {answer.text}")

        await asyncio.gather(*(one(n) for n in range(count)))


def _load(url: str, *, clients: int, seconds: float, accounts: int, api_key: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our own module
        [
            sys.executable,
            "-m",
            "paycore.tools.loadgen",
            "--url",
            url,
            "--clients",
            str(clients),
            "--duration",
            str(seconds),
            "--warmup",
            "2",
            "--accounts",
            str(accounts),
            "--prefix",
            f"cb{time.time_ns()}",
        ],
        env={**os.environ, "PAYCORE_API_KEY": api_key},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_bench(
    cluster: LocalCluster, *, clients: int = 64, seconds: float = 10.0, accounts: int = 2000
) -> list[dict[str, Any]]:
    """One row per target: rate, latency percentiles, answers by status."""
    asyncio.run(open_accounts(cluster.url, accounts, cluster.headers))
    rows = []
    for label, url in (
        ("nginx (all API nodes)", cluster.url),
        ("one API node", cluster.api_urls[0]),
    ):
        result = _load(
            url, clients=clients, seconds=seconds, accounts=accounts, api_key=cluster.api_key
        )
        rows.append({"target": label, **result})
    return rows
