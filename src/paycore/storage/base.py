"""The ``Store`` protocol: what every ledger backend (SQLite, PostgreSQL) provides.

Writes are *commands*, small frozen values executed by the store's writer; a
backend may run many commands in one database transaction (group commit), but
each command gets its own result. A command may carry an ``Idempotency`` record:
the store then looks the key up, and stores the rendered response, in the same
transaction as the effect, so a retry replays the answer instead of acting twice.

Reads answer from committed state only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import (
    Account,
    AccountRequest,
    BalanceRecord,
    PendingStatus,
    Transfer,
    TransferRequest,
    TransferView,
)

__all__ = [
    "PAGE_SIDES",
    "CloseAccount",
    "Command",
    "CreateAccounts",
    "CreateTransfers",
    "ExpirePending",
    "Idempotency",
    "LedgerSnapshot",
    "PurgeIdempotency",
    "Store",
    "StoredResponse",
    "TransferPage",
    "check_page_arguments",
]

T = TypeVar("T")


class CreateAccounts(msgspec.Struct, frozen=True):
    """Create accounts; result: ``list[AccountResult]`` in request order."""

    requests: tuple[AccountRequest, ...]


class CreateTransfers(msgspec.Struct, frozen=True):
    """Apply transfers as one batch; result: ``list[TransferResult]`` in request order."""

    requests: tuple[TransferRequest, ...]


class CloseAccount(msgspec.Struct, frozen=True):
    """Close an account; result: ``AccountResult``."""

    account_id: str


class ExpirePending(msgspec.Struct, frozen=True):
    """Release holds whose timeout has passed; result: ``list[str]`` of expired ids."""

    limit: int = 10_000


class PurgeIdempotency(msgspec.Struct, frozen=True):
    """Delete idempotency records past their retention; result: number deleted."""

    limit: int = 10_000


Command = CreateAccounts | CreateTransfers | CloseAccount | ExpirePending | PurgeIdempotency


class StoredResponse(msgspec.Struct, frozen=True):
    """The HTTP answer given the first time a key was used, replayed on retries."""

    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An Idempotency-Key, the fingerprint of its request, and how to render a result.

    ``render`` runs inside the store's transaction so that the stored answer is
    exactly the one returned; it must be pure and fast.
    """

    key: str
    fingerprint: str
    render: Callable[[Any], StoredResponse]
    retention_seconds: int = 72 * 3600


PAGE_SIDES = ("both", "debits", "credits")


def check_page_arguments(limit: int, side: str) -> None:
    """Refuse page arguments no backend can serve, with a 422 rather than a crash."""
    if type(limit) is not int or limit < 1:
        raise RequestError(ErrorCode.INVALID_REQUEST, "limit must be a positive integer")
    if side not in PAGE_SIDES:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"side must be one of {PAGE_SIDES}")


class TransferPage(msgspec.Struct, frozen=True):
    data: list[TransferView]
    next_cursor: int | None


class LedgerSnapshot(Protocol):
    """One consistent read view of a shard, for the auditor."""

    now: int

    def accounts(self) -> Iterator[Account]: ...
    def transfers(self) -> Iterator[Transfer]: ...
    def pendings(self) -> Iterator[tuple[str, PendingStatus, str | None]]: ...
    def balance_history(self) -> Iterator[BalanceRecord]: ...


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

    async def ping(self) -> None:
        """Raise ``UnavailableError`` when the store cannot serve."""

    async def with_snapshot(self, reader: Callable[[LedgerSnapshot], T]) -> T:
        """Run ``reader`` (in a worker thread) over one consistent snapshot."""
