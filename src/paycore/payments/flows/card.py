"""A payment: its checks, then a card authorized through the processors the router
gives (falling back to the next on a definite failure), or a wallet (``wallet``)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.fx.settlement import LockedRate, lock_rate
from paycore.logs import bind
from paycore.payments.accounts import new_id
from paycore.payments.cards import brand_of, check_card, tokenize
from paycore.payments.flows import fx
from paycore.payments.flows.context import log
from paycore.payments.flows.model import NewPayment, PaymentView, Reply, RouteLike
from paycore.payments.flows.outcomes import (
    Step,
    authorization,
    give_back,
    given_back,
)
from paycore.payments.flows.rows import (
    NS,
    attempt,
    bump,
    check_amount,
    fallback,
    finished,
    finished_last,
    routed,
)
from paycore.payments.flows.wallet import wallet_payment
from paycore.payments.flows.work import UnitOfWork, Written
from paycore.payments.intents import CaptureMethod, PaymentStatus, PendingOp, SourceType
from paycore.payments.processors.base import (
    AuthorizeRequest,
    Operation,
    Outcome,
    ProcessorResult,
)
from paycore.storage.payments import AccountCheck, AttemptRow, PaymentRow, PaymentWrite

__all__ = [
    "create_payment",
    "record_authorization",
    "record_give_back",
    "send_give_back",
]

_E = ErrorCode
_UNRECORDED = "payment %s: the conversion was booked, recording the payment refused: %s"


async def create_payment(work: UnitOfWork, new: NewPayment) -> Reply:
    """Pay ``new.amount`` to the merchant account from a card or a wallet."""
    ctx = work.ctx
    seen = await work.replay_or_resume()
    if isinstance(seen, Reply):
        return seen  # before the card check: a retry's answer must not depend on today
    check_amount(new.amount)
    if new.card is not None:
        check_card(new.card, today=datetime.fromtimestamp(ctx.clock() / NS, UTC).date())
    payment_id = seen.id if seen is not None else new_id("pay")
    # On this request's lines from here on (the metrics middleware unbinds it at its end).
    bind(payment=payment_id)
    resumed = seen is not None
    locked: LockedRate | None = None
    try:
        if new.wallet_account_id is not None:
            await ctx.open_account(new.merchant_account_id, new.currency, new.tenant)
            if new.wallet_account_id == new.merchant_account_id:
                raise RequestError(
                    _E.ACCOUNTS_MUST_BE_DIFFERENT, "the wallet pays the merchant: two accounts"
                )
            await ctx.open_account(new.wallet_account_id, new.currency, new.tenant)
            return await wallet_payment(work, new, payment_id, resumed)
        assert new.card is not None
        merchant = new.merchant_account_id
        settlement = await ctx.settlement_currency(merchant, new.currency, new.tenant)
        if settlement is not None:
            assert ctx.fx_rates is not None
            # The rate is locked now, for the authorization and every capture and refund.
            locked = await lock_rate(
                ctx.fx_rates, ctx.fx_config, new.currency, settlement, new.amount
            )
        route = ctx.router.route(
            merchant=merchant, currency=new.currency, brand=brand_of(new.card.number)
        )
        candidates = ctx.candidates(route, new.currency, "payments")
    except PaycoreError as exc:
        return await work.refuse(exc, resumed=resumed)
    return await _card_payment(
        work, new, payment_id, route, candidates, resumed=resumed, locked=locked
    )


async def _card_payment(
    work: UnitOfWork,
    new: NewPayment,
    payment_id: str,
    route: RouteLike,
    candidates: list[str],
    *,
    resumed: bool,
    locked: LockedRate | None = None,
) -> Reply:
    assert new.card is not None
    ctx, card = work.ctx, new.card
    token = tokenize(card)
    shard = ctx.shard_of(new.merchant_account_id)
    now = ctx.clock()
    first = attempt(payment_id, 1, Operation.AUTHORIZE, candidates[0], amount=new.amount, now=now)
    current = routed(first, route, candidates, 0)
    row = PaymentRow(
        id=payment_id,
        merchant_account_id=new.merchant_account_id,
        amount=new.amount,
        currency=new.currency,
        capture_method=new.capture.value,
        status=PaymentStatus.PROCESSING.value,
        source_type=SourceType.CARD.value,
        card_brand=token.brand,
        card_last4=token.last4,
        card_token=token.token,
        card_exp_month=token.exp_month,
        card_exp_year=token.exp_year,
        processor=candidates[0],
        pending_op=PendingOp.AUTHORIZE.value,
        pending_reference=current.reference,
        pending_amount=new.amount,
        attempt_count=1,
        idempotency_key=None if work.keyed is None else work.keyed.key,
        created_at=now,
        updated_at=now,
    )
    settles_in = new.currency
    if locked is not None:
        settles_in = locked.settlement
        row = msgspec.structs.replace(
            row, settlement_currency=settles_in, fx_rate=locked.rate, fx_mid_rate=locked.mid_rate
        )
    claim = await work.claim(
        resumed=resumed, kind="payment", object_id=payment_id, shard=shard, seq=0
    )
    checks = (AccountCheck(new.merchant_account_id, settles_in),)
    write = PaymentWrite(shard=shard, payment=row, attempts=(current,), accounts=checks)
    started = await work.start(Step(write), claim)
    if started.state is Written.REFUSED:
        return await work.refuse(started.refusal())
    attempts = [current]
    index = 0
    while True:
        request = AuthorizeRequest(
            reference=current.reference,
            amount=new.amount,
            currency=new.currency,
            card=card,
            capture=new.capture is CaptureMethod.AUTOMATIC,
        )
        result = await ctx.call(
            current.processor,
            Operation.AUTHORIZE,
            current.reference,
            lambda c, r=request: c.authorize(r),  # type: ignore[misc]
        )
        if result.outcome is Outcome.FAILED and index + 1 < len(candidates):
            index += 1
            moved = await _next_processor(
                work, shard, row, attempts, result, route=route, candidates=candidates, index=index
            )
            if moved is None:  # someone else recorded an end meanwhile (the resolver)
                return await work.current("payment", payment_id)
            row, current = moved
            continue
        return await record_authorization(work, shard, row, attempts, result)


async def _next_processor(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    attempts: list[AttemptRow],
    failed: ProcessorResult,
    *,
    route: RouteLike,
    candidates: list[str],
    index: int,
) -> tuple[PaymentRow, AttemptRow] | None:
    """A definite failure: record it and the next processor's new attempt (new
    reference) before calling it, so a crash never leaves a call unrecorded."""
    now = work.ctx.clock()
    done = finished(attempts[-1], failed, now)
    following = fallback(
        row, Operation.AUTHORIZE, route=route, candidates=candidates, index=index, now=now
    )
    moved = bump(
        row,
        now,
        processor=following.processor,
        pending_reference=following.reference,
        attempt_count=following.seq,
    )
    write = PaymentWrite(
        shard=shard, payment=moved, payment_version=row.version, attempts=(done, following)
    )
    return (moved, following) if await work.move_on(write, attempts) else None


async def record_authorization(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    attempts: list[AttemptRow],
    result: ProcessorResult,
) -> Reply:
    """Record an authorization's outcome (tx2); also the resolver's way to end one."""
    ctx = work.ctx
    now = ctx.clock()
    done, all_attempts = finished_last(attempts, result, now)
    if result.outcome is Outcome.AMBIGUOUS:
        return await work.record_unknown(PaymentView(row, all_attempts, shard), done)
    step = authorization(
        shard, row, all_attempts, result, now, authorization_seconds=ctx.authorization_seconds
    )
    refusal: tuple[ErrorCode, str] | None = None
    if step.settlement is not None:
        # Settled through a conversion: its chain first (fx), then the payment.
        refusal = await fx.book(ctx, shard, row, step.settlement)
    if refusal is None:
        written = await work.commit(step)
        if written.state is Written.DONE:
            return written.reply
        if written.state is Written.CONFLICT or step.settlement is not None:
            # Recorded by someone else meanwhile; or (the chain booked) left processing
            # for the resolver to record again.
            return await work.finish(written, "payment", row.id, _UNRECORDED)
        refusal = (written.code, written.detail)
    # The processor took the money but the ledger refuses it (the merchant's account
    # was closed in between): give it back at the processor, durably: the give-back
    # is recorded (the payment stays processing) before it is sent, and the resolver
    # sends it again until the processor has done it; only then does the payment fail.
    log.warning("payment %s: ledger refused the approved authorization: %s", row.id, refusal)
    giving, give = give_back(row, done, *refusal, now)
    write = PaymentWrite(
        shard=shard, payment=giving, payment_version=row.version, attempts=(done, give)
    )
    if (await work.commit(Step(write))).state is not Written.DONE:
        return await work.current("payment", row.id)
    result = await send_give_back(work, giving, give)
    return await record_give_back(work, shard, giving, [*all_attempts, give], result)


async def send_give_back(work: UnitOfWork, row: PaymentRow, give: AttemptRow) -> ProcessorResult:
    """Void the authorization, or refund the captured amount (idempotent by reference)."""
    assert row.processor is not None
    authorization = row.authorization_reference or ""
    if give.operation == Operation.VOID.value:
        return await work.ctx.call(
            row.processor, Operation.VOID, give.reference, lambda c: c.void(authorization)
        )
    return await work.ctx.call(
        row.processor,
        Operation.REFUND,
        give.reference,
        lambda c: c.refund(authorization, row.amount, give.reference),
    )


async def record_give_back(
    work: UnitOfWork,
    shard: str,
    row: PaymentRow,
    attempts: list[AttemptRow],
    result: ProcessorResult,
) -> Reply:
    """The give-back's answer: done, the payment fails (with the ledger's reason);
    not done, it stays processing for the resolver (the card is still charged)."""
    now = work.ctx.clock()
    step = given_back(shard, row, finished_last(attempts, result, now)[1], result, now)
    return await work.finish(await work.commit(step), "payment", row.id)
