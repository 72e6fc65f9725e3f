"""Batch cutting: a batch run in segments, in order, when its parts cannot all run at once.

A batch normally runs as one: cut per shard (``paycore.cluster.dispatch``), the parts
in parallel. That is only right when no item depends on what an earlier item did on
another shard. So a batch is cut at a linked chain spanning shards (it runs through
``paycore.cluster.chains``), before an item that posts or voids a cross-shard hold an
earlier item opened, and before a debit of a limited account an earlier item credits
from another shard (that credit lands after its own shard answered). The segments then
run one after the other, each seeing what the earlier ones did, as on one shard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from paycore.cluster.chains import chain_spans, run_chain
from paycore.cluster.dispatch import split_command
from paycore.cluster.placement import crosses
from paycore.cluster.routing import Router
from paycore.cluster.saga_drive import drive
from paycore.cluster.settlement import saga_info
from paycore.cluster.split import gather_all
from paycore.ledger.model import TransferRequest, TransferView
from paycore.storage.base import CreateTransfers

__all__ = ["Segment", "chains_across", "run_segments"]

# ``(start, end, holds)``: items ``start:end`` of a batch, ``holds`` set for a linked
# chain spanning shards (run through ``paycore.cluster.chains``), else None.
Segment = tuple[int, int, dict[str, tuple[str, TransferView]] | None]


async def chains_across(
    store: Router, command: CreateTransfers, limited: dict[str, bool]
) -> list[Segment] | None:
    """The batch cut into segments that run one after the other, so that every item
    sees what the earlier ones did, as on one shard: ``(start, end, holds)``, holds
    set for a linked chain spanning shards. A batch is cut at such a chain, before an
    item (or chain) that posts or voids a hold across shards an earlier item opened,
    and before one that debits an account an earlier item credits from another shard
    (that credit lands after the earlier item's own shard answered), when that
    account's debits are limited (an unlimited one takes the debit either way). None when
    nothing needs cutting: the batch runs as one, its parts in parallel.

    ``limited``: the router's account id -> whether its debits are limited, filled here."""
    requests = command.requests
    named = {r.pending_id for r in requests if r.pending_id and _resolves(r)}
    known = await store.find_holds(named) if named and not store.single else {}
    await _read_limits(store, requests, known, limited)
    cuts = _BatchCuts(
        functools.partial(crosses, store.shard_for), known, lambda a: limited.get(a, False)
    )
    created: dict[str, set[str]] = {}  # id -> shards of a transfer an item creates
    i = 0
    while i < len(requests):
        r = requests[i]
        if not _resolves(r) and (r.debit_account_id or r.credit_account_id):
            account = r.debit_account_id or r.credit_account_id or ""
            created.setdefault(r.id, {store.shard_for(account)})
        if not r.flags.linked:
            cuts.item(i, [r])
            i += 1
            continue
        end = i
        while end < len(requests) and requests[end].flags.linked:
            end += 1
        if end == len(requests):  # an open chain: refused by the usual path
            break
        chain = requests[i : end + 1]
        for q in chain:
            if not _resolves(q) and (q.debit_account_id or q.credit_account_id):
                account = q.debit_account_id or q.credit_account_id or ""
                created.setdefault(q.id, {store.shard_for(account)})
        spans, holds = await chain_spans(store, chain, created)
        if spans:
            cuts.chain(i, chain, holds)
        else:
            cuts.item(i, chain)
        i = end + 1
    return cuts.done(len(requests))


async def _read_limits(
    store: Router,
    requests: Sequence[TransferRequest],
    known: Mapping[str, tuple[str, TransferView]],
    limited: dict[str, bool],
) -> None:
    """Learn whether the accounts a batch both credits across shards and debits have
    limited debits: only for those may a credit landing late change an answer."""
    if store.single:
        return
    landing: set[str] = set()
    for q in requests:
        if crosses(store.shard_for, q):
            landing.add(q.credit_account_id or "")
        elif _resolves(q) and (hold := known.get(q.pending_id or "")) is not None:
            info = saga_info(hold[1].transfer.metadata)
            if info is not None and info.get("role") == "hold":
                landing.add(str(info.get("credit_account_id", "")))
    wanted = [
        a
        for a in {q.debit_account_id for q in requests if q.debit_account_id in landing}
        if a is not None and a not in limited
    ]
    if not wanted:
        return
    found = await store.get_accounts(wanted)
    for account_id, account in found.items():
        limited[account_id] = account.flags.debit_limit() is not None


async def run_segments(
    store: Router,
    command: CreateTransfers,
    segments: Sequence[Segment],
) -> list[Any]:
    """A batch with chains spanning shards, one segment after the other (each sees
    what the earlier ones did, as items of one batch do on one shard)."""
    results: list[Any] = []
    for start, end, holds in segments:
        part = msgspec.structs.replace(command, requests=command.requests[start:end])
        if holds is None:
            split, parts = await split_command(store, part)
            answers = await gather_all(store.shards[s].execute(c) for s, c in parts.items())
            results += await drive(
                store, split, split.merge(dict(zip(parts, answers, strict=True)))
            )
        else:
            results += await run_chain(
                store, part.requests, holds, tenant=command.tenant, internal=command.internal
            )
    return results


class _BatchCuts:
    """Where a batch is cut into segments run in order (``chains_across``)."""

    def __init__(
        self,
        crosses: Callable[[TransferRequest], bool],
        known: Mapping[str, tuple[str, TransferView]],
        limited: Callable[[str], bool],
    ) -> None:
        self.crosses = crosses
        self.known = known
        # An account whose debits have no limit takes a debit whether or not a credit
        # landed before it: no cut is needed for it.
        self.limited = limited
        self.segments: list[Segment] = []
        self.start = 0
        self.opened: dict[str, int] = {}  # cross-shard hold id -> the item opening it
        # cross-shard hold id -> its credit account, for holds the batch opens (a post
        # of one lands that credit from another shard, as a plain transfer's does)
        self.opened_credit: dict[str, str] = {}
        self.landing: set[str] = set()  # accounts credited from another shard since start

    def item(self, first: int, items: Sequence[TransferRequest]) -> None:
        """Items (one, or a chain on one shard) starting at ``first``."""
        if self.start < first and self._needs_cut(items):
            self._cut(first)
        for k, q in enumerate(items, start=first):
            if self.crosses(q):
                self.landing.add(q.credit_account_id or "")
                if q.flags.pending:
                    self.opened.setdefault(q.id, k)
                    self.opened_credit.setdefault(q.id, q.credit_account_id or "")
            if _resolves(q) and (q.pending_id or "") in self.opened_credit:
                self.landing.add(self.opened_credit[q.pending_id or ""])
            hold = self.known.get(q.pending_id or "") if _resolves(q) else None
            info = None if hold is None else saga_info(hold[1].transfer.metadata)
            if info is not None and info.get("role") == "hold" and info.get("pending"):
                self.landing.add(str(info.get("credit_account_id", "")))

    def chain(
        self,
        first: int,
        items: Sequence[TransferRequest],
        holds: dict[str, tuple[str, TransferView]],
    ) -> None:
        """A linked chain spanning shards (items from ``first``): a segment of its own."""
        end = first + len(items)
        if self.start < first:
            self._cut(first)
        for q in items:
            if q.flags.pending and self.crosses(q):
                self.opened_credit.setdefault(q.id, q.credit_account_id or "")
        self.segments.append((first, end, holds))
        self.start = end
        self.landing.clear()

    def done(self, size: int) -> list[Segment] | None:
        if not self.segments:
            return None
        if self.start < size:
            self.segments.append((self.start, size, None))
        return self.segments

    def _needs_cut(self, items: Sequence[TransferRequest]) -> bool:
        return any(
            (
                q.debit_account_id is not None
                and q.debit_account_id in self.landing
                and self.limited(q.debit_account_id)
            )
            or (_resolves(q) and self.opened.get(q.pending_id or "", -1) >= self.start)
            for q in items
        )

    def _cut(self, at: int) -> None:
        self.segments.append((self.start, at, None))
        self.start = at
        self.landing.clear()


def _resolves(r: TransferRequest) -> bool:
    return r.flags.post_pending or r.flags.void_pending
