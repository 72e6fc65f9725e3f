"""The payment service: intents, captures, cancels, refunds and payouts over the ledger.

Where things live: a payment (its attempts, refunds, events and every ledger transfer
it makes) on the shard of the account it credits, a payout on the wallet's shard. Each
step is then ONE local transaction (a ``PaymentWrite``): a state change and its money
move commit together or not at all.

A processor call is always bracketed by two transactions::

    tx1  the intent (or the capture, void, refund, payout) and its attempt are recorded,
         with our unique ``reference``; status processing (refund: pending)
    call the processor, idempotent by that reference
    tx2  the outcome: the new state, its ledger transfers, its events, and the answer
         to the request under its Idempotency-Key

A crash between the two, or an AMBIGUOUS answer, leaves the intent ``processing``;
``resolve_processing`` (a worker) later asks the processor (``status``) what happened
and records it. The processor is idempotent by reference, so nothing is ever charged
twice; a FAILED answer (definitely not done) falls back to the next processor the
router gave, with a new attempt and reference; DECLINED stops; AMBIGUOUS stops.

Idempotency-Key: the key's record lives on the key's own shard (as for every other
POST), so a reuse with another body is always refused. The first transaction claims it
with a *pointer* to the work (``PaymentWrite.key``; a separate write first when the key
lives on another shard); the transaction that records the outcome stores the answer on
the work's shard. A retry then gets the stored answer byte for byte, or 409
``idempotency_key_in_use`` while the work is still processing and nothing was answered
(a crash mid-call, or the first request still running); once the resolver has finished
it, the retry gets the intent as it is then (rendered once, stored, replayed after).

What is refused before any write is answered with a problem and changes nothing (a bad
card, an unknown or closed account, an amount over what may be captured or refunded...).
What the ledger or a processor refuses once the work started is a state: the payment,
refund or payout exists and says ``failed`` with a ``failure_code``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec

from paycore.cluster.namespaces import is_reserved
from paycore.cluster.router import ShardedStore, gather_all
from paycore.config import Settings
from paycore.errors import ErrorCode, IdempotencyError, PaycoreError, RequestError
from paycore.ledger.model import (
    SYSTEM_TENANT,
    AccountRequest,
    TransferFlags,
    TransferRequest,
    TransferStatus,
    is_valid_id,
)
from paycore.payments.accounts import is_processor_name, new_id, psp_account_id, transfer_id
from paycore.payments.cards import brand_of, check_card, tokenize
from paycore.payments.intents import (
    CancelReason,
    CaptureMethod,
    PaymentStatus,
    PayoutStatus,
    PendingOp,
    RefundStatus,
    SourceType,
)
from paycore.payments.processors.base import (
    AuthorizeRequest,
    CardDetails,
    Operation,
    Outcome,
    PayoutRequest,
    ProcessorConnector,
    ProcessorResult,
)
from paycore.storage.base import CreateTransfers, Fence, Store, StoredResponse
from paycore.storage.listing import ListReads
from paycore.storage.payments import (
    POINTER_CONTENT_TYPE,
    AccountCheck,
    AttemptRow,
    EventRow,
    KeyWrite,
    PaymentReads,
    PaymentRow,
    PaymentWrite,
    PaymentWriteResult,
    PayoutRow,
    RefundDelta,
    RefundRow,
)

__all__ = [
    "DEFAULT_AUTHORIZATION_SECONDS",
    "MAX_PAYMENT_AMOUNT",
    "FixedRouter",
    "Keyed",
    "NewPayment",
    "NewPayout",
    "PaymentRouter",
    "PaymentService",
    "PaymentView",
    "PayoutView",
    "RefundView",
    "Reply",
    "ReplyOutcome",
    "ResolveReport",
    "build_payment_service",
    "expire_authorizations",
    "resolve_processing",
    "shard_stores",
]

log = logging.getLogger(__name__)

DEFAULT_AUTHORIZATION_SECONDS: Final = 7 * 24 * 3600
_NS: Final = 1_000_000_000
_E = ErrorCode
# What the ledger may refuse about the request itself (answered as a problem, nothing
# kept) rather than about money (a failed payment): see the module docstring.
_REQUEST_CODES: Final = frozenset(
    {
        _E.ACCOUNT_NOT_FOUND,
        _E.ACCOUNT_CLOSED,
        _E.CURRENCY_MISMATCH,
        _E.ACCOUNTS_MUST_BE_DIFFERENT,
    }
)
_APPROVED_AUTHORIZATION: Final = frozenset({"authorized", "captured", "refunded"})


# -- routing ---------------------------------------------------------------------------------


class RouteLike(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def strategy(self) -> Any: ...
    @property
    def candidates(self) -> tuple[str, ...]: ...


class PaymentRouter(Protocol):
    """What the service needs of a router (``paycore.payments.routing.Router`` is one)."""

    def route(
        self, *, merchant: str | None = None, currency: str | None = None, brand: str | None = None
    ) -> RouteLike: ...

    def record_result(self, result: ProcessorResult) -> None: ...

    def in_flight(self, name: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class _FixedRoute:
    rule: str
    strategy: str
    candidates: tuple[str, ...]


class FixedRouter:
    """The same priority list for every payment; records nothing. The default when no
    routing is configured (and what tests use)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def route(
        self, *, merchant: str | None = None, currency: str | None = None, brand: str | None = None
    ) -> _FixedRoute:
        return _FixedRoute("default", "priority", self.names)

    def record_result(self, result: ProcessorResult) -> None:
        return None

    def in_flight(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


# -- requests, views, answers ---------------------------------------------------------------


# One payment or payout may move at most this many minor units (10 billion in a currency
# of two decimals). The ledger takes up to 2^63-1, but a processor's account (psp:...) is
# shared by every payment through it: one absurd amount would push its counters to the
# overflow limit and make every later payment on it fail.
MAX_PAYMENT_AMOUNT = 10**12
# The in-process simulated acquirers of the embedded default (no [[processors]]).
EMBEDDED_PROCESSORS = ("sim-a", "sim-b")
# Pages of the resolver's work per shard and pass (each of ``limit`` rows).
_RESOLVE_PAGES = 100


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment to make (the API checked the shape: ids, amount, currency)."""

    amount: int
    currency: str
    merchant_account_id: str
    capture: CaptureMethod = CaptureMethod.AUTOMATIC
    card: CardDetails | None = None
    wallet_account_id: str | None = None
    # The API caller's tenant: the accounts named must be its own (None: no check).
    tenant: str | None = None

    def __post_init__(self) -> None:
        if (self.card is None) == (self.wallet_account_id is None):
            raise ValueError("a payment has exactly one source: a card or a wallet")


@dataclass(frozen=True, slots=True)
class NewPayout:
    wallet_account_id: str
    amount: int
    currency: str
    destination: str
    tenant: str | None = None  # as NewPayment's


class PaymentView(msgspec.Struct, frozen=True):
    """A payment as stored, with its attempts, and the shard it lives on."""

    payment: PaymentRow
    attempts: tuple[AttemptRow, ...]
    shard: str


class RefundView(msgspec.Struct, frozen=True):
    refund: RefundRow
    attempts: tuple[AttemptRow, ...]
    shard: str


class PayoutView(msgspec.Struct, frozen=True):
    payout: PayoutRow
    attempts: tuple[AttemptRow, ...]
    shard: str


View = PaymentView | RefundView | PayoutView
ReplyOutcome = View | PaycoreError


@dataclass(frozen=True, slots=True)
class Keyed:
    """A request's Idempotency-Key (tenant-scoped), the fingerprint of its body, and how
    its answers look (``render`` turns a view or an error into the exact HTTP answer)."""

    key: str
    fingerprint: str
    render: Callable[[ReplyOutcome], StoredResponse]
    retention_seconds: int = 72 * 3600


@dataclass(frozen=True, slots=True)
class Reply:
    """What a request comes to: ``outcome`` (a view, or an error to answer with; None
    when replayed) and, for a keyed request, the exact ``response`` stored for it."""

    outcome: ReplyOutcome | None
    response: StoredResponse | None = None
    replayed: bool = False


class _Pointer(msgspec.Struct, frozen=True):
    """A claimed key's record while its work runs: which work, on which shard."""

    kind: str  # payment | refund | payout
    id: str
    shard: str
    seq: int  # the attempt the work starts with (a capture or a cancel: not there yet)


@dataclass
class ResolveReport:
    """What one resolver pass did (the worker logs it; tests read it)."""

    resolved: list[str] = field(default_factory=list)
    still_open: list[str] = field(default_factory=list)
    failures: int = 0


_pointer_json = msgspec.json.Encoder()
_pointer_decoder = msgspec.json.Decoder(_Pointer)
_payload_json = msgspec.json.Encoder()


def shard_stores(store: Store) -> dict[str, Store]:
    """Every shard of ``store`` by name (a plain store is its own only shard)."""
    if isinstance(store, ShardedStore):
        return dict(store.shards)
    return {store.name: store}


def _in_use() -> IdempotencyError:
    return IdempotencyError(
        _E.IDEMPOTENCY_KEY_IN_USE,
        "a request with this Idempotency-Key is still being processed; retry later",
    )


def _not_found(kind: str, object_id: str) -> RequestError:
    code = {"payment": _E.PAYMENT_NOT_FOUND, "refund": _E.REFUND_NOT_FOUND}.get(
        kind, _E.PAYOUT_NOT_FOUND
    )
    return RequestError(code, f"{kind} {object_id!r} not found")


class PaymentService:
    """Payments over ``store`` through ``connectors`` (name -> connector, each already
    wrapped by resilience), in the order ``router`` gives (see the module docstring).

    ``authorization_seconds``: how long a manual-capture authorization holds (the
    ledger hold's timeout); ``saga_wait_seconds``: how long a cross-shard wallet payment
    waits for its transfer to settle before answering ``processing``.
    """

    def __init__(
        self,
        store: Store,
        connectors: Mapping[str, ProcessorConnector],
        router: PaymentRouter | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
        authorization_seconds: int = DEFAULT_AUTHORIZATION_SECONDS,
        saga_wait_seconds: float = 1.0,
        conflict_retries: int = 8,
    ) -> None:
        bad = [name for name in connectors if not is_processor_name(name)]
        if bad:
            raise ValueError(f"processor names must be 1-24 chars of [A-Za-z0-9_-]: {bad}")
        if authorization_seconds < 1:
            raise ValueError("authorization_seconds must be at least 1")
        self.store = store
        self.shards = shard_stores(store)
        self.connectors = dict(connectors)
        self.router: PaymentRouter = router or FixedRouter(list(connectors))
        self.clock = clock
        self.authorization_seconds = authorization_seconds
        self.saga_wait_seconds = saga_wait_seconds
        self.conflict_retries = conflict_retries

    async def aclose(self) -> None:
        """Close every connector (their connection pools)."""
        for connector in self.connectors.values():
            await connector.aclose()

    # -- placement and reads -----------------------------------------------------------------

    def shard_of(self, account_id: str) -> str:
        if isinstance(self.store, ShardedStore):
            return self.store.shard_for(account_id)
        return self.store.name

    def reads(self, shard: str) -> PaymentReads:
        reads = getattr(self.shards[shard], "payments", None)
        if not isinstance(reads, PaymentReads):
            raise TypeError(f"shard {shard} keeps no payment rows")
        return reads

    def lists(self, shard: str) -> ListReads:
        """The list endpoints' reads of ``shard`` (``paycore.payments.listing``)."""
        lists = getattr(self.shards[shard], "lists", None)
        if not isinstance(lists, ListReads):
            raise TypeError(f"shard {shard} keeps no payment rows")
        return lists

    async def _locate(self, kind: str, object_id: str) -> tuple[str, Any] | None:
        """The shard and row of a payment, refund or payout (every shard asked at once)."""
        if not is_valid_id(object_id):
            return None
        names = list(self.shards)

        async def one(shard: str) -> Any:
            reads = self.reads(shard)
            if kind == "payment":
                return await reads.payment(object_id)
            if kind == "refund":
                return await reads.refund(object_id)
            return await reads.payout(object_id)

        rows = await gather_all(one(s) for s in names)
        for shard, row in zip(names, rows, strict=True):
            if row is not None:
                return shard, row
        return None

    async def _view(self, kind: str, shard: str, row: Any) -> View:
        attempts = tuple(await self.reads(shard).attempts(row.id))
        if kind == "payment":
            return PaymentView(row, attempts, shard)
        if kind == "refund":
            return RefundView(row, attempts, shard)
        return PayoutView(row, attempts, shard)

    async def check_owner(self, kind: str, object_id: str, tenant: str | None) -> None:
        """Raise ``kind``'s not-found error (exactly as for a missing object) unless
        ``tenant`` owns it (None: anyone does). A payment and its refunds belong to the
        tenant of the merchant account, a payout to the tenant of its wallet."""
        if tenant is None:
            return
        found = await self._locate(kind, object_id)
        account: str | None = None
        if found is not None:
            row = found[1]
            if kind == "refund":
                payment = await self._locate("payment", row.payment_id)
                row = None if payment is None else payment[1]
            if row is not None:
                account = row.wallet_account_id if kind == "payout" else row.merchant_account_id
        if account is not None:
            owner = (await self.store.get_accounts([account])).get(account)
            if owner is not None and owner.tenant == tenant:
                return
        raise _not_found(kind, object_id)

    async def get_payment(self, payment_id: str) -> PaymentView:
        found = await self._locate("payment", payment_id)
        if found is None:
            raise _not_found("payment", payment_id)
        view = await self._view("payment", *found)
        assert isinstance(view, PaymentView)
        return view

    async def get_refund(self, refund_id: str) -> RefundView:
        found = await self._locate("refund", refund_id)
        if found is None:
            raise _not_found("refund", refund_id)
        view = await self._view("refund", *found)
        assert isinstance(view, RefundView)
        return view

    async def get_payout(self, payout_id: str) -> PayoutView:
        found = await self._locate("payout", payout_id)
        if found is None:
            raise _not_found("payout", payout_id)
        view = await self._view("payout", *found)
        assert isinstance(view, PayoutView)
        return view

    async def _write(self, write: PaymentWrite) -> PaymentWriteResult:
        result: PaymentWriteResult = await self.store.execute(write)
        return result

    # -- Idempotency-Key -----------------------------------------------------------------------

    def _key_home(self, key: str) -> str:
        return self.shard_of(key)

    async def _seen(self, keyed: Keyed) -> Reply | _Pointer | None:
        """A replay, the pointer of work started under the key, or None (a new key)."""
        home = self._key_home(keyed.key)
        now = self.clock()
        found = await self.reads(home).key_record(keyed.key)
        if found is None or found[2] <= now:
            return None
        if found[0] != keyed.fingerprint:
            raise IdempotencyError(
                _E.IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was first used with a different request",
            )
        if found[1].content_type != POINTER_CONTENT_TYPE:
            return Reply(None, found[1], replayed=True)
        pointer = _pointer_decoder.decode(found[1].body)
        if pointer.shard != home:
            final = await self.reads(pointer.shard).key_record(keyed.key)
            if final is not None and final[2] > now and final[0] == keyed.fingerprint:
                return Reply(None, final[1], replayed=True)
        return pointer

    async def _replay_or_resume(self, keyed: Keyed | None) -> Reply | _Pointer | None:
        """For a keyed request: its answer if it has one; the pointer of its work when
        that never got going (to resume it); else None (run it). 409 while it runs."""
        if keyed is None:
            return None
        seen = await self._seen(keyed)
        if not isinstance(seen, _Pointer):
            return seen
        found = await self._locate(seen.kind, seen.id)
        if found is None:
            return seen  # claimed, then the process died before the work was recorded
        view = await self._view(seen.kind, *found)
        if seen.seq and not any(a.seq >= seen.seq for a in view.attempts):
            return seen  # a capture or cancel claimed but never recorded: run it again
        if _in_progress(view):
            raise _in_use()
        # The work ended without an answer (its request died): answer with what it is now.
        response = keyed.render(view)
        settled = await self._write(
            PaymentWrite(shard=view.shard, key=self._key_write(keyed, response, "settle"))
        )
        if settled.key_taken is not None:
            return Reply(None, settled.key_taken[1], replayed=True)
        return Reply(view, response, replayed=True)

    def _key_write(self, keyed: Keyed, response: StoredResponse, mode: str) -> KeyWrite:
        return KeyWrite(keyed.key, keyed.fingerprint, response, keyed.retention_seconds, mode)

    async def _claim(
        self, keyed: Keyed | None, *, resumed: bool, kind: str, object_id: str, shard: str, seq: int
    ) -> KeyWrite | None:
        """Claim the key for work on ``shard``: the pointer to write with the work's first
        transaction when the key lives there, else written on the key's shard now."""
        if keyed is None or resumed:
            return None
        body = _pointer_json.encode(_Pointer(kind, object_id, shard, seq))
        pointer = self._key_write(keyed, StoredResponse(102, body, POINTER_CONTENT_TYPE), "claim")
        home = self._key_home(keyed.key)
        if home == shard:
            return pointer
        result = await self._write(PaymentWrite(shard=home, key=pointer))
        if not result.ok:
            raise _in_use()  # a twin request claimed it a moment ago
        return None

    async def _refuse(
        self, keyed: Keyed | None, exc: PaycoreError, *, resumed: bool = False
    ) -> Reply:
        """Answer a refusal that wrote nothing; under a key it is stored (unless a retry
        may succeed: unavailable shards or processors), so a retry gets it again.

        ``resumed``: the request took over work its key claimed but had not recorded. The
        claiming request may have recorded it since (it was slow, not dead), and the
        refusal may be that very work in progress: then the key answers as that work does
        (409 ``idempotency_key_in_use`` while it runs), never with the refusal."""
        if keyed is None or exc.retryable:
            raise exc
        if resumed:
            again = await self._replay_or_resume(keyed)
            if isinstance(again, Reply):
                return again
        response = keyed.render(exc)
        home = self._key_home(keyed.key)
        result = await self._write(
            PaymentWrite(shard=home, key=self._key_write(keyed, response, "settle"))
        )
        if result.key_taken is not None:
            return Reply(None, result.key_taken[1], replayed=True)
        return Reply(exc, response)

    async def _free_key(self, keyed: Keyed | None, shard: str) -> None:
        """After a retryable answer (no processor could take it; nothing changed): leave
        the key free, so the client's retry runs the operation again instead of replaying
        the 503 for the key's whole retention. The record stays, expired at once, on the
        work's shard and on the key's own shard (where its pointer is)."""
        if keyed is None:
            return
        gone = KeyWrite(keyed.key, keyed.fingerprint, StoredResponse(503, b"{}"), 0, "save")
        homes = {shard, self._key_home(keyed.key)}
        for home in homes:
            await self._write(PaymentWrite(shard=home, key=gone))

    def _answer(self, keyed: Keyed | None, outcome: ReplyOutcome) -> tuple[KeyWrite | None, Reply]:
        """The key record to save with an outcome's transaction, and the reply."""
        if keyed is None:
            return None, Reply(outcome)
        response = keyed.render(outcome)
        return self._key_write(keyed, response, "save"), Reply(outcome, response)

    # -- processor calls -----------------------------------------------------------------------

    async def _call(
        self,
        name: str,
        operation: Operation,
        reference: str,
        call: Callable[[ProcessorConnector], Awaitable[ProcessorResult]],
    ) -> ProcessorResult:
        connector = self.connectors.get(name)
        if connector is None:
            return ProcessorResult(
                Outcome.FAILED, name, operation, reference, error="processor_not_configured"
            )
        started = time.perf_counter()
        with self.router.in_flight(name):
            try:
                result = await call(connector)
            except Exception as exc:  # a connector bug: whether it acted is unknown
                log.exception("processor %s raised on %s %s", name, operation, reference)
                result = ProcessorResult(
                    Outcome.AMBIGUOUS, name, operation, reference, error=type(exc).__name__
                )
        if not result.latency_ms:
            latency = (time.perf_counter() - started) * 1000.0
            result = msgspec.structs.replace(result, latency_ms=latency)
        self.router.record_result(result)
        return result

    # -- payments ------------------------------------------------------------------------------

    async def create_payment(self, new: NewPayment, keyed: Keyed | None = None) -> Reply:
        """Pay ``new.amount`` to the merchant account from a card or a wallet."""
        seen = await self._replay_or_resume(keyed)
        if isinstance(seen, Reply):
            return seen  # before the card check: a retry's answer must not depend on today
        _check_amount(new.amount)
        if new.card is not None:
            check_card(new.card, today=datetime.fromtimestamp(self.clock() / _NS, UTC).date())
        payment_id = seen.id if seen is not None else new_id("pay")
        resumed = seen is not None
        try:
            merchant = await self._open_account(new.merchant_account_id, new.currency, new.tenant)
            if new.wallet_account_id is not None:
                if new.wallet_account_id == new.merchant_account_id:
                    raise RequestError(
                        _E.ACCOUNTS_MUST_BE_DIFFERENT, "the wallet pays the merchant: two accounts"
                    )
                await self._open_account(new.wallet_account_id, new.currency, new.tenant)
                return await self._wallet_payment(new, payment_id, keyed, resumed)
            assert new.card is not None
            route = self.router.route(
                merchant=merchant, currency=new.currency, brand=brand_of(new.card.number)
            )
            candidates = [c for c in route.candidates if c in self.connectors]
            if not candidates:
                raise PaycoreError(
                    _E.PROCESSOR_UNAVAILABLE, f"no processor takes {new.currency} payments now"
                )
        except PaycoreError as exc:
            return await self._refuse(keyed, exc, resumed=resumed)
        return await self._card_payment(
            new, payment_id, route, candidates, keyed=keyed, resumed=resumed
        )

    async def _open_account(self, account_id: str, currency: str, tenant: str | None = None) -> str:
        if is_reserved(account_id):
            # Clearing and processor accounts have no limits: paying from one (or into
            # one) would move money nobody had.
            raise RequestError(
                _E.INVALID_REQUEST, f"account {account_id!r} belongs to paycore, not a client"
            )
        found = (await self.store.get_accounts([account_id])).get(account_id)
        if found is None or (tenant is not None and found.tenant != tenant):
            # Another tenant's account is answered exactly as a missing one. Checked
            # before the write, soundly: an account's tenant never changes.
            raise RequestError(_E.ACCOUNT_NOT_FOUND, f"account {account_id!r} not found")
        if found.currency != currency:
            raise RequestError(
                _E.CURRENCY_MISMATCH, f"account {account_id!r} is {found.currency}, not {currency}"
            )
        if found.flags.closed:
            raise RequestError(_E.ACCOUNT_CLOSED, f"account {account_id!r} is closed")
        return account_id

    async def _card_payment(
        self,
        new: NewPayment,
        payment_id: str,
        route: RouteLike,
        candidates: list[str],
        *,
        keyed: Keyed | None,
        resumed: bool,
    ) -> Reply:
        assert new.card is not None
        card = new.card
        token = tokenize(card)
        shard = self.shard_of(new.merchant_account_id)
        now = self.clock()
        attempt = _attempt(
            payment_id, 1, Operation.AUTHORIZE, candidates[0], amount=new.amount, now=now
        )
        attempt = msgspec.structs.replace(attempt, routing=_routing(route, candidates, 0))
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
            pending_reference=attempt.reference,
            pending_amount=new.amount,
            attempt_count=1,
            idempotency_key=None if keyed is None else keyed.key,
            created_at=now,
            updated_at=now,
        )
        claim = await self._claim(
            keyed, resumed=resumed, kind="payment", object_id=payment_id, shard=shard, seq=0
        )
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payment=row,
                attempts=(attempt,),
                accounts=(AccountCheck(new.merchant_account_id, new.currency),),
                key=claim,
            )
        )
        if written.key_taken is not None or written.conflict:
            raise _in_use()  # a twin request got there first
        if not written.ok:
            code = written.code or _E.INTERNAL_ERROR
            return await self._refuse(keyed, RequestError(code, written.detail))
        attempts = [attempt]
        index = 0
        while True:
            request = AuthorizeRequest(
                reference=attempt.reference,
                amount=new.amount,
                currency=new.currency,
                card=card,
                capture=new.capture is CaptureMethod.AUTOMATIC,
            )
            result = await self._call(
                attempt.processor,
                Operation.AUTHORIZE,
                attempt.reference,
                lambda c, r=request: c.authorize(r),  # type: ignore[misc]
            )
            if result.outcome is Outcome.FAILED and index + 1 < len(candidates):
                index += 1
                moved = await self._next_processor(
                    shard, row, attempts, result, route=route, candidates=candidates, index=index
                )
                if moved is None:  # someone else recorded an end meanwhile (the resolver)
                    return await self._current(keyed, "payment", payment_id)
                row, attempt = moved
                continue
            return await self._record_authorization(shard, row, attempts, result, keyed=keyed)

    async def _next_processor(
        self,
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
        now = self.clock()
        done = _finished(attempts[-1], failed, now)
        seq = row.attempt_count + 1
        attempt = _attempt(
            row.id, seq, Operation.AUTHORIZE, candidates[index], amount=row.amount, now=now
        )
        attempt = msgspec.structs.replace(attempt, routing=_routing(route, candidates, index))
        moved = _bump(
            row,
            now,
            processor=candidates[index],
            pending_reference=attempt.reference,
            attempt_count=seq,
        )
        written = await self._write(
            PaymentWrite(
                shard=shard, payment=moved, payment_version=row.version, attempts=(done, attempt)
            )
        )
        if not written.ok:
            return None
        attempts[-1] = done
        attempts.append(attempt)
        return moved, attempt

    async def _record_authorization(
        self,
        shard: str,
        row: PaymentRow,
        attempts: list[AttemptRow],
        result: ProcessorResult,
        *,
        keyed: Keyed | None,
        fence: Fence | None = None,
    ) -> Reply:
        """Record an authorization's outcome (tx2); also the resolver's way to end one."""
        now = self.clock()
        done = _finished(attempts[-1], result, now)
        all_attempts = (*attempts[:-1], done)
        status = PaymentStatus(row.status)
        if result.outcome is Outcome.AMBIGUOUS:
            view = PaymentView(row, all_attempts, shard)
            key, reply = self._answer(keyed, view)
            await self._write(PaymentWrite(shard=shard, attempts=(done,), key=key, fence=fence))
            return reply
        transfers: tuple[TransferRequest, ...] = ()
        psp = psp_account_id(shard, row.processor or "", row.currency)
        events: list[tuple[str, PaymentRow]] = []
        if result.outcome is Outcome.APPROVED:
            common: dict[str, Any] = {
                "amount_authorized": row.amount,
                "processor_reference": result.processor_reference,
                "authorization_reference": done.reference,
            }
            if row.capture_method == CaptureMethod.MANUAL.value:
                hold = TransferRequest(
                    id=transfer_id(row.id, f"h{done.seq}"),
                    debit_account_id=psp,
                    credit_account_id=row.merchant_account_id,
                    amount=row.amount,
                    currency=row.currency,
                    flags=TransferFlags(pending=True),
                    timeout_seconds=self.authorization_seconds,
                    metadata={"payment": row.id},
                )
                new = _bump(
                    row,
                    now,
                    status=status.to(PaymentStatus.REQUIRES_CAPTURE).value,
                    hold_id=hold.id,
                    authorized_until=now + self.authorization_seconds * _NS,
                    **common,
                    **_CLEAR,
                )
                events.append(("payment.requires_capture", new))
                transfers = (hold,)
            else:
                post = _move(transfer_id(row.id, f"c{done.seq}"), psp, row, row.amount)
                new = _bump(
                    row,
                    now,
                    status=status.to(PaymentStatus.SUCCEEDED).value,
                    amount_captured=row.amount,
                    **common,
                    **_CLEAR,
                )
                events.append(("payment.succeeded", new))
                transfers = (post,)
        else:
            declined = result.outcome is Outcome.DECLINED
            new = _bump(
                row,
                now,
                status=status.to(PaymentStatus.FAILED).value,
                failure_code="card_declined" if declined else _E.PROCESSOR_UNAVAILABLE.value,
                failure_detail=result.decline_code if declined else result.error,
                **_CLEAR,
            )
            events.append(("payment.failed", new))
        view = PaymentView(new, all_attempts, shard)
        key, reply = self._answer(keyed, view)
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payment=new,
                payment_version=row.version,
                attempts=(done,),
                transfers=transfers,
                ensure_accounts=_psp_request(psp, row.currency) if transfers else (),
                events=self._events(events, now),
                key=key,
                fence=fence,
            )
        )
        if written.ok:
            return reply
        if written.conflict:  # recorded by someone else meanwhile
            return await self._current(keyed, "payment", row.id)
        # The processor took the money but the ledger refuses it (the merchant's account
        # was closed in between): give it back at the processor, durably: the give-back
        # is recorded (the payment stays processing) before it is sent, and the resolver
        # sends it again until the processor has done it; only then does the payment fail.
        log.warning("payment %s: ledger refused the approved authorization: %s", row.id, written)
        assert row.processor is not None
        seq = row.attempt_count + 1
        operation = (
            Operation.VOID if row.capture_method == CaptureMethod.MANUAL.value else Operation.REFUND
        )
        give = _attempt(row.id, seq, operation, row.processor, amount=row.amount, now=now)
        giving = _bump(
            row,
            now,
            pending_op=PendingOp.GIVE_BACK.value,
            pending_reference=give.reference,
            authorization_reference=done.reference,
            attempt_count=seq,
            failure_code=(written.code or _E.INTERNAL_ERROR).value,
            failure_detail=written.detail,
        )
        recorded = await self._write(
            PaymentWrite(
                shard=shard,
                payment=giving,
                payment_version=row.version,
                attempts=(done, give),
                fence=fence,
            )
        )
        if not recorded.ok:
            return await self._current(keyed, "payment", row.id)
        result = await self._give_back(giving, give)
        return await self._record_give_back(
            shard, giving, [*all_attempts, give], result, keyed=keyed, fence=fence
        )

    async def _give_back(self, row: PaymentRow, give: AttemptRow) -> ProcessorResult:
        """Void the authorization, or refund the captured amount (idempotent by reference)."""
        assert row.processor is not None
        authorization = row.authorization_reference or ""
        if give.operation == Operation.VOID.value:
            return await self._call(
                row.processor, Operation.VOID, give.reference, lambda c: c.void(authorization)
            )
        return await self._call(
            row.processor,
            Operation.REFUND,
            give.reference,
            lambda c: c.refund(authorization, row.amount, give.reference),
        )

    async def _record_give_back(
        self,
        shard: str,
        row: PaymentRow,
        attempts: list[AttemptRow],
        result: ProcessorResult,
        *,
        keyed: Keyed | None,
        fence: Fence | None = None,
    ) -> Reply:
        """The give-back's answer: done, the payment fails (with the ledger's reason);
        not done, it stays processing for the resolver (the card is still charged)."""
        now = self.clock()
        done = _finished(attempts[-1], result, now)
        all_attempts = (*attempts[:-1], done)
        if result.outcome is Outcome.APPROVED:
            new = _bump(
                row, now, status=PaymentStatus(row.status).to(PaymentStatus.FAILED).value, **_CLEAR
            )
            events = self._events([("payment.failed", new)], now)
        else:
            new, events = _bump(row, now), ()
        view = PaymentView(new, all_attempts, shard)
        key, reply = self._answer(keyed, view)
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payment=new,
                payment_version=row.version,
                attempts=(done,),
                events=events,
                key=key,
                fence=fence,
            )
        )
        return reply if written.ok else await self._current(keyed, "payment", row.id)

    async def _current(self, keyed: Keyed | None, kind: str, object_id: str) -> Reply:
        """Someone else moved the work on: answer with what it is now."""
        found = await self._locate(kind, object_id)
        if found is None:
            raise _not_found(kind, object_id)
        view = await self._view(kind, *found)
        if keyed is None:
            return Reply(view)
        response = keyed.render(view)
        result = await self._write(
            PaymentWrite(shard=view.shard, key=self._key_write(keyed, response, "settle"))
        )
        if result.key_taken is not None:
            return Reply(None, result.key_taken[1], replayed=True)
        return Reply(view, response)

    # -- wallet payments -----------------------------------------------------------------------

    async def _wallet_payment(
        self, new: NewPayment, payment_id: str, keyed: Keyed | None, resumed: bool
    ) -> Reply:
        wallet = new.wallet_account_id
        assert wallet is not None
        shard = self.shard_of(new.merchant_account_id)
        now = self.clock()
        move = TransferRequest(
            id=transfer_id(payment_id, "w"),
            debit_account_id=wallet,
            credit_account_id=new.merchant_account_id,
            amount=new.amount,
            currency=new.currency,
            metadata={"payment": payment_id},
        )
        base = PaymentRow(
            id=payment_id,
            merchant_account_id=new.merchant_account_id,
            amount=new.amount,
            currency=new.currency,
            capture_method=CaptureMethod.AUTOMATIC.value,
            status=PaymentStatus.PROCESSING.value,
            source_type=SourceType.WALLET.value,
            source_account_id=wallet,
            amount_authorized=new.amount,
            idempotency_key=None if keyed is None else keyed.key,
            created_at=now,
            updated_at=now,
        )
        checks = (
            AccountCheck(new.merchant_account_id, new.currency),
            AccountCheck(wallet, new.currency),
        )
        if self.shard_of(wallet) == shard:
            # Both accounts here: the payment and its transfer in one transaction.
            claim = await self._claim(
                keyed, resumed=resumed, kind="payment", object_id=payment_id, shard=shard, seq=0
            )
            paid = msgspec.structs.replace(
                base, status=PaymentStatus.SUCCEEDED.value, amount_captured=new.amount
            )
            view = PaymentView(paid, (), shard)
            key, reply = self._answer(keyed, view)
            if claim is not None and key is not None:  # the key lives here: one record
                key = msgspec.structs.replace(key, mode="claim")
            written = await self._write(
                PaymentWrite(
                    shard=shard,
                    payment=paid,
                    accounts=checks,
                    transfers=(move,),
                    events=self._events([("payment.succeeded", paid)], now),
                    key=key,
                )
            )
            if written.ok:
                return reply
            if written.key_taken is not None or written.conflict:
                raise _in_use()
            code = written.code or _E.INTERNAL_ERROR
            if code in _REQUEST_CODES:
                return await self._refuse(keyed, RequestError(code, written.detail))
            failed = msgspec.structs.replace(
                base,
                status=PaymentStatus.FAILED.value,
                failure_code=code.value,
                failure_detail=written.detail,
            )
            view = PaymentView(failed, (), shard)
            key, reply = self._answer(keyed, view)
            if claim is not None and key is not None:
                key = msgspec.structs.replace(key, mode="claim")
            written = await self._write(
                PaymentWrite(
                    shard=shard,
                    payment=failed,
                    events=self._events([("payment.failed", failed)], now),
                    key=key,
                )
            )
            if not written.ok:
                raise _in_use()
            return reply
        # Across shards: the payment waits (processing) for the transfer's saga.
        claim = await self._claim(
            keyed, resumed=resumed, kind="payment", object_id=payment_id, shard=shard, seq=0
        )
        row = msgspec.structs.replace(
            base, pending_op=PendingOp.TRANSFER.value, pending_reference=move.id
        )
        written = await self._write(
            PaymentWrite(shard=shard, payment=row, accounts=checks[:1], key=claim)
        )
        if written.key_taken is not None or written.conflict:
            raise _in_use()
        if not written.ok:
            code = written.code or _E.INTERNAL_ERROR
            return await self._refuse(keyed, RequestError(code, written.detail))
        return await self._run_wallet_transfer(shard, row, move, keyed)

    def _wallet_move(self, row: PaymentRow) -> TransferRequest:
        assert row.source_account_id is not None
        assert row.pending_reference is not None
        return TransferRequest(
            id=row.pending_reference,
            debit_account_id=row.source_account_id,
            credit_account_id=row.merchant_account_id,
            amount=row.amount,
            currency=row.currency,
            metadata={"payment": row.id},
        )

    async def _run_wallet_transfer(
        self,
        shard: str,
        row: PaymentRow,
        move: TransferRequest,
        keyed: Keyed | None,
        *,
        wait: bool = True,
        fence: Fence | None = None,
    ) -> Reply:
        """Submit (again: it is idempotent by id) a wallet payment's cross-shard transfer,
        wait a little for its saga, and record the end if it came."""
        results = await self.store.execute(CreateTransfers((move,), internal=True))
        result = results[0]
        state: TransferStatus | None = None
        if result.ok and not result.in_flight:
            state = TransferStatus.POSTED
        elif result.ok:
            deadline = time.monotonic() + (self.saga_wait_seconds if wait else 0.0)
            while True:
                seen = await self.store.get_transfer(move.id)
                state = None if seen is None else seen.status
                if state is not TransferStatus.IN_FLIGHT or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
        now = self.clock()
        status = PaymentStatus(row.status)
        if state is TransferStatus.POSTED:
            new = _bump(
                row,
                now,
                status=status.to(PaymentStatus.SUCCEEDED).value,
                amount_captured=row.amount,
                **_CLEAR,
            )
            event = "payment.succeeded"
        elif state is TransferStatus.IN_FLIGHT:
            pending = PaymentView(row, (), shard)
            key, reply = self._answer(keyed, pending)
            if key is not None:
                await self._write(PaymentWrite(shard=shard, key=key, fence=fence))
            return reply
        else:
            code = result.code.value if result.code is not None else "transfer_refused"
            new = _bump(
                row,
                now,
                status=status.to(PaymentStatus.FAILED).value,
                failure_code=code,
                failure_detail=result.detail or "the cross-shard transfer was voided",
                **_CLEAR,
            )
            event = "payment.failed"
        view = PaymentView(new, (), shard)
        key, reply = self._answer(keyed, view)
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payment=new,
                payment_version=row.version,
                events=self._events([(event, new)], now),
                key=key,
                fence=fence,
            )
        )
        if not written.ok:
            return await self._current(keyed, "payment", row.id)
        return reply

    # -- capture and cancel ----------------------------------------------------------------------

    async def capture(
        self,
        payment_id: str,
        amount: int | None = None,
        *,
        final: bool = False,
        keyed: Keyed | None = None,
    ) -> Reply:
        """Capture ``amount`` (default: all that is left) of an authorization; ``final``
        releases what is left after it. Several partial captures may follow each other."""
        seen = await self._replay_or_resume(keyed)
        if isinstance(seen, Reply):
            return seen
        resumed = seen is not None
        claimed = False
        for _ in range(self.conflict_retries):
            try:
                view = await self.get_payment(payment_id)
                row = view.payment
                PaymentStatus(row.status).to(PaymentStatus.PROCESSING)
                capturable = row.amount_authorized - row.amount_captured
                wanted = capturable if amount is None else amount
                if wanted > capturable:
                    raise RequestError(
                        _E.AMOUNT_EXCEEDS_CAPTURABLE,
                        f"{capturable} may still be captured, {wanted} asked",
                    )
                now = self.clock()
                if row.authorized_until is not None and now >= row.authorized_until:
                    raise RequestError(_E.AUTHORIZATION_EXPIRED, "capture it before it expires")
            except PaycoreError as exc:
                return await self._refuse(keyed, exc, resumed=resumed or claimed)
            seq = row.attempt_count + 1
            claim = await self._claim(
                keyed,
                resumed=resumed or claimed,
                kind="payment",
                object_id=row.id,
                shard=view.shard,
                seq=seq,
            )
            claimed = claimed or claim is None
            assert row.processor is not None
            attempt = _attempt(
                row.id, seq, Operation.CAPTURE, row.processor, amount=wanted, now=now
            )
            started = _bump(
                row,
                now,
                status=PaymentStatus.PROCESSING.value,
                pending_op=PendingOp.CAPTURE.value,
                pending_reference=attempt.reference,
                pending_amount=wanted,
                pending_final=int(final or wanted == capturable),
                attempt_count=seq,
            )
            written = await self._write(
                PaymentWrite(
                    shard=view.shard,
                    payment=started,
                    payment_version=row.version,
                    attempts=(attempt,),
                    key=claim,
                )
            )
            if written.key_taken is not None:
                raise _in_use()
            if written.ok:
                break
        else:
            raise _in_use()
        authorization = row.authorization_reference or ""
        result = await self._call(
            row.processor,
            Operation.CAPTURE,
            attempt.reference,
            lambda c: c.capture(authorization, wanted, attempt.reference),
        )
        return await self._record_capture(
            view.shard, started, [*view.attempts, attempt], result, keyed=keyed
        )

    async def _record_capture(
        self,
        shard: str,
        row: PaymentRow,
        attempts: list[AttemptRow],
        result: ProcessorResult,
        *,
        keyed: Keyed | None,
        fence: Fence | None = None,
    ) -> Reply:
        now = self.clock()
        done = _finished(attempts[-1], result, now)
        all_attempts = (*attempts[:-1], done)
        status = PaymentStatus(row.status)
        if result.outcome is Outcome.AMBIGUOUS:
            key, reply = self._answer(keyed, PaymentView(row, all_attempts, shard))
            await self._write(PaymentWrite(shard=shard, attempts=(done,), key=key, fence=fence))
            return reply
        if result.outcome is not Outcome.APPROVED:
            refusal: PaycoreError = (
                RequestError(_E.CAPTURE_DECLINED, result.decline_code or result.error or "")
                if result.outcome is Outcome.DECLINED
                else PaycoreError(_E.PROCESSOR_UNAVAILABLE, result.error or "")
            )
            return await self._back_to_capturable(
                shard, row, done, refusal, keyed=keyed, fence=fence
            )
        amount = row.pending_amount
        psp = psp_account_id(shard, row.processor or "", row.currency)
        left = row.amount_authorized - row.amount_captured - amount
        keep = left > 0 and not row.pending_final
        assert row.hold_id is not None
        post = TransferRequest(
            id=transfer_id(row.id, f"p{done.seq}"),
            amount=amount,
            flags=TransferFlags(post_pending=True),
            pending_id=row.hold_id,
            metadata={"payment": row.id},
        )
        transfers: list[TransferRequest] = [post]
        hold_id = None
        if keep:
            until = row.authorized_until or now
            hold = TransferRequest(
                id=transfer_id(row.id, f"h{done.seq}"),
                debit_account_id=psp,
                credit_account_id=row.merchant_account_id,
                amount=left,
                currency=row.currency,
                flags=TransferFlags(pending=True),
                timeout_seconds=max(1, math.ceil((until - now) / _NS)),
                metadata={"payment": row.id},
            )
            transfers.append(hold)
            hold_id = hold.id
        target = PaymentStatus.REQUIRES_CAPTURE if keep else PaymentStatus.SUCCEEDED
        new = _bump(
            row,
            now,
            status=status.to(target).value,
            amount_captured=row.amount_captured + amount,
            hold_id=hold_id,
            **_CLEAR,
        )
        events = [("payment.captured", new)]
        if target is PaymentStatus.SUCCEEDED:
            events.append(("payment.succeeded", new))
        view = PaymentView(new, all_attempts, shard)
        key, reply = self._answer(keyed, view)
        write = PaymentWrite(
            shard=shard,
            payment=new,
            payment_version=row.version,
            attempts=(done,),
            transfers=tuple(transfers),
            events=self._events(events, now),
            key=key,
            fence=fence,
        )
        written = await self._write(write)
        if written.code is _E.PENDING_TRANSFER_EXPIRED:
            # The processor captured as the hold ran out: the money moves all the same,
            # from the processor's account, and nothing more may be captured.
            new = _bump(
                row,
                now,
                status=status.to(PaymentStatus.SUCCEEDED).value,
                amount_captured=row.amount_captured + amount,
                hold_id=None,
                **_CLEAR,
            )
            view = PaymentView(new, all_attempts, shard)
            key, reply = self._answer(keyed, view)
            written = await self._write(
                msgspec.structs.replace(
                    write,
                    payment=new,
                    transfers=(_move(transfer_id(row.id, f"c{done.seq}"), psp, row, amount),),
                    expire_holds=(row.hold_id,),
                    events=self._events(
                        [("payment.captured", new), ("payment.succeeded", new)], now
                    ),
                    key=key,
                )
            )
        if written.ok:
            return reply
        if not written.conflict:
            log.error("payment %s: capture approved, ledger refused: %s", row.id, written)
        return await self._current(keyed, "payment", row.id)

    async def cancel(self, payment_id: str, *, keyed: Keyed | None = None) -> Reply:
        """Release what an authorization holds (void at the processor, then the hold)."""
        seen = await self._replay_or_resume(keyed)
        if isinstance(seen, Reply):
            return seen
        resumed = seen is not None
        claimed = False
        for _ in range(self.conflict_retries):
            try:
                view = await self.get_payment(payment_id)
                row = view.payment
                PaymentStatus(row.status).to(PaymentStatus.PROCESSING)
            except PaycoreError as exc:
                return await self._refuse(keyed, exc, resumed=resumed or claimed)
            now = self.clock()
            seq = row.attempt_count + 1
            claim = await self._claim(
                keyed,
                resumed=resumed or claimed,
                kind="payment",
                object_id=row.id,
                shard=view.shard,
                seq=seq,
            )
            claimed = claimed or claim is None
            assert row.processor is not None
            attempt = _attempt(row.id, seq, Operation.VOID, row.processor, amount=0, now=now)
            started = _bump(
                row,
                now,
                status=PaymentStatus.PROCESSING.value,
                pending_op=PendingOp.VOID.value,
                pending_reference=attempt.reference,
                attempt_count=seq,
            )
            written = await self._write(
                PaymentWrite(
                    shard=view.shard,
                    payment=started,
                    payment_version=row.version,
                    attempts=(attempt,),
                    key=claim,
                )
            )
            if written.key_taken is not None:
                raise _in_use()
            if written.ok:
                break
        else:
            raise _in_use()
        authorization = row.authorization_reference or ""
        result = await self._call(
            row.processor, Operation.VOID, attempt.reference, lambda c: c.void(authorization)
        )
        return await self._record_void(
            view.shard, started, [*view.attempts, attempt], result, keyed=keyed
        )

    async def _back_to_capturable(
        self,
        shard: str,
        row: PaymentRow,
        done: AttemptRow,
        refusal: PaycoreError,
        *,
        keyed: Keyed | None,
        fence: Fence | None,
    ) -> Reply:
        """A capture or cancel the processor did not do: the payment is capturable again,
        the attempt recorded, ``refusal`` answered (a retryable one leaves the key free)."""
        now = self.clock()
        status = PaymentStatus(row.status).to(PaymentStatus.REQUIRES_CAPTURE)
        back = _bump(row, now, status=status.value, **_CLEAR)
        key, reply = self._answer(keyed, refusal)
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payment=back,
                payment_version=row.version,
                attempts=(done,),
                key=key,
                fence=fence,
            )
        )
        if not written.ok:
            return await self._current(keyed, "payment", row.id)
        if refusal.retryable:
            await self._free_key(keyed, shard)
        return reply

    async def _record_void(
        self,
        shard: str,
        row: PaymentRow,
        attempts: list[AttemptRow],
        result: ProcessorResult,
        *,
        keyed: Keyed | None,
        fence: Fence | None = None,
    ) -> Reply:
        now = self.clock()
        done = _finished(attempts[-1], result, now)
        all_attempts = (*attempts[:-1], done)
        if result.outcome is Outcome.AMBIGUOUS:
            key, reply = self._answer(keyed, PaymentView(row, all_attempts, shard))
            await self._write(PaymentWrite(shard=shard, attempts=(done,), key=key, fence=fence))
            return reply
        if result.outcome is Outcome.FAILED:
            refusal = PaycoreError(_E.PROCESSOR_UNAVAILABLE, result.error or "")
            return await self._back_to_capturable(
                shard, row, done, refusal, keyed=keyed, fence=fence
            )
        # APPROVED, or DECLINED: the processor has nothing left to void (voided or
        # expired on its side already); either way the hold is released here.
        return await self._release(
            shard, row, all_attempts, done, reason=CancelReason.REQUESTED, keyed=keyed, fence=fence
        )

    async def _release(
        self,
        shard: str,
        row: PaymentRow,
        attempts: tuple[AttemptRow, ...],
        done: AttemptRow | None,
        *,
        reason: CancelReason,
        keyed: Keyed | None,
        fence: Fence | None,
    ) -> Reply:
        """End an authorization: void (or expire) its hold; canceled, or succeeded when
        a part was captured before."""
        now = self.clock()
        status = PaymentStatus(row.status)
        target = PaymentStatus.SUCCEEDED if row.amount_captured > 0 else PaymentStatus.CANCELED
        new = _bump(
            row,
            now,
            status=status.to(target).value,
            hold_id=None,
            cancel_reason=reason.value,
            **_CLEAR,
        )
        event = "payment.succeeded" if target is PaymentStatus.SUCCEEDED else "payment.canceled"
        view = PaymentView(new, attempts, shard)
        key, reply = self._answer(keyed, view)
        transfers: tuple[TransferRequest, ...] = ()
        expire: tuple[str, ...] = ()
        if row.hold_id is not None:
            if reason is CancelReason.EXPIRED:
                expire = (row.hold_id,)
            else:
                seq = done.seq if done is not None else row.attempt_count
                transfers = (
                    TransferRequest(
                        id=transfer_id(row.id, f"v{seq}"),
                        flags=TransferFlags(void_pending=True),
                        pending_id=row.hold_id,
                        metadata={"payment": row.id},
                    ),
                )
        write = PaymentWrite(
            shard=shard,
            payment=new,
            payment_version=row.version,
            attempts=() if done is None else (done,),
            transfers=transfers,
            expire_holds=expire,
            events=self._events([(event, new)], now),
            key=key,
            fence=fence,
        )
        written = await self._write(write)
        if written.code is _E.PENDING_TRANSFER_EXPIRED and transfers:
            written = await self._write(
                msgspec.structs.replace(write, transfers=(), expire_holds=(row.hold_id or "",))
            )
        if written.ok:
            return reply
        if not written.conflict:
            log.error("payment %s: releasing the hold refused: %s", row.id, written)
        return await self._current(keyed, "payment", row.id)

    # -- refunds -----------------------------------------------------------------------------

    async def refund(
        self, payment_id: str, amount: int | None = None, *, keyed: Keyed | None = None
    ) -> Reply:
        """Give back ``amount`` (default: all that is left) of what a card payment
        captured; partial and several refunds never exceed it, pending ones included."""
        seen = await self._replay_or_resume(keyed)
        if isinstance(seen, Reply):
            return seen
        refund_id = seen.id if seen is not None else new_id("re")
        resumed = seen is not None
        try:
            view = await self.get_payment(payment_id)
            row = view.payment
            if row.source_type != SourceType.CARD.value:
                raise RequestError(
                    _E.PAYMENT_UNEXPECTED_STATE,
                    "a wallet payment is refunded with a transfer back (POST /v1/transfers)",
                )
            amount = _check_refundable(row, amount)
        except PaycoreError as exc:
            return await self._refuse(keyed, exc, resumed=resumed)
        shard = view.shard
        now = self.clock()
        assert row.processor is not None
        psp = psp_account_id(shard, row.processor, row.currency)
        attempt = _attempt(refund_id, 1, Operation.REFUND, row.processor, amount=amount, now=now)
        hold = TransferRequest(
            id=transfer_id(refund_id, "h"),
            debit_account_id=row.merchant_account_id,
            credit_account_id=psp,
            amount=amount,
            currency=row.currency,
            flags=TransferFlags(pending=True),
            metadata={"payment": row.id, "refund": refund_id},
        )
        refund = RefundRow(
            id=refund_id,
            payment_id=row.id,
            amount=amount,
            currency=row.currency,
            status=RefundStatus.PENDING.value,
            processor=row.processor,
            hold_id=hold.id,
            attempt_count=1,
            idempotency_key=None if keyed is None else keyed.key,
            created_at=now,
            updated_at=now,
        )
        claim = await self._claim(
            keyed, resumed=resumed, kind="refund", object_id=refund_id, shard=shard, seq=0
        )
        written = await self._write(
            PaymentWrite(
                shard=shard,
                refund=refund,
                refund_delta=RefundDelta(row.id, pending=amount),
                transfers=(hold,),
                ensure_accounts=_psp_request(psp, row.currency),
                attempts=(attempt,),
                key=claim,
            )
        )
        if written.key_taken is not None or written.conflict:
            raise _in_use()
        if not written.ok:
            code = written.code or _E.INTERNAL_ERROR
            if code in (_E.REFUND_EXCEEDS_CAPTURED, _E.PAYMENT_NOT_FOUND) or code in _REQUEST_CODES:
                return await self._refuse(keyed, RequestError(code, written.detail))
            # The merchant's balance cannot cover it: the refund exists, failed.
            failed = msgspec.structs.replace(
                refund, status=RefundStatus.FAILED.value, hold_id=None, failure_code=code.value
            )
            out = RefundView(failed, (), shard)
            key, reply = self._answer(keyed, out)
            if claim is not None and key is not None:
                key = msgspec.structs.replace(key, mode="claim")
            written = await self._write(
                PaymentWrite(
                    shard=shard,
                    refund=failed,
                    events=self._events([("refund.failed", failed)], now),
                    key=key,
                )
            )
            if not written.ok:
                raise _in_use()
            return reply
        authorization = row.authorization_reference or ""
        result = await self._call(
            row.processor,
            Operation.REFUND,
            attempt.reference,
            lambda c: c.refund(authorization, amount, attempt.reference),
        )
        return await self._record_refund(shard, refund, attempt, result, keyed=keyed)

    async def _record_refund(
        self,
        shard: str,
        refund: RefundRow,
        attempt: AttemptRow,
        result: ProcessorResult,
        *,
        keyed: Keyed | None,
        fence: Fence | None = None,
    ) -> Reply:
        now = self.clock()
        done = _finished(attempt, result, now)
        if result.outcome is Outcome.AMBIGUOUS:
            key, reply = self._answer(keyed, RefundView(refund, (done,), shard))
            await self._write(PaymentWrite(shard=shard, attempts=(done,), key=key, fence=fence))
            return reply
        status = RefundStatus(refund.status)
        assert refund.hold_id is not None
        if result.outcome is Outcome.APPROVED:
            new = _bump(
                refund,
                now,
                status=status.to(RefundStatus.SUCCEEDED).value,
                processor_reference=result.processor_reference,
            )
            delta = RefundDelta(refund.payment_id, pending=-refund.amount, refunded=refund.amount)
            settle = TransferRequest(
                id=transfer_id(refund.id, "p"),
                flags=TransferFlags(post_pending=True),
                pending_id=refund.hold_id,
                metadata={"payment": refund.payment_id, "refund": refund.id},
            )
            event = "refund.succeeded"
        else:
            declined = result.outcome is Outcome.DECLINED
            new = _bump(
                refund,
                now,
                status=status.to(RefundStatus.FAILED).value,
                failure_code="refund_declined" if declined else _E.PROCESSOR_UNAVAILABLE.value,
                decline_code=result.decline_code,
            )
            delta = RefundDelta(refund.payment_id, pending=-refund.amount)
            settle = TransferRequest(
                id=transfer_id(refund.id, "v"),
                flags=TransferFlags(void_pending=True),
                pending_id=refund.hold_id,
                metadata={"payment": refund.payment_id, "refund": refund.id},
            )
            event = "refund.failed"
        key, reply = self._answer(keyed, RefundView(new, (done,), shard))
        written = await self._write(
            PaymentWrite(
                shard=shard,
                refund=new,
                refund_version=refund.version,
                refund_delta=delta,
                attempts=(done,),
                transfers=(settle,),
                events=self._events([(event, new)], now),
                key=key,
                fence=fence,
            )
        )
        if written.ok:
            return reply
        if not written.conflict:
            log.error("refund %s: recording the outcome refused: %s", refund.id, written)
        return await self._current(keyed, "refund", refund.id)

    # -- payouts -------------------------------------------------------------------------------

    async def payout(self, new: NewPayout, keyed: Keyed | None = None) -> Reply:
        """Pay ``new.amount`` out of a wallet to a bank account, through a processor."""
        seen = await self._replay_or_resume(keyed)
        if isinstance(seen, Reply):
            return seen
        _check_amount(new.amount)
        payout_id = seen.id if seen is not None else new_id("po")
        resumed = seen is not None
        try:
            await self._open_account(new.wallet_account_id, new.currency, new.tenant)
            route = self.router.route(merchant=new.wallet_account_id, currency=new.currency)
            candidates = [c for c in route.candidates if c in self.connectors]
            if not candidates:
                raise PaycoreError(
                    _E.PROCESSOR_UNAVAILABLE, f"no processor takes {new.currency} payouts now"
                )
        except PaycoreError as exc:
            return await self._refuse(keyed, exc, resumed=resumed)
        shard = self.shard_of(new.wallet_account_id)
        now = self.clock()
        attempt = _attempt(
            payout_id, 1, Operation.PAYOUT, candidates[0], amount=new.amount, now=now
        )
        attempt = msgspec.structs.replace(attempt, routing=_routing(route, candidates, 0))
        hold = self._payout_hold(payout_id, 1, shard, candidates[0], new)
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
            idempotency_key=None if keyed is None else keyed.key,
            created_at=now,
            updated_at=now,
        )
        claim = await self._claim(
            keyed, resumed=resumed, kind="payout", object_id=payout_id, shard=shard, seq=0
        )
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payout=row,
                accounts=(AccountCheck(new.wallet_account_id, new.currency),),
                transfers=(hold,),
                ensure_accounts=_psp_request(hold.credit_account_id or "", new.currency),
                attempts=(attempt,),
                key=claim,
            )
        )
        if written.key_taken is not None or written.conflict:
            raise _in_use()
        if not written.ok:
            code = written.code or _E.INTERNAL_ERROR
            if code in _REQUEST_CODES:
                return await self._refuse(keyed, RequestError(code, written.detail))
            # The wallet cannot cover it (limits, holds included): the payout failed.
            failed = msgspec.structs.replace(
                row, status=PayoutStatus.FAILED.value, hold_id=None, failure_code=code.value,
                failure_detail=written.detail, processor=None, attempt_count=0,
            )  # fmt: skip
            out = PayoutView(failed, (), shard)
            key, reply = self._answer(keyed, out)
            if claim is not None and key is not None:
                key = msgspec.structs.replace(key, mode="claim")
            written = await self._write(
                PaymentWrite(
                    shard=shard,
                    payout=failed,
                    events=self._events([("payout.failed", failed)], now),
                    key=key,
                )
            )
            if not written.ok:
                raise _in_use()
            return reply
        attempts = [attempt]
        index = 0
        while True:
            reference = attempt.reference
            payout_request = PayoutRequest(reference, new.amount, new.currency, new.destination)
            result = await self._call(
                attempt.processor,
                Operation.PAYOUT,
                reference,
                lambda c, r=payout_request: c.payout(r),  # type: ignore[misc]
            )
            if result.outcome is Outcome.FAILED and index + 1 < len(candidates):
                index += 1
                moved = await self._next_payout_processor(
                    shard,
                    row,
                    attempts,
                    result,
                    route=route,
                    candidates=candidates,
                    index=index,
                    new=new,
                )
                if moved is None:
                    return await self._current(keyed, "payout", payout_id)
                row, attempt = moved
                continue
            return await self._record_payout(shard, row, attempts, result, keyed=keyed)

    def _payout_hold(
        self, payout_id: str, seq: int, shard: str, processor: str, new: NewPayout
    ) -> TransferRequest:
        return TransferRequest(
            id=transfer_id(payout_id, f"h{seq}"),
            debit_account_id=new.wallet_account_id,
            credit_account_id=psp_account_id(shard, processor, new.currency),
            amount=new.amount,
            currency=new.currency,
            flags=TransferFlags(pending=True),
            metadata={"payout": payout_id},
        )

    async def _next_payout_processor(
        self,
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
        now = self.clock()
        done = _finished(attempts[-1], failed, now)
        seq = row.attempt_count + 1
        name = candidates[index]
        attempt = _attempt(row.id, seq, Operation.PAYOUT, name, amount=row.amount, now=now)
        attempt = msgspec.structs.replace(attempt, routing=_routing(route, candidates, index))
        hold = self._payout_hold(row.id, seq, shard, name, new)
        assert row.hold_id is not None
        release = TransferRequest(
            id=transfer_id(row.id, f"v{seq - 1}"),
            flags=TransferFlags(void_pending=True),
            pending_id=row.hold_id,
            metadata={"payout": row.id},
        )
        moved = _bump(row, now, processor=name, hold_id=hold.id, attempt_count=seq)
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payout=moved,
                payout_version=row.version,
                transfers=(release, hold),
                ensure_accounts=_psp_request(hold.credit_account_id or "", row.currency),
                attempts=(done, attempt),
            )
        )
        if not written.ok:
            return None
        attempts[-1] = done
        attempts.append(attempt)
        return moved, attempt

    async def _record_payout(
        self,
        shard: str,
        row: PayoutRow,
        attempts: list[AttemptRow],
        result: ProcessorResult,
        *,
        keyed: Keyed | None,
        fence: Fence | None = None,
    ) -> Reply:
        now = self.clock()
        done = _finished(attempts[-1], result, now)
        all_attempts = (*attempts[:-1], done)
        if result.outcome is Outcome.AMBIGUOUS:
            key, reply = self._answer(keyed, PayoutView(row, all_attempts, shard))
            await self._write(PaymentWrite(shard=shard, attempts=(done,), key=key, fence=fence))
            return reply
        status = PayoutStatus(row.status)
        assert row.hold_id is not None
        if result.outcome is Outcome.APPROVED:
            new = _bump(
                row,
                now,
                status=status.to(PayoutStatus.PAID).value,
                processor_reference=result.processor_reference,
            )
            settle = TransferRequest(
                id=transfer_id(row.id, f"p{done.seq}"),
                flags=TransferFlags(post_pending=True),
                pending_id=row.hold_id,
                metadata={"payout": row.id},
            )
            event = "payout.paid"
        else:
            declined = result.outcome is Outcome.DECLINED
            new = _bump(
                row,
                now,
                status=status.to(PayoutStatus.FAILED).value,
                failure_code="payout_declined" if declined else _E.PROCESSOR_UNAVAILABLE.value,
                decline_code=result.decline_code,
                failure_detail=result.error,
            )
            settle = TransferRequest(
                id=transfer_id(row.id, f"v{done.seq}"),
                flags=TransferFlags(void_pending=True),
                pending_id=row.hold_id,
                metadata={"payout": row.id},
            )
            event = "payout.failed"
        key, reply = self._answer(keyed, PayoutView(new, all_attempts, shard))
        written = await self._write(
            PaymentWrite(
                shard=shard,
                payout=new,
                payout_version=row.version,
                attempts=(done,),
                transfers=(settle,),
                events=self._events([(event, new)], now),
                key=key,
                fence=fence,
            )
        )
        if written.ok:
            return reply
        if not written.conflict:
            log.error("payout %s: recording the outcome refused: %s", row.id, written)
        return await self._current(keyed, "payout", row.id)

    # -- workers ---------------------------------------------------------------------------------

    async def resolve_processing(
        self,
        *,
        fence: Fence | None = None,
        older_than: float = 60.0,
        limit: int = 100,
        shards: Sequence[str] | None = None,
    ) -> ResolveReport:
        """End what has been in flight for ``older_than`` seconds or more (a crash, or an
        AMBIGUOUS answer): ask the processor what became of each reference, record it."""
        report = ResolveReport()
        before = self.clock() - int(older_than * _NS)
        for shard in shards or list(self.shards):
            reads = self.reads(shard)
            # Page by page (``limit`` rows each, at most ``_RESOLVE_PAGES`` pages a pass),
            # so rows whose processor cannot answer now never hide the ones behind them.
            after: tuple[int, str] | None = None
            for _ in range(_RESOLVE_PAGES):
                rows = await reads.payments_in(PaymentStatus.PROCESSING.value, before, limit, after)
                for row in rows:
                    await self._guarded(report, row.id, self._resolve_payment(shard, row, fence))
                if len(rows) < limit:
                    break
                after = (rows[-1].updated_at, rows[-1].id)
            after = None
            for _ in range(_RESOLVE_PAGES):
                refunds = await reads.refunds_in(RefundStatus.PENDING.value, before, limit, after)
                for refund in refunds:
                    work = self._resolve_refund(shard, refund, fence)
                    await self._guarded(report, refund.id, work)
                if len(refunds) < limit:
                    break
                after = (refunds[-1].updated_at, refunds[-1].id)
            after = None
            for _ in range(_RESOLVE_PAGES):
                payouts = await reads.payouts_in(
                    PayoutStatus.PROCESSING.value, before, limit, after
                )
                for payout in payouts:
                    work = self._resolve_payout(shard, payout, fence)
                    await self._guarded(report, payout.id, work)
                if len(payouts) < limit:
                    break
                after = (payouts[-1].updated_at, payouts[-1].id)
        return report

    async def _guarded(self, report: ResolveReport, object_id: str, work: Awaitable[bool]) -> None:
        try:
            done = await work
        except PaycoreError as exc:
            if exc.code is _E.FENCING_TOKEN_STALE:
                raise
            report.failures += 1
            log.warning("resolving %s failed for now: %s", object_id, exc)
            return
        (report.resolved if done else report.still_open).append(object_id)

    async def _status(self, processor: str | None, reference: str) -> str | None:
        """The processor's state of ``reference``, or None when it cannot tell now."""
        result = await self._call(
            processor or "", Operation.STATUS, reference, lambda c: c.status(reference)
        )
        if result.outcome is not Outcome.APPROVED:
            return None
        return result.status

    async def _resolve_give_back(self, shard: str, row: PaymentRow, fence: Fence | None) -> bool:
        attempts = await self.reads(shard).attempts(row.id)
        current = [a for a in attempts if a.reference == row.pending_reference]
        if not current:
            return False
        give = current[-1]
        # The processor's word first (the give-back may have been done, its answer lost);
        # else send it again: void and refund are idempotent by reference.
        looked_up = give.reference if give.operation == Operation.REFUND.value else None
        state = await self._status(row.processor, looked_up or row.authorization_reference or "")
        if state in ("refunded", "voided"):
            result = _status_result(give, state, approved=frozenset({"refunded", "voided"}))
        else:
            result = await self._give_back(row, give)
            if result.outcome is not Outcome.APPROVED:
                return False
        earlier = [a for a in attempts if a.seq < give.seq]
        reply = await self._record_give_back(
            shard, row, [*earlier, give], result, keyed=None, fence=fence
        )
        return isinstance(reply.outcome, PaymentView) and (
            reply.outcome.payment.status == PaymentStatus.FAILED.value
        )

    async def _resolve_payment(self, shard: str, row: PaymentRow, fence: Fence | None) -> bool:
        op = PendingOp(row.pending_op) if row.pending_op else None
        reference = row.pending_reference or ""
        if op is PendingOp.GIVE_BACK:
            return await self._resolve_give_back(shard, row, fence)
        if op is PendingOp.TRANSFER:
            reply = await self._run_wallet_transfer(
                shard, row, self._wallet_move(row), None, wait=False, fence=fence
            )
            return isinstance(reply.outcome, PaymentView) and (
                reply.outcome.payment.status != PaymentStatus.PROCESSING.value
            )
        attempts = await self.reads(shard).attempts(row.id)
        current = [a for a in attempts if a.reference == reference]
        if not current:
            return False
        attempt = current[-1]
        earlier = [a for a in attempts if a.seq < attempt.seq]
        if op is PendingOp.AUTHORIZE:
            state = await self._status(row.processor, reference)
            if state is None:
                return False
            result = _status_result(attempt, state, approved=_APPROVED_AUTHORIZATION)
            if (
                result.outcome is Outcome.APPROVED
                and state == "authorized"
                and row.capture_method == CaptureMethod.AUTOMATIC.value
            ):
                # Authorized but not captured: capture it now (idempotent by reference).
                capture = await self._call(
                    row.processor or "",
                    Operation.CAPTURE,
                    f"{reference}.c",
                    lambda c: c.capture(reference, row.amount, f"{reference}.c"),
                )
                if capture.outcome is not Outcome.APPROVED:
                    return False
            await self._record_authorization(
                shard, row, [*earlier, attempt], result, keyed=None, fence=fence
            )
            return True
        if op is PendingOp.CAPTURE:
            state = await self._status(row.processor, reference)
            if state is None:
                return False
            result = _status_result(attempt, state, approved=frozenset({"captured", "refunded"}))
            await self._record_capture(
                shard, row, [*earlier, attempt], result, keyed=None, fence=fence
            )
            return True
        if op is PendingOp.VOID:
            authorization = row.authorization_reference or ""
            state = await self._status(row.processor, authorization)
            if state is None:
                return False
            if state not in ("voided", "not_found", "declined"):
                # Not voided yet: send the void again (idempotent), take its answer.
                result = await self._call(
                    row.processor or "",
                    Operation.VOID,
                    reference,
                    lambda c: c.void(authorization),
                )
            else:
                result = _status_result(attempt, "voided", approved=frozenset({"voided"}))
            if result.outcome is Outcome.AMBIGUOUS:
                return False
            await self._record_void(
                shard, row, [*earlier, attempt], result, keyed=None, fence=fence
            )
            return True
        return False

    async def _resolve_refund(self, shard: str, refund: RefundRow, fence: Fence | None) -> bool:
        attempts = await self.reads(shard).attempts(refund.id)
        if not attempts:
            return False
        attempt = attempts[-1]
        state = await self._status(refund.processor, attempt.reference)
        if state is None:
            return False
        result = _status_result(attempt, state, approved=frozenset({"refunded"}))
        await self._record_refund(shard, refund, attempt, result, keyed=None, fence=fence)
        return True

    async def _resolve_payout(self, shard: str, payout: PayoutRow, fence: Fence | None) -> bool:
        attempts = await self.reads(shard).attempts(payout.id)
        if not attempts:
            return False
        attempt = attempts[-1]
        state = await self._status(payout.processor, attempt.reference)
        if state is None:
            return False
        result = _status_result(attempt, state, approved=frozenset({"paid_out"}))
        await self._record_payout(shard, payout, [*attempts], result, keyed=None, fence=fence)
        return True

    async def expire_authorizations(
        self, *, fence: Fence | None = None, limit: int = 1000, shards: Sequence[str] | None = None
    ) -> list[str]:
        """Turn ``requires_capture`` payments whose authorization ran out into canceled
        (reason expired; succeeded if a part was captured), releasing their holds."""
        ended: list[str] = []
        now = self.clock()
        for shard in shards or list(self.shards):
            for row in await self.reads(shard).authorizations_due(now, limit):
                reply = await self._release(
                    shard, row, (), None, reason=CancelReason.EXPIRED, keyed=None, fence=fence
                )
                if isinstance(reply.outcome, PaymentView) and (
                    reply.outcome.payment.status != PaymentStatus.REQUIRES_CAPTURE.value
                ):
                    ended.append(row.id)
        return ended

    # -- events ----------------------------------------------------------------------------------

    def _events(self, events: Sequence[tuple[str, Any]], now: int) -> tuple[EventRow, ...]:
        return tuple(
            EventRow(
                id=new_id("evt"),
                type=kind,
                object_id=row.id,
                payload=_payload_json.encode(_payload(kind, row)).decode(),
                created_at=now,
            )
            for kind, row in events
        )


