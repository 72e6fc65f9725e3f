"""The auditor: replay a shard's history and check every promise against its state.

``check_snapshot`` is pure: it reads one consistent ``LedgerSnapshot`` (accounts,
transfers in timestamp order, hold statuses, balance history) and returns an
``AuditReport`` with per-currency totals and every violation found, each with a
stable ``ViolationKind``. ``audit_store`` runs it on a store's snapshot in a thread.

What is checked (the kinds in brackets):

* conservation, per currency, on the stored counters: the sum of
  ``credits_posted - debits_posted`` is zero [``posted_not_conserved``] and
  pending debits equal pending credits [``pending_not_conserved``];
* every transfer is well formed: unique id [``transfer_duplicate_id``], strictly
  increasing timestamp [``transfer_out_of_order``], amount > 0 and distinct sides
  [``transfer_invalid``], existing accounts [``transfer_unknown_account``] of the
  transfer's currency [``transfer_currency_mismatch``];
* a post or void names an earlier hold, with its accounts, currency and an allowed
  amount [``resolution_invalid``], and resolves it once [``hold_resolved_twice``];
* each hold's status agrees with the transfers that resolve it
  [``hold_status_missing``, ``hold_status_inconsistent``], and no hold is still
  pending more than ``grace_seconds`` after its timeout [``hold_overdue``];
* every account's four counters equal the replay of the history: a plain transfer
  moves the posted counters, a hold the pending ones, a post releases the whole hold
  and posts the captured amount, a void or an expiry releases the hold
  [``counter_mismatch``];
* no account with ``no_overdraft`` or ``credit_limit`` is, or ever was, below its
  limit, holds included [``limit_exceeded``]; in the replay an expired hold is
  released at its deadline, never later than the store did, so this never
  reports a limit the store kept;
* every ``history`` account has one balance row per transfer touching it and per
  expiry of one of its holds, equal to the replay at that timestamp
  [``history_mismatch``, ``history_missing``];
* the shard's history is the hash chain it wrote (``paycore.storage.chain``; only on
  snapshots that have one): streamed in timestamp order, each record's position follows
  the previous one and its hash recomputes from its fields and the previous hash
  [``history_chain_broken``: an edited field, a deleted, inserted or reordered record,
  a row without a chain position], the head kept in ``shard_meta`` is the last record
  [``history_chain_head_mismatch``], and, given a checkpoint (a head recorded by an
  earlier audit and kept elsewhere), the chain still passes through it
  [``history_checkpoint_mismatch``: the history was rewritten or cut, even if
  consistently]. See ``docs/audit-trail.md``.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from paycore.ledger.model import Account, BalanceRecord, PendingStatus, Transfer
from paycore.ledger.saga_history import is_posted_saga_hold
from paycore.money import format_minor
from paycore.storage.base import ShardSnapshot
from paycore.storage.chain import ChainHead, chain_link, genesis_hash

if TYPE_CHECKING:
    from rich.console import Console

    from paycore.storage.base import ChainRecord, LedgerSnapshot
    from paycore.storage.store import Store

__all__ = [
    "AuditReport",
    "ChainReport",
    "CurrencyTotals",
    "Violation",
    "ViolationKind",
    "audit_store",
    "check_snapshot",
    "load_checkpoint",
    "print_report",
    "save_checkpoint",
    "verified_heads",
]

_NS = 1_000_000_000


class ViolationKind(StrEnum):
    """Why the auditor objects; values are stable (scripts and alerts match on them)."""

    POSTED_NOT_CONSERVED = "posted_not_conserved"
    PENDING_NOT_CONSERVED = "pending_not_conserved"
    TRANSFER_DUPLICATE_ID = "transfer_duplicate_id"
    TRANSFER_OUT_OF_ORDER = "transfer_out_of_order"
    TRANSFER_INVALID = "transfer_invalid"
    TRANSFER_UNKNOWN_ACCOUNT = "transfer_unknown_account"
    TRANSFER_CURRENCY_MISMATCH = "transfer_currency_mismatch"
    RESOLUTION_INVALID = "resolution_invalid"
    HOLD_RESOLVED_TWICE = "hold_resolved_twice"
    HOLD_STATUS_MISSING = "hold_status_missing"
    HOLD_STATUS_INCONSISTENT = "hold_status_inconsistent"
    HOLD_OVERDUE = "hold_overdue"
    COUNTER_MISMATCH = "counter_mismatch"
    LIMIT_EXCEEDED = "limit_exceeded"
    HISTORY_MISMATCH = "history_mismatch"
    HISTORY_MISSING = "history_missing"
    HISTORY_CHAIN_BROKEN = "history_chain_broken"
    HISTORY_CHAIN_HEAD_MISMATCH = "history_chain_head_mismatch"
    HISTORY_CHECKPOINT_MISMATCH = "history_checkpoint_mismatch"


class Violation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One broken promise, with the account or transfer it concerns (and, for the
    history chain, the shard and the record's position in its chain)."""

    kind: ViolationKind
    detail: str
    account_id: str | None = None
    transfer_id: str | None = None
    currency: str | None = None
    shard: str | None = None
    seq: int | None = None


class ChainReport(msgspec.Struct, frozen=True):
    """What the audit of a shard's hash chain saw.

    ``head``: the last record read (seq 0 and the genesis hash when there is none),
    what ``--checkpoint`` records when ``ok``; ``checkpoint``: the head it was checked
    against, if any; ``ok``: no chain violation at all.
    """

    shard: str
    records: int
    head: ChainHead
    ok: bool
    checkpoint: ChainHead | None = None


class CurrencyTotals(msgspec.Struct, frozen=True):
    """Sums of the stored counters of one currency; ``net_posted`` must be 0."""

    currency: str
    accounts: int
    transfers: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    net_posted: int


class AuditReport(msgspec.Struct, frozen=True):
    """What an audit saw and found; ``ok`` when ``violations`` is empty.

    ``violations`` keeps the first ``max_violations``; ``violation_count`` counts all.
    """

    ok: bool
    now: int
    accounts: int
    transfers: int
    holds_pending: int
    balance_rows: int
    totals: list[CurrencyTotals]
    violations: list[Violation]
    violation_count: int
    chain: ChainReport | None = None  # None: the snapshot keeps no chain

    def kinds(self) -> set[ViolationKind]:
        """The distinct kinds found (handy in tests and alerts)."""
        return {v.kind for v in self.violations}


