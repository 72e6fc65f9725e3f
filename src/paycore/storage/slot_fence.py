"""The slot fence (migration 0022): a shard refuses, in a write's own transaction, any
account that its newest slot map places on another shard.

Nodes route by the map they read last; a slot range moved meanwhile
(``paycore.cluster.slot_moves``) leaves a node that missed the switch routing to the old
owner. The old owner learned of the move first (a newer version in its ``slot_maps``),
so the write is refused there, before it changed anything: 503 ``store_unavailable``,
retryable, and the node reads the map again. What a stored map means is the cluster's
business (``paycore.cluster.slot_catalog`` gives an ``Ownership``); storage only reads
the shard's newest version inside the transaction and asks it. A shard never told of a
map (no row) admits every account, as before the migration.

Which accounts a write names: the ids of new accounts, both sides of every transfer but
a post or void (it goes to the shard storing its hold: see ``_add_item``), a closed
account and where its remainder goes, and every account of a payment's write or of a
chain's legs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, Final

import msgspec

from paycore.errors import ErrorCode, PaycoreError, UnavailableError
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import Fetch
from paycore.storage.payments import PaymentWrite
from paycore.storage.tx import LedgerTx

__all__ = [
    "NEWEST_MAP",
    "ROUTED_BY",
    "Ownership",
    "RecordSlotMap",
    "SlotFenced",
    "SlotMapCommand",
    "SlotMapReads",
    "admit_owned",
    "apply_slot_map_command",
    "named_accounts",
]

# (shard, a stored map's text) -> whether that map places an account id on the shard.
Ownership = Callable[[str, str], Callable[[str], bool]]

NEWEST_MAP: Final = "SELECT version, shard_map FROM slot_maps ORDER BY version DESC LIMIT 1"
# The slot map version the current request is routed by, set by the cluster's router for
# the commands it sends; a job takes it when it is queued (``group_commit.Job``).
ROUTED_BY: ContextVar[int | None] = ContextVar("paycore_routed_by", default=None)
# Seconds a refused writer is told to wait: a move's switch takes well under one.
RETRY_AFTER_SECONDS: Final = 1


class SlotFenced(UnavailableError):
    """A write refused by a shard's slot fence: it changed nothing there."""

    def __init__(self, detail: str, shard: str) -> None:
        super().__init__(detail, retry_after=RETRY_AFTER_SECONDS)
        self.shard = shard


class RecordSlotMap(msgspec.Struct, frozen=True):
    """Record map ``version`` (its JSON text) as this shard's fence (``slot_maps``), or,
    with ``catalog``, as the cluster's map (``slot_catalog``, on the key shard); result:
    True when it was new, False when this very version was recorded before. The same
    version with other text is refused: versions are never reused."""

    version: int
    shard_map: str
    catalog: bool = False


SlotMapCommand = RecordSlotMap


def apply_slot_map_command(tx: LedgerTx, now: int, command: SlotMapCommand) -> bool:
    table = "slot_catalog" if command.catalog else "slot_maps"
    rows = tx.run_sql(f"SELECT shard_map FROM {table} WHERE version = ?", (command.version,))
    if rows:
        if str(rows[0][0]) != command.shard_map:
            raise PaycoreError(
                ErrorCode.INVALID_REQUEST,
                f"slot map version {command.version} is recorded with another map",
            )
        return False
    tx.run_sql(
        f"INSERT INTO {table} (version, shard_map, created_at) VALUES (?, ?, ?)",
        (command.version, command.shard_map, now),
    )
    return True


def admit_owned(tx: LedgerTx, shard: str, ownership: Ownership, jobs: Sequence[Any]) -> list[Any]:
    """The jobs this shard may run: routed by its newest map version or a later one, or
    naming only accounts that version places here. The others get a retryable 503 as
    their error, having changed nothing.

    A router with the shard's own map places every account as the shard does, and may
    send it a request naming another shard's account on purpose (to be refused by the
    ledger's rules, with the code one shard would give): trusted. A job routed by no
    map (a worker's, on its own shard's rows) is checked like an older one."""
    rows = tx.run_sql(NEWEST_MAP)
    if not rows:
        return list(jobs)
    version, text = int(rows[0][0]), str(rows[0][1])
    doubtful = [job for job in jobs if _doubtful(job, version)]
    if not doubtful:
        return list(jobs)
    owns = ownership(shard, text)
    refused = set()
    for job in doubtful:
        elsewhere = next((a for a in named_accounts(job.command) if not owns(a)), None)
        if elsewhere is not None:
            job.error = SlotFenced(
                f"account {elsewhere!r} has moved off shard {shard!r} (slot map version "
                f"{version}); the request changed nothing and may be retried",
                shard,
            )
            refused.add(id(job))
    return [job for job in jobs if id(job) not in refused]


def _doubtful(job: Any, version: int) -> bool:
    """Whether to check the job's accounts: routed by an older map or none, or a write
    placed by its caller (a payment's, on the shard where its row was found, perhaps
    before a move switched; never sent on purpose where its accounts are not)."""
    return isinstance(job.command, PaymentWrite) or job.routed_by is None or job.routed_by < version


def named_accounts(command: Any) -> list[str]:
    """The accounts a write names (see the module docstring)."""
    accounts: list[str] = []
    names = ["account_id"]
    if getattr(command, "remainder_hold", None) is None:  # else the remainder leaves by saga
        names.append("transfer_balance_to")
    for name in names:
        value = getattr(command, name, None)
        if isinstance(value, str):
            accounts.append(value)
    for name in ("requests", "transfers", "legs", "ensure_accounts", "accounts"):
        for item in getattr(command, name, None) or ():
            accounts.extend(_item_accounts(item))
    return accounts


def _item_accounts(item: Any) -> tuple[str, ...]:
    if isinstance(item, TransferRequest):
        if item.pending_id and (item.flags.post_pending or item.flags.void_pending):
            # A post or void goes where its hold is stored, whatever the map says: a
            # move lets the holds on its slots end before it copies them (and none can
            # be made there once fenced), so the hold is pending only while it is here.
            return ()
        return tuple(a for a in (item.debit_account_id, item.credit_account_id) if a)
    if isinstance(item, AccountRequest):
        return (item.id,)
    account_id = getattr(item, "account_id", None)  # a payment's AccountCheck
    return (account_id,) if isinstance(account_id, str) else ()


class SlotMapReads:
    """The slot map versions one shard was told of, read through its read pool."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def newest(self, *, catalog: bool = False) -> tuple[int, str] | None:
        """This shard's fence, or (``catalog``) the cluster's map it keeps."""
        query = NEWEST_MAP.replace("slot_maps", "slot_catalog") if catalog else NEWEST_MAP
        rows = await self._fetch(query, ())
        return (int(rows[0][0]), str(rows[0][1])) if rows else None
