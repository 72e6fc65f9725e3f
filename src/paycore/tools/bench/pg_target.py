"""The PostgreSQL servers a run measures on: configured ones, fresh databases it creates,
or a throwaway local server; and their durability settings, printed with the results."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console

from paycore.config import Settings, ShardConfig, load_settings, shard_specs
from paycore.tools.bench.options import UsageError
from paycore.tools.bench.report import BenchReport, durability_label, is_durable

if TYPE_CHECKING:  # psycopg and the server helpers load only for a PostgreSQL run
    from paycore.tools.local_postgres import LocalPostgres

__all__ = ["PgTarget", "describe_servers", "open_target"]


class PgTarget:
    """Where a PostgreSQL bench keeps its ledgers.

    When the bench may create databases (``--local-postgres``, ``--create-databases``)
    each part gets a fresh ledger of its own (``paycore_bench_<run>_<part>_<shard>``, one
    database per shard, dropped at the end unless ``--keep``); otherwise every part runs
    in the config's databases, one after the other (each with its own transfer ids).
    """

    def __init__(
        self, base: Settings, admins: dict[str, str] | None, local: LocalPostgres | None
    ) -> None:
        self.base = base
        self.admins = admins  # shard -> DSN to issue CREATE/DROP DATABASE through
        self.local = local
        self.run_id = uuid.uuid4().hex[:6]
        self.created: list[tuple[str, str]] = []  # (admin DSN, database)
        self.accounts: dict[str, int] = {}  # ledger -> accounts acct-0.. created so far
        self.hot: set[str] = set()  # ledgers holding the merchant account

    @property
    def fresh(self) -> bool:
        return self.admins is not None

    def server_dsns(self) -> dict[str, str]:
        """A DSN per shard to read its server's settings through."""
        if self.admins is not None:
            return dict(self.admins)
        return {s.name: str(s.dsn) for s in self.base.shards}

    def _create(self, admin: str, name: str) -> str:
        from paycore.tools.local_postgres import admin_dsn, create_database  # noqa: PLC0415

        create_database(admin, name)
        self.created.append((admin, name))
        return admin_dsn(admin, name)

    def ledger(self, tag: str) -> tuple[Settings, str]:
        """The settings of a ledger for part ``tag``, and its key in ``accounts``."""
        if self.admins is None:
            return self.base, "config"
        shards = tuple(
            msgspec.structs.replace(
                shard,
                dsn=self._create(
                    self.admins[shard.name], f"paycore_bench_{self.run_id}_{tag}_{shard.name}"
                ),
            )
            for shard in self.base.shards
        )
        return msgspec.structs.replace(self.base, shards=shards), tag

    def pgbench_database(self, explicit: str | None) -> tuple[str, tuple[str, str] | None]:
        """A database for pgbench on the first shard's server: ``explicit`` or a new one."""
        if explicit:
            return explicit, None
        first = self.base.shards[0]
        admin = self.admins[first.name] if self.admins is not None else str(first.dsn)
        name = f"paycore_bench_{self.run_id}_pgbench"
        return self._create(admin, name), (admin, name)

    def drop(self, admin: str, name: str) -> None:
        from paycore.tools.local_postgres import drop_database  # noqa: PLC0415

        drop_database(admin, name)
        with contextlib.suppress(ValueError):
            self.created.remove((admin, name))

    def drop_ledger(self, settings: Settings) -> None:
        """Drop a fresh ledger's databases now (a sweep's big ones free their disk)."""
        from paycore.tools.local_postgres import database_name  # noqa: PLC0415

        if self.admins is None:
            return
        for shard in settings.shards:
            self.drop(self.admins[shard.name], database_name(str(shard.dsn)))

    def checkpoint(self) -> None:
        """``CHECKPOINT`` each server (when allowed), so that a part does not pay for the
        dirty pages of the one before it."""
        import psycopg  # noqa: PLC0415

        for dsn in dict.fromkeys(self.server_dsns().values()):
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn,
            ):
                conn.execute("CHECKPOINT")

    def close(self, *, keep: bool, console: Console) -> None:
        import psycopg  # noqa: PLC0415

        from paycore.tools.local_postgres import drop_database  # noqa: PLC0415

        try:
            if keep and self.created:
                console.print("kept databases: " + ", ".join(name for _, name in self.created))
            elif not keep:
                for admin, name in reversed(self.created):
                    try:
                        drop_database(admin, name)
                    except psycopg.Error as exc:
                        console.print(f"[yellow]could not drop database {name}: {exc}[/]")
                self.created = []
        finally:
            if self.local is not None:
                self.local.stop()
                if keep and self.local.root is not None:
                    console.print(f"kept the stopped server's directory {self.local.root}")


