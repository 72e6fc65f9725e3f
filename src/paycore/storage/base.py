"""The ``Store`` protocol: what every ledger backend (SQLite, PostgreSQL) provides.

Writes are *commands*, small frozen values executed by the store's writer; a
backend may run many commands in one database transaction (group commit), but
each command gets its own result. A command may carry an ``Idempotency`` record:
the store then looks the key up, and stores the rendered response, in the same
transaction as the effect, so a retry replays the answer instead of acting twice.

Reads answer from committed state only.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

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
    "FINISHED_OUTBOX_STATES",
    "OUTBOX_CLOSES_CREDIT",
    "PAGE_SIDES",
    "ChainOutcome",
    "ChainRecord",
    "ChainRefusals",
    "ClaimOutbox",
    "CloseAccount",
    "CreateAccounts",
    "CreateTransfers",
    "DecideChain",
    "ExpirePending",
    "Fence",
    "Fetch",
    "FinishChain",
    "Idempotency",
    "KeepChainRefusals",
    "LedgerCommand",
    "LedgerSnapshot",
    "OutboxRow",
    "OutboxWrite",
    "PeekIdempotency",
    "PrepareChain",
    "PurgeIdempotency",
    "PurgeOutbox",
    "ReleaseTransferIds",
    "ReserveTransferIds",
    "SetOutboxStates",
    "ShardSnapshot",
    "StaleChains",
    "StoredResponse",
    "TransferPage",
    "check_limit",
    "check_page_arguments",
    "tenant_rows",
]

T = TypeVar("T")


def check_limit(limit: object) -> None:
    """A batch bound must be a positive integer: 0 or a negative never means "no limit"."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")


class Fence(msgspec.Struct, frozen=True):
    """A lock holder's fencing token (``paycore.locks``), carried by a worker's writes.

    The store keeps the newest token it has seen per lock ``name`` and refuses, in the
    write's own transaction, a command whose token is older (``FencedError``): a holder
    paused past its lease cannot write after the next holder did.
    """

    name: str
    token: int


class AdvanceFence(msgspec.Struct, frozen=True):
    """Record ``fence`` as the newest token of its lock (a new holder announcing itself
    before it works, so the old one is shut out at once); result: None."""

    fence: Fence


class CreateAccounts(msgspec.Struct, frozen=True):
    """Create accounts; result: ``list[AccountResult]`` in request order."""

    requests: tuple[AccountRequest, ...]


class OutboxRow(msgspec.Struct, frozen=True):
    """The durable work item of a cross-shard transfer, kept on its source shard.

    Written in the same transaction as the saga's hold (step 1); ``state`` is a
    ``paycore.cluster.settlement.SagaState`` value (storage only keeps the text).
    ``amount`` and ``currency`` are those of the hold as written. A row is claimed by
    a relay until ``claimed_until`` (ns); after that any relay may take it over.
    """

    transfer_id: str
    target_shard: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    code: int
    metadata: str | None
    state: str
    created_at: int = 0
    updated_at: int = 0
    claimed_by: str | None = None
    claimed_until: int = 0
    attempts: int = 0
    # The client's flags the credit leg repeats (``transfer_flags_bits``: linked, balancing),
    # and ``OUTBOX_CLOSES_CREDIT``: step 2 closes the credit account (a debt paid across
    # shards, ``paycore.cluster.close_across``).
    flags: int = 0
    timeout_seconds: int = 0  # a client's hold's timeout, which its credit leg shows


# A bit of ``OutboxRow.flags`` above the transfer flags' five: the row's credit leg (step 2)
# pays the whole debt of its credit account and closes it in the same transaction
# (``CreateTransfers.closes_credit_account``). Stored in the same integer column.
OUTBOX_CLOSES_CREDIT: Final = 1 << 5


class OutboxWrite(msgspec.Struct, frozen=True):
    """Saga bookkeeping that rides on item ``index`` of a ``CreateTransfers``.

    Applied in the same transaction, and only when that item is newly written (not an
    error, not an ``exists`` replay): ``row`` is inserted when ``insert`` is true (the
    amount and currency taken from the written transfer), else the state of the row
    ``row.transfer_id`` is set to ``row.state``.
    """

    index: int
    row: OutboxRow
    insert: bool = True


