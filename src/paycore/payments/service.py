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

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paycore.config import FxConfig, Settings
from paycore.fx.rates import RateSource
from paycore.logs import bind
from paycore.payments.accounts import is_processor_name
from paycore.payments.flows import capture as _capture
from paycore.payments.flows import card as _card
from paycore.payments.flows import payout as _payout
from paycore.payments.flows import refund as _refund
from paycore.payments.flows import resolver as _resolver
from paycore.payments.flows.context import Context, not_found
from paycore.payments.flows.model import (
    DEFAULT_AUTHORIZATION_SECONDS,
    MAX_PAYMENT_AMOUNT,
    FixedRouter,
    NewPayment,
    NewPayout,
    PaymentRouter,
    PaymentView,
    PayoutView,
    RefundView,
    Reply,
    ReplyOutcome,
    ResolveReport,
)
from paycore.payments.flows.work import UnitOfWork
from paycore.payments.processors.base import ProcessorConnector
from paycore.storage.base import Fence, Idempotency
from paycore.storage.listing import ListReads
from paycore.storage.payments import PaymentReads
from paycore.storage.store import ShardStore, Store

__all__ = [
    "DEFAULT_AUTHORIZATION_SECONDS",
    "MAX_PAYMENT_AMOUNT",
    "FixedRouter",
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
    "uses_embedded_processors",
]

# The in-process simulated acquirers of the embedded default (no [[processors]]).
EMBEDDED_PROCESSORS = ("sim-a", "sim-b")


class PaymentService:
    """Payments over ``store`` through ``connectors`` (name -> connector, each already
    wrapped by resilience), in the order ``router`` gives (see the module docstring).

    ``authorization_seconds``: how long a manual-capture authorization holds (the
    ledger hold's timeout); ``saga_wait_seconds``: how long a cross-shard wallet payment
    waits for its transfer to settle before answering ``processing``.

    The facade of ``paycore.payments.flows``: each request is one ``UnitOfWork`` over
    the service's ``context``, run by the flow of its kind.
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
        self.context = Context(
            store,
            connectors,
            router or FixedRouter(list(connectors)),
            clock=clock,
            authorization_seconds=authorization_seconds,
            saga_wait_seconds=saga_wait_seconds,
            conflict_retries=conflict_retries,
        )

    def use_fx(self, rates: RateSource, config: FxConfig) -> None:
        """Settle card payments in another currency than their merchant account's
        through a conversion, at a rate locked from ``rates`` with ``config``'s spread
        (``paycore.payments.flows.fx``); without this they are refused."""
        self.context.fx_rates = rates
        self.context.fx_config = config

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def shards(self) -> Mapping[str, ShardStore]:
        return self.context.shards

    @property
    def connectors(self) -> dict[str, ProcessorConnector]:
        return self.context.connectors

    @property
    def router(self) -> PaymentRouter:
        return self.context.router

    @property
    def clock(self) -> Callable[[], int]:
        return self.context.clock

    async def aclose(self) -> None:
        """Close every connector (their connection pools)."""
        for connector in self.connectors.values():
            await connector.aclose()

    # -- placement and reads -----------------------------------------------------------------

    def shard_of(self, account_id: str) -> str:
        return self.context.shard_of(account_id)

    def reads(self, shard: str) -> PaymentReads:
        return self.context.reads(shard)

    def lists(self, shard: str) -> ListReads:
        """The list endpoints' reads of ``shard`` (``paycore.payments.listing``)."""
        return self.context.lists(shard)

    async def check_owner(self, kind: str, object_id: str, tenant: str | None) -> None:
        """Raise ``kind``'s not-found error (exactly as for a missing object) unless
        ``tenant`` owns it (None: anyone does). A payment and its refunds belong to the
        tenant of the merchant account, a payout to the tenant of its wallet."""
        if tenant is None:
            return
        found = await self.context.locate(kind, object_id)
        account: str | None = None
        if found is not None:
            row = found[1]
            if kind == "refund":
                payment = await self.context.locate("payment", row.payment_id)
                row = None if payment is None else payment[1]
            if row is not None:
                account = row.wallet_account_id if kind == "payout" else row.merchant_account_id
        if account is not None:
            owner = (await self.store.get_accounts([account])).get(account)
            if owner is not None and owner.tenant == tenant:
                return
        raise not_found(kind, object_id)

    async def get_payment(self, payment_id: str) -> PaymentView:
        return await self.context.get_payment(payment_id)

    async def get_refund(self, refund_id: str) -> RefundView:
        view = await self.context.find("refund", refund_id)
        assert isinstance(view, RefundView)
        return view

    async def get_payout(self, payout_id: str) -> PayoutView:
        view = await self.context.find("payout", payout_id)
        assert isinstance(view, PayoutView)
        return view

    # -- requests (each one unit of work under its Idempotency-Key) ----------------------------

    async def create_payment(self, new: NewPayment, keyed: Idempotency | None = None) -> Reply:
        """Pay ``new.amount`` to the merchant account from a card or a wallet."""
        return await _card.create_payment(UnitOfWork(self.context, keyed), new)

    async def capture(
        self,
        payment_id: str,
        amount: int | None = None,
        *,
        final: bool = False,
        keyed: Idempotency | None = None,
    ) -> Reply:
        """Capture ``amount`` (default: all that is left) of an authorization; ``final``
        releases what is left after it. Several partial captures may follow each other."""
        bind(payment=payment_id)  # this request's lines, its access line included
        work = UnitOfWork(self.context, keyed)
        return await _capture.capture(work, payment_id, amount, final=final)

    async def cancel(self, payment_id: str, *, keyed: Idempotency | None = None) -> Reply:
        """Release what an authorization holds (void at the processor, then the hold)."""
        bind(payment=payment_id)
        return await _capture.cancel(UnitOfWork(self.context, keyed), payment_id)

    async def refund(
        self, payment_id: str, amount: int | None = None, *, keyed: Idempotency | None = None
    ) -> Reply:
        """Give back ``amount`` (default: all that is left) of what a card payment
        captured; partial and several refunds never exceed it, pending ones included."""
        bind(payment=payment_id)
        return await _refund.refund(UnitOfWork(self.context, keyed), payment_id, amount)

    async def payout(self, new: NewPayout, keyed: Idempotency | None = None) -> Reply:
        """Pay ``new.amount`` out of a wallet to a bank account, through a processor."""
        return await _payout.payout(UnitOfWork(self.context, keyed), new)

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
        return await _resolver.resolve_processing(
            self.context, fence=fence, older_than=older_than, limit=limit, shards=shards
        )

    async def expire_authorizations(
        self, *, fence: Fence | None = None, limit: int = 1000, shards: Sequence[str] | None = None
    ) -> list[str]:
        """Turn ``requires_capture`` payments whose authorization ran out into canceled
        (reason expired; succeeded if a part was captured), releasing their holds."""
        return await _resolver.expire_authorizations(
            self.context, fence=fence, limit=limit, shards=shards
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
    if not connectors and uses_embedded_processors(settings):
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


def uses_embedded_processors(settings: Settings) -> bool:
    """Whether a node of ``settings`` sends payments to the simulated acquirers inside its
    own process (``EMBEDDED_PROCESSORS``, the embedded default): no ``[[processors]]``, no
    ``[[shards]]`` and ``embedded_processors`` left on. Their state (authorizations,
    captures) lives in that process alone."""
    return not settings.processors and not settings.shards and settings.embedded_processors


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
