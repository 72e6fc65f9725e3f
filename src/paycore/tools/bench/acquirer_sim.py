"""Measure a running simulator: authorizations per second from one load-generator process.

``python -m paycore.tools.bench.acquirer_sim --url URL [--clients 32]
[--seconds 5]`` drives ``POST /v1/authorizations`` with fresh references over
keep-alive connections (the raw HTTP/1.1 client of ``paycore.tools.loadgen``, which
costs the generator little) and prints one JSON line: requests/s and latency
percentiles. Run it in its own process, beside the simulator's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from paycore.tools.loadgen import RawHttpClient, latency_summary

__all__ = ["main", "measure"]


async def measure(url: str, *, clients: int, seconds: float, warmup: float = 0.5) -> dict[str, Any]:
    """Authorize from ``clients`` connections for ``warmup + seconds``; measure the latter."""
    connections = [RawHttpClient.for_url(url) for _ in range(clients)]
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}

    async def drive(index: int, client: RawHttpClient) -> None:
        seq = 0
        while (now := time.perf_counter()) < stop_at:
            seq += 1
            body = {"reference": f"bench-{start}-{index}-{seq}", "amount": 1000}
            raw = msgspec.json.encode(body | {"currency": "EUR", "card": card})
            response = await client.request("POST", "/v1/authorizations", raw)
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)
                key = str(response.status)
                statuses[key] = statuses.get(key, 0) + 1

    try:
        await asyncio.gather(*(drive(i, c) for i, c in enumerate(connections)))
    finally:
        for client in connections:
            await client.close()
    elapsed = time.perf_counter() - measure_from
    return {
        "url": url,
        "clients": clients,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "statuses": statuses,
        "rate_per_s": round(len(latencies) / elapsed, 1),
        **latency_summary(latencies),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the simulator's base URL")
    parser.add_argument("--clients", type=int, default=32, help="keep-alive connections (32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds (5)")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.url, clients=args.clients, seconds=args.seconds))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
