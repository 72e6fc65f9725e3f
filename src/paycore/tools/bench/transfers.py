"""``paycore bench``: transfers per second and latency, in-process and over HTTP.

Scenarios (each on the same fresh data directory, each with its own transfer ids):

* ``inproc-uniform``: batches of 8,189 transfers between random accounts of 10,000
  (TigerBeetle's default benchmark shape) through ``store.execute(CreateTransfers)``,
  ``--inflight`` batches in flight; latency is per batch.
* ``inproc-hot``: the same, every transfer crediting one merchant account.
* ``inproc-local`` / ``-cross`` (``--shards`` 2 or more): every transfer within one
  shard, then every transfer across two shards, counted once settled (goal: cross
  >= 0.5x local).
* ``http-uniform`` / ``http-hot``: single ``POST /v1/transfers`` from ``--clients``
  keep-alive connections, driven by ``paycore.tools.loadgen`` in its own process against
  one ``paycore serve`` subprocess (uvicorn, uvloop, httptools); latency is per request.
  The server's peak RSS (``VmHWM`` from ``/proc``) is sampled meanwhile.

Building the requests is part of the measured time in-process (one batch is built
while the previous ones run); the HTTP load generator's own cost is excluded by
running it in another process. After each part the ledger is audited, so a fast but
wrong store does not pass.

Over PostgreSQL (``--config FILE`` of ``backend = "postgres"`` shards, or
``--local-postgres N``), side by side on the same server and settings:

* ``pgbench-tpcb``: ``pgbench -i -s 16`` then ``pgbench -b tpcb-like -c 16 -j 2 -T 15``
  in a database of its own on the first shard's server (created and dropped by the
  bench, or ``--pgbench-dsn``); its TPS is the yardstick. Latency percentiles come from
  its per-transaction log (``-l``). No pgbench binary: the row is skipped, saying which
  Debian package provides it.
* ``pg-inproc-uniform`` / ``-hot``: the in-process scenarios above over PostgreSQL
  (goal: uniform >= 10x pgbench's TPS). A cross-shard transfer is counted once settled:
  the relay runs meanwhile and is drained before the clock stops.
* ``pg-inproc-local`` / ``-cross`` (2 or more shards): every transfer within one shard,
  then every transfer across two shards, counted only when the relay settled it
  (goal: cross >= 0.5x local).
* ``pg-http-uniform`` / ``-hot``: the HTTP scenarios against ``paycore serve --config``
  (goal: uniform >= pgbench's TPS).
* ``pg-sweep-N`` (``--accounts-sweep 10000,100000,1000000``): in-process batches (within
  a shard when there are several) on a ledger of N accounts, for the cost per transfer
  as the accounts grow (goal: at most 1.5x from the fewest to the most).

Databases must be fresh: a configured database holding any table is refused (exit 2).
``--create-databases`` (the DSN's user needs CREATEDB) and ``--local-postgres`` instead
give every part fresh databases of its own (``paycore_bench_<run>_<part>_<shard>``),
dropped at the end unless ``--keep``. The server's durability settings are read and
printed with the results; ``--local-postgres`` runs durable (``fsync=on``) unless
``--pg-fast``, which is labelled NOT durable wherever the numbers are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time

from rich.console import Console

from paycore.tools.bench.card_payments import payments_part
from paycore.tools.bench.inproc import HOT_ACCOUNT, copy_ledger, create_accounts, inproc_part
from paycore.tools.bench.options import (
    UsageError,
    add_arguments,
    check_options,
    command_line,
    resolve_options,
)
from paycore.tools.bench.over_http import http_part
from paycore.tools.bench.postgres import run_postgres
from paycore.tools.bench.report import (
    BenchReport,
    fresh_dir,
    machine_environment,
)
from paycore.tools.bench.report_dir import finish_run

__all__ = ["main", "run_bench"]


def run_bench(args: argparse.Namespace, console: Console) -> int:
    """Run the benchmark described by ``args``; 0 unless something failed."""
    try:
        o = resolve_options(args)
        check_options(args, o)
    except UsageError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    if o["backend"] == "postgres":
        return run_postgres(args, o, console)
    command = command_line(o, args)
    console.print(f"[bold]paycore bench[/]  reproduce with: [cyan]{command}[/]")
    data_dir = fresh_dir(args.data_dir, console)
    if data_dir is None:
        return 2
    report = BenchReport(command, machine_environment(), o)
    try:
        if o["only"] == "payments":
            with console.status("payments: starting paycore serve...") as status:
                payments_part(data_dir / "payments", o, report, console, status)
            return finish_run(report, args, console)
        with console.status("creating accounts...") as status:
            t0 = time.perf_counter()
            # Each part starts from the same ledger: the accounts and no transfer yet.
            base, inproc_dir, http_dir = data_dir / "base", data_dir / "inproc", data_dir / "http"
            asyncio.run(create_accounts(base, o))
            console.print(
                f"created {o['accounts']:,} accounts + {HOT_ACCOUNT!r} "
                f"in {time.perf_counter() - t0:.1f}s ({data_dir})"
            )
            if o["only"] != "http":
                status.update("in-process batches...")
                copy_ledger(base, inproc_dir)
                asyncio.run(inproc_part(inproc_dir, o, report, console))
            if o["only"] != "inproc":
                status.update("HTTP: starting paycore serve...")
                copy_ledger(base, http_dir)
                http_part(http_dir, o, report, console, status)
            if o["only"] is None:
                status.update("payments: starting paycore serve...")
                payments_part(data_dir / "payments", o, report, console, status)
    finally:
        if args.data_dir is None and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return finish_run(report, args, console)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paycore.tools.bench.transfers", description=__doc__
    )
    add_arguments(parser)
    return run_bench(parser.parse_args(argv), Console(highlight=False))


if __name__ == "__main__":
    sys.exit(main())
