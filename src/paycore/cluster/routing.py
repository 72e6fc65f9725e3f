"""What the router's helper modules use of the router: a protocol, so that they need
not import ``paycore.cluster.router`` (which imports them).

The helpers (``dispatch``, ``batch_cuts``, ``chains``, ``saga_plan``, ``saga_drive``,
``close_across``) each do one of the router's jobs over the state it keeps: the shards
and their map, the saga driver and its lease, the clearing accounts already made.
``ShardedStore`` is the one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from paycore.cluster.settlement import Settlement
from paycore.cluster.shardmap import ShardMap
from paycore.ledger.model import Account, TransferView
from paycore.storage.store import ShardStore

__all__ = ["Router"]


class Router(Protocol):
    """The router as its helpers see it (``paycore.cluster.router.ShardedStore``)."""

    @property
    def shards(self) -> Mapping[str, ShardStore]: ...
    @property
    def shard_map(self) -> ShardMap: ...
    @property
    def single(self) -> bool: ...
    @property
    def first_shard(self) -> str: ...
    def shard_for(self, account_id: str) -> str: ...
    def clock_ns(self) -> int: ...

    async def get_accounts(self, ids: list[str]) -> dict[str, Account]: ...
    async def get_transfers(self, ids: list[str]) -> dict[str, TransferView]: ...
    async def find_holds(self, ids: set[str]) -> dict[str, tuple[str, TransferView]]: ...
    async def ensure_clearing(self, pairs: set[tuple[str, str, str]]) -> None: ...

    # The saga driver (``paycore.cluster.saga_drive``): who leases the rows a request
    # writes, for how long, and who is told when the request leaves them to the relay.
    @property
    def driver(self) -> Settlement: ...
    @property
    def owner(self) -> str: ...
    @property
    def drive_sagas(self) -> bool: ...
    @property
    def drive_lease_seconds(self) -> float: ...
    @property
    def saga_listeners(self) -> list[Callable[[str], None]]: ...
