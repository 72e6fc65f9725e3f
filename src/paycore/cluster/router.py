"""``ShardedStore``: the ``Store`` protocol over several shard stores.

The API and the CLI talk to one ``Store``; this one routes each command to the
shards that hold its accounts and answers as one store would:

* an account lives on the shard of its id (``ShardMap``; clearing and processor
  accounts on their home shard);
* a transfer is written on the shard of its debit account; when its credit account
  lives elsewhere it becomes a cross-shard saga (``paycore.cluster.settlement``): step 1
  (hold + outbox row) is written here, then the request itself runs steps 2 and 3
  (``saga_drive``) and answers ``posted`` (a client's hold: ``pending``, with a pending leg on
  each shard); only a fault leaves it ``in_flight`` for the relay to finish;
* a post or void goes to the shard holding its hold: the API only names the hold's id,
  so the router looks the id up on every shard in parallel (one indexed read each), or
  takes the shard of an earlier item of the same batch that created it; a client's hold
  across shards is resolved on its source and then mirrored on its target;
* a batch is split per shard, the parts run in parallel (each part is one group
  commit on its shard), results come back in request order;
* a ``linked`` chain whose items touch several shards runs as one atomic unit through
  ``paycore.cluster.chains`` (plan, prepare, decide, finish); the batch around it runs
  in segments, in order;
* reads fan out where the id does not name a shard (``get_transfer``) and show a
  saga as the client's transfer (A to B, with one timestamp on both shards).

Idempotency records live on the shard of the key: for a command on one shard, in the
same transaction as its effect; for one spanning shards, written once its steps ran
(every item is idempotent by transfer id, so a retry after a crash repeats no effect).

Transfer ids are unique across shards: an id hashes to a shard of its own (the same
slot hash as account ids), and when that is not the shard writing the transfer, the
router first reserves the id there (``ReserveTransferIds``: one small write, all of a
batch's reservations in one command per shard, in parallel). An id already bound to
another shard is refused with ``transfer_exists_with_different_fields``; the writing
shard checks, in the same transaction as the write, that no reservation binds the id
elsewhere. A reservation is kept even if the transfer is then refused (say, for lack of
funds), so a retry must keep its debit account's shard.

The router itself only coordinates; each job lives in a module of its own (in
``paycore.cluster``), which takes the store or what it needs as arguments:

* ``placement``: which shard an account, an API key or an item naming no account is on;
* ``split`` and ``dispatch``: a write cut per shard (a ``Split``), each item sent to the
  shard writing it or refused up front;
* ``id_reservation``: transfer ids bound to the shard writing them;
* ``saga_plan`` and ``saga_drive``: a cross-shard transfer checked and turned into step
  1, then driven through steps 2 and 3 by the request;
* ``batch_cuts``: a batch run in segments, in order, where an item depends on an
  earlier one across shards;
* ``read_views``: stored rows shown to clients as one transfer;
* ``reserved``: what the payments and the settlement keep for themselves, refused to
  clients (the prefixes: ``namespaces``).

With one shard every command passes straight through: the same answers as the plain
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from paycore.cluster import placement, read_views, saga_plan, slot_catalog
from paycore.cluster.batch_cuts import chains_across, run_segments
from paycore.cluster.close_across import close_across
from paycore.cluster.concurrently import gather_outcomes
from paycore.cluster.dispatch import split_command
from paycore.cluster.id_reservation import release_fenced
from paycore.cluster.reserved import (
    close_refusal,
    reserved_close,
    single_part,
    single_shard_reserved,
)
from paycore.cluster.saga_drive import drive, mirror_expiries
from paycore.cluster.settlement import Settlement, is_reserved
from paycore.cluster.shardmap import ShardMap, slot_of
from paycore.cluster.split import Split, gather_all
from paycore.errors import ErrorCode, IdempotencyError, UnavailableError
from paycore.ledger.model import Account, BalanceRecord, TransferView
from paycore.ledger.rules import AccountResult
from paycore.storage.base import (
    AdvanceFence,
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    LedgerSnapshot,
    PeekIdempotency,
    PurgeIdempotency,
    PurgeOutbox,
    StoredResponse,
    TransferPage,
)
from paycore.storage.deliveries import EnqueueEvent, RedeliverEvent
from paycore.storage.fx_quotes import CreateFxQuote
from paycore.storage.keys import KeyCommand
from paycore.storage.listing import AccountFilter, ListPage, Page, TransferFilter
from paycore.storage.payments import (
    AckPaymentEvents,
    ClaimPaymentEvents,
    PaymentWrite,
    PurgePaymentEvents,
)
from paycore.storage.reconciliation import RecordReport, ResolveException
from paycore.storage.slot_fence import ROUTED_BY, RecordSlotMap, SlotFenced, named_accounts
from paycore.storage.store import Command, ShardStore
from paycore.storage.webhook_endpoints import EndpointCommand

__all__ = ["ShardedStore", "gather_all"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_E = ErrorCode

# How long the rows of a saga stay leased to the request that wrote them: past that (a
# crashed node, a shard that did not answer), the relay finishes the saga.
DRIVE_LEASE_SECONDS = 5.0
# Commands of what lives on the key shard (API keys, endpoints, FX quotes, reconciliation).
_KEY_SHARD_COMMANDS: Final = (
    KeyCommand | EndpointCommand | CreateFxQuote | RecordReport | ResolveException
)


class ShardedStore:
    """A ``Store`` over named shard stores, placed by a ``ShardMap`` (see module docstring)."""

    def __init__(
        self,
        shards: Mapping[str, ShardStore],
        shard_map: ShardMap,
        *,
        clock: Callable[[], int] = time.time_ns,
        drive_lease_seconds: float = DRIVE_LEASE_SECONDS,
    ) -> None:
        if not shards:
            raise ValueError("at least one shard is needed")
        unknown = set(shard_map.shards) - set(shards)
        if unknown:
            raise ValueError(f"the shard map names shards without a store: {sorted(unknown)}")
        self.shards: dict[str, ShardStore] = dict(shards)
        self.shard_map = shard_map
        self.single = len(self.shards) == 1
        self._first = placement.first_shard(self.shards)
        self.name = self._first if self.single else f"{len(self.shards)} shards"
        self._clearing: set[str] = set()
        # Account id -> whether its debits are limited (no_overdraft or a credit limit):
        # fixed when the account is created, so kept once read.
        self._limited: dict[str, bool] = {}
        # Called with a source shard after step 1 of a saga committed there (``on_saga``,
        # ``paycore.cluster.saga_drive``).
        self.saga_listeners: list[Callable[[str], None]] = []
        # The request itself drives its sagas' steps 2 and 3 (``saga_drive``); the rows
        # it writes are leased to it for ``DRIVE_LEASE_SECONDS``, then the relay's.
        self.owner = f"request:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # False: leave steps 2 and 3 to the relay, as when a node dies right after step 1
        # (the recovery path's tests; never in service).
        self.drive_sagas = True
        self._clock = clock
        self.drive_lease_seconds = drive_lease_seconds
        self._driver = Settlement(
            self.shards, owner=self.owner, lease_seconds=drive_lease_seconds, keep_refusals=True
        )
        # The version of ``shard_map`` in the shards' ``slot_maps`` (0: the settings' map,
        # until ``start`` adopts the stored one); every shard is fenced by its newest.
        self.map_version = 0
        for shard in self.shards.values():
            shard.slot_ownership = slot_catalog.ownership
        self._refresher: asyncio.Task[None] | None = None
        self._use_map(0, shard_map)

    def _use_map(
        self, version: int, shard_map: ShardMap, moving: tuple[tuple[int, int], ...] = ()
    ) -> None:
        unknown = set(shard_map.shards) - set(self.shards)
        if unknown:
            raise ValueError(
                f"slot map version {version} places slots on shards this node has no store "
                f"for: {sorted(unknown)} (add them to the settings' [[shards]])"
            )
        self.shard_map, self.map_version, self.moving = shard_map, version, moving
        # A request places each of its accounts about ten times (the cut, the plan, the
        # sagas): remembered until the map changes.
        self._placed = functools.lru_cache(maxsize=1 << 16)(
            functools.partial(placement.shard_for, shard_map, self.shards)
        )

    # -- placement -------------------------------------------------------------------------

    def shard_for(self, account_id: str) -> str:
        """The shard holding ``account_id`` (clearing and processor accounts: their home
        shard)."""
        return self._placed(account_id)

    @property
    def key_shard(self) -> str:
        """The shard keeping every API key (``paycore.storage.keys``): the first one."""
        return self._first

    # -- topology (the Store protocol's) ----------------------------------------------------

    @property
    def shard_stores(self) -> Mapping[str, ShardStore]:
        return self.shards

    @property
    def key_store(self) -> ShardStore:
        return self.shards[self.key_shard]

    @property
    def spans_shards(self) -> bool:
        return not self.single

    def shard_of(self, key: str) -> str:
        return self.shard_for(key)

    def on_saga(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(source_shard)`` after step 1 of a saga committed there."""
        self.saga_listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        outcomes = await asyncio.gather(
            *(s.start() for s in self.shards.values()), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            started = [s for s, o in zip(self.shards.values(), outcomes, strict=True) if o is None]
            await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)
            raise errors[0]
        try:
            await self.adopt_stored_map()
        except BaseException:
            await asyncio.gather(*(s.stop() for s in self.shards.values()), return_exceptions=True)
            raise
        self._refresher = asyncio.create_task(self._refresh_forever(), name="slot-map-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await gather_all(s.stop() for s in self.shards.values())

    # -- the slot map (paycore.cluster.slot_catalog) ------------------------------------------

    async def adopt_stored_map(self) -> None:
        """Use the cluster's slot map (the key shard's ``slot_catalog``); a ledger that has
        none records this router's (the settings') as version 1: every shard's fence, then
        the catalog."""
        stored = await self.key_store.slot_maps.newest(catalog=True)
        if stored is not None:
            version, text = stored
            shard_map = slot_catalog.decode_map(text)
            if self.map_version == 0 and not slot_catalog.same_map(shard_map, self.shard_map):
                log.info(
                    "the shards keep slot map version %d, which differs from the settings' "
                    "[[shards]] slots: the stored map is used (the settings only seed a new "
                    "ledger; see paycore shards status)",
                    version,
                )
            self._use_map(version, shard_map, slot_catalog.decode_moving(text))
            return
        record = RecordSlotMap(1, slot_catalog.encode_map(self.shard_map))
        await gather_all(s.execute(record) for s in self.shards.values())
        await self.key_store.execute(msgspec.structs.replace(record, catalog=True))
        self._use_map(1, self.shard_map)

    async def refresh_map(self) -> bool:
        """Adopt the key shard's newest map if it is newer than this router's."""
        stored = await self.key_store.slot_maps.newest(catalog=True)
        if stored is None or stored[0] <= self.map_version:
            return False
        version, text = stored
        self._use_map(version, slot_catalog.decode_map(text), slot_catalog.decode_moving(text))
        log.info("slot map version %d adopted", version)
        return True

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(slot_catalog.REFRESH_SECONDS)
            try:
                await self.refresh_map()
            except Exception as exc:  # noqa: BLE001 - the key shard away: keep this map
                log.debug("slot map refresh failed: %s", exc)

    # -- writes ------------------------------------------------------------------------------

    def _refuse_moving(self, command: Command) -> None:
        """503 for a write naming an account of a slot range being moved: it waits until
        the range is on its new shard (``paycore.cluster.slot_moves``)."""
        for account_id in named_accounts(command):
            slot = slot_of(account_id)
            for first, last in self.moving:
                if first <= slot <= last and placement.home_of(account_id) is None:
                    raise UnavailableError(
                        f"account {account_id!r} is in slots {first}-{last}, which are moving "
                        "to another shard; retry in a moment",
                        retry_after=1,
                    )

    async def execute(self, command: Command) -> Any:
        ROUTED_BY.set(self.map_version)  # this task's commands: see storage.slot_fence
        if self.moving:
            self._refuse_moving(command)
        if isinstance(command, PaymentWrite | ClaimPaymentEvents | AckPaymentEvents):
            # The payments layer placed its rows: the command names their shard.
            return await self.shards[command.shard].execute(command)
        if isinstance(command, _KEY_SHARD_COMMANDS):  # the key shard
            return await self.shards[self.key_shard].execute(command)
        if isinstance(command, EnqueueEvent | RedeliverEvent):  # the event's own shard
            return await self.shards[command.shard].execute(command)
        if isinstance(command, CloseAccount) and (refused := close_refusal(command)) is not None:
            return refused
        if self.single:
            split = single_shard_reserved(command, self._first)
            if split is None:
                return await self.shards[self._first].execute(command)
            if isinstance(command, CloseAccount):
                return reserved_close(command)
            part = single_part(command, split, self._first)
            results = await self.shards[self._first].execute(part) if part is not None else []
            return split.merge({self._first: results})
        if isinstance(command, ExpirePending):
            names = list(self.shards)
            found = await gather_all(self.shards[s].execute(command) for s in names)
            await mirror_expiries(self, dict(zip(names, found, strict=True)))
            return [hold for part in found for hold in part]
        if isinstance(command, PurgeIdempotency):
            return sum(await gather_all(s.execute(command) for s in self.shards.values()))
        if isinstance(command, PurgeOutbox | PurgePaymentEvents):  # every shard: its own rows
            return sum(await gather_all(s.execute(command) for s in self.shards.values()))
        if isinstance(command, CloseAccount):
            return await self._close(command)
        if isinstance(command, AdvanceFence):  # a new holder shuts the old one out everywhere
            await gather_all(s.execute(command) for s in self.shards.values())
            return None
        if isinstance(command, CreateTransfers):
            segments = await chains_across(self, command, self._limited)
            if segments is not None:
                return await run_segments(self, command, segments)
        split, parts = await split_command(self, command)
        answers = await self._run_parts(command, split, parts)
        return await drive(self, split, split.merge(answers))

    async def execute_idempotent(
        self, command: Command, idempotency: Idempotency
    ) -> tuple[StoredResponse, bool]:
        ROUTED_BY.set(self.map_version)
        if self.moving:
            self._refuse_moving(command)
        if isinstance(command, _KEY_SHARD_COMMANDS):
            return await self._idempotent_on(self.key_shard, command, idempotency)
        if isinstance(command, EnqueueEvent | RedeliverEvent):
            return await self._idempotent_on(command.shard, command, idempotency)
        if isinstance(command, CloseAccount) and (refused := close_refusal(command)) is not None:
            return idempotency.render(refused), False
        if self.single:
            split = single_shard_reserved(command, self._first)
            if split is None:
                return await self.shards[self._first].execute_idempotent(command, idempotency)
            if isinstance(command, CloseAccount):
                return idempotency.render(reserved_close(command)), False
            own = single_part(command, split, self._first)
            if own is None:
                empty = CreateTransfers(()) if isinstance(command, CreateTransfers) else None
                own = empty or CreateAccounts(())
            reserved: Split = split
            merged = Idempotency(
                idempotency.key,
                idempotency.fingerprint,
                lambda results: idempotency.render(reserved.merge({self._first: results})),
                idempotency.retention_seconds,
            )
            return await self.shards[self._first].execute_idempotent(own, merged)
        # A key's record lives on the shard of the key itself, whatever the request
        # touches, so a reuse with another body always meets the first record.
        home = self.shard_for(idempotency.key)
        if isinstance(command, CloseAccount):
            if is_reserved(command.account_id):
                return idempotency.render(reserved_close(command)), False
            target = self.shard_for(command.account_id)
            if target == home and not self._closes_across(command):
                return await self.shards[home].execute_idempotent(command, idempotency)
            return await self._answer_once(  # closing is idempotent
                home, idempotency, lambda: self._close(command), CreateAccounts(())
            )
        if not isinstance(command, CreateTransfers | CreateAccounts):
            raise TypeError(f"{type(command).__name__} is not run under an Idempotency-Key")
        segments = (
            await chains_across(self, command, self._limited)
            if isinstance(command, CreateTransfers)
            else None
        )
        if segments is not None:
            assert isinstance(command, CreateTransfers)
            return await self._answer_once(
                home, idempotency, lambda: run_segments(self, command, segments), type(command)(())
            )
        split, parts = await split_command(self, command)
        if split.sagas or split.resolves:
            # Steps run after step 1: the answer is known once they did, so the record
            # is written then (a crash before it: a retry repeats no effect, every item
            # being idempotent by its transfer id).
            async def steps() -> Any:
                return await drive(
                    self, split, split.merge(await self._run_parts(command, split, parts))
                )

            return await self._answer_once(home, idempotency, steps, type(command)(()))
        others = {s: c for s, c in parts.items() if s != home}
        if others:
            seen = await self._seen(home, idempotency)
            if seen is not None:
                return seen, True
        answers = await self._run_parts(command, split, others)

        def render(home_results: list[Any]) -> StoredResponse:
            return idempotency.render(split.merge({**answers, home: home_results}))

        own = parts.get(home) or type(command)(())
        wrapped = Idempotency(
            idempotency.key, idempotency.fingerprint, render, idempotency.retention_seconds
        )
        return await self._home_part(home, own, wrapped, split=split, whole=command)

    async def _home_part(
        self, home: str, own: Command, idempotency: Idempotency, *, split: Split, whole: Command
    ) -> tuple[StoredResponse, bool]:
        """The key shard's part, with the key's record (its ids released if refused by a
        slot fence, as ``_run_parts`` does)."""
        try:
            return await self.shards[home].execute_idempotent(own, idempotency)
        except SlotFenced as fenced:
            if isinstance(whole, CreateTransfers):
                await release_fenced(self.shards, whole.requests, split, [fenced.shard])
            raise

    async def _run_parts(
        self, command: Command, split: Split, parts: Mapping[str, Command]
    ) -> dict[str, Any]:
        """Each shard's part at once; the answers by shard, or the first error once every
        part ended (ids bound for parts a slot fence refused are released first)."""
        outcomes = await gather_outcomes(self.shards[s].execute(c) for s, c in parts.items())
        fenced = [o.shard for o in outcomes if isinstance(o, SlotFenced)]
        if fenced and isinstance(command, CreateTransfers):
            await release_fenced(self.shards, command.requests, split, fenced)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return dict(zip(parts, outcomes, strict=True))

    async def _idempotent_on(
        self, target: str, command: Command, idempotency: Idempotency
    ) -> tuple[StoredResponse, bool]:
        """A command that runs on shard ``target`` alone, under a key whose record lives on
        the key's own shard: in one transaction when that is ``target``, else the record
        is written after the command (two nodes cannot both run it: the key's lock)."""
        home = target if self.single else self.shard_for(idempotency.key)
        if target == home:
            return await self.shards[home].execute_idempotent(command, idempotency)
        return await self._answer_once(
            home, idempotency, lambda: self.shards[target].execute(command), CreateAccounts(())
        )

    async def _answer_once(
        self,
        home: str,
        idempotency: Idempotency,
        work: Callable[[], Awaitable[Any]],
        empty: Command,
    ) -> tuple[StoredResponse, bool]:
        """Run ``work`` (commands of other shards than the key's, ``home``) unless the key
        has an answer already (replayed), then record its result's answer under the key:
        ``empty`` (a command that does nothing) carries the record on ``home``."""
        seen = await self._seen(home, idempotency)
        if seen is not None:
            return seen, True
        result = await work()
        record = Idempotency(
            idempotency.key,
            idempotency.fingerprint,
            lambda _: idempotency.render(result),
            idempotency.retention_seconds,
        )
        return await self.shards[home].execute_idempotent(empty, record)

    async def _seen(self, home: str, idempotency: Idempotency) -> StoredResponse | None:
        """The stored answer under this key on its shard; 409 when the body differs."""
        seen = await self.shards[home].execute(PeekIdempotency(idempotency.key))
        if seen is None:
            return None
        if seen[0] != idempotency.fingerprint:
            raise IdempotencyError(
                _E.IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was first used with a different request",
            )
        response: StoredResponse = seen[1]
        return response

    async def _close(self, command: CloseAccount) -> AccountResult:
        if is_reserved(command.account_id):
            return reserved_close(command)
        if self._closes_across(command):
            return await close_across(self, command)
        result: AccountResult = await self.shards[self.shard_for(command.account_id)].execute(
            command
        )
        return result

    def _closes_across(self, command: CloseAccount) -> bool:
        """The remainder of the close would go to an account on another shard."""
        to = command.transfer_balance_to
        return to is not None and self.shard_for(to) != self.shard_for(command.account_id)

    async def ensure_clearing(self, pairs: set[tuple[str, str, str]]) -> None:
        """Create the clearing accounts ``(home, peer, currency)``, once per node and
        account."""
        await saga_plan.ensure_clearing(self.shards, self._clearing, pairs)

    # -- what chains (paycore.cluster.chains) and the modules of the router use ----------------

    def clock_ns(self) -> int:
        return self._clock()

    @property
    def first_shard(self) -> str:
        """Where an item naming no account is sent (to be refused there)."""
        return self._first

    @property
    def driver(self) -> Settlement:
        """The settlement this node's requests drive their sagas with."""
        return self._driver

    async def find_holds(self, ids: set[str]) -> dict[str, tuple[str, TransferView]]:
        """Where each of ``ids`` is stored (a hold preferred over a saga's credit leg)."""
        return await read_views.find_holds(self.shards, ids)

    # -- reads ---------------------------------------------------------------------------------

    async def get_accounts(self, ids: list[str]) -> dict[str, Account]:
        if self.single:
            return await self.shards[self._first].get_accounts(ids)
        by_shard: dict[str, list[str]] = {}
        for account_id in ids:
            by_shard.setdefault(self.shard_for(account_id), []).append(account_id)
        shards = list(by_shard)
        found: dict[str, Account] = {}
        for part in await gather_all(self.shards[s].get_accounts(by_shard[s]) for s in shards):
            found.update(part)
        return found

    async def get_transfers(self, ids: list[str]) -> dict[str, TransferView]:
        """Each id as ``get_transfer`` shows it, in one read per shard."""
        if self.single:
            return await self.shards[self._first].get_transfers(ids)
        return await read_views.get_transfers(self.shards, ids)

    async def get_transfer(self, transfer_id: str) -> TransferView | None:
        if self.single:
            return await self.shards[self._first].get_transfer(transfer_id)
        return await read_views.get_transfer(self.shards, transfer_id)

    async def account_transfers(
        self,
        account_id: str,
        *,
        limit: int,
        cursor: int | None = None,
        descending: bool = False,
        side: str = "both",
    ) -> TransferPage:
        page = await self.shards[self.shard_for(account_id)].account_transfers(
            account_id, limit=limit, cursor=cursor, descending=descending, side=side
        )
        if self.single or is_reserved(account_id):
            return page
        return read_views.client_page(page)

    async def balance_history(
        self, account_id: str, *, at: int | None = None, limit: int = 100, cursor: int | None = None
    ) -> list[BalanceRecord]:
        return await self.shards[self.shard_for(account_id)].balance_history(
            account_id, at=at, limit=limit, cursor=cursor
        )

    async def list_accounts(self, f: AccountFilter, page: Page) -> ListPage[Account]:
        """Every shard read with the same keyset and limit, merged by (timestamp, id)."""
        if self.single:
            return await self.shards[self._first].list_accounts(f, page)
        return await read_views.list_accounts(self.shards, f, page)

    async def list_transfers(self, f: TransferFilter, page: Page) -> ListPage[TransferView]:
        """As ``list_accounts``, each saga shown once, as ``get_transfer`` shows it."""
        if self.single:
            return await self.shards[self._first].list_transfers(f, page)
        return await read_views.list_transfers(self.shards, self.shard_for, f, page)

    async def ping(self) -> str | None:
        await gather_all(s.ping() for s in self.shards.values())
        return None

    async def with_snapshot(self, reader: Callable[[LedgerSnapshot], T]) -> T:
        if not self.single:
            raise TypeError(
                "a sharded store has no single snapshot: audit it with ops.audit.audit_cluster"
            )
        return await self.shards[self._first].with_snapshot(reader)

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(transactions, commands) summed over the shards' writers."""
        groups = jobs = 0
        for store in self.shards.values():
            stats = store.writer_stats
            groups += stats[0]
            jobs += stats[1]
        return groups, jobs
