"""Read presentation: stored rows shown to clients as one store would show them.

A cross-shard transfer is stored as several rows (the saga's hold on its source, the
credit leg on its target, step 3's bookkeeping); a client sees one transfer, A to B,
with one timestamp on both shards. An id that names no shard is read on every shard in
parallel (one indexed read each) and its copies merged here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from paycore.cluster.settlement import SOURCE_ROLES, is_bookkeeping, present_view, saga_info
from paycore.cluster.split import gather_all
from paycore.ledger.model import Account, TransferView
from paycore.storage.base import TransferPage
from paycore.storage.listing import (
    AccountFilter,
    ListPage,
    Page,
    TransferFilter,
    key_of_account,
    key_of_view,
    merge_pages,
)
from paycore.storage.store import Store

__all__ = [
    "client_page",
    "client_view",
    "find_holds",
    "get_transfer",
    "get_transfers",
    "list_accounts",
    "list_transfers",
]


async def get_transfers(shards: Mapping[str, Store], ids: list[str]) -> dict[str, TransferView]:
    """Each id as ``get_transfer`` shows it, in one read per shard."""
    parts = await gather_all(s.get_transfers(ids) for s in shards.values())
    found: dict[str, list[TransferView]] = {}
    for views in parts:
        for transfer_id, view in views.items():
            found.setdefault(transfer_id, []).append(view)
    return {transfer_id: client_view(views) for transfer_id, views in found.items()}


def client_view(present: list[TransferView]) -> TransferView:
    # A saga's transfers on its source (the hold, a client's post or void of it) are
    # the client's; the target's leg shows the same transfer from B's side. A client's
    # hold is usable (pending) once its target leg exists, in flight before.
    legs = {(saga_info(v.transfer.metadata) or {}).get("role") for v in present}
    for view in present:
        info = saga_info(view.transfer.metadata)
        if info is not None and info.get("role") in SOURCE_ROLES:
            return present_view(view, settled="credit" in legs)
    return present_view(present[0])


async def get_transfer(shards: Mapping[str, Store], transfer_id: str) -> TransferView | None:
    """``transfer_id`` as a client sees it, read on every shard."""
    views = await gather_all(s.get_transfer(transfer_id) for s in shards.values())
    present = [v for v in views if v is not None]
    return client_view(present) if present else None


def client_page(page: TransferPage) -> TransferPage:
    """A page of an account's transfers on a cluster, as the client sees it."""
    # A saga shows as its client transfer alone: its step 3 (xs.post / xs.void, which
    # moved the hold's amount once more on paper) is the settlement's bookkeeping. A
    # page may so hold fewer than ``limit`` items; its cursor still goes on correctly.
    shown = [present_view(v) for v in page.data if not is_bookkeeping(v.transfer)]
    return TransferPage(shown, page.next_cursor)


async def find_holds(
    shards: Mapping[str, Store], ids: set[str]
) -> dict[str, tuple[str, TransferView]]:
    """Where each of ``ids`` is stored (a hold preferred over a saga's credit leg)."""
    if not ids:
        return {}
    order = sorted(ids)
    names = list(shards)
    parts = await gather_all(shards[s].get_transfers(order) for s in names)
    found: dict[str, tuple[str, TransferView]] = {}
    for shard, views in zip(names, parts, strict=True):
        for transfer_id, view in views.items():
            best = found.get(transfer_id)
            if best is None or _hold_rank(view) > _hold_rank(best[1]):
                found[transfer_id] = (shard, view)
    return found


def _hold_rank(view: TransferView) -> int:
    """Which copy of an id a post or void names: a client's hold or a saga's hold on its
    source first, then any other pending transfer, then the rest."""
    info = saga_info(view.transfer.metadata)
    if info is not None and info.get("role") == "hold":
        return 2
    return 1 if view.transfer.flags.pending and info is None else 0


async def list_accounts(
    shards: Mapping[str, Store], f: AccountFilter, page: Page
) -> ListPage[Account]:
    """A page of accounts over every shard: each read with the same keyset and limit, the
    pages merged by (timestamp, id)."""
    parts = await gather_all(s.list_accounts(f, page) for s in shards.values())
    return merge_pages(parts, page, key_of_account)


async def list_transfers(
    shards: Mapping[str, Store], shard_for: Callable[[str], str], f: TransferFilter, page: Page
) -> ListPage[TransferView]:
    """A page of transfers over the shards, each shown as ``get_transfer`` shows it.

    With ``account_id``, the account's shard alone holds every transfer touching it (a
    saga's credit leg stands for the transfer there); else every shard is read and a
    saga is listed by its copy on the source (its credit leg, on the target, is the same
    transfer again). A saga's copies are shown merged as a read of its id shows them
    (one more read of the page's sagas), and ``status`` is checked on what is shown; a
    page may so hold fewer than ``limit`` items, and the cursor still goes on correctly.
    """
    names = list(shards) if f.account_id is None else [shard_for(f.account_id)]
    wide = msgspec.structs.replace(f, saga_statuses=True)
    parts = await gather_all(shards[s].list_transfers(wide, page) for s in names)
    merged = merge_pages(parts, page, key_of_view)
    listed = [v for v in merged.items if _listed(v, by_account=f.account_id is not None)]
    sagas = [v.transfer.id for v in listed if saga_info(v.transfer.metadata) is not None]
    shown = await get_transfers(shards, sagas) if sagas else {}
    views = [shown.get(v.transfer.id, v) for v in listed]
    if f.status is not None:
        views = [v for v in views if v.status == f.status]
    return ListPage(views, merged.next_after)


def _listed(view: TransferView, *, by_account: bool) -> bool:
    if is_bookkeeping(view.transfer):
        return False
    info = saga_info(view.transfer.metadata)
    return by_account or info is None or info.get("role") != "credit"
