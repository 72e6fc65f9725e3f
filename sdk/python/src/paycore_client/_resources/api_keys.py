"""``client.api_keys``: the tenant's API keys (an ``admin`` key is needed).

A key's token is shown once, in the answer that made it (``NewApiKey.token``); a
rotation makes a new key beside the old one, which keeps working for a grace period.
"""

from __future__ import annotations

from typing import Unpack

from paycore_client._call import Call, PageBody, body_of, decoder_for, path
from paycore_client._pagination import AsyncPage, Page
from paycore_client._resources._sender import (
    AsyncSender,
    ListCall,
    Sender,
    async_page,
    list_call,
    page,
)
from paycore_client.models import ApiKey, NewApiKey, RotatedApiKey
from paycore_client.params import ApiKeyCreateParams, ApiKeyListParams, ApiKeyRotateParams

__all__ = ["ApiKeys", "AsyncApiKeys"]

_key = decoder_for(ApiKey)
_new_key = decoder_for(NewApiKey)
_rotated = decoder_for(RotatedApiKey)
_keys = decoder_for(PageBody[ApiKey])


def _create(params: ApiKeyCreateParams, idempotency_key: str | None) -> Call[NewApiKey]:
    return Call("POST", "/v1/api_keys", _new_key, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _retrieve(key_id: str) -> Call[ApiKey]:
    return Call("GET", path("v1", "api_keys", key_id), _key)


def _revoke(key_id: str) -> Call[ApiKey]:
    return Call("DELETE", path("v1", "api_keys", key_id), _key)


def _rotate(
    key_id: str, params: ApiKeyRotateParams, idempotency_key: str | None
) -> Call[RotatedApiKey]:
    return Call("POST", path("v1", "api_keys", key_id, "rotate"), _rotated,
                body=body_of(params), idempotency_key=idempotency_key)  # fmt: skip


def _list(params: ApiKeyListParams) -> tuple[ListCall[ApiKey], str | None]:
    return list_call("/v1/api_keys", _keys, params)


class ApiKeys:
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[ApiKeyCreateParams]
    ) -> NewApiKey:
        """A new key of the caller's tenant with ``scopes``; its ``token`` is in this
        answer only."""
        return self._sender.send(_create(params, idempotency_key))

    def retrieve(self, key_id: str) -> ApiKey:
        return self._sender.send(_retrieve(key_id))

    def list(self, **params: Unpack[ApiKeyListParams]) -> Page[ApiKey]:
        """The tenant's keys, oldest first, revoked and expired ones included."""
        return page(self._sender, *_list(params))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key now (again: no change). The tenant's last active admin key is
        refused (``ConflictError``, code ``last_admin_key``)."""
        return self._sender.send(_revoke(key_id))

    def rotate(
        self,
        key_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[ApiKeyRotateParams],
    ) -> RotatedApiKey:
        """A new key of the same scopes and name (its ``token`` in this answer only);
        the old one keeps working ``grace_seconds`` more."""
        return self._sender.send(_rotate(key_id, params, idempotency_key))


class AsyncApiKeys:
    """``ApiKeys`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[ApiKeyCreateParams]
    ) -> NewApiKey:
        return await self._sender.send(_create(params, idempotency_key))

    async def retrieve(self, key_id: str) -> ApiKey:
        return await self._sender.send(_retrieve(key_id))

    async def list(self, **params: Unpack[ApiKeyListParams]) -> AsyncPage[ApiKey]:
        return await async_page(self._sender, *_list(params))

    async def revoke(self, key_id: str) -> ApiKey:
        return await self._sender.send(_revoke(key_id))

    async def rotate(
        self,
        key_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[ApiKeyRotateParams],
    ) -> RotatedApiKey:
        return await self._sender.send(_rotate(key_id, params, idempotency_key))
