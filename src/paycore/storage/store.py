"""The ``Store`` protocol: what the router and every shard's store offer their callers.

A ``Store`` is one shard (SQLite file, PostgreSQL database) or the router over several
(``paycore.cluster.router``); callers ask it about its topology (``shard_stores``,
``key_store``, ``shard_of``) instead of asking which class it is. ``ShardStore`` adds the
read helpers of one shard's own tables. This module sits above the storage modules whose
commands and reads it names, so none of them imports it back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from paycore.ledger.model import Account, BalanceRecord, TransferView
from paycore.storage.base import (
    Idempotency,
    LedgerCommand,
    LedgerSnapshot,
    OutboxRow,
    ShardSnapshot,
    StoredResponse,
    TransferPage,
)
from paycore.storage.deliveries import DeliveryCommand, DeliveryReads
from paycore.storage.event_stream import EventStreamReads, StreamCommand
from paycore.storage.fx_quotes import FxQuoteCommand, FxQuoteReads
from paycore.storage.keys import ApiKeyReads, KeyCommand
from paycore.storage.listing import AccountFilter, ListPage, ListReads, Page, TransferFilter
from paycore.storage.payments import PaymentCommand, PaymentReads
from paycore.storage.reconciliation import ReconciliationCommand, ReconciliationReads
from paycore.storage.slot_fence import Ownership, SlotMapCommand, SlotMapReads
from paycore.storage.slot_moves import SlotMoveCommand
from paycore.storage.usage import ShardBacklog, ShardUsage
from paycore.storage.webhook_endpoints import EndpointCommand, WebhookEndpointReads

__all__ = ["Command", "ShardStore", "SingleShard", "Store"]

T = TypeVar("T")

# Every command a store executes.
Command = (
    LedgerCommand
    | PaymentCommand
    | KeyCommand
    | EndpointCommand
    | DeliveryCommand
    | StreamCommand
    | FxQuoteCommand
    | ReconciliationCommand
    | SlotMapCommand
    | SlotMoveCommand
)


@runtime_checkable
class Store(Protocol):
    """A ledger shard: commands in, committed facts out."""

    name: str

    async def start(self) -> None:
        """Open connections, apply migrations, start the writer."""

    async def stop(self) -> None:
        """Finish queued commands, then close."""

    async def execute(self, command: Command) -> Any:
        """Run one command and return its result once it is durable."""

    async def execute_idempotent(
        self, command: Command, idempotency: Idempotency
    ) -> tuple[StoredResponse, bool]:
        """Run a command under an Idempotency-Key: ``(response, replayed)``.

        Raises ``IdempotencyError`` when the key was used with another fingerprint.
        """

    async def get_accounts(self, ids: list[str]) -> dict[str, Account]:
        """Accounts by id, with metadata and current counters; missing ids are absent."""

    async def get_transfer(self, transfer_id: str) -> TransferView | None: ...

    async def get_transfers(self, ids: list[str]) -> dict[str, TransferView]:
        """Transfers by id, in one read; missing ids are absent."""

    async def account_transfers(
        self,
        account_id: str,
        *,
        limit: int,
        cursor: int | None = None,
        descending: bool = False,
        side: str = "both",
    ) -> TransferPage:
        """Transfers touching an account, ordered by timestamp, from after ``cursor``."""

    async def balance_history(
        self, account_id: str, *, at: int | None = None, limit: int = 100, cursor: int | None = None
    ) -> list[BalanceRecord]:
        """Snapshots of a ``history`` account; with ``at``, the one in force at that time."""

    async def list_accounts(self, f: AccountFilter, page: Page) -> ListPage[Account]:
        """A page of the accounts ``f`` selects, by (timestamp, id) (see ``storage.listing``)."""

    async def list_transfers(self, f: TransferFilter, page: Page) -> ListPage[TransferView]:
        """A page of the transfers ``f`` selects, by (timestamp, id), as a client sees them."""

    async def ping(self) -> str | None:
        """Raise ``UnavailableError`` when the store cannot serve; else where it answered
        from when that is worth telling: a PostgreSQL shard's server (``host:port``, the
        primary a multi-host DSN found), for the console's shard table."""

    async def with_snapshot(self, reader: Callable[[LedgerSnapshot], T]) -> T:
        """Run ``reader`` (in a worker thread) over one consistent snapshot."""

    # -- topology: what callers ask instead of which class the store is ---------------------

    @property
    def shard_stores(self) -> Mapping[str, ShardStore]:
        """Every shard by name (a store of one shard is its own only shard)."""

    @property
    def key_store(self) -> ShardStore:
        """The shard keeping the API keys and webhook endpoints."""

    @property
    def spans_shards(self) -> bool:
        """Whether there is more than one shard (sagas, a relay, cluster-wide key locks)."""

    def shard_of(self, key: str) -> str:
        """The shard ``key`` (an account id, a payment's placement key) is placed on."""

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(transactions, commands) committed by the writers since start."""

    def on_saga(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(source_shard)`` after step 1 of a cross-shard saga committed
        there (the relay's wake-up; a store of one shard never starts one)."""


