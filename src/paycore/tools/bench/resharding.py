"""The resharding benchmark: how long a move of slots takes, and how long writes pause.

``python -m paycore.tools.bench.resharding [--backend sqlite|postgres] [--accounts N]``
opens a two-shard ledger (SQLite files, or two databases on a throwaway local
PostgreSQL), creates N accounts with two transfers of history each (one from a bank,
one between two of them), adds a third shard and moves half of the first shard's slots
to it (``paycore.cluster.slot_moves``). Meanwhile two writers send one transfer at a
time: one between accounts that move, one between accounts that stay; each 503 is
retried. Printed: the move's time and its steps' figures, and each writer's longest
wait for an answer (the pause a client sees) and its rate before and during the move.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence

from paycore.cluster import slot_moves
from paycore.cluster.router import ShardedStore
from paycore.cluster.shardmap import slot_of
from paycore.cluster.topology import build_store
from paycore.config import Settings, ShardConfig
from paycore.errors import UnavailableError
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers

__all__ = ["main"]

_PART = 5_000


async def _seed(store: ShardedStore, n: int) -> list[str]:
    ids = [f"rb-{i}" for i in range(n)]
    await store.execute(CreateAccounts((AccountRequest("rb-bank", "USD"),)))
    for k in range(0, n, _PART):
        chunk = ids[k : k + _PART]
        await store.execute(CreateAccounts(tuple(AccountRequest(i, "USD") for i in chunk)))
        await store.execute(
            CreateTransfers(
                tuple(TransferRequest(f"f-{i}", "rb-bank", i, 100, "USD") for i in chunk)
            )
        )
        await store.execute(
            CreateTransfers(
                tuple(
                    TransferRequest(f"g-{a}", a, b, 10, "USD")
                    for a, b in zip(chunk, chunk[1:] + chunk[:1], strict=True)
                )
            )
        )
    return ids


class _Writer:
    """One transfer at a time between two accounts, each 503 retried; its waits."""

    def __init__(self, store: ShardedStore, name: str, pair: tuple[str, str]) -> None:
        self.store, self.name, self.pair = store, name, pair
        self.longest = 0.0
        self.done: list[float] = []  # when each transfer was answered
        self.refused: list[float] = []  # when a 503 came

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            debit, credit = self.pair
            request = TransferRequest(f"{self.name}-{i}", debit, credit, 1, "USD")
            started = time.monotonic()
            while True:
                try:
                    await self.store.execute(CreateTransfers((request,)))
                    break
                except UnavailableError:
                    self.refused.append(time.monotonic())
                    await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - started)
            self.done.append(now)

    def rate(self, start: float, end: float) -> float:
        return sum(1 for t in self.done if start <= t < end) / max(end - start, 1e-9)


async def _measure(two: Settings, add_third: Callable[[], Awaitable[Settings]], n: int) -> None:
    """Seed ``n`` accounts on the two shards of ``two``, add the third shard (its settings
    from ``add_third``: it holds no slot, the two-shard map is the one the shards keep),
    and move half of the first shard's slots to it under the two writers."""
    seeding = build_store(two)
    await seeding.start()
    try:
        t0 = time.monotonic()
        ids = await _seed(seeding, n)
        print(f"seeded {n:,} accounts with {2 * n:,} transfers in {time.monotonic() - t0:.1f} s")
    finally:
        await seeding.stop()
    store = build_store(await add_third())
    await store.start()
    try:
        source = store.shard_for(ids[0])
        first, last = next((r.first, r.last) for r in store.shard_map.ranges if r.shard == source)
        last = (first + last) // 2
        moving = [i for i in ids if first <= slot_of(i) <= last]
        staying = [i for i in ids if store.shard_for(i) != source]
        writers = [
            _Writer(store, "moved", (moving[0], moving[1])),
            _Writer(store, "unmoved", (staying[0], staying[1])),
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in writers]
        await asyncio.sleep(2.0)
        started = time.monotonic()
        report = await slot_moves.move_slots(
            store,
            first,
            last,
            "shard-2",
            say=lambda m: print(f"{time.monotonic() - started:6.2f} s  {m}"),
        )
        ended = time.monotonic()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        print(
            f"moved slots {first}-{last} ({report.accounts:,} accounts, {report.transfers:,} "
            f"history rows, {report.bindings:,} transfer-id bindings) in {report.seconds:.2f} s; "
            f"moving slots closed to new writes for {report.fenced_seconds:.2f} s"
        )
        for w in writers:
            window = (
                f"503s from {w.refused[0] - started:.2f} s to {w.refused[-1] - started:.2f} s "
                "into the move"
                if w.refused
                else "no 503"
            )
            print(
                f"  writer on {w.name} slots: {window}; longest wait {w.longest * 1000:,.0f} ms; "
                f"{w.rate(started - 2.0, started):,.0f}/s before, "
                f"{w.rate(started, ended):,.0f}/s during the move"
            )
    finally:
        await store.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paycore.tools.bench.resharding")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--accounts", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"reproduce: python -m paycore.tools.bench.resharding --backend {args.backend} "
          f"--accounts {args.accounts}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="paycore-reshard-") as tmp:
        if args.backend == "sqlite":
            from paycore.ops.resharding import create_embedded_shard  # noqa: PLC0415

            async def third_file() -> Settings:  # the next embedded file, as shards add does
                await create_embedded_shard(Settings(data_dir=tmp))
                return Settings(data_dir=tmp, auth="open")

            two = Settings(data_dir=tmp, embedded_shards=2, auth="open")
            asyncio.run(_measure(two, third_file, args.accounts))
            return 0
        from paycore.tools.local_postgres import LocalPostgres  # noqa: PLC0415

        with LocalPostgres() as pg:
            shards = tuple(
                ShardConfig(name=f"shard-{i}", backend="postgres", dsn=pg.create_database(f"r{i}"))
                for i in range(3)
            )

            async def third_database() -> Settings:
                return Settings(data_dir=tmp, shards=shards, auth="open")

            two = Settings(data_dir=tmp, shards=shards[:2], auth="open")
            asyncio.run(_measure(two, third_database, args.accounts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
