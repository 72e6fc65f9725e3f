"""What one transfer per call costs in-process, per placement of its accounts.

``python -m paycore.tools.bench.single_calls`` opens an embedded store of ``--shards``
SQLite shards and runs ``--clients`` concurrent callers, each sending one transfer per
``execute`` for ``--seconds`` (the HTTP path's shape without HTTP: the router, the
sagas and the shard writers only). Placements:

* ``uniform``: two accounts drawn from all of them (on 4 shards, 3 in 4 cross shards);
* ``local``: every account on the first shard (its ids still hash to every shard, so
  most transfers reserve their id on another one);
* ``spread``: each caller keeps to the accounts of one shard (every shard busy, every
  transfer local to its shard).

It prints the rate, the latency, the process's CPU per transfer (user + system, from
``getrusage``: on a 2-core machine the GIL and the threads' hand-offs show here), the
context switches per transfer, and the shards' write transactions and commands per
transfer (``Store.writer_stats``). Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shlex
import sys
import tempfile
import time

from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.store import Store

PLACEMENTS = ("uniform", "local", "spread")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m paycore.tools.bench.single_calls")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--accounts", type=int, default=2000)
    p.add_argument("--placement", choices=PLACEMENTS, default="uniform")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def _groups(store: Store, placement: str, n: int) -> list[list[str]]:
    """The account pools callers draw from (one pool each, round robin)."""
    if placement == "uniform":
        return [[f"acct-{i}" for i in range(n)]]
    by_shard: dict[str, list[str]] = {s: [] for s in store.shard_stores}
    first = next(iter(by_shard))
    local = placement == "local"
    want = n if local else n // len(by_shard)
    i = 0
    while (len(by_shard[first]) if local else min(map(len, by_shard.values()))) < want:
        by_shard[store.shard_of(f"acct-{i}")].append(f"acct-{i}")
        i += 1
    if local:
        return [by_shard[first][:want]]
    return [pool[:want] for pool in by_shard.values()]


async def run(o: argparse.Namespace) -> None:
    data = tempfile.mkdtemp(prefix="paycore-single-")
    store = build_store(Settings(data_dir=data, embedded_shards=o.shards))
    await store.start()
    try:
        pools = _groups(store, o.placement, o.accounts)
        ids = sorted({a for pool in pools for a in pool})
        for start in range(0, len(ids), 500):
            part = tuple(AccountRequest(a, "USD") for a in ids[start : start + 500])
            await store.execute(CreateAccounts(part))
        latencies: list[float] = []
        done = 0
        stop = time.perf_counter() + o.seconds

        async def caller(k: int) -> None:
            nonlocal done
            rng = random.Random(o.seed * 1_000 + k)  # noqa: S311 (a workload, not a secret)
            pool = pools[k % len(pools)]
            j = 0
            while time.perf_counter() < stop:
                a, b = rng.sample(pool, 2)
                j += 1
                began = time.perf_counter()
                request = TransferRequest(f"t{k}-{j}", a, b, 1, "USD")
                (result,) = await store.execute(CreateTransfers((request,)))
                latencies.append(time.perf_counter() - began)
                if not result.ok:
                    raise SystemExit(f"refused: {result.code} {result.detail}")
                done += 1

        tx0, cmd0 = store.writer_stats
        use0 = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(o.clients)))
        elapsed = time.perf_counter() - began
        use1 = resource.getrusage(resource.RUSAGE_SELF)
        tx1, cmd1 = store.writer_stats
    finally:
        await store.stop()
    latencies.sort()
    cpu = (use1.ru_utime - use0.ru_utime) + (use1.ru_stime - use0.ru_stime)
    switches = (use1.ru_nvcsw - use0.ru_nvcsw) + (use1.ru_nivcsw - use0.ru_nivcsw)
    n = max(done, 1)
    print(
        f"{o.placement}, {o.shards} shard(s), {o.clients} callers: {done / elapsed:,.0f} "
        f"transfers/s, p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
    )
    print(
        f"  CPU {cpu / n * 1e6:,.0f} us per transfer ({cpu / elapsed:.0%} of one core), "
        f"{switches / n:.1f} context switches per transfer, "
        f"{(tx1 - tx0) / n:.2f} write transactions and {(cmd1 - cmd0) / n:.2f} commands "
        "per transfer"
    )
    print("reproduce: python -m paycore.tools.bench.single_calls " + shlex.join(sys.argv[1:]))


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(_parse(argv)))


if __name__ == "__main__":
    main()