def open_target(args: argparse.Namespace, o: dict[str, Any], status: Any) -> PgTarget:
    import psycopg  # noqa: PLC0415

    from paycore.redaction import redact_dsn  # noqa: PLC0415
    from paycore.tools.local_postgres import (  # noqa: PLC0415
        LocalPostgres,
        PostgresNotFoundError,
        database_name,
        public_tables,
    )

    if o["local_postgres"] is not None:
        try:
            local = LocalPostgres(fast=o["pg_fast"], keep=bool(args.keep))
        except PostgresNotFoundError as exc:
            raise UsageError(str(exc)) from exc
        status.update(f"starting a local PostgreSQL server ({local.bindir})...")
        try:
            local.start()
        except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            local.stop()
            raise UsageError(f"could not start a local PostgreSQL server: {exc}") from exc
        shards = tuple(
            ShardConfig(f"s{i}", backend="postgres", dsn=local.dsn())
            for i in range(o["local_postgres"])
        )
        return PgTarget(Settings(shards=shards), {s.name: local.dsn() for s in shards}, local)
    config = Path(o["config"])
    try:
        settings = load_settings(config)
        shard_specs(settings)
    except (OSError, ValueError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{config}: {exc}") from exc
    if not settings.shards:
        raise UsageError(f"{config} lists no [[shards]]: the PostgreSQL bench needs them")
    others = [s.name for s in settings.shards if s.backend != "postgres"]
    if others:
        raise UsageError(
            f'{config}: shard(s) {", ".join(others)} are not backend = "postgres" '
            "(the embedded SQLite bench is `paycore bench --shards N`)"
        )
    if o["create_databases"]:
        return PgTarget(settings, {s.name: str(s.dsn) for s in settings.shards}, None)
    for shard in settings.shards:
        dsn = str(shard.dsn)
        try:
            tables = public_tables(dsn)
        except psycopg.Error as exc:
            raise UsageError(f"shard {shard.name} ({redact_dsn(dsn)}): {exc}") from exc
        if tables:
            more = ", ..." if len(tables) > 5 else ""
            raise UsageError(
                f"shard {shard.name}: database {database_name(dsn)!r} is not empty "
                f"({len(tables)} tables: {', '.join(tables[:5])}{more}). The bench needs fresh, "
                "empty databases: point the config at empty ones, or pass --create-databases "
                "to let the bench create (and drop) its own on the same servers."
            )
    return PgTarget(settings, None, None)


def describe_servers(
    target: PgTarget, o: dict[str, Any], report: BenchReport, console: Console
) -> None:
    from paycore.redaction import redact_dsn  # noqa: PLC0415
    from paycore.tools.local_postgres import server_settings  # noqa: PLC0415

    per_shard = {name: server_settings(dsn) for name, dsn in target.server_dsns().items()}
    first = next(iter(per_shard.values()))
    same = all(s == first for s in per_shard.values())
    durable = all(is_durable(s) for s in per_shard.values())
    where = (
        target.local.describe()
        if target.local is not None
        else ", ".join(f"{s.name}={redact_dsn(str(s.dsn))}" for s in target.base.shards)
    )
    report.postgres = {
        "source": "local" if target.local is not None else "config",
        "where": where,
        "shards": len(target.base.shards),
        "settings": first if same else per_shard,
        "durable": durable,
        "pg_fast": o["pg_fast"],
        "fresh_database_per_part": target.fresh,
    }
    report.environment["postgres"] = first.get("server_version", "?")
    console.print(f"PostgreSQL {first.get('server_version', '?')}: {where}")
    for name, s in per_shard.items() if not same else [("all shards", first)]:
        label = (
            "[green]durable: a commit waits for its WAL flush[/]"
            if is_durable(s)
            else "[bold red]NOT durable: commits do not wait for the disk[/]"
        )
        console.print(
            f"  {name}: {durability_label(s)}, shared_buffers={s.get('shared_buffers')}: {label}"
        )
    if o["pg_fast"]:
        console.print(
            "[bold red]--pg-fast[/]: fsync, synchronous_commit and full_page_writes are off; "
            "these numbers do not measure durable commits (pgbench runs under the same settings)"
        )