class CreateTransfers(msgspec.Struct, frozen=True):
    """Apply transfers as one batch; result: ``list[TransferResult]`` in request order.

    ``outbox`` carries the saga rows of cross-shard transfers (see ``OutboxWrite``);
    clients never set it or ``refusals_key``, the cluster router and relay do.
    """

    requests: tuple[TransferRequest, ...]
    outbox: tuple[OutboxWrite, ...] = ()
    # When set (the settlement's step 2), a refused item's answer is kept under
    # ``refusals_key + item id`` in the idempotency table, and an item refused before
    # is answered the same way again without being retried: a refusal is for good.
    # Every command keeps its refusals that depend on state anyway (by tenant and id,
    # ``paycore.ledger.refusals``); this one keeps every refusal, validation included.
    refusals_key: str | None = None
    # Set only by the settlement's step 3: lets it post or void a saga's hold.
    settlement: bool = False
    # Set by the cluster router: an item whose id is reserved here for a transfer stored
    # on another shard (``ReserveTransferIds``) is refused, as an id used twice.
    guard_ids: bool = False
    # Set by a worker holding a lock (the relay): see ``Fence``.
    fence: Fence | None = None
    # Set by paycore's payments only: lets the cluster router take transfer ids of the
    # prefix reserved for them (``pm.``), which it refuses from clients.
    internal: bool = False
    # Set by the API: the caller's tenant, whose accounts alone the items may name
    # (another tenant's answer as missing ones, see ``WorkingSet.apply_transfers``);
    # None: paycore's own workflows.
    tenant: str | None = None
    # Set by the cluster router: ``(position in requests, code, detail)`` of items it
    # refused with both accounts in view (e.g. the credit account, on another shard, is
    # missing). This shard, the debit account's, answers it after the checks of the id
    # itself (an id stored or refused before answers as it did), and keeps it under the
    # id when it is a refusal one shard keeps, as its own rules would.
    refuse: tuple[tuple[int, ErrorCode, str], ...] = ()
    # Set by the settlement's step 2 of a debt paid across shards (one item, with
    # ``refusals_key``): the item credits an account that owes exactly its amount and
    # closes it in the same transaction; refused (for good) unless the account is open,
    # has no holds and no chain in progress, and stands at zero after the credit.
    closes_credit_account: bool = False
    # False (step 1 of a debt paid across shards): a refused item leaves nothing behind,
    # no refusal kept under its id, as one shard's close keeps none for its remainder.
    keep_refusals: bool = True


class ReleaseTransferIds(msgspec.Struct, frozen=True):
    """Unbind ``(transfer id, shard)`` reservations (those bound to that very shard);
    result: how many were. For ids a shard refused to write by its slot fence
    (``paycore.storage.slot_fence``), so that the retry may be written where the account
    lives now."""

    entries: tuple[tuple[str, str], ...]


class ReserveTransferIds(msgspec.Struct, frozen=True):
    """Bind transfer ids to the shard that stores them; result: ``list[str]``, per entry
    the shard its id is bound to (the one asked for, unless bound before).

    Run on the shard an id hashes to (``shard``, this store's name in the cluster). An
    id already reserved keeps its shard; an id of a transfer stored here, or of a refusal
    kept here (``paycore.ledger.refusals``, any tenant's), is bound here.
    """

    shard: str
    entries: tuple[tuple[str, str], ...]  # (transfer id, shard that will store it)


class CloseAccount(msgspec.Struct, frozen=True):
    """Close an account; result: ``AccountResult``. ``tenant``: the API caller's
    (another tenant's account is answered as a missing one); None: no check.
    ``transfer_balance_to``: an account that takes the remainder (a posted balance,
    either sign) in the same transaction; without it a balance refuses the close."""

    account_id: str
    tenant: str | None = None
    transfer_balance_to: str | None = None
    # Set by the cluster's router when ``transfer_balance_to`` lives on another shard: a
    # positive remainder leaves as step 1 of a saga (``paycore.cluster.close_across``; a
    # debt is paid by a saga from the target's shard, not by this command),
    # this hold of the whole balance to the clearing account (its amount filled in here)
    # written with ``remainder_row`` in the closing transaction; voiding it (the target
    # refused the credit) reopens the account.
    remainder_hold: TransferRequest | None = None
    remainder_row: OutboxRow | None = None