# -- module-level entry points: the node's service, the workers ---------------------------------


def build_payment_service(store: Store, settings: Settings, **service: Any) -> PaymentService:
    """The payment service a node serves from its settings: one HTTP connector per
    ``[[processors]]`` table, each behind a ``ResilientConnector`` (its ``resilience``
    table), routed by ``[routing]`` (without one: by priority, in the order the processors
    are listed), the router skipping processors whose breaker is open. No processor: every
    card payment and payout answers 503 ``processor_unavailable``."""
    # Imported here: the HTTP client and the resilience machinery only when a node serves.
    from paycore.payments.processors.http_connector import (  # noqa: PLC0415
        SimulatorConnector,
    )
    from paycore.payments.resilient import (  # noqa: PLC0415
        ResilienceConfig,
        ResilientConnector,
        availability,
    )
    from paycore.payments.routing import Router, load_routing  # noqa: PLC0415

    connectors: dict[str, ResilientConnector] = {}
    for spec in settings.processors:
        if spec.name in connectors:
            raise ValueError(f"processor {spec.name!r} is configured twice")
        inner = SimulatorConnector(spec.name, spec.url, timeout=spec.timeout_seconds)
        config = ResilienceConfig.from_table(spec.resilience)
        connectors[spec.name] = ResilientConnector(inner, config)
    if not connectors and not settings.shards and settings.embedded_processors:
        # The embedded default (no config): simulated acquirers in this process, our own
        # simulator reached through the same HTTP connector over an in-memory transport,
        # so card payments work on a fresh machine with no server at all.
        from paycore.payments.processors.simulator.app import Simulator  # noqa: PLC0415
        from paycore.payments.processors.simulator.config import (  # noqa: PLC0415
            SimulatorConfig,
        )
        from paycore.payments.processors.simulator.transport import (  # noqa: PLC0415
            SimulatorTransport,
        )

        for name in EMBEDDED_PROCESSORS:
            transport = SimulatorTransport(Simulator(name, SimulatorConfig()))
            inner = SimulatorConnector(name, f"http://{name}", transport=transport)
            connectors[name] = ResilientConnector(inner, ResilienceConfig())
    router: PaymentRouter = FixedRouter([])
    if connectors:
        table = settings.routing or {
            "default": {"strategy": "priority", "processors": list(connectors)}
        }
        router = Router(load_routing(table, known=connectors), available=availability(connectors))
    return PaymentService(store, connectors, router, **service)