async def audit_store(
    store: Store,
    *,
    grace_seconds: float = 60.0,
    max_violations: int = 1000,
    checkpoint: ChainHead | None = None,
) -> AuditReport:
    """Audit ``store`` on one consistent snapshot (read in a worker thread); with
    ``checkpoint``, its chain must still pass through that head."""

    def read(snapshot: LedgerSnapshot) -> AuditReport:
        return check_snapshot(
            snapshot,
            grace_seconds=grace_seconds,
            max_violations=max_violations,
            checkpoint=checkpoint,
        )

    return await store.with_snapshot(read)


def check_snapshot(
    snapshot: LedgerSnapshot,
    *,
    grace_seconds: float = 60.0,
    max_violations: int = 1000,
    checkpoint: ChainHead | None = None,
) -> AuditReport:
    """Check every promise on ``snapshot``; see the module docstring for the list."""
    audit = _Audit(snapshot.now, int(grace_seconds * _NS), max_violations)
    # A SQL shard's snapshot also says since when sagas are recorded as one transfer,
    # which accounts a slot move brought in (migration 0022), and keeps a hash chain; the
    # tests' in-memory snapshots have none of these.
    shard = snapshot if isinstance(snapshot, ShardSnapshot) else None
    if shard is not None:
        audit.saga_history_since = shard.saga_history_since
    audit.load_accounts(snapshot.accounts())
    if shard is not None:
        audit.open_moved_in(shard.moved_openings())
    audit.load_pendings(snapshot.pendings())
    audit.replay(snapshot.transfers(), audit.own_balance_rows(snapshot.balance_history()))
    if shard is not None:
        audit.check_chain(shard.shard, shard.chain_records(), shard.chain_head(), checkpoint)
    return audit.report()


# -- checkpoints of the history chain ------------------------------------------------------


class _CheckpointFile(msgspec.Struct, frozen=True):
    """``paycore audit --checkpoint FILE``: the verified chain head of each shard."""

    version: int
    shards: dict[str, ChainHead]


_CHECKPOINT_VERSION = 1


def load_checkpoint(path: Path) -> dict[str, ChainHead]:
    """The heads recorded in ``path`` (none when the file does not exist yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    found = msgspec.json.decode(data, type=_CheckpointFile)
    if found.version != _CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {found.version} is not supported")
    return dict(found.shards)


def save_checkpoint(path: Path, heads: Mapping[str, ChainHead]) -> None:
    """Write ``heads`` to ``path`` atomically (a new file renamed over the old one)."""
    body = msgspec.json.format(
        msgspec.json.encode(_CheckpointFile(_CHECKPOINT_VERSION, dict(sorted(heads.items()))))
    )
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        out.write(body + b"\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def verified_heads(reports: Mapping[str, AuditReport]) -> dict[str, ChainHead]:
    """The chain heads a checkpoint may record: those of the shards whose chain verified
    (through their previous checkpoint, if they had one)."""
    return {
        shard: report.chain.head
        for shard, report in reports.items()
        if report.chain is not None and report.chain.ok
    }


def print_report(report: AuditReport, console: Console, *, limit: int = 50) -> None:
    """Render ``report`` for humans: totals per currency, then the violations."""
    from rich.table import Table  # noqa: PLC0415 - only the CLI renders

    console.print(
        f"accounts {report.accounts:,}  transfers {report.transfers:,}  "
        f"holds pending {report.holds_pending:,}  balance rows {report.balance_rows:,}"
    )
    totals = Table(title="Totals per currency (stored counters)", title_justify="left")
    for name in ("currency", "accounts", "transfers", "debits posted", "credits posted"):
        totals.add_column(name, justify="left" if name == "currency" else "right")
    for name in ("pending debits", "pending credits", "net posted"):
        totals.add_column(name, justify="right")
    for t in report.totals:
        net = format_minor(t.net_posted, t.currency)
        totals.add_row(
            t.currency,
            f"{t.accounts:,}",
            f"{t.transfers:,}",
            format_minor(t.debits_posted, t.currency),
            format_minor(t.credits_posted, t.currency),
            format_minor(t.debits_pending, t.currency),
            format_minor(t.credits_pending, t.currency),
            net if t.net_posted == 0 else f"[red]{net}[/]",
        )
    console.print(totals)
    chain = report.chain
    if chain is not None:
        verdict = "[green]verified[/]" if chain.ok else "[red]NOT verified[/]"
        against = f", through checkpoint seq {chain.checkpoint.seq:,}" if chain.checkpoint else ""
        console.print(
            f"history chain of {chain.shard}: {chain.records:,} records {verdict}{against}; "
            f"head seq {chain.head.seq:,} {chain.head.hash[:16]}…"
        )
    if report.ok:
        console.print(
            "[green]✓ audit clean[/]: money conserved per currency, every counter equals the "
            "replay of its history, limits held, holds consistent"
            + (", history chain intact" if chain is not None else "")
        )
        return
    table = Table(title=f"[red]✗ {report.violation_count:,} violation(s)[/]", title_justify="left")
    for name in ("kind", "account", "transfer", "detail"):
        table.add_column(name, overflow="fold")
    for v in report.violations[:limit]:
        table.add_row(v.kind.value, v.account_id or "", v.transfer_id or "", v.detail)
    console.print(table)
    if report.violation_count > limit:
        console.print(f"... and {report.violation_count - limit:,} more (use --json for all)")


# -- the replay -------------------------------------------------------------------------


class _Counters:
    """Replayed counters of one account."""

    __slots__ = ("cp", "cpo", "dp", "dpo")

    def __init__(self) -> None:
        self.dp = self.dpo = self.cp = self.cpo = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.dp, self.dpo, self.cp, self.cpo)


@dataclass(slots=True)
class _Hold:
    transfer: Transfer
    status: PendingStatus | None  # None: no row in pending_transfers
    resolved_by: str | None
    resolvers: list[Transfer] = field(default_factory=list)
    released: bool = False  # by a post/void/expiry in the main replay


@dataclass(slots=True)
class _HistoryTrack:
    """Replay of one ``history`` account as the store saw it (expiries when recorded)."""

    counters: _Counters = field(default_factory=_Counters)
    expected: set[int] = field(default_factory=set)  # transfer timestamps needing a row
    # Holds of posted transfers across shards in flight, shown as posted in every row
    # (``paycore.ledger.saga_history``).
    in_flight: int = 0
    expired_holds: list[_Hold] = field(default_factory=list)  # not yet seen expire


_FIELDS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")


def _diffs(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """The counters (``_FIELDS``) where ``got`` differs from the replay's ``want``."""
    return ", ".join(
        f"{name} {g} (replay {w})" for name, g, w in zip(_FIELDS, got, want, strict=True) if g != w
    )