@runtime_checkable
class ShardStore(Store, Protocol):
    """One shard (a database): the store and the read helpers of its own tables."""

    payments: PaymentReads
    keys: ApiKeyReads
    webhook_endpoints: WebhookEndpointReads
    deliveries: DeliveryReads
    event_stream: EventStreamReads
    fx_quotes: FxQuoteReads
    reconciliation: ReconciliationReads
    lists: ListReads
    slot_maps: SlotMapReads
    slot_ownership: Ownership | None

    async def accounts_and_transfers(
        self, account_ids: list[str], transfer_ids: list[str]
    ) -> tuple[dict[str, Account], dict[str, TransferView]]:
        """``get_accounts`` and ``get_transfers`` at once: one read call (a cross-shard
        transfer's plan reads both on its source shard; on SQLite every read call blocks
        the event loop and takes the GIL back from the writers)."""

    async def usage(self) -> ShardUsage:
        """Rows and bytes held (``paycore shards status``)."""

    async def backlog(self, *, stream: bool = False) -> ShardBacklog:
        """What waits here (``/metrics``): open sagas, open payments, undelivered webhook
        events and, with ``stream``, the event stream's lag; index seeks only."""

    async def open_sagas(
        self, states: Sequence[str], *, created_before: int, limit: int
    ) -> list[OutboxRow]:
        """The cross-shard transfers started here whose saga (outbox row) is in one of
        ``states`` and began before ``created_before`` (ns), oldest first; index seeks."""

    async def with_snapshot(self, reader: Callable[[ShardSnapshot], T]) -> T:
        """Run ``reader`` (in a worker thread) over one consistent snapshot of this SQL
        shard (a ``ShardSnapshot``: its rows, history and outbox, not only the ledger's)."""


class SingleShard:
    """The topology of a store that is one shard: itself, for everything."""

    name: str
    # What a stored slot map means (``paycore.storage.slot_fence``): set by the cluster
    # that routes to this shard; None (a store used alone) fences nothing.
    slot_ownership: Ownership | None = None

    @property
    def shard_stores(self) -> Mapping[str, ShardStore]:
        return {self.name: self._as_shard()}

    @property
    def key_store(self) -> ShardStore:
        return self._as_shard()

    @property
    def spans_shards(self) -> bool:
        return False

    def shard_of(self, key: str) -> str:
        return self.name

    def on_saga(self, listener: Callable[[str], None]) -> None:
        return None  # one shard: no saga ever starts

    def _as_shard(self) -> ShardStore:
        # Mixed only into the shards' stores (SQLite, PostgreSQL), which are ShardStores.
        return cast("ShardStore", self)
