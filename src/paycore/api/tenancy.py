"""The caller's id namespace at the API boundary (see ``paycore.ledger.tenancy``).

Every id a route takes (path ids, ``id``, ``debit_account_id``, ``credit_account_id``,
``pending_id``, ``merchant_account_id``, ``wallet_account_id``) goes through
``Namespace.account`` or ``Namespace.transfer`` before it reaches the store, and every
id or error detail a route answers goes back through ``Namespace.out`` and
``Namespace.detail``; a stored answer (Idempotency-Key) is rendered the same way, so a
replay is the first answer byte for byte. For the default tenant every method is the
identity: its answers are what they were before ids were scoped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import msgspec

from paycore.api.auth import tenant_of
from paycore.ledger.model import Account, Transfer, TransferRequest
from paycore.ledger.rules import AccountResult, TransferResult
from paycore.ledger.tenancy import (
    SEPARATOR,
    client_detail,
    client_id,
    id_prefix,
    internal_account_id,
    internal_transfer_id,
)
from paycore.storage.base import StoredResponse

__all__ = ["Namespace", "caller_detail", "namespace_of"]

_replace = msgspec.structs.replace


class Namespace:
    """Maps one tenant's client ids to the store's and back."""

    __slots__ = ("identity", "tenant")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        # The default tenant's ids are kept as sent: nothing to map but a "/" in a path.
        self.identity = not id_prefix(tenant)

    # -- in ---------------------------------------------------------------------------

    def account(self, client: str) -> str:
        return internal_account_id(self.tenant, client)

    def transfer(self, client: str) -> str:
        return internal_transfer_id(self.tenant, client)

    def optional_account(self, client: str | None) -> str | None:
        return None if client is None else self.account(client)

    def transfer_request(self, r: TransferRequest) -> TransferRequest:
        """A client's transfer item with every id it names in the store's form."""
        if self.identity and not any(
            SEPARATOR in i
            for i in (r.id, r.debit_account_id, r.credit_account_id, r.pending_id)
            if i is not None
        ):
            return r  # the hot path of the default tenant: nothing to map
        return _replace(
            r,
            id=self.transfer(r.id),
            debit_account_id=self.optional_account(r.debit_account_id),
            credit_account_id=self.optional_account(r.credit_account_id),
            pending_id=None if r.pending_id is None else self.transfer(r.pending_id),
        )

    # -- out --------------------------------------------------------------------------

    def out(self, internal: str) -> str:
        return client_id(self.tenant, internal)

    def optional_out(self, internal: str | None) -> str | None:
        return None if internal is None else self.out(internal)

    def detail(self, text: str) -> str:
        return client_detail(self.tenant, text)

    def account_out(self, a: Account) -> Account:
        return a if self.identity else _replace(a, id=self.out(a.id))

    def transfer_out(self, t: Transfer) -> Transfer:
        if self.identity:
            return t
        return _replace(
            t,
            id=self.out(t.id),
            debit_account_id=self.out(t.debit_account_id),
            credit_account_id=self.out(t.credit_account_id),
            pending_id=self.optional_out(t.pending_id),
        )

    def transfer_result(self, r: TransferResult) -> TransferResult:
        return _replace(
            r,
            id=self.out(r.id),
            transfer=None if r.transfer is None else self.transfer_out(r.transfer),
            detail=self.detail(r.detail),
        )

    def account_result(self, r: AccountResult) -> AccountResult:
        return _replace(
            r,
            id=self.out(r.id),
            account=None if r.account is None else self.account_out(r.account),
            detail=self.detail(r.detail),
        )

    # -- answers ----------------------------------------------------------------------

    def transfers(
        self, render: Callable[[list[TransferResult]], StoredResponse]
    ) -> Callable[[list[TransferResult]], StoredResponse]:
        """``render`` of the store's transfer results, shown in this namespace."""
        if self.identity:
            return render
        return lambda results: render([self.transfer_result(r) for r in results])

    def accounts(self, render: Callable[[Any], StoredResponse]) -> Callable[[Any], StoredResponse]:
        """``render`` of an account command's result(s), shown in this namespace."""
        if self.identity:
            return render

        def mapped(result: Any) -> StoredResponse:
            if isinstance(result, AccountResult):
                return render(self.account_result(result))
            assert isinstance(result, Sequence)
            return render([self.account_result(r) for r in result])

        return mapped


@lru_cache(maxsize=4096)
def _namespace(tenant: str) -> Namespace:
    return Namespace(tenant)


def namespace_of(request: Any) -> Namespace:
    """The namespace of the request's caller (its key's tenant)."""
    return _namespace(tenant_of(request))


def caller_detail(request: Any, detail: str) -> str:
    """An error detail as the request's caller may read it (unchanged before a caller
    is known: a refused key, a public route)."""
    try:
        tenant = tenant_of(request)
    except RuntimeError:
        return detail
    return client_detail(tenant, detail)
