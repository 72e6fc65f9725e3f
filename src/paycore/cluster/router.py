"""``ShardedStore``: the ``Store`` protocol over several shard stores.

The API and the CLI talk to one ``Store``; this one routes each command to the
shards that hold its accounts and answers as one store would:

* an account lives on the shard of its id (``ShardMap``; clearing accounts
  ``clearing:<home>:...`` on their home shard);
* a transfer is written on the shard of its debit account; when its credit account
  lives elsewhere it becomes a cross-shard saga (``paycore.cluster.settlement``):
  step 1 (hold + outbox row) is written here, a relay does the rest, and the item is
  answered ``in_flight``;
* a post or void goes to the shard holding its pending transfer: the API only names
  the hold's id, so the router looks the id up on every shard in parallel (one
  indexed read each), or takes the shard of an earlier item of the same batch that
  created it; an id found nowhere goes to the debit account's shard (or the first
  shard) and gets ``pending_transfer_not_found`` there;
* a batch is split per shard, the parts run in parallel (each part is one group
  commit on its shard), results come back in request order;
* ``linked`` chains must stay on one shard: a chain whose items (or whose credit
  accounts) span shards is refused as a whole with ``linked_chain_spans_shards``
  (422), since no local transaction can make it atomic; a pending transfer across
  shards is refused with ``cross_shard_pending_unsupported`` (422);
* reads fan out where the id does not name a shard (``get_transfer``) and show a
  saga as the client's transfer (A to B, ``in_flight`` until settled).

Idempotency records live on the shard the command routes to: for a command on one
shard, in the same transaction as its effect; for a batch spanning shards, on the
shard of its first routed item, written after the other parts ran (those are
idempotent by transfer id, so a retry after a crash repeats no effect).

Transfer ids are unique across shards: an id hashes to a shard of its own (the same
slot hash as account ids), and when that is not the shard writing the transfer, the
router first reserves the id there (``ReserveTransferIds``: one small write, all of a
batch's reservations in one command per shard, in parallel). An id already bound to
another shard is refused with ``transfer_exists_with_different_fields``; the writing
shard checks, in the same transaction as the write, that no reservation binds the id
elsewhere. A reservation is kept even if the transfer is then refused (say, for lack of
funds), so a retry must keep its debit account's shard.

With one shard every command passes straight through: the same answers as the plain
store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from paycore.cluster.settlement import (
    PAYMENT_TRANSFER_PREFIX,
    PSP_PREFIX,
    SAGA_KEY,
    clearing_account_id,
    hold_request,
    is_reserved,
    parse_clearing,
    parse_psp,
    present_result,
    present_view,
    saga_info,
)
from paycore.cluster.shardmap import ShardMap
from paycore.errors import ErrorCode, IdempotencyError
from paycore.ledger.model import (
    SYSTEM_TENANT,
    Account,
    AccountRequest,
    BalanceRecord,
    TransferRequest,
    TransferView,
)
from paycore.ledger.rules import AccountResult, TransferResult
from paycore.storage.base import (
    AdvanceFence,
    CloseAccount,
    Command,
    CreateAccounts,
    CreateTransfers,
    ExpirePending,
    Idempotency,
    LedgerSnapshot,
    OutboxWrite,
    PeekIdempotency,
    PurgeIdempotency,
    PurgeOutbox,
    ReserveTransferIds,
    Store,
    StoredResponse,
    TransferPage,
)
from paycore.storage.keys import CreateApiKey, RevokeApiKey
from paycore.storage.payments import (
    AckPaymentEvents,
    ClaimPaymentEvents,
    PaymentWrite,
    PurgePaymentEvents,
)

__all__ = ["ShardedStore", "gather_all"]

T = TypeVar("T")
_E = ErrorCode


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; every outcome is retrieved, then the first error is raised."""
    outcomes = await asyncio.gather(*aws, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


def _fail(item_id: str, code: ErrorCode, detail: str = "") -> TransferResult:
    return TransferResult(id=item_id, code=code, detail=detail)


@dataclass
class _Split:
    """A command cut per shard: which items go where, and what was answered up front."""

    size: int
    parts: dict[str, list[int]] = field(default_factory=dict)  # shard -> item indices
    upfront: dict[int, Any] = field(default_factory=dict)  # index -> result
    rewritten: dict[int, TransferRequest] = field(default_factory=dict)
    outbox: dict[int, OutboxWrite] = field(default_factory=dict)  # index -> write (index 0)
    sagas: set[int] = field(default_factory=set)

    def add(self, shard: str, index: int) -> None:
        self.parts.setdefault(shard, []).append(index)

    def merge(self, answers: Mapping[str, list[Any]]) -> list[Any]:
        merged: list[Any] = [None] * self.size
        for index, result in self.upfront.items():
            merged[index] = result
        for shard, indices in self.parts.items():
            for index, result in zip(indices, answers[shard], strict=True):
                merged[index] = present_result(result) if index in self.sagas else result
        return merged


class ShardedStore:
    """A ``Store`` over named shard stores, placed by a ``ShardMap`` (see module docstring)."""

    def __init__(self, shards: Mapping[str, Store], shard_map: ShardMap) -> None:
        if not shards:
            raise ValueError("at least one shard is needed")
        unknown = set(shard_map.shards) - set(shards)
        if unknown:
            raise ValueError(f"the shard map names shards without a store: {sorted(unknown)}")
        self.shards: dict[str, Store] = dict(shards)
        self.shard_map = shard_map
        self.single = len(self.shards) == 1
        self._first = next(iter(self.shards))
        self.name = self._first if self.single else f"{len(self.shards)} shards"
        self._clearing: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []

    # -- placement -------------------------------------------------------------------------

    def shard_for(self, account_id: str) -> str:
        """The shard holding ``account_id`` (clearing and processor accounts: their home
        shard)."""
        parsed = parse_clearing(account_id) or parse_psp(account_id)
        if parsed is not None and parsed[0] in self.shards:
            return parsed[0]
        return self.shard_map.shard_for(account_id)

    @property
    def key_shard(self) -> str:
        """The shard keeping every API key (``paycore.storage.keys``): the first one."""
        return self._first

    def on_saga(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(source_shard)`` after step 1 of a saga committed there."""
        self._listeners.append(listener)

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

    async def stop(self) -> None:
        await gather_all(s.stop() for s in self.shards.values())

    # -- writes ------------------------------------------------------------------------------

    async def execute(self, command: Command) -> Any:
        if isinstance(command, PaymentWrite | ClaimPaymentEvents | AckPaymentEvents):
            # The payments layer placed its rows: the command names their shard.
            return await self.shards[command.shard].execute(command)
        if isinstance(command, CreateApiKey | RevokeApiKey):  # every key on one shard
            return await self.shards[self.key_shard].execute(command)
        if self.single:
            split = self._payments_reserved(command)
            if split is None:
                return await self.shards[self._first].execute(command)
            if isinstance(command, CloseAccount):
                return self._reserved_close(command)
            part = self._single_part(command, split)
            results = await self.shards[self._first].execute(part) if part is not None else []
            return split.merge({self._first: results})
        if isinstance(command, ExpirePending):
            found = await gather_all(s.execute(command) for s in self.shards.values())
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
        split, parts = await self._split(command)
        results = await gather_all(self.shards[s].execute(c) for s, c in parts.items())
        answers = dict(zip(parts, results, strict=True))
        merged = split.merge(answers)
        self._notify(split, merged)
        return merged

    async def execute_idempotent(
        self, command: Command, idempotency: Idempotency
    ) -> tuple[StoredResponse, bool]:
        if self.single:
            split = self._payments_reserved(command)
            if split is None:
                return await self.shards[self._first].execute_idempotent(command, idempotency)
            if isinstance(command, CloseAccount):
                return idempotency.render(self._reserved_close(command)), False
            own = self._single_part(command, split)
            if own is None:
                empty = CreateTransfers(()) if isinstance(command, CreateTransfers) else None
                own = empty or CreateAccounts(())
            reserved: _Split = split
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
                return idempotency.render(self._reserved_close(command)), False
            target = self.shard_for(command.account_id)
            if target == home:
                return await self.shards[home].execute_idempotent(command, idempotency)
            seen = await self._seen(home, idempotency)
            if seen is not None:
                return seen, True
            closed = await self.shards[target].execute(command)  # closing is idempotent
            record = Idempotency(
                idempotency.key,
                idempotency.fingerprint,
                lambda _: idempotency.render(closed),
                idempotency.retention_seconds,
            )
            return await self.shards[home].execute_idempotent(CreateAccounts(()), record)
        if not isinstance(command, CreateTransfers | CreateAccounts):
            raise TypeError(f"{type(command).__name__} is not run under an Idempotency-Key")
        split, parts = await self._split(command)
        others = {s: c for s, c in parts.items() if s != home}
        if others:
            seen = await self._seen(home, idempotency)
            if seen is not None:
                return seen, True
        results = await gather_all(self.shards[s].execute(c) for s, c in others.items())
        answers = dict(zip(others, results, strict=True))
        merged_box: list[list[Any]] = []

        def render(home_results: list[Any]) -> StoredResponse:
            merged = split.merge({**answers, home: home_results})
            merged_box[:] = [merged]
            return idempotency.render(merged)

        own = parts.get(home) or type(command)(())
        wrapped = Idempotency(
            idempotency.key, idempotency.fingerprint, render, idempotency.retention_seconds
        )
        response, replayed = await self.shards[home].execute_idempotent(own, wrapped)
        if merged_box:
            self._notify(split, merged_box[0])
        return response, replayed

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

    def _notify(self, split: _Split, merged: Sequence[Any]) -> None:
        sources = {
            self.shard_for(merged[i].transfer.debit_account_id)
            for i in split.sagas
            if merged[i].ok and not merged[i].exists and merged[i].transfer is not None
        }
        for source in sources:
            for listener in self._listeners:
                listener(source)

    def _reserved_close(self, command: CloseAccount) -> AccountResult:
        return AccountResult(
            id=command.account_id,
            code=_E.INVALID_REQUEST,
            detail="clearing and processor accounts stay open",
        )

    def _payments_reserved(self, command: Command) -> _Split | None:
        """On a single shard (no settlement there), what the payments reserve is still
        refused to clients: accounts ``psp:...`` and transfer ids ``pm....``. None when the
        command names none of them (the usual case: it passes straight through)."""
        if isinstance(command, CloseAccount):
            if not command.account_id.startswith(PSP_PREFIX):
                return None
            split = _Split(1)
            split.upfront[0] = self._reserved_close(command)
            return split
        refused: dict[int, Any]
        if isinstance(command, CreateAccounts):
            refused = {
                i: AccountResult(
                    id=r.id, code=_E.INVALID_REQUEST, detail="ids starting with 'psp:' are reserved"
                )
                for i, r in enumerate(command.requests)
                if r.id.startswith(PSP_PREFIX)
            }
        elif isinstance(command, CreateTransfers) and not command.internal:
            refused = {}
            for i, r in enumerate(command.requests):  # one cheap pass: batches are large
                if (
                    r.id.startswith(PAYMENT_TRANSFER_PREFIX)
                    or (r.pending_id or "").startswith(PAYMENT_TRANSFER_PREFIX)
                    or (r.debit_account_id or "").startswith(PSP_PREFIX)
                    or (r.credit_account_id or "").startswith(PSP_PREFIX)
                ):
                    refused[i] = _fail(r.id, _E.INVALID_REQUEST, _reserved_detail(r))
        else:
            return None
        if not refused:
            return None
        split = _Split(len(command.requests))
        split.upfront.update(refused)
        if isinstance(command, CreateTransfers):
            target = dict.fromkeys(range(len(command.requests)), self._first)
            self._check_chains(command.requests, target, {}, split)
        for index in range(len(command.requests)):
            if index not in split.upfront:
                split.add(self._first, index)
        return split

    def _single_part(self, command: Command, split: _Split) -> Command | None:
        """The items of ``command`` that ``split`` lets through to the only shard."""
        indices = split.parts.get(self._first)
        if not indices or not isinstance(command, CreateTransfers | CreateAccounts):
            return None
        requests = tuple(command.requests[i] for i in indices)
        return msgspec.structs.replace(command, requests=requests)

    async def _close(self, command: CloseAccount) -> AccountResult:
        if is_reserved(command.account_id):
            return self._reserved_close(command)
        result: AccountResult = await self.shards[self.shard_for(command.account_id)].execute(
            command
        )
        return result

    async def _split(self, command: Command) -> tuple[_Split, dict[str, Command]]:
        if isinstance(command, CreateAccounts):
            split = self._split_accounts(command.requests)
            return split, {
                shard: CreateAccounts(tuple(command.requests[i] for i in indices))
                for shard, indices in split.parts.items()
            }
        if isinstance(command, CreateTransfers):
            split = await self._split_transfers(
                command.requests, internal=command.internal, tenant=command.tenant
            )
            await self._ensure_clearing(split)
            parts: dict[str, Command] = {}
            for shard, indices in split.parts.items():
                requests = tuple(split.rewritten.get(i, command.requests[i]) for i in indices)
                writes = tuple(
                    msgspec.structs.replace(split.outbox[i], index=j)
                    for j, i in enumerate(indices)
                    if i in split.outbox
                )
                parts[shard] = CreateTransfers(
                    requests, writes, guard_ids=True, fence=command.fence, tenant=command.tenant
                )
            return split, parts
        raise TypeError(f"cannot route {type(command).__name__}")

    def _split_accounts(self, requests: Sequence[AccountRequest]) -> _Split:
        split = _Split(len(requests))
        for index, request in enumerate(requests):
            if is_reserved(request.id):
                split.upfront[index] = AccountResult(
                    id=request.id,
                    code=_E.INVALID_REQUEST,
                    detail="ids starting with 'clearing:' or 'psp:' are reserved",
                )
            else:
                split.add(self.shard_for(request.id), index)
        return split

    async def _split_transfers(
        self,
        requests: Sequence[TransferRequest],
        *,
        internal: bool = False,
        tenant: str | None = None,
    ) -> _Split:
        split = _Split(len(requests))
        target: dict[int, str] = {}  # index -> shard the item is written on
        cross: dict[int, str] = {}  # index -> shard of the credit account (cross-shard)
        created_here: dict[str, int] = {}  # transfer id -> index of the batch item creating it
        lookups: set[str] = set()
        for index, r in enumerate(requests):
            if r.metadata is not None and any(k.startswith("paycore:") for k in r.metadata):
                split.upfront[index] = _fail(
                    r.id, _E.INVALID_REQUEST, "metadata keys starting with 'paycore:' are reserved"
                )
            elif r.id.startswith("xs."):
                split.upfront[index] = _fail(
                    r.id, _E.INVALID_REQUEST, "ids starting with 'xs.' are reserved for settlement"
                )
            elif r.id.startswith(PAYMENT_TRANSFER_PREFIX) and not internal:
                split.upfront[index] = _fail(
                    r.id, _E.INVALID_REQUEST, "ids starting with 'pm.' are reserved for payments"
                )
            if (
                (r.flags.post_pending or r.flags.void_pending)
                and (r.pending_id or "").startswith(PAYMENT_TRANSFER_PREFIX)
                and not internal
            ):
                split.upfront[index] = _fail(
                    r.id, _E.INVALID_REQUEST, "holds starting with 'pm.' belong to payments"
                )
            if r.flags.post_pending or r.flags.void_pending:
                earlier = None if r.pending_id is None else created_here.get(r.pending_id)
                if earlier is not None:
                    target[index] = target[earlier]
                    if earlier in cross:
                        split.upfront[index] = _fail(
                            r.id, _E.PENDING_TRANSFER_NOT_PENDING, "a cross-shard transfer"
                        )
                elif r.pending_id is not None:
                    lookups.add(r.pending_id)
                continue
            if is_reserved(r.debit_account_id) or is_reserved(r.credit_account_id):
                split.upfront[index] = _fail(
                    r.id, _E.INVALID_REQUEST, "clearing accounts are reserved for settlement"
                )
            debit, credit = r.debit_account_id, r.credit_account_id
            home = self.shard_for(debit or credit or "") if (debit or credit) else self._first
            target[index] = home
            created_here.setdefault(r.id, index)
            if debit is not None and credit is not None and index not in split.upfront:
                other = self.shard_for(credit)
                if other != home:
                    cross[index] = other
        found = await self._find_holds(lookups)
        for index, r in enumerate(requests):
            if index in target:
                continue
            hold = None if r.pending_id is None else found.get(r.pending_id)
            if hold is None:
                debit = r.debit_account_id
                target[index] = self.shard_for(debit) if debit else self._first
            else:
                target[index] = hold[0]
                if saga_info(hold[1].transfer.metadata) is not None:
                    split.upfront[index] = _fail(
                        r.id, _E.PENDING_TRANSFER_NOT_PENDING, "a cross-shard transfer, not a hold"
                    )
        self._check_chains(requests, target, cross, split)
        await self._plan_and_reserve(requests, target, cross, split, tenant)
        for index in range(len(requests)):
            if index not in split.upfront:
                split.add(target[index], index)
        return split

    async def _plan_and_reserve(
        self,
        requests: Sequence[TransferRequest],
        target: Mapping[int, str],
        cross: Mapping[int, str],
        split: _Split,
        tenant: str | None = None,
    ) -> None:
        """Plan the sagas and reserve the ids; an item whose id is taken is refused.

        The two need each other's results only at the end, so
        their round trips overlap (an id reserved for an item the planning refuses is
        harmless: it stays bound to the shard its debit account is on).
        """
        reserve = self._reserve_ids(requests, target, self._ids_to_reserve(requests, target, split))
        outcomes = await asyncio.gather(
            self._plan_sagas(requests, target, cross, split, tenant),
            reserve,
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        taken = outcomes[1]
        assert isinstance(taken, dict)
        if taken:
            for index, refusal in taken.items():
                split.upfront[index] = refusal
                split.sagas.discard(index)
            self._check_chains(requests, target, cross, split)  # fail the refused one's chain

    def _ids_to_reserve(
        self, requests: Sequence[TransferRequest], target: Mapping[int, str], split: _Split
    ) -> dict[str, list[int]]:
        """Per shard, the items whose id hashes there but are written elsewhere.

        An id hashing to its own writing shard needs no reservation: that shard checks
        the reservations made on it in the transaction writing the transfer.
        """
        wanted: dict[str, list[int]] = {}
        for index, r in enumerate(requests):
            if index not in split.upfront:
                owner = self.shard_map.shard_for(r.id)
                if owner != target[index]:
                    wanted.setdefault(owner, []).append(index)
        return wanted

    async def _reserve_ids(
        self,
        requests: Sequence[TransferRequest],
        target: Mapping[int, str],
        wanted: Mapping[str, list[int]],
    ) -> dict[int, TransferResult]:
        """Bind each wanted item's id to the shard writing it, on the shard the id hashes
        to; returns the refusals of items whose id is bound elsewhere."""
        owners = list(wanted)
        answers = await gather_all(
            self.shards[o].execute(
                ReserveTransferIds(o, tuple((requests[i].id, target[i]) for i in wanted[o]))
            )
            for o in owners
        )
        refused: dict[int, TransferResult] = {}
        for owner, bound in zip(owners, answers, strict=True):
            for index, shard in zip(wanted[owner], bound, strict=True):
                if shard != target[index]:
                    refused[index] = _fail(
                        requests[index].id,
                        _E.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
                        f"transfer id {requests[index].id!r} is taken by a transfer "
                        f"stored on shard {shard!r}",
                    )
        return refused

    async def _find_holds(self, ids: set[str]) -> dict[str, tuple[str, TransferView]]:
        """Where each of ``ids`` is stored (a hold preferred over a saga's credit leg)."""
        if not ids:
            return {}
        order = sorted(ids)
        shards = list(self.shards)
        parts = await gather_all(self.shards[s].get_transfers(order) for s in shards)
        found: dict[str, tuple[str, TransferView]] = {}
        for shard, views in zip(shards, parts, strict=True):
            for transfer_id, view in views.items():
                best = found.get(transfer_id)
                pending = view.transfer.flags.pending
                if best is None or (pending and not best[1].transfer.flags.pending):
                    found[transfer_id] = (shard, view)
        return found

    def _check_chains(
        self,
        requests: Sequence[TransferRequest],
        target: Mapping[int, str],
        cross: Mapping[int, str],
        split: _Split,
    ) -> None:
        """Refuse linked chains spanning shards; fail a chain with an item refused up front."""
        start: int | None = None
        for index, r in enumerate(requests):
            if start is None and r.flags.linked:
                start = index
            if start is None or (r.flags.linked and index < len(requests) - 1):
                continue
            chain = range(start, index + 1)
            start = None
            if requests[chain[-1]].flags.linked:  # the batch ended with the chain open
                for i in chain:
                    split.upfront[i] = _fail(requests[i].id, _E.LINKED_EVENT_CHAIN_OPEN)
                continue
            shards = {target[i] for i in chain} | {cross[i] for i in chain if i in cross}
            if len(shards) > 1:
                for i in chain:
                    split.upfront[i] = _fail(
                        requests[i].id,
                        _E.LINKED_CHAIN_SPANS_SHARDS,
                        f"the chain's accounts live on shards {sorted(shards)}",
                    )
            elif any(i in split.upfront for i in chain):
                for i in chain:
                    split.upfront.setdefault(i, _fail(requests[i].id, _E.LINKED_EVENT_FAILED))

    async def _plan_sagas(
        self,
        requests: Sequence[TransferRequest],
        target: Mapping[int, str],
        cross: Mapping[int, str],
        split: _Split,
        tenant: str | None = None,
    ) -> None:
        """Check B on its shard (racy, cheap), then turn each cross-shard item into step 1.

        ``tenant`` (the API caller's): a B of another tenant is answered as a missing one.
        Not racy: an account's tenant never changes, and accounts are never deleted; A's
        tenant is checked by its own shard in step 1's transaction."""
        wanted = {i: s for i, s in cross.items() if i not in split.upfront}
        by_shard: dict[str, list[str]] = {}
        for index, shard in wanted.items():
            credit = requests[index].credit_account_id
            assert credit is not None
            by_shard.setdefault(shard, []).append(credit)
        shards = list(by_shard)
        # A retry of a transfer that already exists is answered by its source shard
        # ("exists", or different fields), never by a fresh look at B: B may have been
        # closed since, and the answer to a retry must not change. Both reads at once.
        ids_by_shard: dict[str, list[str]] = {}
        for index in wanted:
            ids_by_shard.setdefault(target[index], []).append(requests[index].id)
        sources = list(ids_by_shard)
        accounts, stored = await asyncio.gather(
            gather_all(self.shards[s].get_accounts(by_shard[s]) for s in shards),
            gather_all(self.shards[s].get_transfers(ids_by_shard[s]) for s in sources),
        )
        found: dict[str, Account] = {}
        for part in accounts:
            found.update({k: a for k, a in part.items() if tenant is None or a.tenant == tenant})
        on_source = dict(zip(sources, stored, strict=True))
        exists = {i for i in wanted if requests[i].id in on_source[target[i]]}
        for index in wanted:
            r = requests[index]
            b = found.get(r.credit_account_id or "")
            refusal = None if index in exists and b is not None else self._saga_refusal(r, b)
            if refusal is not None:
                split.upfront[index] = refusal
                continue
            b = found[r.credit_account_id or ""]
            hold, row = hold_request(r, target[index], cross[index], b.currency)
            split.rewritten[index] = hold
            split.outbox[index] = OutboxWrite(0, row)
            split.sagas.add(index)

    @staticmethod
    def _saga_refusal(r: TransferRequest, b: Account | None) -> TransferResult | None:
        if r.flags.pending:
            return _fail(r.id, _E.CROSS_SHARD_PENDING_UNSUPPORTED)
        if r.timeout_seconds:  # as on one shard: a timeout only means something on a hold
            return _fail(r.id, _E.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER)
        if r.metadata is not None and SAGA_KEY in r.metadata:
            return _fail(r.id, _E.INVALID_REQUEST, f"metadata key {SAGA_KEY!r} is reserved")
        if r.debit_account_id == r.credit_account_id:
            return _fail(r.id, _E.ACCOUNTS_MUST_BE_DIFFERENT)
        if b is None:
            return _fail(
                r.id, _E.ACCOUNT_NOT_FOUND, f"credit account {r.credit_account_id!r} not found"
            )
        if r.currency is not None and r.currency != b.currency:
            return _fail(
                r.id, _E.CURRENCY_MISMATCH, f"transfer is {r.currency}, accounts are {b.currency}"
            )
        if b.flags.closed:
            return _fail(r.id, _E.ACCOUNT_CLOSED, f"credit account {b.id!r} is closed")
        return None

    async def _ensure_clearing(self, split: _Split) -> None:
        """Create the clearing accounts step 1 credits, once per node and account."""
        wanted: dict[str, set[tuple[str, str]]] = {}
        for index in split.sagas:
            account = split.rewritten[index].credit_account_id
            assert account is not None
            if account not in self._clearing:
                home, _, currency = parse_clearing(account) or ("", "", "")
                wanted.setdefault(home, set()).add((account, currency))
        if not wanted:
            return
        homes = list(wanted)
        answers = await gather_all(
            self.shards[h].execute(
                CreateAccounts(
                    tuple(
                        AccountRequest(a, c, metadata={"role": "clearing"}, tenant=SYSTEM_TENANT)
                        for a, c in sorted(wanted[h])
                    )
                )
            )
            for h in homes
        )
        for results in answers:
            for result in results:
                if result.ok:
                    self._clearing.add(result.id)

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
        parts = await gather_all(s.get_transfers(ids) for s in self.shards.values())
        found: dict[str, list[TransferView]] = {}
        for views in parts:
            for transfer_id, view in views.items():
                found.setdefault(transfer_id, []).append(view)
        return {transfer_id: self._client_view(views) for transfer_id, views in found.items()}

    def _client_view(self, present: list[TransferView]) -> TransferView:
        # A saga's hold (on its source) is the transfer; its credit leg is a detail.
        for view in present:
            info = saga_info(view.transfer.metadata)
            if info is not None and info.get("role") == "hold":
                return present_view(view)
        return present_view(present[0])

    async def get_transfer(self, transfer_id: str) -> TransferView | None:
        if self.single:
            return await self.shards[self._first].get_transfer(transfer_id)
        views = await gather_all(s.get_transfer(transfer_id) for s in self.shards.values())
        present = [v for v in views if v is not None]
        return self._client_view(present) if present else None

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
        # A saga shows as its client transfer alone: its step 3 (xs.post / xs.void, which
        # moved the hold's amount once more on paper) is the settlement's bookkeeping. A
        # page may so hold fewer than ``limit`` items; its cursor still goes on correctly.
        shown = [present_view(v) for v in page.data if not v.transfer.id.startswith("xs.")]
        return TransferPage(shown, page.next_cursor)

    async def balance_history(
        self, account_id: str, *, at: int | None = None, limit: int = 100, cursor: int | None = None
    ) -> list[BalanceRecord]:
        return await self.shards[self.shard_for(account_id)].balance_history(
            account_id, at=at, limit=limit, cursor=cursor
        )

    async def ping(self) -> None:
        await gather_all(s.ping() for s in self.shards.values())

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
            stats = getattr(store, "writer_stats", (0, 0))
            groups += stats[0]
            jobs += stats[1]
        return groups, jobs


def _reserved_detail(r: TransferRequest) -> str:
    """Why a client transfer names something the payments reserve ("" when it does not)."""
    if r.id.startswith(PAYMENT_TRANSFER_PREFIX):
        return "ids starting with 'pm.' are reserved for payments"
    if (r.pending_id or "").startswith(PAYMENT_TRANSFER_PREFIX):
        return "holds starting with 'pm.' belong to payments"
    for account_id in (r.debit_account_id, r.credit_account_id):
        if account_id is not None and account_id.startswith(PSP_PREFIX):
            return "accounts starting with 'psp:' are reserved for payments"
    return ""


def clearing_pair(source: str, target: str, currency: str) -> tuple[str, str]:
    """The two clearing accounts a saga from ``source`` to ``target`` moves money through."""
    return (
        clearing_account_id(source, target, currency),
        clearing_account_id(target, source, currency),
    )
