"""The payments' chart of accounts and the ids they give things (see docs/payments.md).

Per shard, processor and currency, one system account ``psp:<shard>:<processor>:<CUR>``
holds what that processor owes us (card money it collected, negative from its side) or
what we owe it to pay out; it has no limits and lives on its home shard (the router pins
it there, like clearing accounts), so every transfer of a payment stays on the payment's
shard. Client accounts never start with ``psp:``, client transfers never with ``pm.``.

Ids: ``pay_``, ``re_``, ``po_`` and ``evt_`` plus 24 random hex digits; the ledger
transfers of payment ``pay_X`` are ``pm.pay_X.<step><n>``, so they are found from the
payment and never collide with a client's; a payment settled through a conversion books
its captures and refunds as chains ``fx.<its id>.<step>.<leg>`` (``fx_chain_id``).
"""

from __future__ import annotations

import re
import secrets
from typing import Final

from paycore.cluster.namespaces import (
    FX_TRANSFER_PREFIX,
    PAYMENT_TRANSFER_PREFIX,
    PSP_PREFIX,
    parse_psp,
    psp_account_id,
)

__all__ = [
    "PAYMENT_TRANSFER_PREFIX",
    "PSP_PREFIX",
    "fx_chain_id",
    "is_processor_name",
    "new_id",
    "parse_psp",
    "psp_account_id",
    "transfer_id",
]

# A processor's name is part of its accounts' ids (at most 64 chars in all).
_PROCESSOR_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,24}")


def is_processor_name(name: str) -> bool:
    return _PROCESSOR_NAME.fullmatch(name) is not None


def new_id(prefix: str) -> str:
    """A fresh id: ``prefix`` (``pay``, ``re``, ``po``, ``evt``), ``_``, 24 hex digits."""
    return f"{prefix}_{secrets.token_hex(12)}"


def transfer_id(owner_id: str, step: str) -> str:
    """The ledger transfer of step ``step`` (e.g. ``h1``: the hold of attempt 1) of the
    payment, refund or payout ``owner_id``."""
    return f"{PAYMENT_TRANSFER_PREFIX}{owner_id}.{step}"


def fx_chain_id(owner_id: str, step: str) -> str:
    """The chain (``<id>.<leg>`` each) settling step ``step`` of payment or refund
    ``owner_id`` through a conversion (``paycore.fx.settlement``): ``fx.`` ids, which
    the ledger lets paycore's own commands post and void across shards."""
    return f"{FX_TRANSFER_PREFIX}{owner_id}.{step}"
