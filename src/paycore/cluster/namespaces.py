"""The ids and metadata keys paycore keeps for itself, in one place.

Clients may not take them; the cluster's settlement and the payments layer do:

=============== ============================================================ ==========
prefix          what carries it                                              whose
=============== ============================================================ ==========
``clearing:``   accounts ``clearing:<home>:<peer>:<CUR>`` of cross-shard      settlement
                transfers, on their home shard
``psp:``        accounts ``psp:<home>:<processor>:<CUR>``: money due from or  payments
                to a processor
``xs.``         transfers the settlement writes (step 3, expiry mirrors)      settlement
``pm.``         transfers (and holds) of payments, refunds and payouts        payments
``fx:``         accounts ``fx:liquidity:<CUR>`` (the house's position in a     fx
                currency) and ``fx:revenue:<CUR>`` (spreads earned)
``fx.``         transfers of currency conversions, ``fx.<quote id>.<leg>``    fx
                (and of card payments settled through one, ``fx.<payment or
                refund id>.<step>.<leg>``)
``recon:``      accounts ``recon:<role>:<processor>:<CUR>`` (role: ``bank``,  reconciliation
                ``fees``, ``chargebacks``, ``suspense``)
``rc.``         transfers of settlement reports, ``rc.<batch hash>.<leg>``    reconciliation
``paycore:``    metadata keys (``paycore:xs`` marks a saga's transfers)      settlement
=============== ============================================================ ==========

An account id or a transfer id starting with any of the id prefixes is refused from a
client with ``invalid_request`` (payments pass ``internal`` for their own ``pm.`` ids,
conversions for their ``fx.`` ones); so is a metadata key starting with ``paycore:``.
The FX and reconciliation accounts are made by paycore itself, as the system tenant: the
only account requests with a reserved id that are let through (``refusal_of_account``);
the reconciliation's transfers pass ``internal`` like the payments'.
"""

from __future__ import annotations

from typing import Final

from paycore.errors import ErrorCode
from paycore.ledger.model import (
    SETTLEMENT_METADATA_KEY,
    SYSTEM_HOLD_PREFIX,
    SYSTEM_TENANT,
    AccountRequest,
    TransferRequest,
)

__all__ = [
    "CLEARING_PREFIX",
    "FX_ACCOUNT_PREFIX",
    "FX_TRANSFER_PREFIX",
    "METADATA_PREFIX",
    "PAYMENT_TRANSFER_PREFIX",
    "PSP_PREFIX",
    "RECON_ACCOUNT_PREFIX",
    "RECON_TRANSFER_PREFIX",
    "RESERVED_ID_PREFIXES",
    "SAGA_KEY",
    "SETTLEMENT_TRANSFER_PREFIX",
    "clearing_account_id",
    "is_reserved",
    "parse_clearing",
    "parse_psp",
    "psp_account_id",
    "refusal_of_account",
    "refusal_of_client_item",
    "reserved_account_id",
]

CLEARING_PREFIX: Final = "clearing:"
PSP_PREFIX: Final = "psp:"
SETTLEMENT_TRANSFER_PREFIX: Final = "xs."
PAYMENT_TRANSFER_PREFIX: Final = SYSTEM_HOLD_PREFIX  # "pm."
FX_ACCOUNT_PREFIX: Final = "fx:"
FX_TRANSFER_PREFIX: Final = "fx."
RECON_ACCOUNT_PREFIX: Final = "recon:"
RECON_TRANSFER_PREFIX: Final = "rc."
METADATA_PREFIX: Final = "paycore:"
SAGA_KEY: Final = SETTLEMENT_METADATA_KEY
RESERVED_ID_PREFIXES: Final = (
    CLEARING_PREFIX,
    PSP_PREFIX,
    SETTLEMENT_TRANSFER_PREFIX,
    PAYMENT_TRANSFER_PREFIX,
    FX_ACCOUNT_PREFIX,
    FX_TRANSFER_PREFIX,
    RECON_ACCOUNT_PREFIX,
    RECON_TRANSFER_PREFIX,
)
# Every prefix any check below refuses, for its fast path.
_ANY_RESERVED: Final = (*RESERVED_ID_PREFIXES,)
_E = ErrorCode


def clearing_account_id(home: str, peer: str, currency: str) -> str:
    """The clearing account on shard ``home`` for transfers to or from shard ``peer``."""
    return f"{CLEARING_PREFIX}{home}:{peer}:{currency}"


def parse_clearing(account_id: str) -> tuple[str, str, str] | None:
    """``(home, peer, currency)`` of a clearing account id, else None."""
    return _parse(account_id, CLEARING_PREFIX)


