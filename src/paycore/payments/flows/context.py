"""What every flow works with: the store and its shards, their reads, and processor
calls that report to the router (its in-flight count and each result)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from paycore.cluster.namespaces import is_reserved
from paycore.cluster.router import gather_all
from paycore.config import FxConfig
from paycore.errors import ErrorCode, PaycoreError, RequestError
from paycore.fx.rates import RateSource
from paycore.ledger.model import Account, is_valid_id
from paycore.payments.flows.model import (
    PaymentRouter,
    PaymentView,
    PayoutView,
    RefundView,
    RouteLike,
    View,
)
from paycore.payments.processors.base import (
    Operation,
    Outcome,
    ProcessorConnector,
    ProcessorResult,
)
from paycore.storage.listing import ListReads
from paycore.storage.payments import PaymentReads, PaymentWrite, PaymentWriteResult
from paycore.storage.store import Store

__all__ = [
    "Context",
    "log",
    "not_found",
]

# The service's one logger, under the name it has always had (operators filter on it).
log = logging.getLogger("paycore.payments.service")
_E = ErrorCode


def not_found(kind: str, object_id: str) -> RequestError:
    code = {"payment": _E.PAYMENT_NOT_FOUND, "refund": _E.REFUND_NOT_FOUND}.get(
        kind, _E.PAYOUT_NOT_FOUND
    )
    return RequestError(code, f"{kind} {object_id!r} not found")


def _check_open(account: Account) -> None:
    if account.flags.closed:
        raise RequestError(_E.ACCOUNT_CLOSED, f"account {account.id!r} is closed")


class Context:
    """The store, the connectors (name -> connector, each already wrapped by resilience)
    and the router of one payment service, with its settings (see ``PaymentService``).

    ``write`` is the one way a flow's transaction reaches the store (tests wrap it to
    make one fail)."""

    def __init__(
        self,
        store: Store,
        connectors: Mapping[str, ProcessorConnector],
        router: PaymentRouter,
        *,
        clock: Callable[[], int],
        authorization_seconds: int,
        saga_wait_seconds: float,
        conflict_retries: int,
    ) -> None:
        self.store = store
        self.shards = store.shard_stores
        self.connectors = dict(connectors)
        self.router = router
        self.clock = clock
        self.authorization_seconds = authorization_seconds
        self.saga_wait_seconds = saga_wait_seconds
        self.conflict_retries = conflict_retries
        # Where a card payment in another currency than its merchant's locks its rate
        # (``PaymentService.use_fx``); None: such a payment is refused (currency_mismatch).
        self.fx_rates: RateSource | None = None
        self.fx_config = FxConfig()
        self.fx_accounts: set[str] = set()  # currencies whose FX accounts exist
        self.psp_accounts: set[str] = set()  # processor accounts made for FX chains

    # -- placement and reads -----------------------------------------------------------------

    def shard_of(self, account_id: str) -> str:
        return self.store.shard_of(account_id)

    def reads(self, shard: str) -> PaymentReads:
        return self.shards[shard].payments

    def lists(self, shard: str) -> ListReads:
        """The list endpoints' reads of ``shard`` (``paycore.payments.listing``)."""
        return self.shards[shard].lists

    async def locate(self, kind: str, object_id: str) -> tuple[str, Any] | None:
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

    async def view(self, kind: str, shard: str, row: Any) -> View:
        attempts = tuple(await self.reads(shard).attempts(row.id))
        if kind == "payment":
            return PaymentView(row, attempts, shard)
        if kind == "refund":
            return RefundView(row, attempts, shard)
        return PayoutView(row, attempts, shard)

    async def find(self, kind: str, object_id: str) -> View:
        """The view of a payment, refund or payout; its not-found error when none."""
        found = await self.locate(kind, object_id)
        if found is None:
            raise not_found(kind, object_id)
        return await self.view(kind, *found)

    async def get_payment(self, payment_id: str) -> PaymentView:
        view = await self.find("payment", payment_id)
        assert isinstance(view, PaymentView)
        return view

    async def open_account(self, account_id: str, currency: str, tenant: str | None = None) -> str:
        found = await self._client_account(account_id, tenant)
        if found.currency != currency:
            raise RequestError(
                _E.CURRENCY_MISMATCH, f"account {account_id!r} is {found.currency}, not {currency}"
            )
        _check_open(found)
        return account_id

    async def settlement_currency(
        self, account_id: str, currency: str, tenant: str | None = None
    ) -> str | None:
        """The currency a card payment in ``currency`` settles in on merchant account
        ``account_id``: None when it is the same, the account's when it differs and this
        service converts (else ``currency_mismatch``); the checks of ``open_account``."""
        found = await self._client_account(account_id, tenant)
        if found.currency != currency and self.fx_rates is None:
            raise RequestError(
                _E.CURRENCY_MISMATCH, f"account {account_id!r} is {found.currency}, not {currency}"
            )
        _check_open(found)
        return None if found.currency == currency else found.currency

    async def _client_account(self, account_id: str, tenant: str | None) -> Account:
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
        return found

    async def write(self, write: PaymentWrite) -> PaymentWriteResult:
        result: PaymentWriteResult = await self.store.execute(write)
        return result

    # -- processor calls -----------------------------------------------------------------------

    def candidates(self, route: RouteLike, currency: str, what: str) -> list[str]:
        """The processors of ``route`` that are configured, in its order; 503
        ``processor_unavailable`` when none is."""
        candidates = [c for c in route.candidates if c in self.connectors]
        if not candidates:
            raise PaycoreError(
                _E.PROCESSOR_UNAVAILABLE, f"no processor takes {currency} {what} now"
            )
        return candidates

    async def call(
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

    async def status(self, processor: str | None, reference: str) -> str | None:
        """The processor's state of ``reference``, or None when it cannot tell now."""
        result = await self.call(
            processor or "", Operation.STATUS, reference, lambda c: c.status(reference)
        )
        if result.outcome is not Outcome.APPROVED:
            return None
        return result.status
