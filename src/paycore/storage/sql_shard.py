"""What the SQLite and the PostgreSQL store share: one shard of the same SQL tables.

Each store writes through its own ``GroupCommitWriter`` and reads through one
``_fetch_rows(query, params)`` (SQL written with ``?``). What does not depend on the
database lives here once: ``SqlShard`` (running commands, the read helpers built on
``_fetch_rows``, an account's history and balance pages, usage and backlog reads) and
``SqlTx`` (the write transaction's turn and the statements both dialects write alike).
Each store adds its connections and the SQL that differs between dialects.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from paycore.ledger.model import Account, BalanceRecord, TransferView
from paycore.storage.apply import command_weight
from paycore.storage.base import (
    Idempotency,
    OutboxRow,
    StoredResponse,
    TransferPage,
    check_page_arguments,
)
from paycore.storage.chain import ChainLinker
from paycore.storage.codec import account_flags_bits, view_from_row
from paycore.storage.deliveries import DeliveryReads
from paycore.storage.event_stream import EventStreamReads
from paycore.storage.fx_quotes import FxQuoteReads
from paycore.storage.group_commit import GroupCommitWriter
from paycore.storage.keys import ApiKeyReads
from paycore.storage.listing import (
    MAX_TIME,
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

__all__ = ["SqlShard", "SqlTx"]


def _clamp_ts(value: int) -> int:
    """Keep caller-given timestamps inside bigint so a wild cursor reads nothing, not 500."""
    return max(-1, min(value, MAX_TIME))


class SqlTx(abc.ABC):
    """What the stores' write transactions (``LedgerTx``) share: reading the write turn,
    and the statements both dialects write alike, run by ``run_sql`` (SQL with ``?``)."""

    store: str
    chain: ChainLinker

    @abc.abstractmethod
    def run_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _turn(self, meta: Iterable[tuple[str, Any, bytes | None]]) -> int:
        """The turn's ``shard_meta`` rows (key, value, digest) read: the chain's head
        loaded, the shard's last timestamp returned."""
        found = {key: (value, digest) for key, value, digest in meta}
        seq, digest = found["chain_head"]
        self.chain = ChainLinker(self.store, int(seq), digest)
        return int(found["last_timestamp"][0])

    def set_account_flags(self, account: Account) -> None:
        self.run_sql(
            "UPDATE accounts SET flags = ? WHERE id = ?",
            (account_flags_bits(account.flags), account.id),
        )

    def set_fence_token(self, name: str, token: int, now: int) -> None:
        self.run_sql(
            "INSERT INTO fencing_tokens (name, token, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET token = excluded.token, "
            "updated_at = excluded.updated_at",
            (name, token, now),
        )


class SqlShard(SingleShard, abc.ABC):
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

    @abc.abstractmethod
    async def _fetch_rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of a query written with ``?`` placeholders, committed data only."""
        raise NotImplementedError

    @abc.abstractmethod
    def _account_history_sql(self, sides: Sequence[str], cmp: str, order: str) -> str:
        """``account_transfers``' query (``?`` placeholders): per side in ``sides``, the
        first ``limit + 1`` transfers past the cursor (``cmp``) in ``order``, the stored
        ones, then the moved-in ones (migration 0022), each taking (account, cursor,
        limit + 1); the whole limited to ``limit + 1`` (the last parameter)."""
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

    @abc.abstractmethod
    async def _bytes_held(self) -> int:
        """What the shard's data takes on disk."""
        raise NotImplementedError

    async def account_transfers(
        self,
        account_id: str,
        *,
        limit: int,
        cursor: int | None = None,
        descending: bool = False,
        side: str = "both",
    ) -> TransferPage:
        check_page_arguments(limit, side)
        order = "DESC" if descending else "ASC"
        if cursor is None:
            cursor = MAX_TIME if descending else -1
        cursor = _clamp_ts(cursor)
        cmp = "<" if descending else ">"
        sides = {"both": ("debit", "credit"), "debits": ("debit",), "credits": ("credit",)}[side]
        params: list[Any] = []
        for _ in range(2):
            for _ in sides:
                params += [account_id, cursor, _clamp_ts(limit + 1)]
        params.append(_clamp_ts(limit + 1))
        rows = await self._fetch_rows(self._account_history_sql(sides, cmp, order), params)
        views = [view_from_row(row) for row in rows]
        more = len(views) > limit
        views = views[:limit]
        return TransferPage(views, views[-1].transfer.timestamp if more else None)

    async def balance_history(
        self, account_id: str, *, at: int | None = None, limit: int = 100, cursor: int | None = None
    ) -> list[BalanceRecord]:
        check_page_arguments(limit, "both")
        if at is not None:
            rows = await self._fetch_rows(
                "SELECT * FROM account_balances WHERE account_id = ? AND timestamp <= ? "
                "ORDER BY timestamp DESC LIMIT 1",
                (account_id, _clamp_ts(at)),
            )
        else:
            after = -1 if cursor is None else _clamp_ts(cursor)
            rows = await self._fetch_rows(
                "SELECT * FROM account_balances WHERE account_id = ? AND timestamp > ? "
                "ORDER BY timestamp LIMIT ?",
                (account_id, after, _clamp_ts(limit)),
            )
        return [BalanceRecord(*row) for row in rows]

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
