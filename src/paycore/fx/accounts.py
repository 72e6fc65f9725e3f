"""paycore's FX accounts, one pair per currency (ids reserved: ``cluster.namespaces``).

- ``fx:liquidity:<CUR>``: the house's position in ``CUR``. A conversion credits it with
  what the customer sells and debits it with what the customer buys at the mid rate; it
  has no limit (it goes negative in a currency the house pays out more than it takes in,
  which treasury funds outside paycore).
- ``fx:revenue:<CUR>``: the spread earned, in the bought currency.

They belong to the system tenant (no client may name them) and are placed on shards by
their id like any account: a conversion whose accounts are elsewhere crosses shards as a
linked chain does.
"""

from __future__ import annotations

from paycore.cluster.namespaces import FX_ACCOUNT_PREFIX
from paycore.ledger.model import SYSTEM_TENANT, AccountRequest

__all__ = ["account_requests", "liquidity_account_id", "revenue_account_id"]


def liquidity_account_id(currency: str) -> str:
    return f"{FX_ACCOUNT_PREFIX}liquidity:{currency}"


def revenue_account_id(currency: str) -> str:
    return f"{FX_ACCOUNT_PREFIX}revenue:{currency}"


def account_requests(*currencies: str) -> tuple[AccountRequest, ...]:
    """The FX accounts of ``currencies``, to create (creating one again changes nothing)."""
    return tuple(
        AccountRequest(make(c), c, metadata={"role": role}, tenant=SYSTEM_TENANT)
        for c in dict.fromkeys(currencies)
        for make, role in (
            (liquidity_account_id, "fx_liquidity"),
            (revenue_account_id, "fx_revenue"),
        )
    )
