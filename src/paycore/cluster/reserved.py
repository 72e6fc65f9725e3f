"""The reserved-namespace policy of the router: what a client may not name, and the answer.

The prefixes themselves live in ``paycore.cluster.namespaces``. On one shard (no
settlement there) a command passes straight through unless it names what the payments
or the settlement reserve (``psp:`` accounts, ``pm.`` transfers and holds, ``xs.``
transfers, ``paycore:`` metadata keys, answered as on a cluster); those items are
answered here and the rest goes through. On any store, paycore's own accounts stay open, and a close
may not move a balance to them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from paycore.cluster.namespaces import (
    PSP_PREFIX,
    is_reserved,
    refusal_of_account,
    refusal_of_client_item,
)
from paycore.cluster.split import Split, check_chains, fail
from paycore.errors import ErrorCode
from paycore.ledger.rules import AccountResult
from paycore.storage.base import CloseAccount, CreateAccounts, CreateTransfers
from paycore.storage.store import Command

__all__ = ["close_refusal", "reserved_close", "single_part", "single_shard_reserved"]

_E = ErrorCode


def close_refusal(command: CloseAccount) -> AccountResult | None:
    """A ``transfer_balance_to`` the close cannot take: one of paycore's accounts.
    Decided from the ids alone."""
    account_id, to = command.account_id, command.transfer_balance_to
    if to is None or is_reserved(account_id):
        return None
    if is_reserved(to):
        return AccountResult(account_id, code=_E.INVALID_REQUEST, detail=f"{to!r} is reserved")
    return None


def reserved_close(command: CloseAccount) -> AccountResult:
    return AccountResult(
        id=command.account_id,
        code=_E.INVALID_REQUEST,
        detail="clearing and processor accounts stay open",
    )


def single_shard_reserved(command: Command, first: str) -> Split | None:
    """On a single shard (no settlement there), what the payments and the settlement
    reserve is still refused to clients: accounts ``psp:...``, transfer ids ``pm....`` and
    ``xs....``, metadata keys ``paycore:...`` (a saga's note would change how a transfer
    is stamped and shown). None when the command names none of them (the usual case: it
    passes straight through)."""
    if isinstance(command, CloseAccount):
        if not command.account_id.startswith(PSP_PREFIX):
            return None
        split = Split(1)
        split.upfront[0] = reserved_close(command)
        return split
    refused: dict[int, Any]
    if isinstance(command, CreateAccounts):
        refused = {
            i: AccountResult(r.id, code=_E.INVALID_REQUEST, detail=why)
            for i, r in enumerate(command.requests)
            if (why := refusal_of_account(r)) is not None
        }
    elif isinstance(command, CreateTransfers) and not command.internal:
        refused = {}
        for i, r in enumerate(command.requests):  # one cheap pass: batches are large
            if (refusal := refusal_of_client_item(r)) is not None:
                refused[i] = fail(r.id, *refusal)
    else:
        return None
    if not refused:
        return None
    split = Split(len(command.requests))
    split.upfront.update(refused)
    if isinstance(command, CreateTransfers):
        target = dict.fromkeys(range(len(command.requests)), first)
        check_chains(command.requests, target, {}, split)
    for index in range(len(command.requests)):
        if index not in split.upfront:
            split.add(first, index)
    return split


def single_part(command: Command, split: Split, first: str) -> Command | None:
    """The items of ``command`` that ``split`` lets through to the only shard."""
    indices = split.parts.get(first)
    if not indices or not isinstance(command, CreateTransfers | CreateAccounts):
        return None
    requests = tuple(command.requests[i] for i in indices)
    return msgspec.structs.replace(command, requests=requests)
