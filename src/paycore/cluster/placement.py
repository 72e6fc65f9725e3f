"""Placement: which shard an account, an API key or an item naming no account goes to.

An account lives on the shard the ``ShardMap`` gives its id (slot hash, or a
``[[placement]]`` prefix rule: ``paycore.cluster.shardmap``); paycore's clearing and
processor accounts name their home shard in their id and live there. Every API key, and
every item naming no account (to be refused there), goes to the first shard. Stated
once here, so that the router, the cut of a batch and the chains place alike.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable

from paycore.cluster.settlement import parse_clearing, parse_psp
from paycore.cluster.shardmap import ShardMap
from paycore.ledger.model import TransferRequest

__all__ = ["crosses", "first_shard", "home_of", "shard_for"]


def shard_for(shard_map: ShardMap, shards: Container[str], account_id: str) -> str:
    """The shard holding ``account_id`` (clearing and processor accounts: their home
    shard)."""
    home = home_of(account_id)
    if home is not None and home in shards:
        return home
    return shard_map.shard_for(account_id)


def home_of(account_id: str) -> str | None:
    """The home shard a clearing or processor account id names, else None."""
    parsed = parse_clearing(account_id) or parse_psp(account_id)
    return None if parsed is None else parsed[0]


def first_shard(shards: Iterable[str]) -> str:
    """Where every API key lives and an item naming no account is sent: the first shard."""
    return next(iter(shards))


def crosses(shard_for: Callable[[str], str], r: TransferRequest) -> bool:
    """Whether ``r`` moves money between two accounts on different shards."""
    accounts = (r.debit_account_id, r.credit_account_id)
    return None not in accounts and len({shard_for(a or "") for a in accounts}) > 1
