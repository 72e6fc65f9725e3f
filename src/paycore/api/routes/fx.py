"""``/v1/fx``: quotes at a locked rate, and the conversions that book them.

``POST /v1/fx/quotes`` prices an exchange from the node's rate source and keeps the
quote (on the key shard, tenant-scoped) until it expires; ``POST /v1/fx/conversions``
books a quote as one linked chain (``paycore.fx.conversion``), at most once per quote;
a held conversion is captured (in part, at the locked rate) or voided as one;
``GET /v1/fx/conversions`` lists the caller's (its used quotes, as they stand). Every
POST honours an Idempotency-Key; a conversion is idempotent by its quote besides.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter

from paycore.api.auth import tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.fx_schemas import (
    CaptureConversionIn,
    ConversionIn,
    ConversionOut,
    ConversionPageOut,
    QuoteIn,
    QuoteOut,
    QuotePageOut,
    VoidConversionIn,
    quote_out,
)
from paycore.api.idempotency import WriteExecutor
from paycore.api.listing import decode_list_cursor, encode_list_cursor
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.schemas import decode_body, encode, written_status
from paycore.api.tenancy import Namespace, namespace_of
from paycore.cluster.namespaces import reserved_account_id
from paycore.config import FxConfig, Settings
from paycore.errors import ErrorCode, RequestError
from paycore.fx.accounts import account_requests
from paycore.fx.conversion import (
    LEGS,
    capture_legs,
    captured_amounts,
    conversion_id,
    leg_id,
    open_legs,
    quote_id_of,
    void_legs,
)
from paycore.fx.quotes import check_usable, new_quote_id, price
from paycore.fx.rates import RateSource
from paycore.fx.rounding import rate_text
from paycore.ledger.model import TransferStatus, TransferView
from paycore.ledger.rules import TransferResult
from paycore.storage.base import CreateAccounts, CreateTransfers, StoredResponse
from paycore.storage.fx_quotes import CreateFxQuote, FxQuoteReads, FxQuoteRow
from paycore.storage.store import Store

__all__ = ["fx_routes"]

_JSON: Final = "application/json"
_NS: Final = 1_000_000_000
_DEFAULT_PAGE_SIZE: Final = 100
# Quotes read per request of GET /v1/fx/conversions (in chunks) to find its conversions.
_SCAN_CHUNK: Final = 200
_SCAN_LIMIT: Final = 2_000
Clock = Callable[[], int]


def _quote_reads(store: Store) -> FxQuoteReads:
    return store.key_store.fx_quotes  # quotes live on the key shard, as API keys do


def _refusal(results: list[TransferResult], taken: ErrorCode) -> StoredResponse | None:
    """The problem a refused chain answers: its first own refusal (the others say
    ``linked_event_failed``); an id taken with other fields answers ``taken`` (opening:
    the quote was used; capturing: the holds were captured, with another amount)."""
    failed = [r for r in results if r.code is not None]
    if not failed:
        return None
    first = next((r for r in failed if r.code is not ErrorCode.LINKED_EVENT_FAILED), failed[0])
    assert first.code is not None
    if first.code is ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS:
        return problem(taken, _TAKEN[taken])
    return problem(first.code, first.detail)


_TAKEN: Final = {
    ErrorCode.FX_QUOTE_ALREADY_USED: "the quote was used by another conversion",
    ErrorCode.PENDING_TRANSFER_ALREADY_POSTED: "the conversion was captured with another amount",
}


def _render(
    quote: FxQuoteRow,
    amounts: tuple[int, int, int],
    taken: ErrorCode = ErrorCode.FX_QUOTE_ALREADY_USED,
) -> Callable[[list[TransferResult]], StoredResponse]:
    """The answer to a conversion's chain (opened, captured or voided), from its results."""

    def render(results: list[TransferResult]) -> StoredResponse:
        refused = _refusal(results, taken)
        if refused is not None:
            return refused
        sell, buy = results[0].transfer, results[1].transfer
        assert sell is not None
        assert buy is not None
        in_flight = any(r.in_flight for r in results)
        status = TransferStatus.IN_FLIGHT if in_flight else written_status(sell)
        out = ConversionOut(
            id=conversion_id(quote.id),
            quote_id=quote.id,
            status=status,
            debit_account_id=sell.debit_account_id,
            credit_account_id=buy.credit_account_id,
            sell_currency=quote.sell_currency,
            sell_amount=amounts[0],
            buy_currency=quote.buy_currency,
            buy_amount=amounts[1],
            spread_amount=amounts[2],
            rate=quote.rate,
            transfer_ids=[r.id for r in results],
        )
        return StoredResponse(200 if results[0].exists else 201, encode(out), _JSON)

    return render