def psp_account_id(home: str, processor: str, currency: str) -> str:
    """The account on shard ``home`` for money due from or to ``processor`` in ``currency``."""
    return f"{PSP_PREFIX}{home}:{processor}:{currency}"


def parse_psp(account_id: str) -> tuple[str, str, str] | None:
    """``(home, processor, currency)`` of a processor account id, else None."""
    return _parse(account_id, PSP_PREFIX)


def _parse(account_id: str, prefix: str) -> tuple[str, str, str] | None:
    if not account_id.startswith(prefix):
        return None
    parts = account_id[len(prefix) :].split(":")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def is_reserved(account_id: str | None) -> bool:
    """Accounts ``clearing:...`` (the settlement's) and ``psp:...`` (the payments') belong
    to paycore: no client transfer may name them."""
    return account_id is not None and account_id.startswith((CLEARING_PREFIX, PSP_PREFIX))


def reserved_account_id(account_id: str) -> str | None:
    """Why a client may not create an account with this id (None: it may)."""
    for prefix in RESERVED_ID_PREFIXES:
        if account_id.startswith(prefix):
            return f"account ids starting with {prefix!r} are reserved"
    return None


def refusal_of_account(request: AccountRequest) -> str | None:
    """Why this account may not be created (None: it may): a reserved id, unless it is
    one of the FX accounts that paycore makes for itself (system tenant)."""
    if request.tenant == SYSTEM_TENANT and request.id.startswith(
        (FX_ACCOUNT_PREFIX, RECON_ACCOUNT_PREFIX)
    ):
        return None
    return reserved_account_id(request.id)


def refusal_of_client_item(
    r: TransferRequest, *, internal: bool = False
) -> tuple[ErrorCode, str] | None:
    """Why a client's transfer item names something paycore keeps (None: it does not).

    ``internal``: the payments' own commands, which may use ``pm.`` ids and holds."""
    if r.metadata is not None and any(k.startswith(METADATA_PREFIX) for k in r.metadata):
        return _E.INVALID_REQUEST, f"metadata keys starting with {METADATA_PREFIX!r} are reserved"
    # The common case, checked at once (batches are large): nothing names a reserved id.
    if not (
        r.id.startswith(_ANY_RESERVED)
        or (r.pending_id is not None and r.pending_id.startswith(_ANY_RESERVED))
        or (r.debit_account_id is not None and r.debit_account_id.startswith(_ANY_RESERVED))
        or (r.credit_account_id is not None and r.credit_account_id.startswith(_ANY_RESERVED))
    ):
        return None
    if r.id.startswith(SETTLEMENT_TRANSFER_PREFIX):
        return _E.INVALID_REQUEST, "ids starting with 'xs.' are reserved for settlement"
    if r.id.startswith((CLEARING_PREFIX, PSP_PREFIX)):
        return _E.INVALID_REQUEST, "ids starting with 'clearing:' or 'psp:' are reserved"
    if not internal:
        if r.id.startswith(FX_TRANSFER_PREFIX):
            return _E.INVALID_REQUEST, "ids starting with 'fx.' are reserved for conversions"
        if (r.pending_id or "").startswith(FX_TRANSFER_PREFIX):
            return _E.INVALID_REQUEST, "holds starting with 'fx.' belong to conversions"
        if r.id.startswith(RECON_TRANSFER_PREFIX):
            return _E.INVALID_REQUEST, "ids starting with 'rc.' are reserved for reconciliation"
        if r.id.startswith(PAYMENT_TRANSFER_PREFIX):
            return _E.INVALID_REQUEST, "ids starting with 'pm.' are reserved for payments"
        if (r.pending_id or "").startswith(PAYMENT_TRANSFER_PREFIX):
            return _E.INVALID_REQUEST, "holds starting with 'pm.' belong to payments"
    for account_id in (r.debit_account_id, r.credit_account_id):
        if account_id is not None and account_id.startswith(PSP_PREFIX) and not internal:
            return _E.INVALID_REQUEST, "accounts starting with 'psp:' are reserved for payments"
        if account_id is not None and account_id.startswith(FX_ACCOUNT_PREFIX) and not internal:
            return _E.INVALID_REQUEST, "accounts starting with 'fx:' are reserved for conversions"
        if account_id is not None and account_id.startswith(RECON_ACCOUNT_PREFIX) and not internal:
            return _E.INVALID_REQUEST, "accounts starting with 'recon:' are reserved"
        if account_id is not None and account_id.startswith(CLEARING_PREFIX):
            return _E.INVALID_REQUEST, "clearing accounts are reserved for settlement"
    return None