class _Audit:
    def __init__(self, now: int, grace_ns: int, max_violations: int) -> None:
        self.now = now
        self.grace_ns = grace_ns
        self.max_violations = max_violations
        self.violations: list[Violation] = []
        self.violation_count = 0
        self.accounts: dict[str, Account] = {}
        self.replayed: dict[str, _Counters] = {}
        self.statuses: dict[str, tuple[PendingStatus, str | None]] = {}
        self.holds: dict[str, _Hold] = {}
        self.history: dict[str, _HistoryTrack] = {}
        # Rows of transfers up to this timestamp were written before schema 16, each
        # step of a saga as it was (``paycore.ledger.saga_history``).
        self.saga_history_since = 0
        self.saga_holds: set[str] = set()  # in flight, on history accounts
        self.transfer_count: dict[str, int] = {}
        self.transfers = 0
        self.balance_rows = 0
        self.chain: ChainReport | None = None
        # Moved-in accounts: (debits, credits) their moved history posted, its newest time.
        self.openings: dict[str, tuple[int, int, int]] = {}

    def flag(
        self,
        kind: ViolationKind,
        detail: str,
        *,
        account_id: str | None = None,
        transfer_id: str | None = None,
        currency: str | None = None,
        shard: str | None = None,
        seq: int | None = None,
    ) -> None:
        self.violation_count += 1
        if len(self.violations) < self.max_violations:
            self.violations.append(
                Violation(kind, detail, account_id, transfer_id, currency, shard, seq)
            )

    # -- the history chain ------------------------------------------------------------

    def check_chain(
        self,
        shard: str,
        records: Iterator[ChainRecord],
        head: tuple[int, bytes | None],
        checkpoint: ChainHead | None,
    ) -> None:
        """Verify the chain link by link, in one streamed pass (constant memory).

        After a broken link the check goes on from the stored hash, so that each damaged
        record is named once and the records after it are still verified.
        """
        genesis = genesis_hash(shard)
        previous, last_seq, count, broken = genesis, 0, 0, 0
        anchor = None if checkpoint is None else bytes.fromhex(checkpoint.hash)
        anchored = checkpoint is None or (checkpoint.seq == 0 and anchor == genesis)

        def chain_broken(detail: str, t: Transfer, seq: int | None) -> None:
            nonlocal broken
            broken += 1
            self.flag(
                ViolationKind.HISTORY_CHAIN_BROKEN, detail, transfer_id=t.id, shard=shard, seq=seq
            )

        for t, seq, stored in records:
            count += 1
            if seq is None or stored is None:
                chain_broken(
                    "the record has no place in the chain: it was written outside the "
                    "ledger's writer (inserted)",
                    t,
                    seq,
                )
                continue
            problems = []
            if seq != last_seq + 1:
                problems.append(
                    f"seq {seq} where {last_seq + 1} was due: records were deleted, inserted "
                    "or reordered"
                )
            if chain_link(previous, seq, t) != stored:
                problems.append(
                    "its hash does not match its fields and the previous record's hash: a "
                    "field was edited, or the record before it is not the one chained"
                )
            if problems:
                chain_broken("; ".join(problems), t, seq)
            if checkpoint is not None and seq == checkpoint.seq:
                anchored = stored == anchor
                if not anchored:
                    self.flag(
                        ViolationKind.HISTORY_CHECKPOINT_MISMATCH,
                        f"record {seq} hashes to {stored.hex()[:16]}…, the checkpoint recorded "
                        f"{checkpoint.hash[:16]}…: the history up to it was rewritten",
                        transfer_id=t.id,
                        shard=shard,
                        seq=seq,
                    )
                    broken += 1
                    anchored = True  # reported once
            previous, last_seq = stored, seq
        head_seq, head_hash = head
        if (head_seq, genesis if head_hash is None else head_hash) != (last_seq, previous):
            broken += 1
            self.flag(
                ViolationKind.HISTORY_CHAIN_HEAD_MISMATCH,
                f"shard_meta's head is seq {head_seq}"
                + ("" if head_hash is None else f" {head_hash.hex()[:16]}…")
                + f", the last record is seq {last_seq} {previous.hex()[:16]}…: records were "
                "removed or added at the end, or the head was edited",
                shard=shard,
                seq=head_seq,
            )
        if not anchored:
            assert checkpoint is not None
            broken += 1
            self.flag(
                ViolationKind.HISTORY_CHECKPOINT_MISMATCH,
                f"the chain ends at seq {last_seq}, before the checkpoint's seq "
                f"{checkpoint.seq}: recorded history was removed"
                if checkpoint.seq > last_seq
                else "the checkpoint's genesis is not this shard's",
                shard=shard,
                seq=checkpoint.seq,
            )
        self.chain = ChainReport(
            shard, count, ChainHead(last_seq, previous.hex()), broken == 0, checkpoint
        )

    # -- loading --------------------------------------------------------------------

    def load_accounts(self, accounts: Iterator[Account]) -> None:
        for account in accounts:
            self.accounts[account.id] = account
            self.replayed[account.id] = _Counters()
            if account.flags.history:
                self.history[account.id] = _HistoryTrack()

    def open_moved_in(self, openings: Mapping[str, tuple[int, int, int]]) -> None:
        """Accounts that moved in start from what their moved history posted (checked
        against the source's chain there); this shard's own book excludes it."""
        for account_id, (debits, credits, until) in openings.items():
            if account_id not in self.replayed:
                continue
            counters = self.replayed[account_id]
            counters.dpo, counters.cpo = debits, credits
            track = self.history.get(account_id)
            if track is not None:  # its balance rows here go on from the same opening
                track.counters.dpo, track.counters.cpo = debits, credits
            self.openings[account_id] = (debits, credits, until)

    def own_balance_rows(self, rows: Iterator[BalanceRecord]) -> Iterator[BalanceRecord]:
        """The balance rows this shard's history accounts for (not a moved-in account's
        rows from before its move)."""
        for row in rows:
            opened = self.openings.get(row.account_id)
            if opened is None or row.timestamp > opened[2]:
                yield row

    def load_pendings(self, rows: Iterator[tuple[str, PendingStatus, str | None]]) -> None:
        for hold_id, status, resolved_by in rows:
            self.statuses[hold_id] = (PendingStatus(status), resolved_by)

    # -- replay ---------------------------------------------------------------------

    def replay(self, transfers: Iterator[Transfer], history: Iterator[BalanceRecord]) -> None:
        seen: set[str] = set()
        last_ts: int | None = None
        # Expired holds, released at their deadline (see the module docstring).
        deadlines: list[tuple[int, str]] = []
        rows = _Rows(history)
        for t in transfers:
            self.transfers += 1
            if t.id in seen:
                self.flag(
                    ViolationKind.TRANSFER_DUPLICATE_ID,
                    "two transfers share this id",
                    transfer_id=t.id,
                )
                continue
            seen.add(t.id)
            if last_ts is not None and t.timestamp <= last_ts:
                self.flag(
                    ViolationKind.TRANSFER_OUT_OF_ORDER,
                    f"timestamp {t.timestamp} does not follow {last_ts}",
                    transfer_id=t.id,
                )
            last_ts = t.timestamp if last_ts is None else max(last_ts, t.timestamp)
            while deadlines and deadlines[0][0] <= t.timestamp:
                self._release_expired(self.holds[heapq.heappop(deadlines)[1]])
            self._check_history_rows(rows, before=t.timestamp)
            self._apply(t, deadlines)
        while deadlines:
            self._release_expired(self.holds[heapq.heappop(deadlines)[1]])
        self._check_history_rows(rows, before=None)
        self._check_holds()
        self._check_counters()
        self._check_history_end()

    def _apply(self, t: Transfer, deadlines: list[tuple[int, str]]) -> None:
        self.transfer_count[t.currency] = self.transfer_count.get(t.currency, 0) + 1
        if t.amount <= 0:
            self.flag(
                ViolationKind.TRANSFER_INVALID,
                f"amount {t.amount} is not positive",
                transfer_id=t.id,
            )
        if t.debit_account_id == t.credit_account_id:
            self.flag(
                ViolationKind.TRANSFER_INVALID,
                "debit and credit accounts are the same",
                transfer_id=t.id,
            )
        kinds = t.flags.pending + t.flags.post_pending + t.flags.void_pending
        if kinds > 1:
            self.flag(
                ViolationKind.TRANSFER_INVALID,
                "pending, post_pending and void_pending are exclusive",
                transfer_id=t.id,
            )
        for side, account_id in (("debit", t.debit_account_id), ("credit", t.credit_account_id)):
            account = self.accounts.get(account_id)
            if account is None:
                self.flag(
                    ViolationKind.TRANSFER_UNKNOWN_ACCOUNT,
                    f"{side} account {account_id!r} does not exist",
                    account_id=account_id,
                    transfer_id=t.id,
                )
            elif account.currency != t.currency:
                self.flag(
                    ViolationKind.TRANSFER_CURRENCY_MISMATCH,
                    f"transfer is {t.currency}, {side} account is {account.currency}",
                    account_id=account_id,
                    transfer_id=t.id,
                    currency=t.currency,
                )
        debit = self.replayed.get(t.debit_account_id)
        credit = self.replayed.get(t.credit_account_id)
        if t.flags.post_pending or t.flags.void_pending:
            self._resolve(t)
        elif t.flags.pending:
            status, resolved_by = self.statuses.get(t.id, (None, None))
            hold = _Hold(t, status, resolved_by)
            self.holds[t.id] = hold
            if debit is not None:
                debit.dp += t.amount
            if credit is not None:
                credit.cp += t.amount
            expires_at = t.expires_at
            if status is PendingStatus.EXPIRED and expires_at is not None:
                heapq.heappush(deadlines, (expires_at, t.id))
            self._check_limit(t)
        else:
            if debit is not None:
                debit.dpo += t.amount
            if credit is not None:
                credit.cpo += t.amount
            self._check_limit(t)
        self._track_history(t)

    def _resolve(self, t: Transfer) -> None:
        verb = "post" if t.flags.post_pending else "void"
        hold = None if t.pending_id is None else self.holds.get(t.pending_id)
        if hold is None:
            self.flag(
                ViolationKind.RESOLUTION_INVALID,
                f"{verb} names {t.pending_id!r}, which is no earlier hold",
                transfer_id=t.id,
            )
            # Keep the replay going as if it were a plain transfer of its amount: the
            # counters then show where the effect landed.
            if t.flags.post_pending:
                self._move_posted(t, t.amount)
            return
        h = hold.transfer
        problems = []
        if (t.debit_account_id, t.credit_account_id) != (h.debit_account_id, h.credit_account_id):
            problems.append("its accounts differ from the hold's")
        if t.currency != h.currency:
            problems.append(f"it is {t.currency}, the hold is {h.currency}")
        if t.flags.post_pending and t.amount > h.amount:
            problems.append(f"it posts {t.amount} of a hold of {h.amount}")
        if t.flags.void_pending and t.amount != h.amount:
            problems.append(f"it voids {t.amount} of a hold of {h.amount}")
        if problems:
            self.flag(
                ViolationKind.RESOLUTION_INVALID,
                f"{verb} of {h.id!r}: " + "; ".join(problems),
                transfer_id=t.id,
            )
        hold.resolvers.append(t)
        if len(hold.resolvers) > 1:
            self.flag(
                ViolationKind.HOLD_RESOLVED_TWICE,
                f"hold {h.id!r} resolved by " + ", ".join(repr(r.id) for r in hold.resolvers),
                transfer_id=h.id,
            )
            if t.flags.post_pending:  # the hold was released already: only the posting
                self._move_posted(t, t.amount)
            return
        if hold.released:  # expired before this resolution: inconsistent, flagged later
            if t.flags.post_pending:
                self._move_posted(t, t.amount)
            return
        self._release(hold)
        if t.flags.post_pending:
            self._move_posted(t, t.amount)

    def _move_posted(self, t: Transfer, amount: int) -> None:
        debit = self.replayed.get(t.debit_account_id)
        credit = self.replayed.get(t.credit_account_id)
        if debit is not None:
            debit.dpo += amount
        if credit is not None:
            credit.cpo += amount

    def _release(self, hold: _Hold) -> None:
        h = hold.transfer
        hold.released = True
        debit = self.replayed.get(h.debit_account_id)
        credit = self.replayed.get(h.credit_account_id)
        if debit is not None:
            debit.dp -= h.amount
        if credit is not None:
            credit.cp -= h.amount

    def _release_expired(self, hold: _Hold) -> None:
        if hold.released or hold.resolvers:
            return  # a post or void came first: the status check reports it
        self._release(hold)
        for account_id in (hold.transfer.debit_account_id, hold.transfer.credit_account_id):
            track = self.history.get(account_id)
            if track is not None:
                track.expired_holds.append(hold)

    def _check_limit(self, t: Transfer) -> None:
        account = self.accounts.get(t.debit_account_id)
        if account is None:
            return
        limit = account.flags.debit_limit()
        c = self.replayed[t.debit_account_id]
        if limit is not None and c.dpo + c.dp > c.cpo + limit:
            self.flag(
                ViolationKind.LIMIT_EXCEEDED,
                f"after this transfer, debits {c.dpo} + pending {c.dp} exceed "
                f"credits {c.cpo} + limit {limit}",
                account_id=account.id,
                transfer_id=t.id,
                currency=account.currency,
            )

    # -- balance history --------------------------------------------------------------

    def _track_history(self, t: Transfer) -> None:
        """Apply ``t`` to the history replay of its ``history`` accounts."""
        for side, account_id in (("debit", t.debit_account_id), ("credit", t.credit_account_id)):
            track = self.history.get(account_id)
            if track is None:
                continue
            c = track.counters
            debit = side == "debit"
            if not (debit and self._saga_hold_landed(track, t)):
                track.expected.add(t.timestamp)
            if debit and is_posted_saga_hold(t) and t.timestamp > self.saga_history_since:
                track.in_flight += t.amount
                self.saga_holds.add(t.id)
            if t.flags.pending:
                if debit:
                    c.dp += t.amount
                else:
                    c.cp += t.amount
                continue
            if t.flags.post_pending or t.flags.void_pending:
                hold = self.holds.get(t.pending_id or "")
                if hold is not None and hold.resolvers and hold.resolvers[0] is t:
                    if debit:
                        c.dp -= hold.transfer.amount
                    else:
                        c.cp -= hold.transfer.amount
                if t.flags.void_pending:
                    continue
            if debit:
                c.dpo += t.amount
            else:
                c.cpo += t.amount

    def _saga_hold_landed(self, track: _HistoryTrack, t: Transfer) -> bool:
        """``t`` resolves a hold in flight: counted out; True (no row) if it posts it."""
        if t.pending_id is None or t.pending_id not in self.saga_holds:
            return False
        self.saga_holds.discard(t.pending_id)
        track.in_flight -= self.holds[t.pending_id].transfer.amount
        return t.flags.post_pending

    def _check_history_rows(self, rows: _Rows, before: int | None) -> None:
        """Check the balance rows older than ``before`` (all when None)."""
        while (row := rows.peek()) is not None and (before is None or row.timestamp < before):
            rows.pop()
            self.balance_rows += 1
            self._check_history_row(row)

    def _check_history_row(self, row: BalanceRecord) -> None:
        track = self.history.get(row.account_id)
        if track is None:
            self.flag(
                ViolationKind.HISTORY_MISMATCH,
                f"balance row at {row.timestamp} for an account without history",
                account_id=row.account_id,
            )
            return
        got = (row.debits_pending, row.debits_posted, row.credits_pending, row.credits_posted)
        c = track.counters
        shift = track.in_flight
        if row.timestamp in track.expected:
            track.expected.discard(row.timestamp)
            want = (c.dp - shift, c.dpo + shift, c.cp, c.cpo)
            if got != want:
                self._history_mismatch(row, got, want)
            return
        # No transfer of this account at this time: it must be the expiry of one of
        # its holds, due by then.
        for i, hold in enumerate(track.expired_holds):
            h = hold.transfer
            expires_at = h.expires_at
            if expires_at is None or expires_at > row.timestamp:
                continue
            after = (
                c.dp - (h.amount if h.debit_account_id == row.account_id else 0),
                c.dpo,
                c.cp - (h.amount if h.credit_account_id == row.account_id else 0),
                c.cpo,
            )
            if (after[0] - shift, after[1] + shift, after[2], after[3]) == got:
                c.dp, c.dpo, c.cp, c.cpo = after
                del track.expired_holds[i]
                return
        self.flag(
            ViolationKind.HISTORY_MISMATCH,
            f"balance row at {row.timestamp} matches no transfer or expiry of the account",
            account_id=row.account_id,
        )

    def _history_mismatch(
        self, row: BalanceRecord, got: tuple[int, ...], want: tuple[int, ...]
    ) -> None:
        self.flag(
            ViolationKind.HISTORY_MISMATCH,
            f"balance row at {row.timestamp}: {_diffs(got, want)}",
            account_id=row.account_id,
        )

    def _check_history_end(self) -> None:
        for account_id, track in self.history.items():
            for ts in sorted(track.expected):
                self.flag(
                    ViolationKind.HISTORY_MISSING,
                    f"no balance row for the transfer at {ts}",
                    account_id=account_id,
                )
            for hold in track.expired_holds:
                self.flag(
                    ViolationKind.HISTORY_MISSING,
                    f"no balance row for the expiry of hold {hold.transfer.id!r}",
                    account_id=account_id,
                    transfer_id=hold.transfer.id,
                )

    # -- holds ------------------------------------------------------------------------

    def _check_holds(self) -> None:
        for hold_id in self.statuses.keys() - self.holds.keys():
            self.flag(
                ViolationKind.HOLD_STATUS_INCONSISTENT,
                "a hold status exists for no pending transfer",
                transfer_id=hold_id,
            )
        for hold in self.holds.values():
            self._check_hold(hold)

    def _check_hold(self, hold: _Hold) -> None:
        h = hold.transfer
        status, resolved_by, resolvers = hold.status, hold.resolved_by, hold.resolvers
        expires_at = h.expires_at

        def inconsistent(detail: str) -> None:
            self.flag(ViolationKind.HOLD_STATUS_INCONSISTENT, detail, transfer_id=h.id)

        if status is None:
            self.flag(ViolationKind.HOLD_STATUS_MISSING, "hold has no status row", transfer_id=h.id)
            return
        if status in (PendingStatus.POSTED, PendingStatus.VOIDED):
            want = "post_pending" if status is PendingStatus.POSTED else "void_pending"
            if not resolvers:
                inconsistent(f"status {status} but no {want} transfer names it")
                return
            first = resolvers[0]
            if not getattr(first.flags, want):
                inconsistent(f"status {status} but {first.id!r} is not a {want}")
            if resolved_by != first.id:
                inconsistent(f"status {status} by {resolved_by!r} but resolved by {first.id!r}")
            return
        if resolvers:
            inconsistent(f"status {status} but resolved by {resolvers[0].id!r}")
        if resolved_by is not None:
            inconsistent(f"status {status} names a resolving transfer {resolved_by!r}")
        if status is PendingStatus.EXPIRED:
            if expires_at is None:
                inconsistent("expired but the hold has no timeout")
            elif expires_at > self.now:
                inconsistent(f"expired {(expires_at - self.now) / _NS:.1f}s before its timeout")
        elif expires_at is not None and self.now - expires_at > self.grace_ns:
            self.flag(
                ViolationKind.HOLD_OVERDUE,
                f"still pending {(self.now - expires_at) / _NS:.1f}s after its timeout",
                account_id=h.debit_account_id,
                transfer_id=h.id,
            )

    # -- stored state -------------------------------------------------------------------

    def _check_counters(self) -> None:
        for account in self.accounts.values():
            got = (
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
            )
            want = self.replayed[account.id].as_tuple()
            if got != want:
                self.flag(
                    ViolationKind.COUNTER_MISMATCH,
                    _diffs(got, want),
                    account_id=account.id,
                    currency=account.currency,
                )
            limit = account.flags.debit_limit()
            if limit is not None and got[1] + got[0] > got[3] + limit:
                self.flag(
                    ViolationKind.LIMIT_EXCEEDED,
                    f"debits {got[1]} + pending {got[0]} exceed credits {got[3]} + limit {limit}",
                    account_id=account.id,
                    currency=account.currency,
                )

    def totals(self) -> list[CurrencyTotals]:
        sums: dict[str, list[int]] = {}
        for a in self.accounts.values():
            s = sums.setdefault(a.currency, [0, 0, 0, 0, 0])
            s[0] += 1
            opened = self.openings.get(a.id, (0, 0, 0))  # posted before it moved here
            s[1] += a.debits_posted - opened[0]
            s[2] += a.credits_posted - opened[1]
            s[3] += a.debits_pending
            s[4] += a.credits_pending
        out = []
        for currency in sorted(sums.keys() | self.transfer_count.keys()):
            n, dpo, cpo, dp, cp = sums.get(currency, [0, 0, 0, 0, 0])
            out.append(
                CurrencyTotals(
                    currency=currency,
                    accounts=n,
                    transfers=self.transfer_count.get(currency, 0),
                    debits_posted=dpo,
                    credits_posted=cpo,
                    debits_pending=dp,
                    credits_pending=cp,
                    net_posted=cpo - dpo,
                )
            )
        return out

    def report(self) -> AuditReport:
        totals = self.totals()
        for t in totals:
            if t.net_posted != 0:
                self.flag(
                    ViolationKind.POSTED_NOT_CONSERVED,
                    f"posted balances sum to {format_minor(t.net_posted, t.currency)}, not 0",
                    currency=t.currency,
                )
            if t.debits_pending != t.credits_pending:
                self.flag(
                    ViolationKind.PENDING_NOT_CONSERVED,
                    f"pending debits {t.debits_pending} != pending credits {t.credits_pending}",
                    currency=t.currency,
                )
        holds_pending = sum(1 for s, _ in self.statuses.values() if s is PendingStatus.PENDING)
        return AuditReport(
            ok=self.violation_count == 0,
            now=self.now,
            accounts=len(self.accounts),
            transfers=self.transfers,
            holds_pending=holds_pending,
            balance_rows=self.balance_rows,
            totals=totals,
            violations=self.violations,
            violation_count=self.violation_count,
            chain=self.chain,
        )


