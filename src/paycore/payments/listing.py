"""Pages of payments, refunds and payouts over the shards (``GET /v1/payments`` ...).

A payment and its refunds live on the shard of the account it credits, a payout on its
wallet's (``paycore.storage.payments``). A listing filtered by that account reads its
shard alone; any other reads every shard with the same keyset and limit and merges the
pages by (created_at, id) (``paycore.storage.listing.merge_pages``). Each item comes with
what a read of its id shows (attempts; a payment's refunds), read once per shard and page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from paycore.cluster.split import gather_all
from paycore.payments.service import PaymentService, PaymentView, PayoutView, RefundView
from paycore.storage.listing import (
    ListPage,
    Page,
    PaymentFilter,
    PayoutFilter,
    RefundFilter,
    key_of_row,
    merge_pages,
)
from paycore.storage.payments import AttemptRow, PaymentRow, PayoutRow, RefundRow

__all__ = ["PaymentWithRefunds", "list_payments", "list_payouts", "list_refunds", "refunds_of"]

R = TypeVar("R", PaymentRow, RefundRow, PayoutRow)
A = TypeVar("A", RefundRow, PayoutRow)  # a row with attempts of its own
V = TypeVar("V")
T = TypeVar("T")

# A payment as ``GET /v1/payments/{id}`` shows it: with its refunds.
PaymentWithRefunds = tuple[PaymentView, list[RefundView]]


def _shards(service: PaymentService, account_id: str | None) -> list[str]:
    return list(service.shards) if account_id is None else [service.shard_of(account_id)]


async def list_payments(
    service: PaymentService, f: PaymentFilter, page: Page
) -> ListPage[PaymentWithRefunds]:
    names = _shards(service, f.merchant_account_id)
    merged = await _merged(names, lambda s: service.lists(s).payments(f, page), page)
    by_shard = _group(merged.items)
    found = await gather_all(_payments_on(service, s, rows) for s, rows in by_shard.items())
    views = {view[0].payment.id: view for part in found for view in part}
    return ListPage([views[row.id] for _, row in merged.items], merged.next_after)


async def list_refunds(
    service: PaymentService, f: RefundFilter, page: Page
) -> ListPage[RefundView]:
    # Every shard, even with payment_id: each reads one payment's few index entries.
    names = list(service.shards)
    merged = await _merged(names, lambda s: service.lists(s).refunds(f, page), page)
    return await _with_attempts(service, merged, RefundView)


async def list_payouts(
    service: PaymentService, f: PayoutFilter, page: Page
) -> ListPage[PayoutView]:
    names = _shards(service, f.wallet_account_id)
    merged = await _merged(names, lambda s: service.lists(s).payouts(f, page), page)
    return await _with_attempts(service, merged, PayoutView)


async def _merged(
    names: list[str], read: Callable[[str], Awaitable[ListPage[R]]], page: Page
) -> ListPage[tuple[str, R]]:
    """The pages ``read`` from the shards ``names`` as one, each row tagged by its shard."""
    parts = await gather_all(read(s) for s in names)
    return merge_pages([_tagged(s, p) for s, p in zip(names, parts, strict=True)], page, _key)


async def _with_attempts(
    service: PaymentService,
    merged: ListPage[tuple[str, A]],
    view: Callable[[A, tuple[AttemptRow, ...], str], V],
) -> ListPage[V]:
    """Each refund or payout of ``merged`` with its attempts, as ``view`` shows it."""
    attempts = await _attempts(service, merged.items)
    views = [view(row, tuple(attempts.get(row.id, ())), s) for s, row in merged.items]
    return ListPage(views, merged.next_after)


async def refunds_of(service: PaymentService, payment: PaymentView) -> list[RefundView]:
    """``payment``'s refunds, oldest first, as ``GET /v1/refunds/{id}`` shows each."""
    found = await _payments_on(service, payment.shard, [payment.payment])
    return found[0][1]


async def _payments_on(
    service: PaymentService, shard: str, rows: Sequence[PaymentRow]
) -> list[PaymentWithRefunds]:
    lists = service.lists(shard)
    refunds = await lists.refunds_of([p.id for p in rows])
    parents = [p.id for p in rows] + [r.id for found in refunds.values() for r in found]
    attempts = await lists.attempts_of(parents)

    def view(p: PaymentRow) -> PaymentWithRefunds:
        return PaymentView(p, tuple(attempts.get(p.id, ())), shard), [
            RefundView(r, tuple(attempts.get(r.id, ())), shard) for r in refunds.get(p.id, [])
        ]

    return [view(p) for p in rows]


async def _attempts(
    service: PaymentService, items: Sequence[tuple[str, RefundRow | PayoutRow]]
) -> dict[str, list[AttemptRow]]:
    by_shard = _group(items)
    found = await gather_all(
        service.lists(s).attempts_of([r.id for r in rows]) for s, rows in by_shard.items()
    )
    return {parent: rows for part in found for parent, rows in part.items()}


def _tagged(shard: str, page: ListPage[R]) -> ListPage[tuple[str, R]]:
    """A shard's page with each row tagged by its shard (where its attempts are)."""
    return ListPage([(shard, row) for row in page.items], page.next_after)


def _key(item: tuple[str, PaymentRow | RefundRow | PayoutRow]) -> tuple[int, str]:
    return key_of_row(item[1])


def _group(items: Sequence[tuple[str, T]]) -> dict[str, list[T]]:
    by_shard: dict[str, list[T]] = {}
    for shard, row in items:
        by_shard.setdefault(shard, []).append(row)
    return by_shard
