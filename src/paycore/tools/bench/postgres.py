"""``paycore bench`` over PostgreSQL: the in-process, HTTP and accounts-sweep scenarios on
the servers of a ``PgTarget``, beside pgbench."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.ledger.model import AccountRequest
from paycore.storage.base import CreateAccounts
from paycore.tools.bench.inproc import (
    CURRENCY,
    HOT_ACCOUNT,
    Placement,
    account_id,
    audit_clean,
    inproc_scenario,
    inproc_scenarios,
)
from paycore.tools.bench.options import UsageError, command_line
from paycore.tools.bench.over_http import serve_and_load
from paycore.tools.bench.pg_target import PgTarget, describe_servers, open_target
from paycore.tools.bench.pgbench import pgbench_part
from paycore.tools.bench.report import (
    BenchReport,
    fresh_dir,
    machine_environment,
    print_inproc,
    skip_row,
)
from paycore.tools.bench.report_dir import finish_run
from paycore.tools.bench.rss import read_rss, rss_since

__all__ = ["ensure_accounts", "run_postgres", "settings_toml"]


async def ensure_accounts(
    store: ShardedStore, target: PgTarget, key: str, n: int, *, hot: bool = True
) -> float:
    """Create accounts ``acct-0 .. acct-<n-1>`` (and the merchant) not yet in ledger
    ``key``; two batches in flight. Returns the seconds it took."""
    t0 = time.perf_counter()
    have = target.accounts.get(key, 0)
    chunks = iter(range(have, n, 8189))

    async def worker() -> None:
        for start in chunks:
            requests = tuple(
                AccountRequest(account_id(i), CURRENCY) for i in range(start, min(n, start + 8189))
            )
            results = await store.execute(CreateAccounts(requests))
            failed = [r for r in results if not r.ok]
            if failed:
                raise RuntimeError(f"creating accounts failed: {failed[0]}")

    if n > have:
        await asyncio.gather(worker(), worker())
        target.accounts[key] = n
    if hot and key not in target.hot:
        await store.execute(CreateAccounts((AccountRequest(HOT_ACCOUNT, CURRENCY),)))
        target.hot.add(key)
    return time.perf_counter() - t0


async def _pg_inproc_part(
    target: PgTarget, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    settings, key = target.ledger("main")
    store = build_store(settings)
    await store.start()
    try:
        status.update(f"creating {o['accounts']:,} accounts...")
        created = await ensure_accounts(store, target, key, o["accounts"])
        console.print(f"created {o['accounts']:,} accounts + {HOT_ACCOUNT!r} in {created:.1f}s")
        scenarios, placement, no_cross = inproc_scenarios(store, o, "pg-inproc")
        if no_cross is not None:
            skip_row(report, console, "pg-inproc-cross", no_cross)
        rss_before = read_rss(os.getpid())
        for name, mode in scenarios:
            status.update(f"{name}: in-process batches...")
            result = await inproc_scenario(store, name, o, mode=mode, placement=placement)
            report.results.append(result)
            print_inproc(console, result)
        report.inproc_rss_mb = rss_since(rss_before)
        if o["audit"]:
            status.update("auditing...")
            report.audits["pg-inproc"] = await audit_clean(store, console, "PostgreSQL in-process")
    finally:
        await store.stop()
    target.checkpoint()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string


def settings_toml(settings: Settings) -> str:
    """``settings`` as a TOML file that ``load_settings`` reads back to the same."""
    lines = []
    for field in msgspec.structs.fields(Settings):
        value = getattr(settings, field.name)
        if isinstance(value, str | int | float | bool):
            lines.append(f"{field.name} = {_toml_value(value)}")
    for table, items in (("shards", settings.shards), ("placement", settings.placement)):
        for item in items:
            lines += ["", f"[[{table}]]"]
            lines += [
                f"{k} = {_toml_value(v)}"
                for k, v in msgspec.structs.asdict(item).items()
                if v is not None
            ]
    return "\n".join(lines) + "\n"


async def _prepare_ledger(settings: Settings, target: PgTarget, key: str, n: int) -> float:
    store = build_store(settings)
    await store.start()
    try:
        return await ensure_accounts(store, target, key, n)
    finally:
        await store.stop()


async def _audit_settings(settings: Settings, console: Console, label: str) -> bool:
    store = build_store(settings)
    await store.start()
    try:
        return await audit_clean(store, console, label)
    finally:
        await store.stop()


def _pg_http_part(
    target: PgTarget,
    o: dict[str, Any],
    report: BenchReport,
    console: Console,
    status: Any,
    *,
    work_dir: Path,
) -> None:
    settings, key = target.ledger("http")
    if o["workers"] > 1 and settings.locks_url == "local":
        # N workers refuse in-process locks: a lock table in the first shard's database.
        settings = msgspec.structs.replace(settings, locks_url=str(settings.shards[0].dsn))
    status.update(f"HTTP: creating {o['accounts']:,} accounts...")
    asyncio.run(_prepare_ledger(settings, target, key, o["accounts"]))
    config = work_dir / "serve.toml"
    config.touch(mode=0o600)  # the DSNs may carry passwords
    config.write_text(settings_toml(settings))
    status.update("HTTP: starting paycore serve --config ...")
    serve_and_load(
        ["--config", str(config)],
        o,
        report,
        console,
        status,
        env=dict(os.environ),
        log_path=work_dir / "serve.log",
        scenarios=(("pg-http-uniform", False), ("pg-http-hot", True)),
        workers=o["workers"],
    )
    if o["audit"]:
        status.update("auditing...")
        report.audits["pg-http"] = asyncio.run(
            _audit_settings(settings, console, "PostgreSQL HTTP")
        )
    target.checkpoint()


async def _pg_sweep_part(
    target: PgTarget, o: dict[str, Any], report: BenchReport, console: Console, status: Any
) -> None:
    """The uniform batch scenario at each size of ``--accounts-sweep``, each on a fresh
    ledger when the bench may create databases."""
    if not target.fresh:
        console.print(
            "[yellow]accounts sweep in the config's databases: the sizes grow in one ledger "
            "that also holds the earlier parts' transfers (--create-databases or "
            "--local-postgres give each size a fresh ledger)[/]"
        )
    for i, size in enumerate(o["sweep"]):
        settings, key = target.ledger(f"sw{size}")
        store = build_store(settings)
        await store.start()
        try:
            status.update(f"accounts sweep: creating {size:,} accounts...")
            have = target.accounts.get(key, 0)
            created = await ensure_accounts(store, target, key, size, hot=False)
            sub = {**o, "accounts": size, "transfers": o["sweep_transfers"]}
            name = f"pg-sweep-{size}"
            # Within a shard: the sweep measures the ledger's cost per account count; what
            # the relay adds is the cross-shard row's business.
            mode, placement = "uniform", None
            if len(store.shards) > 1:
                placement = Placement(store, size)
                mode = "local" if placement.local_debits else "uniform"
            status.update(f"accounts sweep: {size:,} accounts, in-process batches...")
            result = await inproc_scenario(
                store, name, sub, mode=mode, placement=placement, seed=o["seed"] + 10 + i
            )
            result.detail.update(
                us_per_transfer=1e6 / result.rate_per_s if result.rate_per_s else None,
                accounts_created=max(0, size - have),
                create_seconds=round(created, 2),
                fresh_ledger=target.fresh,
            )
            report.results.append(result)
            console.print(
                f"{name}: {size:,} accounts (created {max(0, size - have):,} in {created:.1f}s): "
                f"{result.transfers:,} transfers = [bold]{result.rate_per_s:,.0f}/s[/] "
                f"({1e6 / result.rate_per_s if result.rate_per_s else 0:.1f} us/transfer)"
            )
            if o["audit"]:
                status.update(f"auditing the {size:,}-account ledger...")
                report.audits[name] = await audit_clean(store, console, f"sweep {size:,} accounts")
        finally:
            await store.stop()
        target.drop_ledger(settings)
        target.checkpoint()


def run_postgres(args: argparse.Namespace, o: dict[str, Any], console: Console) -> int:
    import psycopg  # noqa: PLC0415

    from paycore.redaction import redact_dsn  # noqa: PLC0415

    command = command_line(o, args)
    console.print(f"[bold]paycore bench[/] (PostgreSQL)  reproduce with: [cyan]{command}[/]")
    work_dir = fresh_dir(args.data_dir, console)
    if work_dir is None:
        return 2
    shown = {**o, "pgbench_dsn": redact_dsn(o["pgbench_dsn"]) if o["pgbench_dsn"] else None}
    report = BenchReport(command, machine_environment(), shown, backend="postgres")
    target: PgTarget | None = None
    only = o["only"]
    try:
        with console.status("PostgreSQL...") as status:
            try:
                target = open_target(args, o, status)
                describe_servers(target, o, report, console)
            except (UsageError, psycopg.Error) as exc:
                console.print(f"[red]{exc}[/]")
                return 2
            if not o["pgbench"]:
                report.skipped["pgbench-tpcb"] = "--no-pgbench"
            elif only in (None, "pgbench"):
                pgbench_part(target, o, report, console, status, work_dir=work_dir)
            if only in (None, "inproc"):
                asyncio.run(_pg_inproc_part(target, o, report, console, status))
            if only in (None, "http"):
                _pg_http_part(target, o, report, console, status, work_dir=work_dir)
            if only in (None, "sweep") and o["sweep"]:
                asyncio.run(_pg_sweep_part(target, o, report, console, status))
    finally:
        if target is not None:
            target.close(keep=bool(args.keep), console=console)
        if args.data_dir is None and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    return finish_run(report, args, console)
