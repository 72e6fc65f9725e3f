"""The workers' passes: end what has been in flight too long (asking the processor
what became of each reference), and expire authorizations that ran out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol, TypeVar

from paycore.errors import ErrorCode, PaycoreError
from paycore.logs import bound
from paycore.payments.flows.capture import record_capture, record_void, release
from paycore.payments.flows.card import record_authorization, record_give_back, send_give_back
from paycore.payments.flows.context import Context, log
from paycore.payments.flows.model import PaymentView, Reply, ResolveReport
from paycore.payments.flows.payout import record_payout
from paycore.payments.flows.refund import record_refund
from paycore.payments.flows.rows import (
    NS,
    status_result,
)
from paycore.payments.flows.wallet import run_wallet_transfer, wallet_move
from paycore.payments.flows.work import UnitOfWork
from paycore.payments.intents import (
    CancelReason,
    CaptureMethod,
    PaymentStatus,
    PayoutStatus,
    PendingOp,
    RefundStatus,
)
from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.storage.base import Fence
from paycore.storage.payments import AttemptRow, PaymentRow, PayoutRow, RefundRow

__all__ = [
    "expire_authorizations",
    "resolve_processing",
]

_E = ErrorCode
# Pages of the resolver's work per shard and pass (each of ``limit`` rows).
_RESOLVE_PAGES = 100
_APPROVED_AUTHORIZATION = frozenset({"authorized", "captured", "refunded"})


async def resolve_processing(
    ctx: Context,
    *,
    fence: Fence | None,
    older_than: float,
    limit: int,
    shards: Sequence[str] | None,
) -> ResolveReport:
    """End what has been in flight for ``older_than`` seconds or more (a crash, or an
    AMBIGUOUS answer): ask the processor what became of each reference, record it."""
    work = UnitOfWork(ctx, None, fence=fence)
    report = ResolveReport()
    before = ctx.clock() - int(older_than * NS)
    for shard in shards or list(ctx.shards):
        reads = ctx.reads(shard)
        processing = partial(reads.payments_in, PaymentStatus.PROCESSING.value, before, limit)
        async for row in _pages(processing, limit):
            await _guarded(report, row.id, _resolve_payment(work, shard, row))
        pending = partial(reads.refunds_in, RefundStatus.PENDING.value, before, limit)
        async for refund in _pages(pending, limit):
            await _guarded(report, refund.id, _resolve_refund(work, shard, refund))
        paying = partial(reads.payouts_in, PayoutStatus.PROCESSING.value, before, limit)
        async for payout in _pages(paying, limit):
            await _guarded(report, payout.id, _resolve_payout(work, shard, payout))
    return report


class _Row(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def updated_at(self) -> int: ...


_R = TypeVar("_R", bound=_Row)


async def _pages(
    fetch: Callable[[tuple[int, str] | None], Awaitable[Sequence[_R]]], limit: int
) -> AsyncIterator[_R]:
    """The rows ``fetch`` gives, page by page (``limit`` rows each, at most
    ``_RESOLVE_PAGES`` pages a pass), so rows whose processor cannot answer now never
    hide the ones behind them."""
    after: tuple[int, str] | None = None
    for _ in range(_RESOLVE_PAGES):
        rows = await fetch(after)
        for row in rows:
            yield row
        if len(rows) < limit:
            return
        after = (rows[-1].updated_at, rows[-1].id)


async def _guarded(report: ResolveReport, object_id: str, work: Awaitable[bool]) -> None:
    try:
        with bound(payment=object_id):  # a refund's or payout's id names its own row
            done = await work
    except PaycoreError as exc:
        if exc.code is _E.FENCING_TOKEN_STALE:
            raise
        report.failures += 1
        log.warning("resolving %s failed for now: %s", object_id, exc)
        return
    (report.resolved if done else report.still_open).append(object_id)


def _ended(reply: Reply, *, unlike: PaymentStatus) -> bool:
    """Whether ``reply`` shows the payment in another status than ``unlike``."""
    return isinstance(reply.outcome, PaymentView) and (reply.outcome.payment.status != unlike.value)


async def _resolve_give_back(work: UnitOfWork, shard: str, row: PaymentRow) -> bool:
    attempts = await work.ctx.reads(shard).attempts(row.id)
    current = [a for a in attempts if a.reference == row.pending_reference]
    if not current:
        return False
    give = current[-1]
    # The processor's word first (the give-back may have been done, its answer lost);
    # else send it again: void and refund are idempotent by reference.
    looked_up = give.reference if give.operation == Operation.REFUND.value else None
    state = await work.ctx.status(row.processor, looked_up or row.authorization_reference or "")
    if state in ("refunded", "voided"):
        result = status_result(give, state, approved=frozenset({"refunded", "voided"}))
    else:
        result = await send_give_back(work, row, give)
        if result.outcome is not Outcome.APPROVED:
            return False
    earlier = [a for a in attempts if a.seq < give.seq]
    reply = await record_give_back(work, shard, row, [*earlier, give], result)
    return isinstance(reply.outcome, PaymentView) and (
        reply.outcome.payment.status == PaymentStatus.FAILED.value
    )


async def _resolve_payment(work: UnitOfWork, shard: str, row: PaymentRow) -> bool:
    ctx = work.ctx
    op = PendingOp(row.pending_op) if row.pending_op else None
    reference = row.pending_reference or ""
    if op is PendingOp.GIVE_BACK:
        return await _resolve_give_back(work, shard, row)
    if op is PendingOp.TRANSFER:
        reply = await run_wallet_transfer(work, shard, row, wallet_move(row), wait=False)
        return _ended(reply, unlike=PaymentStatus.PROCESSING)
    attempts = await ctx.reads(shard).attempts(row.id)
    current = [a for a in attempts if a.reference == reference]
    if not current:
        return False
    attempt = current[-1]
    earlier = [a for a in attempts if a.seq < attempt.seq]
    if op is PendingOp.AUTHORIZE:
        state = await ctx.status(row.processor, reference)
        if state is None:
            return False
        result = status_result(attempt, state, approved=_APPROVED_AUTHORIZATION)
        if (
            result.outcome is Outcome.APPROVED
            and state == "authorized"
            and row.capture_method == CaptureMethod.AUTOMATIC.value
        ):
            # Authorized but not captured: capture it now (idempotent by reference).
            capture = await ctx.call(
                row.processor or "",
                Operation.CAPTURE,
                f"{reference}.c",
                lambda c: c.capture(reference, row.amount, f"{reference}.c"),
            )
            if capture.outcome is not Outcome.APPROVED:
                return False
        await record_authorization(work, shard, row, [*earlier, attempt], result)
        return True
    if op is PendingOp.CAPTURE:
        state = await ctx.status(row.processor, reference)
        if state is None:
            return False
        result = status_result(attempt, state, approved=frozenset({"captured", "refunded"}))
        await record_capture(work, shard, row, [*earlier, attempt], result)
        return True
    if op is PendingOp.VOID:
        authorization = row.authorization_reference or ""
        state = await ctx.status(row.processor, authorization)
        if state is None:
            return False
        if state not in ("voided", "not_found", "declined"):
            # Not voided yet: send the void again (idempotent), take its answer.
            result = await ctx.call(
                row.processor or "",
                Operation.VOID,
                reference,
                lambda c: c.void(authorization),
            )
        else:
            result = status_result(attempt, "voided", approved=frozenset({"voided"}))
        if result.outcome is Outcome.AMBIGUOUS:
            return False
        await record_void(work, shard, row, [*earlier, attempt], result)
        return True
    return False


async def _asked(
    work: UnitOfWork, shard: str, parent: RefundRow | PayoutRow, approved: str
) -> tuple[list[AttemptRow], ProcessorResult] | None:
    """The attempts of a refund or payout and what its processor now says of the last
    one (``approved``: the state that means it was done); None: nothing to ask, or no
    answer."""
    attempts = await work.ctx.reads(shard).attempts(parent.id)
    if not attempts:
        return None
    attempt = attempts[-1]
    state = await work.ctx.status(parent.processor, attempt.reference)
    if state is None:
        return None
    return [*attempts], status_result(attempt, state, approved=frozenset({approved}))


async def _resolve_refund(work: UnitOfWork, shard: str, refund: RefundRow) -> bool:
    asked = await _asked(work, shard, refund, "refunded")
    if asked is not None:
        attempts, result = asked
        await record_refund(work, shard, refund, attempts[-1], result)
    return asked is not None


async def _resolve_payout(work: UnitOfWork, shard: str, payout: PayoutRow) -> bool:
    asked = await _asked(work, shard, payout, "paid_out")
    if asked is not None:
        await record_payout(work, shard, payout, *asked)
    return asked is not None


async def expire_authorizations(
    ctx: Context, *, fence: Fence | None, limit: int, shards: Sequence[str] | None
) -> list[str]:
    """Turn ``requires_capture`` payments whose authorization ran out into canceled
    (reason expired; succeeded if a part was captured), releasing their holds."""
    work = UnitOfWork(ctx, None, fence=fence)
    ended: list[str] = []
    now = ctx.clock()
    for shard in shards or list(ctx.shards):
        for row in await ctx.reads(shard).authorizations_due(now, limit):
            reply = await release(work, shard, row, (), None, reason=CancelReason.EXPIRED)
            if _ended(reply, unlike=PaymentStatus.REQUIRES_CAPTURE):
                ended.append(row.id)
    return ended
