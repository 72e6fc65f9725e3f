"""What the SQLite and the PostgreSQL store share: one shard of the same SQL tables.

Each store writes through its own ``GroupCommitWriter`` and reads every table other than
the ledger's through one ``_fetch_rows(query, params)`` (SQL written with ``?``); the
commands, the read helpers built on ``_fetch_rows`` and the backlog and usage reads are
the same on both, and live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from paycore.ledger.model import Account, TransferView
from paycore.storage.apply import command_weight
from paycore.storage.base import Idempotency, OutboxRow, StoredResponse
from paycore.storage.deliveries import DeliveryReads
from paycore.storage.event_stream import EventStreamReads
from paycore.storage.fx_quotes import FxQuoteReads
from paycore.storage.group_commit import GroupCommitWriter
from paycore.storage.keys import ApiKeyReads
from paycore.storage.listing import (
    AccountFilter,
    Dialect,
    ListPage,
    ListReads,
    Page,
    TransferFilter,
)
from paycore.storage.payments import PaymentReads
from paycore.storage.reconciliation import ReconciliationReads
from paycore.storage.slot_fence import SlotMapReads
from paycore.storage.store import Command, SingleShard
from paycore.storage.usage import (
    ShardBacklog,
    ShardUsage,
    count_rows,
    read_backlog,
    read_open_sagas,
)
from paycore.storage.webhook_endpoints import WebhookEndpointReads

__all__ = ["SqlShard"]


class SqlShard(SingleShard):
    """The part of a SQL shard's store that does not depend on its database."""

    clock: Callable[[], int]
    _writer: GroupCommitWriter

    payments: PaymentReads
    keys: ApiKeyReads
    webhook_endpoints: WebhookEndpointReads
    fx_quotes: FxQuoteReads
    slot_maps: SlotMapReads
    reconciliation: ReconciliationReads
    deliveries: DeliveryReads
    event_stream: EventStreamReads
    lists: ListReads

    def _attach_reads(self, dialect: Dialect) -> None:
        """The read helpers of the shard's own tables, all reading through ``_fetch_rows``."""
        # Payment rows (paycore.storage.payments), read like everything else.
        self.payments = PaymentReads(self._fetch_rows)
        self.keys = ApiKeyReads(self._fetch_rows)
        self.webhook_endpoints = WebhookEndpointReads(self._fetch_rows)
        self.fx_quotes = FxQuoteReads(self._fetch_rows)
        self.slot_maps = SlotMapReads(self._fetch_rows)
        self.reconciliation = ReconciliationReads(self._fetch_rows)
        self.deliveries = DeliveryReads(self._fetch_rows)
        self.event_stream = EventStreamReads(self._fetch_rows)
        # The list endpoints' reads (paycore.storage.listing), payments' included.
        self.lists = ListReads(self._fetch_rows, dialect)

    async def _fetch_rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of a query written with ``?`` placeholders, committed data only."""
        raise NotImplementedError

    # -- writes ------------------------------------------------------------------------

    async def execute(self, command: Command) -> Any:
        return await self._writer.submit(command, None, command_weight(command))

    async def execute_idempotent(
        self, command: Command, idempotency: Idempotency
    ) -> tuple[StoredResponse, bool]:
        outcome: tuple[StoredResponse, bool] = await self._writer.submit(
            command, idempotency, command_weight(command)
        )
        return outcome

    # -- reads -------------------------------------------------------------------------

    async def list_accounts(self, f: AccountFilter, page: Page) -> ListPage[Account]:
        return await self.lists.accounts(f, page)

    async def list_transfers(self, f: TransferFilter, page: Page) -> ListPage[TransferView]:
        return await self.lists.transfers(f, page)

    async def usage(self) -> ShardUsage:
        accounts, transfers, open_sagas = await count_rows(self._fetch_rows)
        return ShardUsage(accounts, transfers, open_sagas, await self._bytes_held())

    async def _bytes_held(self) -> int:
        """What the shard's data takes on disk."""
        raise NotImplementedError

    async def backlog(self, *, stream: bool = False) -> ShardBacklog:
        return await read_backlog(self._fetch_rows, self.clock(), stream=stream)

    async def open_sagas(
        self, states: Sequence[str], *, created_before: int, limit: int
    ) -> list[OutboxRow]:
        return await read_open_sagas(
            self._fetch_rows, states, created_before=created_before, limit=limit
        )

    # -- stats -------------------------------------------------------------------------

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(transactions committed, commands run) by the writer so far."""
        return self._writer.groups, self._writer.jobs
