"""Build the ledger store a node serves from its settings: shards, slot map, router."""

from __future__ import annotations

import time
from collections.abc import Callable

from paycore.cluster.router import DRIVE_LEASE_SECONDS, ShardedStore
from paycore.cluster.shardmap import PrefixRule, ShardMap, SlotRange
from paycore.config import Settings, ShardSpec, shard_specs
from paycore.storage.group_commit import WriterThread
from paycore.storage.store import ShardStore

__all__ = ["build_store", "shard_map_of", "shard_store"]


def shard_map_of(settings: Settings) -> ShardMap:
    """The slot map of ``settings`` (validated: every slot on exactly one shard)."""
    specs = shard_specs(settings)
    ranges = [SlotRange(lo, hi, spec.name) for spec in specs for lo, hi in spec.slots]
    return ShardMap(ranges, [PrefixRule(p.prefix, p.shard) for p in settings.placement])


def shard_store(
    spec: ShardSpec,
    settings: Settings,
    *,
    clock: Callable[[], int] = time.time_ns,
    sqlite_writer: WriterThread | None = None,
) -> ShardStore:
    """The store of one shard: SQLite file or PostgreSQL database (a SQLite shard runs
    its writes on ``sqlite_writer`` when given, else on a thread of its own)."""
    if spec.backend == "postgres":
        from paycore.storage.postgres import PostgresStore  # noqa: PLC0415 - optional server

        assert spec.dsn is not None
        return PostgresStore(
            spec.dsn,
            name=spec.name,
            clock=clock,
            migrate=settings.migrate_on_start,
            lock_timeout=spec.lock_timeout_seconds,
        )
    from paycore.storage.sqlite import SQLiteStore  # noqa: PLC0415

    assert spec.path is not None
    return SQLiteStore(
        spec.path,
        name=spec.name,
        synchronous=settings.synchronous,
        clock=clock,
        migrate=settings.migrate_on_start,
        writer_thread=sqlite_writer,
    )


def build_store(settings: Settings, *, clock: Callable[[], int] = time.time_ns) -> ShardedStore:
    """The router over every shard of ``settings`` (the embedded SQLite shards when none
    is configured)."""
    specs = shard_specs(settings)
    sqlite_writer = WriterThread("sqlite")
    shards = {
        spec.name: shard_store(spec, settings, clock=clock, sqlite_writer=sqlite_writer)
        for spec in specs
    }
    return ShardedStore(
        shards,
        shard_map_of(settings),
        clock=clock,
        drive_lease_seconds=min(DRIVE_LEASE_SECONDS, settings.relay_lease_seconds),
    )
