"""A payout from a wallet to a bank account: a hold on the wallet toward the
processor's account, the processor's payout (falling back to the next processor on a
definite failure, the hold moved with it), then the hold posted (paid) or voided."""

from __future__ import annotations

from paycore.errors import PaycoreError
from paycore.ledger.model import TransferFlags, TransferRequest
from paycore.payments.accounts import new_id, psp_account_id, transfer_id
from paycore.payments.flows import holds
from paycore.payments.flows.model import NewPayout, PayoutView, Reply, RouteLike
from paycore.payments.flows.outcomes import (
    REQUEST_CODES,
    Step,
)
from paycore.payments.flows.rows import (
    attempt,
    bump,
    check_amount,
    fallback,
    finished,
    finished_last,
    psp_request,
    routed,
    settle,
)
from paycore.payments.flows.work import UnitOfWork, Written
from paycore.payments.intents import PayoutStatus
from paycore.payments.processors.base import Operation, Outcome, PayoutRequest, ProcessorResult
from paycore.storage.payments import AccountCheck, AttemptRow, PaymentWrite, PayoutRow

__all__ = [
    "payout",
    "record_payout",
]


async def payout(work: UnitOfWork, new: NewPayout) -> Reply:
    """Pay ``new.amount`` out of a wallet to a bank account, through a processor."""
    ctx = work.ctx
    seen = await work.replay_or_resume()
    if isinstance(seen, Reply):
        return seen
    check_amount(new.amount)
    payout_id = seen.id if seen is not None else new_id("po")
    resumed = seen is not None
    try:
        await ctx.open_account(new.wallet_account_id, new.currency, new.tenant)
        route = ctx.router.route(merchant=new.wallet_account_id, currency=new.currency)
        candidates = ctx.candidates(route, new.currency, "payouts")
    except PaycoreError as exc:
        return await work.refuse(exc, resumed=resumed)
    shard = ctx.shard_of(new.wallet_account_id)
    now = ctx.clock()
    first = attempt(payout_id, 1, Operation.PAYOUT, candidates[0], amount=new.amount, now=now)
    current = routed(first, route, candidates, 0)
    hold = _hold(payout_id, 1, shard, candidates[0], new)
    row = PayoutRow(
        id=payout_id,
        wallet_account_id=new.wallet_account_id,
        amount=new.amount,
        currency=new.currency,
        destination=new.destination,
        status=PayoutStatus.PROCESSING.value,
        processor=candidates[0],
        hold_id=hold.id,
        attempt_count=1,
        idempotency_key=None if work.keyed is None else work.keyed.key,
        created_at=now,
        updated_at=now,
    )
    claim = await work.claim(
        resumed=resumed, kind="payout", object_id=payout_id, shard=shard, seq=0
    )
    write = PaymentWrite(
        shard=shard,
        payout=row,
        accounts=(AccountCheck(new.wallet_account_id, new.currency),),
        transfers=(hold,),
        ensure_accounts=psp_request(hold.credit_account_id or "", new.currency),
        attempts=(current,),
    )
    started = await work.start(Step(write), claim)
    if started.state is Written.REFUSED:
        if started.code in REQUEST_CODES:
            return await work.refuse(started.refusal())
        # The wallet cannot cover it (limits, holds included): the payout failed.
        step = holds.payout_refused(shard, row, started.code, started.detail, now)
        return await work.record_refused(step, claim)
    attempts = [current]
    index = 0
    while True:
        reference = current.reference
        payout_request = PayoutRequest(reference, new.amount, new.currency, new.destination)
        result = await ctx.call(
            current.processor,
            Operation.PAYOUT,
            reference,
            lambda c, r=payout_request: c.payout(r),  # type: ignore[misc]
        )
        if result.outcome is Outcome.FAILED and index + 1 < len(candidates):
            index += 1
            moved = await _next_processor(
                work, shard, row, attempts, result,
                route=route, candidates=candidates, index=index, new=new,
            )  # fmt: skip
            if moved is None:
                return await work.current("payout", payout_id)
            row, current = moved
            continue
        return await record_payout(work, shard, row, attempts, result)


def _hold(payout_id: str, seq: int, shard: str, processor: str, new: NewPayout) -> TransferRequest:
    return TransferRequest(
        id=transfer_id(payout_id, f"h{seq}"),
        debit_account_id=new.wallet_account_id,
        credit_account_id=psp_account_id(shard, processor, new.currency),
        amount=new.amount,
        currency=new.currency,
        flags=TransferFlags(pending=True),
        metadata={"payout": payout_id},
    )


async def _next_processor(
    work: UnitOfWork,
    shard: str,
    row: PayoutRow,
    attempts: list[AttemptRow],
    failed: ProcessorResult,
    *,
    route: RouteLike,
    candidates: list[str],
    index: int,
    new: NewPayout,
) -> tuple[PayoutRow, AttemptRow] | None:
    """Move the payout (and its hold, which names the processor's account) to the
    next processor, in one transaction, before calling it."""
    now = work.ctx.clock()
    done = finished(attempts[-1], failed, now)
    following = fallback(
        row, Operation.PAYOUT, route=route, candidates=candidates, index=index, now=now
    )
    seq, name = following.seq, following.processor
    hold = _hold(row.id, seq, shard, name, new)
    assert row.hold_id is not None
    release = settle(transfer_id(row.id, f"v{seq - 1}"), row.hold_id, post=False, payout=row.id)
    moved = bump(row, now, processor=name, hold_id=hold.id, attempt_count=seq)
    write = PaymentWrite(
        shard=shard,
        payout=moved,
        payout_version=row.version,
        transfers=(release, hold),
        ensure_accounts=psp_request(hold.credit_account_id or "", row.currency),
        attempts=(done, following),
    )
    return (moved, following) if await work.move_on(write, attempts) else None


async def record_payout(
    work: UnitOfWork,
    shard: str,
    row: PayoutRow,
    attempts: list[AttemptRow],
    result: ProcessorResult,
) -> Reply:
    now = work.ctx.clock()
    done, all_attempts = finished_last(attempts, result, now)
    if result.outcome is Outcome.AMBIGUOUS:
        return await work.record_unknown(PayoutView(row, all_attempts, shard), done)
    written = await work.commit(holds.paid_out(shard, row, all_attempts, result, now))
    complaint = "payout %s: recording the outcome refused: %s"
    return await work.finish(written, "payout", row.id, complaint)
