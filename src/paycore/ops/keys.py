"""``paycore keys``: create, list, revoke and rotate API keys (``paycore.api.auth``).

Each action opens the topology's store (every key lives on its first shard), does its
work, and closes it. A new key is printed once: only its hash is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from rich.console import Console
from rich.markup import escape

from paycore.api.auth import ApiKeys, NewKey, Scope
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.storage.keys import ApiKeyRow

__all__ = ["create_key", "list_keys", "revoke_key", "rotate_key"]

T = TypeVar("T")


async def _with_keys(settings: Settings, work: Callable[[ApiKeys], Awaitable[T]]) -> T:
    store = build_store(settings)
    await store.start()
    try:
        return await work(ApiKeys(store))
    finally:
        await store.stop()


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _show_new(console: Console, new: NewKey, verb: str) -> None:
    row = new.row
    console.print(
        f"[bold green]{verb}[/] API key [bold]{row.id}[/] for tenant [bold]{escape(row.tenant)}[/]"
        f" with scopes {row.scopes}"
        + (f", expires {_when(row.expires_at)}" if row.expires_at else "")
    )
    console.print("[yellow]Store it now: it is shown only this once.[/]")
    console.print(new.token, markup=False, highlight=False, soft_wrap=True)


async def create_key(
    settings: Settings,
    console: Console,
    tenant: str,
    scopes: frozenset[Scope],
    expires_in_seconds: int | None = None,
) -> NewKey:
    new = await _with_keys(
        settings, lambda keys: keys.create(tenant, scopes, expires_in_seconds=expires_in_seconds)
    )
    _show_new(console, new, "Created")
    return new


async def list_keys(settings: Settings, console: Console) -> list[ApiKeyRow]:
    rows = await _with_keys(settings, lambda keys: keys.list())
    # Plain columns, one key a line (scripts read it; a table would squeeze the ids).
    lines = [("id", "tenant", "scopes", "created", "expires", "revoked", "replaced_by")]
    lines += [
        (r.id, r.tenant, r.scopes, _when(r.created_at), _when(r.expires_at),
         _when(r.revoked_at), r.replaced_by or "-")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        text = "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    return rows


async def revoke_key(settings: Settings, console: Console, key_id: str) -> ApiKeyRow | None:
    row = await _with_keys(settings, lambda keys: keys.revoke(key_id))
    if row is not None:
        console.print(f"Revoked API key [bold]{row.id}[/] at {_when(row.revoked_at)}")
    return row


async def rotate_key(
    settings: Settings, console: Console, key_id: str, grace_seconds: int
) -> tuple[NewKey, ApiKeyRow]:
    new, old = await _with_keys(
        settings, lambda keys: keys.rotate(key_id, grace_seconds=grace_seconds)
    )
    _show_new(console, new, "Rotated: new")
    console.print(f"The old key {old.id} is refused from {_when(old.revoked_at)}")
    return new, old
