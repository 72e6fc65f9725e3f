"""``/v1/api_keys``: an admin key manages the API keys of its own tenant.

Create (the token shown once), list, read, revoke and rotate with a grace period; what
``paycore keys`` does for an operator, over HTTP and within one tenant. Another
tenant's key is answered exactly as a missing one (404 ``api_key_not_found``), every
check made in the key shard's transaction.

A revocation holds at once on the node that made it and on the others within the key
cache's time (``paycore.api.auth.CACHE_SECONDS``). The tenant's last active admin key
cannot be revoked over HTTP (409 ``last_admin_key``): the tenant would lose the means
to manage its keys; rotating it is allowed (its successor is an admin key too), and an
operator's ``paycore keys revoke`` can still revoke it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter

from paycore.api.auth import ApiKeys, Scope, tenant_of
from paycore.api.bodies import read_json_body
from paycore.api.idempotency import WriteExecutor
from paycore.api.key_schemas import (
    ApiKeyIn,
    ApiKeyOut,
    ApiKeyPageOut,
    NewApiKeyOut,
    RotateApiKeyIn,
    RotatedApiKeyOut,
    api_key_out,
    decode_key_cursor,
    encode_key_cursor,
    new_api_key_out,
)
from paycore.api.listing import DEFAULT_PAGE_SIZE, bad_cursor, check_limit
from paycore.api.problems import problem
from paycore.api.routes._docs import documented
from paycore.api.schemas import decode_body, encode
from paycore.api.shown_once import run_shown_once
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.storage.base import StoredResponse
from paycore.storage.keys import ApiKeyRow, CreateApiKey, KeyChange, RevokeTenantApiKey

__all__ = ["api_key_routes"]

_JSON = "application/json"
_ADMIN: dict[str, Any] = {"scope": Scope.ADMIN}


def _missing(key_id: str) -> RequestError:
    return RequestError(ErrorCode.API_KEY_NOT_FOUND, f"API key {key_id!r} not found")


def _not_found_problem(key_id: str) -> StoredResponse:
    return problem(ErrorCode.API_KEY_NOT_FOUND, f"API key {key_id!r} not found")


def api_key_routes(
    keys: ApiKeys, writes: WriteExecutor, settings: Settings
) -> list[HTTPRouteHandler]:
    """The API key handlers, bound to the node's ``ApiKeys`` (its cache included)."""
    decode_create = msgspec.json.Decoder(ApiKeyIn)
    decode_rotate = msgspec.json.Decoder(RotateApiKeyIn)

    async def _own_key(tenant: str, key_id: str) -> ApiKeyRow:
        row = await keys.reads.get(key_id)
        if row is None or row.tenant != tenant:
            raise _missing(key_id)
        return row

    @post(
        "/v1/api_keys",
        operation_class=documented({201: NewApiKeyOut}, body=ApiKeyIn, idempotency_key=True),
        tags=["api keys"],
        opt=_ADMIN,
    )
    async def create_api_key(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Make an API key for the caller's tenant; its token is in this answer only
        (store it now: paycore keeps only its hash). Needs the ``admin`` scope."""
        body = decode_body(decode_create, await read_json_body(request))
        new = keys.mint(
            tenant_of(request),
            frozenset(body.scopes),
            expires_in_seconds=body.expires_in_seconds,
            name=body.name,
        )

        def render(row: ApiKeyRow, token: str | None) -> StoredResponse:
            return StoredResponse(201, encode(new_api_key_out(row, time.time_ns(), token)), _JSON)

        return await run_shown_once(
            writes, request, CreateApiKey(new.row), body, render=render, secret=new.token
        )

    @get(
        "/v1/api_keys",
        operation_class=documented({200: ApiKeyPageOut}),
        tags=["api keys"],
        opt=_ADMIN,
    )
    async def list_api_keys(
        request: Request[Any, Any, Any],
        *,
        limit: Annotated[int, QueryParameter(ge=1)] = DEFAULT_PAGE_SIZE,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """The caller's tenant's keys, oldest first, revoked and expired ones included
        (see ``status``); never a secret. Follow ``next_cursor`` for more."""
        check_limit(limit, settings)
        after = None
        if cursor is not None:
            after = decode_key_cursor(cursor)
            if after is None:
                raise bad_cursor()
        rows = await keys.reads.of_tenant(tenant_of(request), after=after, limit=limit + 1)
        now = time.time_ns()
        page = ApiKeyPageOut(
            data=[api_key_out(row, now) for row in rows[:limit]],
            next_cursor=encode_key_cursor(rows[limit - 1]) if len(rows) > limit else None,
        )
        return Response(encode(page), media_type=_JSON)

    @get(
        "/v1/api_keys/{key_id:str}",
        operation_class=documented({200: ApiKeyOut}),
        tags=["api keys"],
        opt=_ADMIN,
    )
    async def read_api_key(
        request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> Response[bytes]:
        """One of the tenant's keys, without its secret."""
        row = await _own_key(tenant_of(request), key_id)
        return Response(encode(api_key_out(row, time.time_ns())), media_type=_JSON)

    @delete(
        "/v1/api_keys/{key_id:str}",
        operation_class=documented({200: ApiKeyOut}),
        tags=["api keys"],
        opt=_ADMIN,
        status_code=200,
    )
    async def revoke_api_key(
        request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> Response[bytes]:
        """Revoke one of the tenant's keys now: refused at once by this node, by the
        others within the key cache's few seconds. Revoking a revoked key changes
        nothing. The tenant's last active admin key is not revoked (409
        ``last_admin_key``): make another admin key first."""
        now = time.time_ns()
        change: KeyChange = await writes.store.execute(
            RevokeTenantApiKey(tenant_of(request), key_id, now)
        )
        keys.forget(key_id)
        if change.old is None:
            raise _missing(key_id)
        if change.last_admin:
            raise RequestError(
                ErrorCode.LAST_ADMIN_KEY,
                f"API key {key_id!r} is the tenant's last active admin key; "
                "make another admin key before revoking it",
            )
        return Response(encode(api_key_out(change.old, now)), media_type=_JSON)

    @post(
        "/v1/api_keys/{key_id:str}/rotate",
        operation_class=documented(
            {201: RotatedApiKeyOut}, body=RotateApiKeyIn, idempotency_key=True
        ),
        tags=["api keys"],
        opt=_ADMIN,
    )
    async def rotate_api_key(
        request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> Response[bytes]:
        """Replace an active key by a new one of the same scopes and name (its token in
        this answer only); the old one keeps working for ``grace_seconds``, then is
        refused. A revoked or expired-by-revocation key cannot be rotated (404)."""
        body = decode_body(decode_rotate, await read_json_body(request), empty=b"{}")
        old = await _own_key(tenant_of(request), key_id)
        new, command = keys.rotation(old, body.grace_seconds)

        def render(change: KeyChange, token: str | None) -> StoredResponse:
            if change.old is None or change.new is None:
                return _not_found_problem(key_id)
            now = time.time_ns()
            shown = new_api_key_out(change.new, now, token)
            out = RotatedApiKeyOut(
                **msgspec.structs.asdict(shown), replaces=api_key_out(change.old, now)
            )
            return StoredResponse(201, encode(out), _JSON)

        response = await run_shown_once(
            writes, request, command, body, render=render, secret=new.token
        )
        keys.forget(key_id)
        return response

    return [create_api_key, list_api_keys, read_api_key, revoke_api_key, rotate_api_key]
