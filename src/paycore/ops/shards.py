"""``paycore shards status``: where the slots live and what each shard holds.

The slot map is the one the shards keep (the key shard's newest version, migration 0022:
``paycore.cluster.slot_catalog``), or the settings' (``[[shards]] slots`` and
``[[placement]]``) before any node recorded one; each shard is opened to count its rows
and measure its size. A SQLite shard whose file does not exist is shown as missing,
never created.
"""

from __future__ import annotations

import asyncio

import msgspec
from rich.console import Console
from rich.table import Table

from paycore.cluster.shardmap import SLOT_HASH_VERSION, SLOTS
from paycore.cluster.slot_catalog import decode_map
from paycore.cluster.topology import shard_map_of, shard_store
from paycore.config import Settings, shard_specs
from paycore.storage.usage import ShardUsage

__all__ = ["ShardStatus", "ShardsReport", "print_shards", "shards_status"]


class ShardStatus(msgspec.Struct, frozen=True):
    """One shard: its backend, slot ranges (inclusive), pinned prefixes and usage (None:
    a SQLite file that does not exist yet)."""

    name: str
    backend: str
    where: str
    slots: list[tuple[int, int]]
    slot_count: int
    prefixes: list[str]
    usage: ShardUsage | None


class ShardsReport(msgspec.Struct, frozen=True):
    """The map's source (and version, 0 for the settings'), the slot-hash version, and
    every shard's status."""

    map_source: str
    slot_hash_version: int
    slots: int
    shards: list[ShardStatus]
    map_version: int = 0


def _where(path: object, dsn: str | None) -> str:
    if path is not None:
        return str(path)
    # The database only: a DSN may carry a password.
    return (dsn or "").rsplit("/", 1)[-1].split("?", 1)[0]


async def shards_status(settings: Settings) -> ShardsReport:
    """Read the topology of ``settings`` and each shard's usage (all shards at once)."""
    shard_map = shard_map_of(settings)
    specs = shard_specs(settings)

    stored: list[tuple[int, str] | None] = [None]

    async def usage_of(index: int) -> ShardUsage | None:
        spec = specs[index]
        if spec.path is not None and not spec.path.exists():
            return None
        store = shard_store(spec, settings)
        await store.start()
        try:
            if index == 0:  # the key shard keeps the cluster's map
                stored[0] = await store.slot_maps.newest(catalog=True)
            return await store.usage()
        finally:
            await store.stop()

    usages = await asyncio.gather(*(usage_of(i) for i in range(len(specs))))
    version = 0
    if stored[0] is not None:
        version, text = stored[0]
        shard_map = decode_map(text)
    shards = []
    for spec, usage in zip(specs, usages, strict=True):
        ranges = [(r.first, r.last) for r in shard_map.ranges if r.shard == spec.name]
        shards.append(
            ShardStatus(
                name=spec.name,
                backend=spec.backend,
                where=_where(spec.path, spec.dsn),
                slots=ranges,
                slot_count=sum(hi - lo + 1 for lo, hi in ranges),
                prefixes=[p.prefix for p in shard_map.prefixes if p.shard == spec.name],
                usage=usage,
            )
        )
    return ShardsReport(
        map_source="shards" if version else "settings",
        slot_hash_version=SLOT_HASH_VERSION,
        slots=SLOTS,
        shards=shards,
        map_version=version,
    )


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in ranges) or "-"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns


def print_shards(report: ShardsReport, console: Console) -> None:
    table = Table(
        title=f"{len(report.shards)} shard(s); slot map from the {report.map_source}"
        + (f" (version {report.map_version})" if report.map_version else "")
        + ", "
        f"{report.slots} slots, slot hash v{report.slot_hash_version}",
        caption="; ".join(f"{s.name}: {s.where}" for s in report.shards),
    )
    for column in ("shard", "backend", "slots", "share", "accounts", "transfers", "open sagas"):
        table.add_column(column, justify="right" if column != "shard" else "left")
    table.add_column("size", justify="right")
    for s in report.shards:
        u = s.usage
        pinned = f" + {', '.join(s.prefixes)}" if s.prefixes else ""
        table.add_row(
            s.name,
            s.backend,
            _ranges(s.slots) + pinned,
            f"{s.slot_count / report.slots:.0%}",
            *(
                (f"{u.accounts:,}", f"{u.transfers:,}", f"{u.open_sagas:,}", _size(u.bytes))
                if u is not None
                else ("missing", "-", "-", "-")
            ),
        )
    console.print(table)
