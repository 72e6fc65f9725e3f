"""``/v1/accounts``: create, read, close, list an account's transfers, balance history."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter

from paycore.api.auth import Principal, Scope, principal_of, tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import IDEMPOTENCY_HEADER, WriteExecutor
from paycore.api.listing import DEFAULT_PAGE_SIZE, bad_cursor, check_limit
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.schemas import (
    AccountIn,
    AccountOut,
    BalancePageOut,
    EmptyIn,
    Id,
    TransferPageOut,
    account_out,
    balance_record_out,
    decode_body,
    encode,
    parse_rfc3339,
    transfer_out,
)
from paycore.api.tenancy import Namespace, namespace_of
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import SYSTEM_TENANT, Account, BalanceRecord
from paycore.ledger.rules import AccountResult
from paycore.storage.base import CloseAccount, CreateAccounts, StoredResponse
from paycore.storage.store import Store

__all__ = ["account_routes", "decode_cursor", "encode_cursor", "new_account_id"]

_JSON = "application/json"
_MAX_TIMESTAMP = 2**63 - 1  # timestamps are signed 64-bit in both backends


def new_account_id(tenant: str | None = None, idempotency_key: str | None = None) -> str:
    """The id of an account created without one (36 chars of the id alphabet): fresh,
    or, under an Idempotency-Key, derived from the tenant and the key, so that a request
    that runs twice (its key's lock lost by a node frozen past the lease, while another
    node ran it again) opens one account, not two."""
    if idempotency_key is None:
        return f"acc_{uuid.uuid4().hex}"
    seed = f"{tenant or ''}\x00{idempotency_key}".encode()
    return f"acc_{hashlib.sha256(seed).hexdigest()[:32]}"


class CloseIn(EmptyIn, frozen=True):  # EmptyIn: a strict request body, no fields of its own
    """Body of ``POST /v1/accounts/{id}/close`` (absent: ``{}``). ``transfer_balance_to``:
    an account of the same currency, on any shard, that takes the posted balance (or
    pays the debt) with the close; without it an account with a balance is not closed
    (409 ``account_has_balance``)."""

    transfer_balance_to: Id | None = None


def encode_cursor(timestamp: int | None) -> str | None:
    """Cursors are opaque to clients; today they carry the last timestamp seen."""
    return None if timestamp is None else str(timestamp)


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    # Length first: int() of thousands of digits is slow, and refused past 4300.
    valid = len(cursor) <= 19 and cursor.isascii() and cursor.isdigit()
    if not valid or int(cursor) > _MAX_TIMESTAMP:
        raise bad_cursor()
    return int(cursor)


def _account_response(result: AccountResult, created_status: int) -> StoredResponse:
    if result.code is not None or result.account is None:
        return problem(result.code or ErrorCode.INTERNAL_ERROR, result.detail)
    status = 200 if result.exists else created_status
    return StoredResponse(status, encode(account_out(result.account)), _JSON)


def render_created(results: list[AccountResult]) -> StoredResponse:
    """201 for a new account, 200 when the same account already existed."""
    return _account_response(results[0], 201)


def render_closed(result: AccountResult) -> StoredResponse:
    return _account_response(result, 200)


async def _readable_account(
    store: Store, account_id: str, caller: Principal, ns: Namespace
) -> Account:
    """An account the caller may read (``account_id``: the client's): its own, or, for
    an ``admin`` key, one of paycore's own (clearing and processor accounts, read-only),
    which an operator reconciles; to anyone else those are missing like another tenant's
    (which, in the caller's namespace, is another id: a plain miss)."""
    internal = ns.account(account_id)
    account = (await store.get_accounts([internal])).get(internal)
    if account is not None and account.tenant == caller.tenant:
        return account
    if account is not None and account.tenant == SYSTEM_TENANT and Scope.ADMIN in caller.scopes:
        return account
    raise RequestError(ErrorCode.ACCOUNT_NOT_FOUND, f"account {account_id!r} not found")


def account_routes(
    store: Store, writes: WriteExecutor, settings: Settings
) -> list[HTTPRouteHandler]:
    """The account handlers, bound to one store."""
    decode_account = msgspec.json.Decoder(AccountIn)
    decode_close = msgspec.json.Decoder(CloseIn)

    @post(
        "/v1/accounts",
        operation_class=documented(
            {201: AccountOut, 200: AccountOut}, body=AccountIn, idempotency_key=True
        ),
        tags=["accounts"],
    )
    async def create_account(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Create an account; the same id with the same fields returns it again (200)."""
        body = decode_body(decode_account, await read_json_body(request))
        tenant = tenant_of(request)
        ns = namespace_of(request)
        account_id = body.id or new_account_id(tenant, request.headers.get(IDEMPOTENCY_HEADER))
        command = CreateAccounts((body.to_request(ns.account(account_id), tenant),))
        return await writes.run(request, command, ns.accounts(render_created), body)

    @get(
        "/v1/accounts/{account_id:str}",
        operation_class=documented({200: AccountOut}),
        tags=["accounts"],
    )
    async def read_account(
        request: Request[Any, Any, Any], account_id: FromPath[str]
    ) -> Response[bytes]:
        """An account with its balance counters."""
        ns = namespace_of(request)
        account = await _readable_account(store, account_id, principal_of(request), ns)
        return Response(encode(account_out(ns.account_out(account))), media_type=_JSON)

    @post(
        "/v1/accounts/{account_id:str}/close",
        operation_class=documented({200: AccountOut}, body=CloseIn, idempotency_key=True),
        tags=["accounts"],
    )
    async def close_account(
        request: Request[Any, Any, Any], account_id: FromPath[str]
    ) -> Response[bytes]:
        """Close an account without holds and with a zero balance, or move its balance to
        ``transfer_balance_to`` and close it in one transaction; it refuses new transfers
        from then on."""
        body = decode_body(decode_close, await read_json_body(request), empty=b"{}")
        ns = namespace_of(request)
        to = None if body.transfer_balance_to is None else ns.account(body.transfer_balance_to)
        command = CloseAccount(ns.account(account_id), tenant_of(request), to)
        return await writes.run(request, command, ns.accounts(render_closed), body)

    @get(
        "/v1/accounts/{account_id:str}/transfers",
        operation_class=documented({200: TransferPageOut}),
        tags=["accounts"],
    )
    async def account_transfers(
        request: Request[Any, Any, Any],
        account_id: FromPath[str],
        *,
        limit: Annotated[int, QueryParameter(ge=1)] = DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
        order: FromQuery[Literal["asc", "desc"]] = "asc",
        side: FromQuery[Literal["both", "debits", "credits"]] = "both",
    ) -> Response[bytes]:
        """Transfers touching an account, by time; follow ``next_cursor`` for more."""
        check_limit(limit, settings)
        after = decode_cursor(cursor)
        ns = namespace_of(request)
        account = await _readable_account(store, account_id, principal_of(request), ns)
        page = await store.account_transfers(
            account.id, limit=limit, cursor=after, descending=order == "desc", side=side
        )
        out = TransferPageOut(
            data=[transfer_out(ns.transfer_out(view.transfer), view.status) for view in page.data],
            next_cursor=encode_cursor(page.next_cursor),
        )
        return Response(encode(out), media_type=_JSON)

    @get(
        "/v1/accounts/{account_id:str}/balances",
        operation_class=documented({200: BalancePageOut}),
        tags=["accounts"],
    )
    async def account_balances(
        request: Request[Any, Any, Any],
        account_id: FromPath[str],
        at: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1)] = DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """Balance after each transfer of a ``history`` account; ``at`` gives the one then."""
        check_limit(limit, settings)
        after = decode_cursor(cursor)
        account = await _readable_account(
            store, account_id, principal_of(request), namespace_of(request)
        )
        if not account.flags.history:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"account {account_id!r} does not keep balance history (flags.history)",
            )
        if at is not None:
            records = await _balance_at(store, account, at)
            next_cursor = None
        else:
            records = await store.balance_history(account.id, limit=limit + 1, cursor=after)
            next_cursor = records[limit - 1].timestamp if len(records) > limit else None
            records = records[:limit]
        out = BalancePageOut(
            data=[balance_record_out(r) for r in records],
            next_cursor=encode_cursor(next_cursor),
        )
        return Response(encode(out), media_type=_JSON)

    return [create_account, read_account, close_account, account_transfers, account_balances]


async def _balance_at(store: Store, account: Account, at: str) -> list[BalanceRecord]:
    """The balance in force at ``at``: the last snapshot before it, else zero if it existed."""
    try:
        at_ns = parse_rfc3339(at)
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"at: {exc}") from None
    if at_ns < account.timestamp:
        return []  # the account did not exist yet
    records = await store.balance_history(account.id, at=min(at_ns, _MAX_TIMESTAMP))
    if records:
        return records
    # No transfer had touched the account yet: its balance was the opening zero.
    return [BalanceRecord(account.id, account.timestamp, 0, 0, 0, 0)]