# -- workers ----------------------------------------------------------------------------------


async def resolve_processing(
    store: Store,
    connectors: Mapping[str, ProcessorConnector],
    *,
    fence: Fence | None = None,
    older_than: float = 60.0,
    limit: int = 100,
    shards: Sequence[str] | None = None,
    router: PaymentRouter | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> ResolveReport:
    """One resolver pass (see ``PaymentService.resolve_processing``); for the workers."""
    service = PaymentService(store, connectors, router, clock=clock)
    return await service.resolve_processing(
        fence=fence, older_than=older_than, limit=limit, shards=shards
    )


async def expire_authorizations(
    store: Store,
    *,
    fence: Fence | None = None,
    limit: int = 1000,
    shards: Sequence[str] | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> list[str]:
    """One expiry pass (see ``PaymentService.expire_authorizations``); for the workers."""
    service = PaymentService(store, {}, clock=clock)
    return await service.expire_authorizations(fence=fence, limit=limit, shards=shards)


# -- helpers ---------------------------------------------------------------------------------

# What a row's in-flight fields go back to once its work ended.
_CLEAR: Final[dict[str, Any]] = {
    "pending_op": None,
    "pending_reference": None,
    "pending_amount": 0,
    "pending_final": 0,
}


def _bump(row: Any, now: int, **changes: Any) -> Any:
    """``row`` with ``changes``, its next version, stamped ``now``."""
    return msgspec.structs.replace(row, version=row.version + 1, updated_at=now, **changes)


def _attempt(
    parent_id: str, seq: int, operation: Operation, processor: str, *, amount: int, now: int
) -> AttemptRow:
    letter = {
        Operation.AUTHORIZE: "a",
        Operation.CAPTURE: "c",
        Operation.VOID: "v",
        Operation.REFUND: "r",
        Operation.PAYOUT: "o",
    }[operation]
    return AttemptRow(
        parent_id=parent_id,
        seq=seq,
        operation=operation.value,
        processor=processor,
        reference=f"{parent_id}.{letter}{seq}",
        amount=amount,
        created_at=now,
        updated_at=now,
    )


def _finished(attempt: AttemptRow, result: ProcessorResult, now: int) -> AttemptRow:
    return msgspec.structs.replace(
        attempt,
        outcome=result.outcome.value,
        decline_code=result.decline_code,
        error=result.error,
        processor_reference=result.processor_reference,
        latency_ms=round(result.latency_ms, 3),
        updated_at=now,
    )


def _routing(route: RouteLike, candidates: Sequence[str], index: int) -> str:
    """The routing decision an attempt was made under, as JSON."""
    decision = {
        "rule": route.rule,
        "strategy": str(route.strategy),
        "candidates": list(candidates),
        "position": index,
        "reason": "first choice" if index == 0 else "fallback after a failure",
    }
    return _payload_json.encode(decision).decode()


def _move(transfer: str, psp: str, row: PaymentRow, amount: int) -> TransferRequest:
    """A posted transfer psp -> merchant (money the processor collected for us)."""
    return TransferRequest(
        id=transfer,
        debit_account_id=psp,
        credit_account_id=row.merchant_account_id,
        amount=amount,
        currency=row.currency,
        metadata={"payment": row.id},
    )


def _psp_request(account_id: str, currency: str) -> tuple[AccountRequest, ...]:
    return (AccountRequest(account_id, currency, metadata={"role": "psp"}, tenant=SYSTEM_TENANT),)


def _check_refundable(row: PaymentRow, amount: int | None) -> int:
    """The amount to refund (all that is left when None), if it may be refunded."""
    left = row.amount_captured - row.amount_refunded - row.amount_refund_pending
    if amount is None:
        amount = left
    if amount > left or amount < 1:
        raise RequestError(
            _E.REFUND_EXCEEDS_CAPTURED,
            f"captured {row.amount_captured}, refunded or being refunded "
            f"{row.amount_refunded + row.amount_refund_pending}: at most {left} more",
        )
    return amount


def _in_progress(view: View) -> bool:
    if isinstance(view, PaymentView):
        return view.payment.status == PaymentStatus.PROCESSING.value
    if isinstance(view, RefundView):
        return view.refund.status == RefundStatus.PENDING.value
    return view.payout.status == PayoutStatus.PROCESSING.value


def _status_result(attempt: AttemptRow, state: str, *, approved: frozenset[str]) -> ProcessorResult:
    """A status lookup's answer as the outcome of the call it looked up: ``approved``
    states mean done, ``declined`` declined, anything else (failed, not_found, ...) that
    the processor never did it."""
    if state in approved:
        outcome = Outcome.APPROVED
    elif state == "declined":
        outcome = Outcome.DECLINED
    else:
        outcome = Outcome.FAILED
    return ProcessorResult(
        outcome=outcome,
        processor=attempt.processor,
        operation=Operation(attempt.operation),
        reference=attempt.reference,
        error=None if outcome is not Outcome.FAILED else f"status {state}",
        status=state,
    )


def _payload(kind: str, row: Any) -> dict[str, Any]:
    """An event's body: the object's public fields, never card data beyond brand/last4."""
    if isinstance(row, PaymentRow):
        return {
            "type": kind,
            "object": "payment",
            "id": row.id,
            "status": row.status,
            "amount": row.amount,
            "currency": row.currency,
            "merchant_account_id": row.merchant_account_id,
            "amount_captured": row.amount_captured,
            "processor": row.processor,
            "card": None
            if row.card_last4 is None
            else {"brand": row.card_brand, "last4": row.card_last4},
            "failure_code": row.failure_code,
            "cancellation_reason": row.cancel_reason,
        }
    if isinstance(row, RefundRow):
        return {
            "type": kind,
            "object": "refund",
            "id": row.id,
            "payment_id": row.payment_id,
            "status": row.status,
            "amount": row.amount,
            "currency": row.currency,
            "failure_code": row.failure_code,
        }
    assert isinstance(row, PayoutRow)
    return {
        "type": kind,
        "object": "payout",
        "id": row.id,
        "status": row.status,
        "wallet_account_id": row.wallet_account_id,
        "amount": row.amount,
        "currency": row.currency,
        "failure_code": row.failure_code,
    }


def _check_amount(amount: int) -> None:
    if not 1 <= amount <= MAX_PAYMENT_AMOUNT:
        raise RequestError(
            _E.INVALID_REQUEST, f"amount must be in 1..{MAX_PAYMENT_AMOUNT:,} minor units"
        )
