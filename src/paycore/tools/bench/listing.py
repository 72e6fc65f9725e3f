"""What a page of a list endpoint costs on a small and on a large ledger.

``python -m paycore.tools.bench.listing`` loads a ledger of ``--small`` transfers and
one of ``--transfers`` (10^6) into an embedded SQLite store (in-process batches, as
``paycore bench``'s in-process part), then times, through the HTTP app (in-process
ASGI, API keys off), the first, a middle and the last page of:

* ``GET /v1/transfers`` (every transfer of the tenant),
* ``GET /v1/transfers?account_id=hot`` (an account on one side of every tenth transfer),
* ``GET /v1/accounts`` (``--accounts`` accounts),
* ``GET /v1/accounts?metadata[team]=a`` (a third of them: each has ``{"team": ...}``,
  a, b or c by turns),

each ``--repeat`` times, and prints the median and the 90th percentile per page and the
ratio large/small. The lists use keyset pagination over an index led by their filters
(``paycore.storage.listing``), so the ratio stays near 1 where OFFSET would grow with
the page's position. The middle page starts after the key halfway in time between the
first and last row, the last page after the key of the ``limit + 1``-th row from the end
(read with ``order=desc``): the same cursors a client walking the list would hold.

``--postgres`` does the same on a throwaway local PostgreSQL server (``initdb``; fsync off
while loading: load speed is not what is measured, and the reads are in memory either
way), and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the list queries at the last page
(and of an account on few transfers), which shows the index each walks. Numbers, not
assertions: the tests never time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient

from paycore.api import create_app
from paycore.api.listing import encode_list_cursor
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings, ShardConfig
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.listing import (
    AccountFilter,
    Dialect,
    Keyset,
    ListReads,
    Page,
    TransferFilter,
)
from paycore.tools.local_postgres import LocalPostgres

__all__ = ["main"]

_HOT = "hot"
_TEAMS = ("a", "b", "c")
_TEAM_A = (("team", "a"),)
_CURRENCY = "USD"
_BATCH = 8189
_TENANT = "default"  # open mode: the ids are kept as sent


@dataclass(frozen=True, slots=True)
class _Options:
    transfers: int
    small: int
    accounts: int
    limit: int
    repeat: int
    postgres: bool
    seed: int


@dataclass(frozen=True, slots=True)
class _Listing:
    """One list endpoint: its path and query, and how to read its keys in-process."""

    name: str
    query: str
    first_and_last: Callable[[ShardedStore, int], Awaitable[tuple[Keyset, Keyset | None]]]


async def _transfer_ends(
    store: ShardedStore, limit: int, account: str | None = None
) -> tuple[Keyset, Keyset | None]:
    f = TransferFilter(owner="", account_id=account)
    first = await store.list_transfers(f, Page(limit=1))
    tail = await store.list_transfers(f, Page(limit=limit + 1, descending=True))
    return _key_of(first.items[0].transfer), tail.next_after


def _key_of(transfer: Any) -> Keyset:
    return transfer.timestamp, transfer.id


async def _account_ends(
    store: ShardedStore, limit: int, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[Keyset, Keyset | None]:
    f = AccountFilter(tenant=_TENANT, metadata=metadata)
    first = await store.list_accounts(f, Page(limit=1))
    tail = await store.list_accounts(f, Page(limit=limit + 1, descending=True))
    return (first.items[0].timestamp, first.items[0].id), tail.next_after


_LISTINGS = (
    _Listing("transfers", "/v1/transfers", _transfer_ends),
    _Listing(
        "transfers?account_id",
        f"/v1/transfers?account_id={_HOT}",
        lambda store, limit: _transfer_ends(store, limit, _HOT),
    ),
    _Listing("accounts", "/v1/accounts", _account_ends),
    _Listing(
        "accounts?metadata",
        "/v1/accounts?metadata%5Bteam%5D=a",
        lambda store, limit: _account_ends(store, limit, _TEAM_A),
    ),
)


def _account(i: int) -> str:
    return f"acct-{i}"


def _batches(n: int, accounts: int, seed: int) -> Iterator[CreateTransfers]:
    """``n`` transfers between random accounts; every tenth has ``hot`` on one side."""
    rnd = random.Random(seed)
    for start in range(0, n, _BATCH):
        items = []
        for j in range(start, min(n, start + _BATCH)):
            debit, credit = rnd.sample(range(accounts), 2)
            a, b = _account(debit), _account(credit)
            if j % 10 == 0:
                a, b = (_HOT, b) if j % 20 == 0 else (a, _HOT)
            items.append(TransferRequest(f"t-{j}", a, b, rnd.randint(1, 1000)))
        yield CreateTransfers(tuple(items))


async def _load(settings: Settings, o: _Options, transfers: int) -> float:
    """Accounts and ``transfers`` transfers, two batches in flight; the load's rate."""
    store = build_store(settings)
    await store.start()
    try:
        ids = [_HOT, *(_account(i) for i in range(o.accounts))]
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            await store.execute(
                CreateAccounts(
                    tuple(
                        AccountRequest(i, _CURRENCY, metadata={"team": _TEAMS[(start + k) % 3]})
                        for k, i in enumerate(chunk)
                    )
                )
            )
        began = time.perf_counter()
        pending: list[asyncio.Task[Any]] = []
        for batch in _batches(transfers, o.accounts, o.seed):
            pending.append(asyncio.create_task(store.execute(batch)))
            if len(pending) >= 2:
                await pending.pop(0)
        await asyncio.gather(*pending)
        return transfers / (time.perf_counter() - began)
    finally:
        await store.stop()


