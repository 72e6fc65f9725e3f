"""``client.accounts``: ``/v1/accounts`` and an account's transfers and balance history."""

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
from paycore_client.models import Account, BalanceRecord, Transfer
from paycore_client.params import (
    AccountCreateParams,
    AccountListParams,
    AccountTransfersParams,
    BalanceHistoryParams,
    CloseAccountParams,
)

__all__ = ["Accounts", "AsyncAccounts"]

_account = decoder_for(Account)
_accounts = decoder_for(PageBody[Account])
_transfers = decoder_for(PageBody[Transfer])
_balances = decoder_for(PageBody[BalanceRecord])


def _create(params: AccountCreateParams, idempotency_key: str | None) -> Call[Account]:
    return Call("POST", "/v1/accounts", _account, body=body_of(params),
                idempotency_key=idempotency_key)  # fmt: skip


def _retrieve(account_id: str) -> Call[Account]:
    return Call("GET", path("v1", "accounts", account_id), _account)


def _close(
    account_id: str, params: CloseAccountParams, idempotency_key: str | None
) -> Call[Account]:
    route = path("v1", "accounts", account_id, "close")
    return Call("POST", route, _account, body=body_of(params), idempotency_key=idempotency_key)


def _list(params: AccountListParams) -> tuple[ListCall[Account], str | None]:
    return list_call("/v1/accounts", _accounts, params)


def _transfers_of(
    account_id: str, params: AccountTransfersParams
) -> tuple[ListCall[Transfer], str | None]:
    return list_call(path("v1", "accounts", account_id, "transfers"), _transfers, params)


def _balance_history(
    account_id: str, params: BalanceHistoryParams
) -> tuple[ListCall[BalanceRecord], str | None]:
    return list_call(path("v1", "accounts", account_id, "balances"), _balances, params)


class Accounts:
    """Accounts hold one currency; their balance is derived from four counters."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[AccountCreateParams]
    ) -> Account:
        """Open an account; the same id with the same fields answers the same account."""
        return self._sender.send(_create(params, idempotency_key))

    def retrieve(self, account_id: str) -> Account:
        """An account with its balance."""
        return self._sender.send(_retrieve(account_id))

    def list(self, **params: Unpack[AccountListParams]) -> Page[Account]:
        """A page of the key's accounts, oldest first; ``auto_paging_iter()`` for all."""
        return page(self._sender, *_list(params))

    def close(
        self,
        account_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[CloseAccountParams],
    ) -> Account:
        """Close for good an account without holds and with a zero balance, or move its
        balance to ``transfer_balance_to`` and close it in one transaction."""
        return self._sender.send(_close(account_id, params, idempotency_key))

    def transfers(
        self, account_id: str, **params: Unpack[AccountTransfersParams]
    ) -> Page[Transfer]:
        """A page of the transfers touching an account (``side``: debits, credits)."""
        return page(self._sender, *_transfers_of(account_id, params))

    def balance_history(
        self, account_id: str, **params: Unpack[BalanceHistoryParams]
    ) -> Page[BalanceRecord]:
        """The balance after each transfer of a ``history`` account; ``at``: the one then."""
        return page(self._sender, *_balance_history(account_id, params))


class AsyncAccounts:
    """``Accounts`` for ``AsyncPaycore``."""

    def __init__(self, sender: AsyncSender) -> None:
        self._sender = sender

    async def create(
        self, *, idempotency_key: str | None = None, **params: Unpack[AccountCreateParams]
    ) -> Account:
        return await self._sender.send(_create(params, idempotency_key))

    async def retrieve(self, account_id: str) -> Account:
        return await self._sender.send(_retrieve(account_id))

    async def list(self, **params: Unpack[AccountListParams]) -> AsyncPage[Account]:
        return await async_page(self._sender, *_list(params))

    async def close(
        self,
        account_id: str,
        *,
        idempotency_key: str | None = None,
        **params: Unpack[CloseAccountParams],
    ) -> Account:
        return await self._sender.send(_close(account_id, params, idempotency_key))

    async def transfers(
        self, account_id: str, **params: Unpack[AccountTransfersParams]
    ) -> AsyncPage[Transfer]:
        return await async_page(self._sender, *_transfers_of(account_id, params))

    async def balance_history(
        self, account_id: str, **params: Unpack[BalanceHistoryParams]
    ) -> AsyncPage[BalanceRecord]:
        return await async_page(self._sender, *_balance_history(account_id, params))