class ExpirePending(msgspec.Struct, frozen=True):
    """Release holds whose timeout has passed; result: ``list[str]`` of expired ids."""

    limit: int = 10_000
    fence: Fence | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)


class PurgeIdempotency(msgspec.Struct, frozen=True):
    """Delete idempotency records past their retention; result: number deleted."""

    limit: int = 10_000
    fence: Fence | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)


# The outbox states a saga never leaves (``SagaState.COMPLETED``, ``COMPENSATED``, ``RESOLVED`` in
# ``paycore.cluster.settlement``): the only rows ``PurgeOutbox`` may delete.
FINISHED_OUTBOX_STATES: tuple[str, ...] = ("completed", "compensated", "resolved")


class PurgeOutbox(msgspec.Struct, frozen=True):
    """Delete outbox rows of finished sagas last updated ``retention_seconds`` or more
    ago, at most ``limit`` of them; result: number deleted. Open sagas' rows stay."""

    retention_seconds: float
    limit: int = 10_000
    fence: Fence | None = None

    def __post_init__(self) -> None:
        retention = self.retention_seconds
        if not (type(retention) in (int, float) and math.isfinite(retention) and retention >= 0):
            raise ValueError(f"retention_seconds must be a number >= 0, not {retention!r}")
        check_limit(self.limit)


class ClaimOutbox(msgspec.Struct, frozen=True):
    """Lease open outbox rows to relay ``owner``; result: ``list[OutboxRow]``.

    Takes rows in ``open_states`` that nobody holds (lease passed) or that ``owner``
    holds already, oldest first, and leases them until now + ``lease_seconds``.
    """

    owner: str
    open_states: tuple[str, ...]
    lease_seconds: float = 30.0
    limit: int = 1000
    fence: Fence | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)


class SetOutboxStates(msgspec.Struct, frozen=True):
    """Move outbox rows ``(transfer_id, from_state, to_state)``, each only if it is still
    in ``from_state`` (so two drivers of one saga never undo each other's step), and
    release their claims; result: ``list[bool]``, whether each row moved."""

    changes: tuple[tuple[str, str, str], ...]
    fence: Fence | None = None


class PrepareChain(msgspec.Struct, frozen=True):
    """A participant's part of a linked chain across shards (``paycore.cluster.chains``):
    try ``legs`` in order on the current state without keeping their effects; if every one
    passes, keep them (state ``prepared``), reserve the money they need of each account and
    lock the holds they resolve, so that applying them later cannot fail. Result:
    ``list[TransferResult]`` (the trial's; nothing is kept unless all are ok).
    ``guarded``: the ids of the items' client-facing legs stored here, refused if a
    reservation on this shard binds them to another (``paycore.cluster.id_reservation``)."""

    chain_id: str
    coordinator: str
    legs: tuple[TransferRequest, ...]
    outbox: tuple[OutboxWrite, ...] = ()
    tenant: str | None = None
    guarded: tuple[str, ...] = ()


class DecideChain(msgspec.Struct, frozen=True):
    """The coordinator's part: apply its own ``legs`` and record the chain ``committed``
    in ONE transaction, or record it ``aborted`` if they do not all pass or
    ``commit`` is false. A chain decided before keeps its decision. Result:
    ``ChainOutcome``. ``guarded`` as for ``PrepareChain``."""

    chain_id: str
    participants: tuple[str, ...]
    legs: tuple[TransferRequest, ...] = ()
    outbox: tuple[OutboxWrite, ...] = ()
    tenant: str | None = None
    commit: bool = True
    guarded: tuple[str, ...] = ()


class FinishChain(msgspec.Struct, frozen=True):
    """A participant applies (``commit``) or drops its prepared legs, releasing their
    reservations and locks; idempotent. Result: ``ChainOutcome``."""

    chain_id: str
    commit: bool


class StaleChains(msgspec.Struct, frozen=True):
    """Chains prepared here at least ``older_than_seconds`` ago and not finished (their
    coordinator may have died); result: ``list[tuple[str, str]]``, (chain id, coordinator)."""

    older_than_seconds: float
    limit: int = 1000