def _cursor(key: Keyset | None) -> str:
    cursor = encode_list_cursor(key)
    return "" if cursor is None else cursor


async def _page_cursors(store: ShardedStore, o: _Options) -> dict[str, dict[str, str | None]]:
    """Per listing, the cursor of its first (None), middle and last page."""
    cursors: dict[str, dict[str, str | None]] = {}
    for listing in _LISTINGS:
        first, last = await listing.first_and_last(store, o.limit)
        assert last is not None, f"{listing.name}: fewer rows than two pages"
        middle: Keyset = ((first[0] + last[0]) // 2, "0")
        cursors[listing.name] = {"first": None, "middle": _cursor(middle), "last": _cursor(last)}
    return cursors


async def _time_pages(settings: Settings, o: _Options) -> dict[tuple[str, str], list[float]]:
    """Seconds per request of each (listing, page), ``repeat`` times after a warm-up."""
    store = build_store(settings)
    app = create_app(store, settings, start_workers=False)
    timings: dict[tuple[str, str], list[float]] = {}
    async with AsyncTestClient(app=app) as client:
        cursors = await _page_cursors(store, o)
        for listing in _LISTINGS:
            for page, cursor in cursors[listing.name].items():
                sep = "&" if "?" in listing.query else "?"
                url = f"{listing.query}{sep}limit={o.limit}"
                if cursor is not None:
                    url += f"&cursor={cursor}"
                seconds = []
                for attempt in range(o.repeat + 1):
                    began = time.perf_counter()
                    response = await client.get(url)
                    elapsed = time.perf_counter() - began
                    assert response.status_code == 200, response.text
                    rows = len(response.json()["data"])
                    assert rows == o.limit or page == "last", (url, rows)
                    if attempt:  # the first is a warm-up
                        seconds.append(elapsed)
                timings[(listing.name, page)] = seconds
    return timings


def _ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print_table(
    title: str, sizes: Sequence[int], runs: Sequence[dict[tuple[str, str], list[float]]]
) -> None:
    print(f"\n{title}: milliseconds per request, median (p90)")
    header = "".join(f"{f'{size:,} transfers':>24}" for size in sizes)
    print(f"{'listing':<22}{'page':<8}{header}{'large/small':>13}")
    for listing in _LISTINGS:
        for page in ("first", "middle", "last"):
            cells = []
            medians = []
            for run in runs:
                values = run[(listing.name, page)]
                median = statistics.median(values) * 1000
                medians.append(median)
                cells.append(f"{median:>14.2f} ({_ms(values, 0.9):6.2f})  ")
            ratio = medians[-1] / medians[0] if medians[0] else float("nan")
            print(f"{listing.name:<22}{page:<8}{''.join(cells)}{ratio:>13.2f}")


async def _explain(dsn: str, o: _Options, store: ShardedStore) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each list query at its last page, as the store sends it."""
    plans: list[str] = []

    async def explain(query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query.replace("?", "%s"), params
            )
            plans.append("\n".join(str(row[0]) for row in await cur.fetchall()))
        return []

    reads = ListReads(explain, Dialect.POSTGRES)
    cases: list[tuple[str, Callable[[Keyset | None], Awaitable[Any]]]] = [
        ("GET /v1/transfers", lambda k: reads.transfers(TransferFilter(owner=""), _page(o, k))),
        (
            f"GET /v1/transfers?account_id={_HOT}",
            lambda k: reads.transfers(TransferFilter(owner="", account_id=_HOT), _page(o, k)),
        ),
        ("GET /v1/accounts", lambda k: reads.accounts(AccountFilter(tenant=_TENANT), _page(o, k))),
        (
            "GET /v1/accounts?metadata[team]=a",
            lambda k: reads.accounts(AccountFilter(tenant=_TENANT, metadata=_TEAM_A), _page(o, k)),
        ),
    ]
    for (title, run), listing in zip(cases, _LISTINGS, strict=True):
        _, last = await listing.first_and_last(store, o.limit)
        plans.clear()
        await run(last)
        _print_plans(f"{title} at its last page", plans)
    # An account on few transfers (about 2 x transfers / accounts): its own index.
    cold = _account(1)
    plans.clear()
    await reads.transfers(TransferFilter(owner="", account_id=cold), _page(o, None))
    _print_plans(f"GET /v1/transfers?account_id={cold} (an account with few transfers)", plans)


def _print_plans(title: str, plans: Sequence[str]) -> None:
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of {title}:")
    for plan in plans:
        print("  " + plan.replace("\n", "\n  "))


def _page(o: _Options, after: Keyset | None) -> Page:
    return Page(limit=o.limit + 1, after=after)


async def _sqlite(o: _Options, root: Path) -> None:
    runs = []
    sizes = (o.small, o.transfers)
    for size in sizes:
        settings = Settings(
            data_dir=str(root / f"sqlite-{size}"), embedded_shards=1, synchronous="NORMAL",
            auth="open",
        )  # fmt: skip
        rate = await _load(settings, o, size)
        print(f"SQLite: loaded {size:,} transfers at {rate:,.0f}/s (synchronous=NORMAL)")
        runs.append(await _time_pages(settings, o))
    _print_table("SQLite, one embedded shard", sizes, runs)


async def _postgres(o: _Options, root: Path) -> None:
    with LocalPostgres(fast=True) as pg:
        runs = []
        sizes = (o.small, o.transfers)
        large_dsn = ""
        for size in sizes:
            dsn = pg.create_database(f"listing_{size}")
            settings = Settings(
                shards=(ShardConfig("shard-0", backend="postgres", dsn=dsn),), auth="open"
            )
            rate = await _load(settings, o, size)
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute("ANALYZE")
            print(f"PostgreSQL: loaded {size:,} transfers at {rate:,.0f}/s (fsync off), ANALYZEd")
            runs.append(await _time_pages(settings, o))
            large_dsn = dsn
        _print_table("PostgreSQL, one shard", sizes, runs)
        settings = Settings(
            shards=(ShardConfig("shard-0", backend="postgres", dsn=large_dsn),), auth="open"
        )
        store = build_store(settings)
        await store.start()
        try:
            await _explain(large_dsn, o, store)
        finally:
            await store.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paycore.tools.bench.listing", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--transfers", type=int, default=1_000_000, help="large ledger (10^6)")
    parser.add_argument("--small", type=int, default=10_000, help="small ledger (10^4)")
    parser.add_argument("--accounts", type=int, default=100_000, help="accounts (10^5)")
    parser.add_argument("--limit", type=int, default=100, help="page size (100)")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page (30)")
    parser.add_argument("--postgres", action="store_true", help="also on a local PostgreSQL")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    args = parser.parse_args(argv)
    o = _Options(
        args.transfers, args.small, args.accounts, args.limit, args.repeat, args.postgres, args.seed
    )
    command = shlex.join([sys.executable, "-m", "paycore.tools.bench.listing",
                          *(argv if argv is not None else sys.argv[1:])])  # fmt: skip
    print(f"reproduce: {command}")
    with tempfile.TemporaryDirectory(prefix="paycore-listing-") as tmp:
        root = args.data_dir or Path(tmp)
        asyncio.run(_sqlite(o, root))
        if o.postgres:
            asyncio.run(_postgres(o, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
