"""What the storage's apply functions write through: one open write transaction on a
shard (``LedgerTx``, ``WriteSession``: implemented by the SQLite and PostgreSQL stores)
and the time of a group (``GroupClock``). Its own module so that the feature modules
(payments, keys, chains...) and ``paycore.storage.apply`` share it without importing each
other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from paycore.ledger.model import Account, PendingStatus, Transfer
from paycore.ledger.refusals import Refusal
from paycore.ledger.rules import WorkingSet
from paycore.storage.base import OutboxRow, StoredResponse
from paycore.storage.chain import ChainLinker

__all__ = ["GroupClock", "LedgerTx", "WriteSession"]


class LedgerTx(Protocol):
    """One open write transaction on a shard."""

    # The shard's chain head (``paycore.storage.chain``), loaded with the write turn:
    # ``write`` chains the transfers it inserts, the commit stores the head it reached.
    chain: ChainLinker

    def transfers_by_ids(self, ids: Iterable[str]) -> list[Transfer]:
        """Stored transfers with these ids, metadata included."""

    def pending_statuses(self, ids: Iterable[str]) -> dict[str, tuple[PendingStatus, str | None]]:
        """Status and resolving transfer of these holds."""

    def refusals_by_ids(self, ids: Iterable[str]) -> list[Refusal]:
        """The refusals kept under these transfer ids, every tenant's (migration 0013)."""

    def accounts_by_ids(self, ids: Iterable[str], *, with_metadata: bool) -> dict[str, Account]:
        """Accounts with current counters, locked for this transaction where that applies."""

    def insert_accounts(self, accounts: Sequence[Account]) -> None: ...

    def set_account_flags(self, account: Account) -> None: ...

    def due_holds(self, now: int, limit: int) -> list[Transfer]:
        """Pending holds whose timeout passed, oldest first."""

    def write(self, ws: WorkingSet) -> None:
        """Persist what the working set created and changed (a few set-based statements),
        the refusals it kept included; the transfers created are chained after
        ``chain``'s head, in their order."""

    def set_chain_links(self, links: Sequence[tuple[int, int, bytes]]) -> None:
        """Give stored transfers their chain position: ``(timestamp, seq, hash)`` each."""

    def purge_idempotency(self, now: int, limit: int) -> int: ...

    def idempotency_record(self, key: str) -> tuple[str, StoredResponse, int] | None:
        """(fingerprint, response, expires_at) stored under ``key``."""

    def idempotency_records(
        self, keys: Iterable[str]
    ) -> dict[str, tuple[str, StoredResponse, int]]:
        """``idempotency_record`` for many keys in one read; unknown keys are absent."""

    def save_idempotency(
        self, key: str, fingerprint: str, response: StoredResponse, now: int, expires_at: int
    ) -> None: ...

    # -- fencing tokens (migration 0005) -------------------------------------------------

    def fence_token(self, name: str) -> int | None:
        """The newest fencing token seen for lock ``name``, if any."""

    def set_fence_token(self, name: str, token: int, now: int) -> None: ...

    # -- transfer-id reservations (migration 0003) ---------------------------------------

    def reserved_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """The shard each of these ids is reserved for; unreserved ids are absent."""

    def reserve_ids(self, rows: Sequence[tuple[str, str]], now: int) -> None:
        """Insert ``(transfer id, shard)`` reservations (their ids are unreserved)."""

    # -- outbox of cross-shard transfers (migration 0002) ---------------------------------

    def insert_outbox(self, rows: Sequence[OutboxRow]) -> None:
        """Insert new outbox rows (their transfer ids are new on this shard)."""

    def set_outbox_states(self, changes: Sequence[tuple[str, str]], now: int) -> None:
        """Set ``(transfer_id, state)`` pairs and release their claims."""

    def claim_outbox(
        self, owner: str, open_states: Sequence[str], now: int, until: int, limit: int
    ) -> list[OutboxRow]:
        """Lease to ``owner`` the open rows whose lease passed or that it holds already."""

    def purge_outbox(self, states: Sequence[str], updated_before: int, limit: int) -> int:
        """Delete at most ``limit`` rows in ``states`` updated at or before that time.

        Also bounded by ``created_at`` (never after ``updated_at``), so that the
        ``(state, created_at)`` index skips the finished rows still kept."""

    # -- payment rows (migration 0006, see paycore.storage.payments) -----------------------

    def run_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement written with ``?`` placeholders; its rows (none for a write)."""

    def run_many(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one writing statement (``?`` placeholders) once per row of ``rows``."""


class WriteSession(LedgerTx, Protocol):
    """A ``LedgerTx`` that can open and close its own transaction."""

    store: str  # the shard's name

    def begin(self) -> int:
        """Start a transaction holding the shard's write turn; return its last timestamp."""

    def commit(self, last_timestamp: int) -> None:
        """Record the last timestamp handed out and commit durably."""

    def rollback(self) -> None: ...

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """The backend's boundary that turns driver exceptions into PaycoreErrors."""


class GroupClock:
    """The time of a group and the shard's timestamp sequence within it."""

    def __init__(self, now: int, last_timestamp: int) -> None:
        self.now = now
        self.last_timestamp = last_timestamp

    def next_timestamp(self) -> int:
        self.last_timestamp = max(self.now, self.last_timestamp + 1)
        return self.last_timestamp