class ChainRefusals(msgspec.Struct, frozen=True):
    """The refusals kept here under these transfer ids (``paycore.ledger.refusals``), every
    tenant's, for a chain planned over the shards; result: ``list[Refusal]``."""

    ids: tuple[str, ...]


class KeepChainRefusals(msgspec.Struct, frozen=True):
    """Keep refusals a chain's plan made (one item's, for good), unless kept already;
    result: None."""

    refusals: tuple[Any, ...]  # paycore.ledger.refusals.Refusal


class ChainOutcome(msgspec.Struct, frozen=True):
    """Where a chain stands on a shard: ``committed`` (with its legs' results there),
    ``aborted`` (with the refusal that aborted it, if it came from there) or ``unknown``
    (nothing prepared there)."""

    state: str
    results: list[Any] = msgspec.field(default_factory=list)


class PeekIdempotency(msgspec.Struct, frozen=True):
    """Look an Idempotency-Key up without using it; result: ``(fingerprint, response)``
    or None when the key is unknown or past its retention."""

    key: str


# The ledger's own commands; the features' commands join them in ``paycore.storage.store``.
LedgerCommand = (
    AdvanceFence
    | CreateAccounts
    | CreateTransfers
    | CloseAccount
    | ExpirePending
    | PurgeIdempotency
    | ClaimOutbox
    | PeekIdempotency
    | PurgeOutbox
    | ReserveTransferIds
    | ReleaseTransferIds
    | SetOutboxStates
    | PrepareChain
    | DecideChain
    | FinishChain
    | StaleChains
    | ChainRefusals
    | KeepChainRefusals
)


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


# How a shard's read helpers read its committed rows: SQL written with ``?``
# placeholders and its parameters in, the rows out (each store's ``_fetch_rows``).
Fetch = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


async def tenant_rows(
    fetch: Fetch, select: str, tenant: str, after: tuple[int, str] | None, limit: int
) -> list[tuple[Any, ...]]:
    """A page of ``select``'s rows (a table with ``tenant``, ``created_at`` and ``id``)
    that are ``tenant``'s, by (created_at, id), from after the key ``after``."""
    since, last_id = after if after is not None else (-1, "")
    return await fetch(
        f"{select} WHERE tenant = ? AND (created_at > ? OR (created_at = ? AND id > ?)) "
        "ORDER BY created_at, id LIMIT ?",
        (tenant, since, since, last_id, limit),
    )


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
    """One consistent read view of a shard, for the auditor (the SQL stores hand a
    ``ShardSnapshot``; the audit's tests, plain lists)."""

    now: int

    def accounts(self) -> Iterator[Account]: ...
    def transfers(self) -> Iterator[Transfer]: ...
    def pendings(self) -> Iterator[tuple[str, PendingStatus, str | None]]: ...
    def balance_history(self) -> Iterator[BalanceRecord]: ...


# A transfer as the chain holds it: with its chain position and hash (None for a row
# written outside the ledger's writer), metadata included (see ``paycore.storage.chain``).
ChainRecord = tuple[Transfer, int | None, bytes | None]


@runtime_checkable
class ShardSnapshot(LedgerSnapshot, Protocol):
    """A snapshot of one SQL shard (what both SQL stores' snapshots are): its hash-chained
    history, its outbox, the accounts it took in by a slot move, and any read."""

    shard: str

    @property
    def saga_history_since(self) -> int:
        """Up to this timestamp, a saga's steps were recorded as they were (schema 16)."""

    def chain_records(self) -> Iterator[ChainRecord]:
        """Every transfer row in timestamp order (the chain's order), streamed."""

    def chain_head(self) -> tuple[int, bytes | None]:
        """The head kept in ``shard_meta``: (seq, hash; None while the chain is empty)."""

    def moved_openings(self) -> dict[str, tuple[int, int, int]]:
        """Per moved-in account: (debits, credits) its moved history posted, newest time."""

    def outbox(self) -> Iterator[OutboxRow]: ...

    def rows(self, query: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Any read, written with ``?`` placeholders, streamed."""