class _Rows:
    """Balance rows in timestamp order, with a look at the next one."""

    __slots__ = ("_head", "_rows")

    def __init__(self, rows: Iterator[BalanceRecord]) -> None:
        self._rows = rows
        self._head: BalanceRecord | None = next(rows, None)

    def peek(self) -> BalanceRecord | None:
        return self._head

    def pop(self) -> BalanceRecord | None:
        head, self._head = self._head, next(self._rows, None)
        return head


# -- across shards --------------------------------------------------------------------------


class ClusterViolationKind(StrEnum):
    """Why the cross-shard auditor objects (on top of each shard's own ``ViolationKind``)."""

    SHARD_VIOLATION = "shard_violation"  # a shard's own audit found something
    CLUSTER_NOT_CONSERVED = "cluster_not_conserved"  # balances over all shards do not sum to 0
    CLEARING_PENDING_MISMATCH = "clearing_pending_mismatch"  # clearing holds != open sagas
    CLEARING_NOT_NETTING = "clearing_not_netting"  # clearing posted net is not the money in flight
    SAGA_STUCK = "saga_stuck"  # a saga open longer than the bound
    DUPLICATE_TRANSFER_ID = "duplicate_transfer_id"  # one client id stored on two shards


class ClusterViolation(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: ClusterViolationKind
    detail: str
    shard: str | None = None
    currency: str | None = None
    transfer_id: str | None = None


class ClusterTotals(msgspec.Struct, frozen=True):
    """One currency over every shard; ``net_posted`` must be 0.

    ``in_flight``: amounts of open sagas (held on their source, in clearing as pending);
    ``clearing_posted_net``: credits minus debits posted on all clearing accounts, which
    is minus the part of ``in_flight`` already credited on its target (0 when quiescent).
    """

    currency: str
    net_posted: int
    debits_pending: int
    credits_pending: int
    in_flight: int
    clearing_posted_net: int


class ClusterAuditReport(msgspec.Struct, frozen=True):
    """The audit of every shard plus the cross-shard checks; ``ok`` when nothing was found."""

    ok: bool
    shards: dict[str, AuditReport]
    totals: list[ClusterTotals]
    sagas_open: int
    oldest_open_seconds: float
    violations: list[ClusterViolation]


async def audit_cluster(
    shards: Mapping[str, Store],
    *,
    grace_seconds: float = 60.0,
    stuck_seconds: float = 300.0,
    max_violations: int = 1000,
    attempts: int = 3,
    retry_delay: float = 0.25,
    checkpoints: Mapping[str, ChainHead] | None = None,
) -> ClusterAuditReport:
    """Audit each shard (``check_snapshot``), then prove across shards, per currency:
    balances sum to zero, clearing accounts hold exactly the open sagas and net to the
    money in flight, and no saga is open longer than ``stuck_seconds``.

    Shards are read one snapshot each, not at one instant: with sagas moving meanwhile
    the netting check may see a step on one shard and not yet on the other, so it is
    retried up to ``attempts`` times before it is reported. ``checkpoints``: per shard,
    a chain head its history must still pass through (``--checkpoint``).
    """
    import asyncio  # noqa: PLC0415 - only this function waits

    from paycore.cluster.settlement import LIVE_STATES, parse_clearing  # noqa: PLC0415

    anchors = checkpoints or {}

    def reader(snapshot: LedgerSnapshot) -> _ShardRead:
        shard = snapshot if isinstance(snapshot, ShardSnapshot) else None
        report = check_snapshot(
            snapshot,
            grace_seconds=grace_seconds,
            max_violations=max_violations,
            checkpoint=None if shard is None else anchors.get(shard.shard),
        )
        clearing = [a for a in snapshot.accounts() if parse_clearing(a.id) is not None]
        rows = [] if shard is None else [r for r in shard.outbox() if r.state in LIVE_STATES]
        # The client's transfers: a saga's credit leg (debiting a clearing account)
        # repeats its id on the target shard by design, and step 3's ids are internal.
        ids = {
            t.id
            for t in snapshot.transfers()
            if parse_clearing(t.debit_account_id) is None and not t.id.startswith("xs.")
        }
        return report, clearing, rows, snapshot.now, ids

    result: ClusterAuditReport | None = None
    for attempt in range(max(1, attempts)):
        names = list(shards)
        reads = await asyncio.gather(*(shards[n].with_snapshot(reader) for n in names))
        result = _cluster_report(
            dict(zip(names, reads, strict=True)), stuck_seconds, parse_clearing
        )
        netting = {
            ClusterViolationKind.CLEARING_NOT_NETTING,
            ClusterViolationKind.CLUSTER_NOT_CONSERVED,
        }
        if result.ok or not all(v.kind in netting for v in result.violations):
            return result
        if attempt + 1 < attempts:
            await asyncio.sleep(retry_delay)
    assert result is not None
    return result


_MAX_DUPLICATES = 1000
_ShardRead = tuple[AuditReport, list[Account], list[Any], int, set[str]]


def _count_row(
    shard: str,
    row: Any,
    held: dict[tuple[str, str, str], int],
    split: dict[tuple[str, str, str], list[int]],
    sums: dict[str, list[int]],
) -> None:
    """Add a live outbox row to what the clearing accounts must show."""
    key = (shard, row.target_shard, row.currency)
    legs = split.setdefault(key, [0, 0, 0])
    if row.state in ("open", "resolving"):
        legs[0] += row.amount
    if row.state == "held_pending":
        legs[1] += row.amount
    if row.state == "resolving":
        legs[2] += row.amount
    if row.state in ("held", "credited", "held_pending", "open"):  # the source's hold pending
        held[key] = held.get(key, 0) + row.amount
    if row.state in ("held", "credited"):
        sums.setdefault(row.currency, [0, 0, 0, 0, 0])[3] += row.amount


def _cluster_report(
    reads: dict[str, _ShardRead],
    stuck_seconds: float,
    parse_clearing: Any,
) -> ClusterAuditReport:
    violations: list[ClusterViolation] = []
    sums: dict[str, list[int]] = {}  # currency -> net posted, dp, cp, in flight, clearing net
    held: dict[tuple[str, str, str], int] = {}  # (source, target, currency) -> open amount
    # Clients' holds across shards, per direction: (legs on the target surely pending,
    # legs that may be pending there (step 2 done, step 3 not yet), resolved on the
    # source and not yet on the target).
    split: dict[tuple[str, str, str], list[int]] = {}
    clearing: dict[str, Account] = {}
    open_count = 0
    oldest = 0.0
    stored_on: dict[str, str] = {}  # client transfer id -> first shard seen storing it
    for shard, (report, accounts, rows, now, ids) in reads.items():
        for transfer_id in ids:
            first = stored_on.setdefault(transfer_id, shard)
            if first != shard and len(violations) < _MAX_DUPLICATES:
                violations.append(
                    ClusterViolation(
                        ClusterViolationKind.DUPLICATE_TRANSFER_ID,
                        f"stored on {first} and on {shard}",
                        shard=shard,
                        transfer_id=transfer_id,
                    )
                )
        if not report.ok:
            violations.append(
                ClusterViolation(
                    ClusterViolationKind.SHARD_VIOLATION,
                    f"{report.violation_count} violation(s): "
                    + ", ".join(sorted(k.value for k in report.kinds())),
                    shard=shard,
                )
            )
        for t in report.totals:
            s = sums.setdefault(t.currency, [0, 0, 0, 0, 0])
            s[0] += t.net_posted
            s[1] += t.debits_pending
            s[2] += t.credits_pending
        for a in accounts:
            clearing[a.id] = a
            s = sums.setdefault(a.currency, [0, 0, 0, 0, 0])
            s[4] += a.credits_posted - a.debits_posted
        for row in rows:
            _count_row(shard, row, held, split, sums)
            if row.state == "open":
                continue  # a client's hold may stay pending for as long as it likes
            open_count += 1
            age = (now - row.created_at) / _NS
            oldest = max(oldest, age)
            if age > stuck_seconds:
                violations.append(
                    ClusterViolation(
                        ClusterViolationKind.SAGA_STUCK,
                        f"open for {age:.1f}s (bound {stuck_seconds:g}s)",
                        shard=shard,
                        currency=row.currency,
                        transfer_id=row.transfer_id,
                    )
                )
    # Each clearing account holds, as pending credits, exactly its shard's open sagas.
    # Its pending debits are the target legs of the peer's clients' holds: those still
    # open there (less the ones resolved on the source whose target leg was resolved too,
    # the source's row not yet marked: ``resolving``), plus those whose step 2 may be done.
    for account in clearing.values():
        home, peer, currency = parse_clearing(account.id)
        want = held.get((home, peer, currency), 0)
        sure, maybe, resolving = split.get((peer, home, currency), [0, 0, 0])
        low, high = sure - resolving, sure + maybe
        if account.credits_pending != want or not (low <= account.debits_pending <= high):
            violations.append(
                ClusterViolation(
                    ClusterViolationKind.CLEARING_PENDING_MISMATCH,
                    f"{account.id}: pending credits {account.credits_pending}, debits "
                    f"{account.debits_pending}; open sagas hold {want}, holds' target "
                    f"legs {low}..{high}",
                    shard=home,
                    currency=currency,
                )
            )
    # Per direction: credited on the target but not yet posted on the source lies
    # between 0 and what is still open.
    pairs = {(h, p, c) for h, p, c in (parse_clearing(a) for a in clearing)} | set(held)
    for source, target, currency in sorted(pairs):
        if source == target:
            continue
        leg = clearing.get(f"clearing:{target}:{source}:{currency}")
        hold = clearing.get(f"clearing:{source}:{target}:{currency}")
        awaiting = (leg.debits_posted if leg else 0) - (hold.credits_posted if hold else 0)
        still_open = held.get((source, target, currency), 0)
        # A hold posted on its source and not yet on its target: the source is ahead.
        ahead = split.get((source, target, currency), [0, 0, 0])[2]
        if not -ahead <= awaiting <= still_open:
            violations.append(
                ClusterViolation(
                    ClusterViolationKind.CLEARING_NOT_NETTING,
                    f"{source}->{target}: credited on {target} minus posted on {source} is "
                    f"{awaiting}, open sagas hold {still_open}",
                    shard=source,
                    currency=currency,
                )
            )
    totals = [ClusterTotals(c, s[0], s[1], s[2], s[3], s[4]) for c, s in sorted(sums.items())]
    for c in totals:
        if c.net_posted != 0 or c.debits_pending != c.credits_pending:
            violations.append(
                ClusterViolation(
                    ClusterViolationKind.CLUSTER_NOT_CONSERVED,
                    f"posted balances sum to {c.net_posted}; pending debits "
                    f"{c.debits_pending} vs credits {c.credits_pending}",
                    currency=c.currency,
                )
            )
        ahead = sum(v[2] for k, v in split.items() if k[2] == c.currency)
        if not -c.in_flight <= c.clearing_posted_net <= ahead:
            violations.append(
                ClusterViolation(
                    ClusterViolationKind.CLEARING_NOT_NETTING,
                    f"clearing accounts net {c.clearing_posted_net} posted with "
                    f"{c.in_flight} in flight",
                    currency=c.currency,
                )
            )
    return ClusterAuditReport(
        ok=not violations,
        shards={shard: read[0] for shard, read in reads.items()},
        totals=totals,
        sagas_open=open_count,
        oldest_open_seconds=oldest,
        violations=violations,
    )


def print_cluster_report(report: ClusterAuditReport, console: Console) -> None:
    """Render a cross-shard audit: each shard's report, then the cluster's totals."""
    from rich.table import Table  # noqa: PLC0415 - only the CLI renders

    for shard, shard_report in report.shards.items():
        console.print(f"[bold]shard {shard}[/]")
        print_report(shard_report, console, limit=10)
    table = Table(title="All shards, per currency", title_justify="left")
    for name in ("currency", "net posted", "pending debits", "pending credits"):
        table.add_column(name, justify="left" if name == "currency" else "right")
    table.add_column("in flight", justify="right")
    table.add_column("clearing posted net", justify="right")
    for c in report.totals:
        table.add_row(
            c.currency,
            format_minor(c.net_posted, c.currency),
            format_minor(c.debits_pending, c.currency),
            format_minor(c.credits_pending, c.currency),
            format_minor(c.in_flight, c.currency),
            format_minor(c.clearing_posted_net, c.currency),
        )
    console.print(table)
    console.print(f"sagas open: {report.sagas_open:,} (oldest {report.oldest_open_seconds:.1f}s)")
    if report.ok:
        console.print(
            "[green]✓ cluster audit clean[/]: every shard clean, balances sum to zero over all "
            "shards, clearing accounts net to the money in flight, no saga stuck"
        )
        return
    for v in report.violations[:50]:
        where = " ".join(x for x in (v.shard, v.currency, v.transfer_id) if x)
        console.print(f"[red]✗ {v.kind.value}[/] {where}: {v.detail}")