class _Book:
    """Where the quotes are (the key shard), the tenant-checked lookups, and the FX
    accounts this node knows exist."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ensured: set[str] = set()  # currencies whose FX accounts exist

    async def own_quote(self, request: Request[Any, Any, Any], quote_id: str) -> FxQuoteRow:
        """The caller's quote; another tenant's is a missing one."""
        row = await _quote_reads(self.store).get(tenant_of(request), quote_id)
        if row is None:
            raise RequestError(ErrorCode.FX_QUOTE_NOT_FOUND, f"FX quote {quote_id!r} not found")
        return row

    async def used(self, quote: FxQuoteRow) -> bool:
        return await self.store.get_transfer(leg_id(quote.id, "sell")) is not None

    async def conversion_quote(
        self, request: Request[Any, Any, Any], conversion: str
    ) -> FxQuoteRow:
        """The quote of the caller's conversion ``conversion`` (booked, not refused)."""
        quote_id = quote_id_of(conversion)
        reads = _quote_reads(self.store)
        row = None if quote_id is None else await reads.get(tenant_of(request), quote_id)
        if row is None or not await self.used(row):
            raise RequestError(
                ErrorCode.FX_CONVERSION_NOT_FOUND, f"FX conversion {conversion!r} not found"
            )
        return row

    async def check_owner(self, tenant: str, *account_ids: str) -> None:
        """The tenant's own accounts only (a missing one is left to the ledger to name).

        A conversion's chain runs as paycore's own (no tenant): its spread leg touches
        only FX accounts, which no tenant owns, and the ledger's tenant check would take
        its id, on a retry, for another tenant's. The quote was checked to be the
        caller's; its accounts are checked here (a tenant never changes)."""
        found = await self.store.get_accounts(list(account_ids))
        for account_id in account_ids:
            account = found.get(account_id)
            if account is not None and account.tenant != tenant:
                raise RequestError(ErrorCode.ACCOUNT_NOT_FOUND, f"account {account_id!r} not found")

    async def ensure_accounts(self, *currencies: str) -> None:
        """Create the FX accounts of ``currencies`` once per node (again: a no-op)."""
        missing = [c for c in currencies if c not in self._ensured]
        if missing:
            await self.store.execute(CreateAccounts(account_requests(*missing)))
            self._ensured.update(missing)


def _new_quote(body: QuoteIn, tenant: str, mid: Fraction, fx: FxConfig, now: int) -> FxQuoteRow:
    pair = f"{body.sell_currency}/{body.buy_currency}"
    priced = price(
        body.sell_currency,
        body.buy_currency,
        mid,
        spread_bps=fx.spreads.get(pair, fx.spread_bps),
        sell_amount=body.sell_amount,
        buy_amount=body.buy_amount,
    )
    return FxQuoteRow(
        id=new_quote_id(),
        tenant=tenant,
        sell_currency=priced.sell_currency,
        buy_currency=priced.buy_currency,
        sell_amount=priced.sell_amount,
        buy_amount=priced.buy_amount,
        spread_amount=priced.spread_amount,
        rate=rate_text(priced.rate),
        mid_rate=rate_text(priced.mid_rate),
        created_at=now,
        expires_at=now + fx.quote_ttl_seconds * _NS,
    )


def _render_quote(row: FxQuoteRow) -> StoredResponse:
    return StoredResponse(201, encode(quote_out(row)), _JSON)


def fx_routes(
    store: Store,
    writes: WriteExecutor,
    settings: Settings,
    rates: RateSource,
    *,
    clock: Clock = time.time_ns,
) -> list[HTTPRouteHandler]:
    """The FX handlers, bound to one store and rate source; ``clock``: ns since the epoch
    (a test's own, to expire quotes without waiting)."""
    book = _Book(store)
    return [
        *_quote_routes(book, writes, settings, rates, clock),
        *_conversion_routes(book, writes, clock, settings.max_page_size),
    ]


