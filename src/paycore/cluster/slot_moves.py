"""Moving a range of slots to another shard while the others keep serving.

A move of slots ``first..last`` from their shard S (the source) to T (the target) takes
five steps; each is recorded in ``slot_moves`` on the key shard *before* it is taken and
each can be taken again, so running the move again after a crash (of the mover, a node
or a shard) resumes it; ``abort`` rolls back one that has not switched::

    fencing    S (its fence), then the key shard (the cluster's map, ``slot_catalog``),
               record map version v+1: the slots still on S but ``moving``. Every
               router adopts it within ``slot_catalog.REFRESH_SECONDS`` and from then
               on answers a new write naming their accounts with 503
               (retryable); a post or void of a hold, and the steps of sagas under way,
               still run on S. Other slots are not touched.
    draining   once every router had the time to adopt v+1, what is in flight on the
               slots ends: pending holds on their accounts, cross-shard sagas and linked
               chains naming them. What has not ended within ``--wait`` seconds rolls the
               move back (v+3, the old map) and is named.
    copying    S records v+2 (the slots on T): from now on S refuses, in each write's own
               transaction, what a router with an older map sends it for those slots
               (``paycore.storage.slot_fence``), so their rows on S stop changing. Then
               one snapshot of S: the accounts (as they are, balances included), their
               metadata and balance history, every transfer naming one of them (as
               ``moved_transfers``, with its place in S's hash chain), the Idempotency-Key
               records and transfer-id bindings of the slots, the payments, refunds,
               payouts and attempts of the accounts. Imported on T in parts;
               the last part records v+2 on T in the same transaction: T owns the slots.
    switching  the key shard records v+2 as the cluster's map: every router adopts
               it within ``slot_catalog.REFRESH_SECONDS``; until then, S refuses and
               clients retry.
    retiring   S moves the accounts from ``accounts`` to ``moved_accounts`` and deletes
               the payment rows that moved; done.

The longest write pause on the moving slots is from fencing to switching (plus a
router's refresh); the other slots never pause. docs/resharding.md has the rest: what a
move does not carry yet, and how a moved history is verified against the source's chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec

from paycore.cluster import placement, slot_catalog
from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import OPEN_STATES
from paycore.cluster.shardmap import SLOTS, ShardMap, SlotRange, slot_of
from paycore.storage.base import ShardSnapshot
from paycore.storage.codec import ACCOUNT_COLUMNS
from paycore.storage.slot_fence import RecordSlotMap
from paycore.storage.slot_moves import (
    MOVED_TRANSFER_COLUMNS,
    DropImported,
    ImportMoved,
    MoveRow,
    RecordMove,
    RetireMoved,
)
from paycore.storage.store import ShardStore

T = TypeVar("T")

__all__ = ["MoveBlocked", "MovePlan", "MoveReport", "abort_move", "move_slots", "plan_move"]

# Rows per import command: one write transaction on the target each.
PART_ROWS: Final = 2_000
# How long draining lets routers adopt the fence (their refresh period, and some): one
# that has not is still refused by the source once it records the switch's version.
ADOPT_SECONDS: Final = slot_catalog.REFRESH_SECONDS * 1.5
# How often draining looks again at what is in flight.
_POLL_SECONDS: Final = 0.1
FINISHED: Final = ("done", "rolled_back")


class MoveBlocked(Exception):
    """The slots cannot move now (the move was rolled back, or never started)."""


@dataclass(frozen=True)
class MovePlan:
    first: int
    last: int
    source: str
    target: str
    version: int  # the map version of the switch (v+2; v+1 fences, v+3 rolls back)
    before: ShardMap
    after: ShardMap

    @property
    def id(self) -> str:
        return f"v{self.version}:{self.first}-{self.last}:{self.source}>{self.target}"


@dataclass
class MoveReport:
    plan: MovePlan
    state: str = "planned"
    accounts: int = 0
    transfers: int = 0
    keys: int = 0
    bindings: int = 0
    payments: int = 0  # payments, refunds and payouts
    fenced_seconds: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def plan_move(
    shard_map: ShardMap, version: int, first: int, last: int, *, target: str, shards: Iterable[str]
) -> MovePlan:
    """The move of ``first..last`` to ``target`` on top of ``shard_map`` (newest version
    ``version`` anywhere); ValueError when it is not one."""
    if not 0 <= first <= last < SLOTS:
        raise ValueError(f"slots {first}-{last}: a range within 0-{SLOTS - 1}")
    if target not in set(shards):
        raise ValueError(f"shard {target!r} is not one of the settings' shards")
    owners = {shard_map.shard_of_slot(s) for s in range(first, last + 1)}
    if len(owners) != 1:
        raise ValueError(f"slots {first}-{last} live on several shards ({sorted(owners)})")
    (source,) = owners
    if source == target:
        raise ValueError(f"slots {first}-{last} are on {target} already")
    per_slot = [shard_map.shard_of_slot(s) for s in range(SLOTS)]
    per_slot[first : last + 1] = [target] * (last - first + 1)
    return MovePlan(first, last, source, target, version + 2, shard_map,
                    ShardMap(_ranges(per_slot), shard_map.prefixes))  # fmt: skip


def _ranges(per_slot: Sequence[str]) -> list[SlotRange]:
    ranges: list[SlotRange] = []
    start = 0
    for slot in range(1, SLOTS + 1):
        if slot == SLOTS or per_slot[slot] != per_slot[start]:
            ranges.append(SlotRange(start, slot - 1, per_slot[start]))
            start = slot
    return ranges


async def newest_version(router: ShardedStore) -> int:
    """The newest map version any shard recorded (a new one must exceed it)."""
    newest = await asyncio.gather(
        router.key_store.slot_maps.newest(catalog=True),
        *(s.slot_maps.newest() for s in router.shards.values()),
    )
    return max((n[0] for n in newest if n is not None), default=0)


async def move_slots(
    router: ShardedStore,
    first: int,
    last: int,
    target: str,
    *,
    wait_seconds: float = 30.0,
    adopt_seconds: float | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> MoveReport:
    """Move ``first..last`` to ``target`` (see the module docstring), or resume the
    unfinished move of that range; MoveBlocked when it cannot (rolled back)."""
    started = time.monotonic()
    plan, state = await _plan_or_resume(router, first, last, target, say)
    if type(router.shards[plan.source]) is not type(router.shards[plan.target]):
        raise ValueError(  # rows are copied column for column
            f"{plan.source} and {plan.target} are shards of different kinds (SQLite, "
            "PostgreSQL): slots move between shards of one kind"
        )
    report = MoveReport(plan)
    text = slot_catalog.encode_map(plan.after)
    source = router.shards[plan.source]
    if state == "fencing":
        await _record(router, plan, "fencing")
        fence = RecordSlotMap(
            plan.version - 1, slot_catalog.encode_map(plan.before, [(plan.first, plan.last)])
        )
        await router.shards[plan.source].execute(fence)
        await router.key_store.execute(msgspec.structs.replace(fence, catalog=True))
        await router.refresh_map()
        say(f"slots {plan.first}-{plan.last} moving: no new write on them (map version "
            f"{plan.version - 1})")  # fmt: skip
        state = "draining"
    fenced_at = time.monotonic()
    if state == "draining":
        await _record(router, plan, "draining")
        await asyncio.sleep(ADOPT_SECONDS if adopt_seconds is None else adopt_seconds)
        blockers = await _drain(router, plan, wait_seconds)
        if blockers:
            await abort_move(router, plan, reason="; ".join(blockers))
            raise MoveBlocked(
                f"slots {plan.first}-{plan.last} cannot move now, the move was rolled back: "
                + "; ".join(blockers)
            )
        state = "copying"
    if state == "copying":
        await _record(router, plan, "copying")
        await source.execute(RecordSlotMap(plan.version, text))
        await _copy(router, plan, text, report)
        say(
            f"copied {report.accounts:,} accounts, {report.transfers:,} transfers of their "
            f"history, {report.keys:,} idempotency records and {report.bindings:,} "
            f"transfer-id bindings to {plan.target}"
        )
        state = "switching"
    if state == "switching":
        await _record(router, plan, "switching")
        await router.key_store.execute(RecordSlotMap(plan.version, text, catalog=True))
        await router.refresh_map()
        report.fenced_seconds = time.monotonic() - fenced_at
        say(f"switched: map version {plan.version} places slots {plan.first}-{plan.last} on "
            f"{plan.target}")  # fmt: skip
    await _retire(router, plan)
    report.state = "done"
    report.seconds = time.monotonic() - started
    return report


async def _plan_or_resume(
    router: ShardedStore, first: int, last: int, target: str, say: Callable[[str], None]
) -> tuple[MovePlan, str]:
    """The plan of a new move of ``first..last`` and its first step, or the unfinished
    move of that range and where it stopped."""
    await router.refresh_map()
    row = await _unfinished(router)
    if row is None:
        version = await newest_version(router)
        plan = plan_move(
            router.shard_map, version, first, last, target=target, shards=router.shards
        )
        return plan, "fencing"
    if (row.first_slot, row.last_slot, row.target) != (first, last, target):
        raise MoveBlocked(
            f"move {row.id} ({row.state}) is unfinished: run it again "
            f"(--slots {row.first_slot}-{row.last_slot} --to {row.target}) or abort it first"
        )
    say(f"resuming move {row.id} at {row.state}")
    return _plan_of(router, row), row.state


async def _retire(router: ShardedStore, plan: MovePlan) -> None:
    """The last step: the moved accounts leave the source's ``accounts``; done."""
    await _record(router, plan, "retiring")
    source = router.shards[plan.source]
    moves = _moves(plan, router)

    def read(snap: ShardSnapshot) -> tuple[list[str], list[str]]:
        accounts = [str(r[0]) for r in snap.rows("SELECT id FROM accounts") if moves(str(r[0]))]
        payments = [
            str(row[0])
            for table, rows in _payment_rows(snap, moves)
            if table != "payment_attempts"
            for row in rows
        ]
        return accounts, payments

    accounts, payments = await _read(source, read)
    # Smaller parts: each holds the source's writer, which serves the other slots.
    for part in _chunks(accounts, PART_ROWS // 4):
        await source.execute(RetireMoved(plan.id, tuple(part), plan.target))
    for part in _chunks(payments, PART_ROWS):
        await source.execute(RetireMoved(plan.id, (), plan.target, tuple(part)))
    await _record(router, plan, "done")


async def abort_move(
    router: ShardedStore, plan: MovePlan | None = None, *, reason: str = ""
) -> str:
    """Roll back the unfinished move (``plan``, else the one recorded): the source owns
    the slots again (a newer version of the old map, on the source, the target and the key
    shard) and the target drops what it imported. Refused once the move switched."""
    if plan is None:
        row = await _unfinished(router)
        if row is None:
            return "no unfinished move"
        if row.state in ("switching", "retiring"):
            raise MoveBlocked(f"move {row.id} switched already: run it again to finish it")
        plan = _plan_of(router, row)
    back = RecordSlotMap(plan.version + 1, slot_catalog.encode_map(plan.before))
    # (v+1 fenced the slots, v+2 would have switched them: v+3 is the old map again.)
    for name in (plan.source, plan.target):
        await router.shards[name].execute(back)
    await router.key_store.execute(msgspec.structs.replace(back, catalog=True))
    await _drop_imported(router.shards[plan.target], plan, router)
    await _record(router, plan, "rolled_back", reason)
    await router.refresh_map()
    return f"move {plan.id} rolled back" + (f": {reason}" if reason else "")


# -- the steps --------------------------------------------------------------------------------


async def _record(router: ShardedStore, plan: MovePlan, state: str, detail: str = "") -> None:
    row = MoveRow(plan.id, plan.first, plan.last, plan.source, plan.target, state, detail)
    await router.key_store.execute(RecordMove(row))


async def _unfinished(router: ShardedStore) -> MoveRow | None:
    def read(snap: ShardSnapshot) -> MoveRow | None:
        rows = list(
            snap.rows(
                "SELECT id, first_slot, last_slot, source, target, state, detail FROM slot_moves "
                "WHERE state NOT IN (?, ?) ORDER BY created_at LIMIT 1",
                FINISHED,
            )
        )
        return MoveRow(*rows[0]) if rows else None

    return await _read(router.key_store, read)


def _plan_of(router: ShardedStore, row: MoveRow) -> MovePlan:
    version = int(row.id[1:].split(":", 1)[0])  # the switch's, v+2
    before = router.shard_map
    if before.shard_of_slot(row.first_slot) == row.target:  # switched: rebuild the old map
        per_slot = [before.shard_of_slot(s) for s in range(SLOTS)]
        per_slot[row.first_slot : row.last_slot + 1] = [row.source] * (
            row.last_slot - row.first_slot + 1
        )
        before = ShardMap(_ranges(per_slot), before.prefixes)
    return plan_move(
        before, version - 2, row.first_slot, row.last_slot, target=row.target, shards=router.shards
    )


def _moves(plan: MovePlan, router: ShardedStore) -> Callable[[str], bool]:
    """Whether an account id is one the move carries (placed on the source before it,
    on the target after)."""
    shards = router.shards

    def moves(account_id: str) -> bool:
        return (
            placement.shard_for(plan.after, shards, account_id) == plan.target
            and placement.shard_for(plan.before, shards, account_id) == plan.source
        )

    return moves


def _in_slots(plan: MovePlan) -> Callable[[str], bool]:
    """Whether a key or transfer id hashes into the moving slots."""
    return lambda key: plan.first <= slot_of(key) <= plan.last


async def _drain(router: ShardedStore, plan: MovePlan, wait_seconds: float) -> list[str]:
    """Wait for the holds, sagas and chains naming the moving accounts to end (posts and
    voids pass the fence: ``slot_fence``); what still blocks."""
    moves = _moves(plan, router)
    source = router.shards[plan.source]

    def holds(snap: ShardSnapshot) -> list[str]:
        return [
            f"pending hold {row[0]!r}"
            for row in snap.rows(
                "SELECT t.id, t.debit_account_id, t.credit_account_id FROM pending_transfers p "
                "JOIN transfers t ON t.id = p.id WHERE p.status = 'pending'"
            )
            if moves(str(row[1])) or moves(str(row[2]))
        ]

    def in_flight(snap: ShardSnapshot) -> list[str]:
        marks = ", ".join("?" * len(OPEN_STATES))
        found = [
            f"cross-shard transfer {r[0]!r} on {snap.shard}"
            for r in snap.rows(
                "SELECT transfer_id, debit_account_id, credit_account_id FROM outbox "
                f"WHERE state IN ({marks})",
                OPEN_STATES,
            )
            if moves(str(r[1])) or moves(str(r[2]))
        ]
        found += [
            f"linked chain {r[0]!r} on {snap.shard}"
            for r in snap.rows("SELECT chain_id, account_id FROM chain_reservations")
            if moves(str(r[1]))
        ]
        found += [
            f"cross-shard hold {r[0]!r} on {snap.shard}"
            for r in snap.rows("SELECT hold_id, account_id FROM saga_holds_in_flight")
            if moves(str(r[1]))
        ]
        return found

    deadline = time.monotonic() + wait_seconds
    while True:
        flights = await asyncio.gather(*(_read(s, in_flight) for s in router.shards.values()))
        waiting = [*await _read(source, holds), *(f for per_shard in flights for f in per_shard)]
        if not waiting:
            return []
        if time.monotonic() >= deadline:
            return _first(waiting, f"still in flight after {wait_seconds:g} s")
        await asyncio.sleep(_POLL_SECONDS)


def _payment_rows(
    snap: ShardSnapshot, moves: Callable[[str], bool]
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The payment rows of the moving accounts, per table (every column, in order): a
    payment by its merchant, a payout by its wallet, refunds and attempts by parent."""
    payments = [r for r in snap.rows("SELECT * FROM payments") if moves(str(r[1]))]
    ids = {r[0] for r in payments}
    refunds = [r for r in snap.rows("SELECT * FROM refunds") if r[1] in ids]
    payouts = [r for r in snap.rows("SELECT * FROM payouts") if moves(str(r[1]))]
    parents = ids | {r[0] for r in refunds} | {r[0] for r in payouts}
    attempts = [r for r in snap.rows("SELECT * FROM payment_attempts") if r[0] in parents]
    return [("payments", payments), ("refunds", refunds), ("payouts", payouts),
            ("payment_attempts", attempts)]  # fmt: skip


def _first(items: list[str], why: str = "") -> list[str]:
    shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
    return [f"{why + ': ' if why else ''}{shown}"]


async def _copy(router: ShardedStore, plan: MovePlan, text: str, report: MoveReport) -> None:
    source, dest = router.shards[plan.source], router.shards[plan.target]
    moves, in_slots = _moves(plan, router), _in_slots(plan)

    def read(snap: ShardSnapshot) -> dict[str, Any]:
        accounts = [r for r in snap.rows(f"SELECT {ACCOUNT_COLUMNS} FROM accounts") if moves(r[0])]
        ids = {r[0] for r in accounts}
        rows: dict[str, Any] = {"accounts": accounts}
        rows["metadata"] = [
            r for r in snap.rows("SELECT id, metadata FROM account_metadata") if r[0] in ids
        ]
        rows["balances"] = [r for r in snap.rows("SELECT * FROM account_balances") if r[0] in ids]
        rows["transfers"] = []
        rows["bindings"] = []
        for r in snap.rows(
            "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.currency, "
            "t.code, t.flags, t.pending_id, t.timeout_seconds, t.timestamp, "
            "CAST(m.metadata AS TEXT), "
            "p.status, p.resolved_by, t.chain_seq, t.chain_hash FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN pending_transfers p ON p.id = t.id"
        ):
            if r[1] in ids or r[2] in ids:
                rows["transfers"].append((*r[:13], snap.shard, r[13], r[14]))
            if in_slots(r[0]):
                rows["bindings"].append((r[0], snap.shard))
        # History this shard holds as moved in before (never what came from the target:
        # the target has it as its own transfers).
        rows["transfers"] += [
            r
            for r in snap.rows(f"SELECT {MOVED_TRANSFER_COLUMNS} FROM moved_transfers")
            if (r[1] in ids or r[2] in ids) and r[13] != plan.target
        ]
        rows["bindings"] += [
            (str(r[0]), str(r[1]))
            for r in snap.rows("SELECT id, shard FROM transfer_ids")
            if in_slots(str(r[0]))
        ]
        rows["payment_rows"] = _payment_rows(snap, moves)
        until: dict[str, int] = dict.fromkeys(ids, 0)
        for r in rows["balances"]:
            until[r[0]] = max(until[r[0]], int(r[1]))
        for r in rows["transfers"]:
            for account in (r[1], r[2]):
                if account in until:
                    until[account] = max(until[account], int(r[9]))
        rows["moved_in"] = [(a, snap.shard, t) for a, t in until.items()]
        rows["idempotency"] = [
            r
            for r in snap.rows(
                "SELECT key, fingerprint, status, body, content_type, created_at, expires_at "
                "FROM idempotency"
            )
            if placement.shard_for(plan.after, router.shards, str(r[0])) == plan.target
        ]
        return rows

    rows = await _read(source, read)
    report.accounts, report.transfers = len(rows["accounts"]), len(rows["transfers"])
    report.keys, report.bindings = len(rows["idempotency"]), len(rows["bindings"])
    newest = max((t for _, _, t in rows["moved_in"]), default=0)
    parts: list[ImportMoved] = []
    for table, items in rows.pop("payment_rows"):
        report.payments += len(items) if table != "payment_attempts" else 0
        for chunk in _chunks(items, PART_ROWS):
            parts.append(ImportMoved(plan.id, payment_rows=((table, tuple(chunk)),)))
    for kind, items in rows.items():
        for chunk in _chunks(items, PART_ROWS):
            parts.append(
                msgspec.structs.replace(ImportMoved(plan.id), **{kind: tuple(map(tuple, chunk))})
            )
    parts.append(
        ImportMoved(plan.id, newest_timestamp=newest, switch=RecordSlotMap(plan.version, text))
    )
    for part in parts:
        await dest.execute(part)


async def _drop_imported(dest: ShardStore, plan: MovePlan, router: ShardedStore) -> None:
    """Delete from the target what an aborted move imported (what the old map places on
    the source: the target never held such rows)."""
    moves, in_slots = _moves(plan, router), _in_slots(plan)

    def read(snap: ShardSnapshot) -> tuple[list[str], list[str], list[str]]:
        accounts = [str(r[0]) for r in snap.rows("SELECT id FROM accounts") if moves(str(r[0]))]
        keys = [str(r[0]) for r in snap.rows("SELECT key FROM idempotency") if moves(str(r[0]))]
        ids = [str(r[0]) for r in snap.rows("SELECT id FROM transfer_ids") if in_slots(str(r[0]))]
        return accounts, keys, ids

    accounts, keys, ids = await _read(dest, read)
    await dest.execute(DropImported(tuple(accounts), tuple(keys), tuple(ids)))


async def _read(store: ShardStore, reader: Callable[[ShardSnapshot], T]) -> T:
    """``reader`` over one snapshot of a shard (both kinds of shard are SQL ones)."""
    return await store.with_snapshot(reader)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