def _quote_routes(
    book: _Book, writes: WriteExecutor, settings: Settings, rates: RateSource, clock: Clock
) -> list[HTTPRouteHandler]:
    decode_quote = msgspec.json.Decoder(QuoteIn)
    fx, max_page = settings.fx, settings.max_page_size

    @post(
        "/v1/fx/quotes",
        operation_class=documented({201: QuoteOut}, body=QuoteIn, idempotency_key=True),
        tags=["fx"],
    )
    async def create_quote(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Price an exchange and lock its rate until ``expires_at``."""
        body = decode_body(decode_quote, await read_json_body(request))
        mid = await rates.rate(body.sell_currency, body.buy_currency)
        row = _new_quote(body, tenant_of(request), mid, fx, clock())
        return await writes.run(request, CreateFxQuote(row), _render_quote, body)

    @get("/v1/fx/quotes/{quote_id:str}", operation_class=documented({200: QuoteOut}), tags=["fx"])
    async def read_quote(
        request: Request[Any, Any, Any], quote_id: FromPath[str]
    ) -> Response[bytes]:
        """A quote, as it was given (it never changes)."""
        row = await book.own_quote(request, quote_id)
        return Response(encode(quote_out(row)), media_type=_JSON)

    @get("/v1/fx/quotes", operation_class=documented({200: QuotePageOut}), tags=["fx"])
    async def list_quotes(
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1)] = _DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """The caller's quotes, oldest first (expired ones included)."""
        if limit > max_page:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"limit must be in 1..{max_page}")
        after = decode_list_cursor(cursor)
        rows = await _quote_reads(book.store).of_tenant(
            tenant_of(request), after=after, limit=limit + 1
        )
        last = rows[limit - 1] if len(rows) > limit else None
        page = QuotePageOut(
            data=[quote_out(row) for row in rows[:limit]],
            next_cursor=None if last is None else encode_list_cursor((last.created_at, last.id)),
        )
        return Response(encode(page), media_type=_JSON)

    return [create_quote, read_quote, list_quotes]


def _conversion_routes(
    book: _Book, writes: WriteExecutor, clock: Clock, max_page: int
) -> list[HTTPRouteHandler]:
    decode_conversion = msgspec.json.Decoder(ConversionIn)
    decode_capture = msgspec.json.Decoder(CaptureConversionIn)
    decode_void = msgspec.json.Decoder(VoidConversionIn)
    answered: dict[int, type[msgspec.Struct]] = {201: ConversionOut, 200: ConversionOut}

    @post(
        "/v1/fx/conversions",
        operation_class=documented(answered, body=ConversionIn, idempotency_key=True),
        tags=["fx"],
    )
    async def create_conversion(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Book a quote: debit the sold currency, credit the bought one, as one chain."""
        body = decode_body(decode_conversion, await read_json_body(request))
        if body.timeout_seconds and not body.pending:
            raise RequestError(
                ErrorCode.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
                "timeout_seconds is only allowed on a held conversion (pending: true)",
            )
        for account_id in (body.debit_account_id, body.credit_account_id):
            if (why := reserved_account_id(account_id)) is not None:
                raise RequestError(ErrorCode.INVALID_REQUEST, why)
        quote = await book.own_quote(request, body.quote_id)
        # An expired quote is refused unless it was used in time: then this is a retry,
        # answered as the first time.
        now = clock()
        if now >= quote.expires_at:
            check_usable(quote.id, quote.expires_at, now, used=await book.used(quote))
        ns = namespace_of(request)
        debit, credit = ns.account(body.debit_account_id), ns.account(body.credit_account_id)
        await book.check_owner(ns.tenant, debit, credit)
        await book.ensure_accounts(quote.sell_currency, quote.buy_currency)
        items = open_legs(quote, debit, credit, pending=body.pending, timeout=body.timeout_seconds)
        command = CreateTransfers(items, internal=True)
        amounts = (quote.sell_amount, quote.buy_amount, quote.spread_amount)
        return await writes.run(request, command, ns.transfers(_render(quote, amounts)), body)

    async def capture_or_void(
        request: Request[Any, Any, Any], conversion: str, body: msgspec.Struct
    ) -> Response[bytes]:
        quote = await book.conversion_quote(request, conversion)
        ns = namespace_of(request)
        if isinstance(body, CaptureConversionIn):
            amounts = captured_amounts(quote, body.sell_amount)
            items = capture_legs(quote, body.sell_amount)
        else:
            amounts = (quote.sell_amount, quote.buy_amount, quote.spread_amount)
            items = void_legs(quote)
        command = CreateTransfers(items, internal=True)
        render = _render(quote, amounts, ErrorCode.PENDING_TRANSFER_ALREADY_POSTED)
        return await writes.run(request, command, ns.transfers(render), body)

    @post(
        "/v1/fx/conversions/{conversion_id:str}/capture",
        operation_class=documented(answered, body=CaptureConversionIn, idempotency_key=True),
        tags=["fx"],
    )
    async def capture_conversion(
        request: Request[Any, Any, Any], conversion_id: FromPath[str]
    ) -> Response[bytes]:
        """Convert a held conversion, all of it or ``sell_amount`` at the locked rate."""
        body = decode_body(decode_capture, await read_json_body(request), empty=b"{}")
        return await capture_or_void(request, conversion_id, body)

    @post(
        "/v1/fx/conversions/{conversion_id:str}/void",
        operation_class=documented(answered, body=VoidConversionIn, idempotency_key=True),
        tags=["fx"],
    )
    async def void_conversion(
        request: Request[Any, Any, Any], conversion_id: FromPath[str]
    ) -> Response[bytes]:
        """Release every hold of a held conversion."""
        body = decode_body(decode_void, await read_json_body(request), empty=b"{}")
        return await capture_or_void(request, conversion_id, body)

    @get(
        "/v1/fx/conversions/{conversion_id:str}",
        operation_class=documented({200: ConversionOut}),
        tags=["fx"],
    )
    async def read_conversion(
        request: Request[Any, Any, Any], conversion_id: FromPath[str]
    ) -> Response[bytes]:
        """A conversion with its status now (a hold may since be captured or voided)."""
        quote = await book.conversion_quote(request, conversion_id)
        current = await _current(book.store, namespace_of(request), quote)
        return Response(encode(current), media_type=_JSON)

    @get("/v1/fx/conversions", operation_class=documented({200: ConversionPageOut}), tags=["fx"])
    async def list_conversions(
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1)] = _DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """The caller's conversions by their quotes' creation, oldest first, each as it
        stands now (a page may be short when many unused quotes lie between them)."""
        if limit > max_page:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"limit must be in 1..{max_page}")
        quotes, after = await _used_quotes(
            book, tenant_of(request), decode_list_cursor(cursor), limit
        )
        page = ConversionPageOut(
            data=await _currents(book.store, namespace_of(request), quotes),
            next_cursor=encode_list_cursor(after),
        )
        return Response(encode(page), media_type=_JSON)

    return [
        create_conversion,
        capture_conversion,
        void_conversion,
        read_conversion,
        list_conversions,
    ]


async def _used_quotes(
    book: _Book, tenant: str, after: tuple[int, str] | None, limit: int
) -> tuple[list[FxQuoteRow], tuple[int, str] | None]:
    """Up to ``limit`` of ``tenant``'s quotes after the key ``after`` that a conversion
    used, and the key to go on from (None: there are no more).

    A conversion is a used quote (it has no row of its own), so the quotes are read in
    chunks and the unused ones skipped, at most ``_SCAN_LIMIT`` per page: past that, a
    short page is answered with the key of the last quote read."""
    reads = _quote_reads(book.store)
    found: list[FxQuoteRow] = []
    scanned = 0
    while scanned < _SCAN_LIMIT:
        rows = await reads.of_tenant(tenant, after=after, limit=_SCAN_CHUNK)
        scanned += len(rows)
        used = await book.store.get_transfers([leg_id(row.id, "sell") for row in rows])
        for row in rows:
            if leg_id(row.id, "sell") in used:
                if len(found) == limit:
                    return found, after  # one more exists: go on after the last read
                found.append(row)
            after = (row.created_at, row.id)
        if len(rows) < _SCAN_CHUNK:
            return found, None
    return found, after


async def _current(store: Store, ns: Namespace, quote: FxQuoteRow) -> ConversionOut:
    """A conversion as it stands: its legs' status, and what a capture booked."""
    return (await _currents(store, ns, [quote]))[0]


async def _currents(store: Store, ns: Namespace, quotes: list[FxQuoteRow]) -> list[ConversionOut]:
    """``_current`` of each of ``quotes`` (all used), in two reads for them all."""
    ids = [leg_id(quote.id, leg) for quote in quotes for leg in LEGS]
    views = await store.get_transfers(ids)
    posted = await store.get_transfers([f"{i}.post" for i in ids])
    return [_conversion_out(ns, quote, views, posted) for quote in quotes]


def _conversion_out(
    ns: Namespace,
    quote: FxQuoteRow,
    views: Mapping[str, TransferView],
    posted: Mapping[str, TransferView],
) -> ConversionOut:
    ids = [leg_id(quote.id, leg) for leg in LEGS]
    sell, buy = views[ids[0]], views[ids[1]]
    amounts = [quote.sell_amount, quote.buy_amount, quote.spread_amount]
    for i, leg_id_ in enumerate(ids):
        if (view := posted.get(f"{leg_id_}.post")) is not None:
            # A capture too small to earn a spread voids the spread's hold (conversion.py).
            amounts[i] = 0 if view.transfer.flags.void_pending else view.transfer.amount
    return ConversionOut(
        id=conversion_id(quote.id),
        quote_id=quote.id,
        status=sell.status,
        debit_account_id=ns.out(sell.transfer.debit_account_id),
        credit_account_id=ns.out(buy.transfer.credit_account_id),
        sell_currency=quote.sell_currency,
        sell_amount=amounts[0],
        buy_currency=quote.buy_currency,
        buy_amount=amounts[1],
        spread_amount=amounts[2] if ids[2] in views else 0,
        rate=quote.rate,
        transfer_ids=[i for i in ids if i in views],
    )
