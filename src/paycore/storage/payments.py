"""Payments in storage: the rows of payment intents, their processor attempts, refunds,
payouts and events, and the commands that write them with their ledger transfers.

Storage keeps states as text: what a state means, and which changes are legal, is the
business of ``paycore.payments`` (a layer above). That layer decides, then hands the
shard one ``PaymentWrite``: its unit of work, run by the shard's writer in ONE
transaction, all of it or nothing::

    key        an Idempotency-Key record: claimed (insert if absent), saved (upsert),
               or settled (written unless a final answer is there already)
    rows       a payment, refund or payout inserted (expected version None) or updated
               (compare-and-set on ``version``: someone else's change in between refuses
               the write, the caller reads again and decides again)
    refund     a change of a payment's refund counters, checked here against what the
    delta      payment captured: refunds (pending ones included) never exceed it, even
               when two refunds race (every write of a shard goes through its writer)
    accounts   accounts that must exist, be open and hold the currency
    ledger     transfers that must all apply (else none does), holds that must have
               expired, system accounts created when missing
    attempts   processor calls, upserted by (parent, seq)
    events     ``payment_events`` rows, ordered by the shard's timestamps, each stamped
               with its tenant: the one of the account that owns its object (a
               payment's and its refunds' merchant account, a payout's wallet, both
               on this shard), read in the same transaction, so that an event is
               never attributed by what a caller says (refused if there is none)

Webhooks (migration 0007): ``ClaimPaymentEvents`` leases due events to the shard's
sender, ``AckPaymentEvents`` records what each endpoint answered (``webhook_deliveries``,
one row per event and endpoint) and ends each event (delivered, retried later, or given
up); ``RecordProcessorEvent`` keeps a processor's notification once per (processor, id).

A refused write changes nothing and says why (``PaymentWriteResult``). Reads
(``PaymentReads``) use the store's read connections and see committed rows only.

SQL here is written once for both backends (``?`` placeholders; PostgreSQL's ``%s`` are
substituted by its store), since payment rows are few per transaction: the set-based
bulk work stays in the ledger's own statements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from paycore.errors import ErrorCode
from paycore.ledger.model import Account, AccountRequest, PendingStatus, Transfer, TransferRequest
from paycore.ledger.rules import WorkingSet, new_account
from paycore.storage.base import Fence, Fetch, StoredResponse, check_limit
from paycore.storage.saga_holds import load_saga_holds

if TYPE_CHECKING:
    from paycore.storage.tx import GroupClock, LedgerTx

__all__ = [
    "POINTER_CONTENT_TYPE",
    "AccountCheck",
    "AckPaymentEvents",
    "AttemptRow",
    "ClaimPaymentEvents",
    "EventRow",
    "KeyWrite",
    "PaymentCommand",
    "PaymentReads",
    "PaymentRow",
    "PaymentWrite",
    "PaymentWriteResult",
    "PayoutRow",
    "ProcessorEventRow",
    "RecordProcessorEvent",
    "RefundDelta",
    "RefundRow",
    "WebhookDeliveryRow",
    "apply_payment_command",
]

# An Idempotency-Key record that points at the work it started (kind, id, shard) instead
# of holding an answer: the request is running, or died before it could answer.
POINTER_CONTENT_TYPE: Final = "application/vnd.paycore.pointer+json"


# -- rows (field order = column order) -----------------------------------------------------


class PaymentRow(msgspec.Struct, frozen=True):
    """A payment intent (``paycore.payments.intents`` gives the states their meaning)."""

    id: str
    merchant_account_id: str  # the account credited: a merchant, or a wallet topped up
    amount: int
    currency: str
    capture_method: str  # automatic | manual
    status: str
    source_type: str  # card | wallet
    source_account_id: str | None = None  # the wallet paying, for source_type wallet
    card_brand: str | None = None
    card_last4: str | None = None
    card_token: str | None = None
    card_exp_month: int | None = None
    card_exp_year: int | None = None
    processor: str | None = None  # the processor of the current (or approved) attempt
    processor_reference: str | None = None  # the processor's id for the authorization
    authorization_reference: str | None = None  # our reference of the approved authorization
    amount_authorized: int = 0
    amount_captured: int = 0
    amount_refunded: int = 0  # changed by RefundDelta only
    amount_refund_pending: int = 0  # changed by RefundDelta only
    hold_id: str | None = None  # the ledger hold of the uncaptured remainder
    authorized_until: int | None = None  # ns; the hold expires with the authorization
    pending_op: str | None = None  # what is in flight while status is processing
    pending_reference: str | None = None  # its reference (processor call or transfer id)
    pending_amount: int = 0
    pending_final: int = 0  # 1: the capture in flight releases the rest
    attempt_count: int = 0
    failure_code: str | None = None
    failure_detail: str | None = None
    cancel_reason: str | None = None
    idempotency_key: str | None = None
    version: int = 1
    created_at: int = 0
    updated_at: int = 0
    # Settled through a conversion (migration 0023; None: in the merchant's currency):
    # the merchant account's currency, what it was credited in it so far (captures), and
    # the rates locked at the authorization (exact decimal text; paycore.fx.rounding).
    settlement_currency: str | None = None
    settlement_amount: int = 0
    fx_rate: str | None = None
    fx_mid_rate: str | None = None


class AttemptRow(msgspec.Struct, frozen=True):
    """One processor call of a payment, refund or payout (``parent_id``), numbered ``seq``."""

    parent_id: str
    seq: int
    operation: str  # authorize | capture | void | refund | payout
    processor: str
    reference: str  # ours, unique: the processor is idempotent by it
    amount: int
    outcome: str | None = None  # None while the call is in flight
    decline_code: str | None = None
    error: str | None = None
    processor_reference: str | None = None
    latency_ms: float | None = None
    routing: str | None = None  # JSON: the routing decision that chose this processor
    created_at: int = 0
    updated_at: int = 0
    # The Idempotency-Key of the request that made it ('' without one; None: made before
    # keys were recorded): how a retry knows its key's claimed work was recorded.
    idempotency_key: str | None = None


class RefundRow(msgspec.Struct, frozen=True):
    id: str
    payment_id: str
    amount: int
    currency: str
    status: str
    processor: str | None = None
    hold_id: str | None = None  # the ledger hold merchant -> psp while the refund is pending
    processor_reference: str | None = None
    attempt_count: int = 0
    failure_code: str | None = None
    decline_code: str | None = None
    idempotency_key: str | None = None
    version: int = 1
    created_at: int = 0
    updated_at: int = 0
    # A refund of a payment settled through a conversion (migration 0023): what it
    # debits the merchant in its own currency at the payment's locked rate.
    settlement_currency: str | None = None
    settlement_amount: int = 0


class PayoutRow(msgspec.Struct, frozen=True):
    id: str
    wallet_account_id: str
    amount: int
    currency: str
    destination: str
    status: str
    processor: str | None = None
    hold_id: str | None = None  # the ledger hold wallet -> psp while the payout is processing
    processor_reference: str | None = None
    attempt_count: int = 0
    failure_code: str | None = None
    decline_code: str | None = None
    failure_detail: str | None = None
    idempotency_key: str | None = None
    version: int = 1
    created_at: int = 0
    updated_at: int = 0


class EventRow(msgspec.Struct, frozen=True):
    """An event for webhooks (``payment.succeeded``...); ``timestamp`` orders a shard's
    events and is set by the store; delivery fields are the webhook worker's."""

    id: str
    type: str
    object_id: str
    payload: str  # JSON; never holds card data beyond brand and last four digits
    created_at: int
    timestamp: int = 0
    delivered_at: int | None = None
    claimed_by: str | None = None
    claimed_until: int = 0
    attempts: int = 0  # claims so far: each claim is one delivery attempt
    failed_at: int | None = None  # given up after the retry schedule (migration 0007)
    # Who owns it (migration 0011): set by the writer, whatever the caller put here, to
    # the tenant of the object's owning account (see ``PaymentWrite``).
    tenant: str = ""
    # The one endpoint (an HTTP-made endpoint's id) it goes to, else None: every
    # endpoint of its tenant that wants its type (migration 0017, ``storage.deliveries``).
    only_endpoint: str | None = None


class WebhookDeliveryRow(msgspec.Struct, frozen=True):
    """What one endpoint (its URL) made of one event so far (migration 0007).

    ``status``: ``pending`` (will be retried), ``delivered`` (a 2xx; final) or
    ``failed`` (given up; final). ``outcome``: the last attempt's
    ``paycore.payments.webhooks.DeliveryOutcome`` (``rejected``: a 4xx). In an
    ``AckPaymentEvents`` the store counts ``attempts`` and stamps the times itself.
    """

    event_id: str
    endpoint: str
    status: str
    outcome: str | None = None
    attempts: int = 0
    last_status: int | None = None  # HTTP status of the last attempt (None: no answer)
    last_error: str | None = None
    created_at: int = 0
    updated_at: int = 0


class ProcessorEventRow(msgspec.Struct, frozen=True):
    """A notification a processor posted (``/v1/processor_events/{processor}``), kept
    once per (processor, id); ``body`` is the JSON exactly as received."""

    processor: str
    id: str
    type: str
    reference: str | None
    body: str
    received_at: int = 0


# -- commands ------------------------------------------------------------------------------


class KeyWrite(msgspec.Struct, frozen=True):
    """An Idempotency-Key record to write with a ``PaymentWrite``.

    ``mode``: ``claim`` inserts it if the key has no live record (else the write is
    refused with ``key_taken``); ``save`` writes it whatever is there; ``settle`` writes
    it unless the key already holds a final answer (not a pointer), which it returns.
    """

    key: str
    fingerprint: str
    response: StoredResponse
    retention_seconds: int
    mode: str = "claim"


class AccountCheck(msgspec.Struct, frozen=True):
    """An account the write needs: it must exist, be open and hold ``currency``."""

    account_id: str
    currency: str


class RefundDelta(msgspec.Struct, frozen=True):
    """Add to a payment's refund counters; refused unless, after it, both are >= 0 and
    refunded + pending <= captured."""

    payment_id: str
    pending: int = 0
    refunded: int = 0


class PaymentWrite(msgspec.Struct, frozen=True):
    """One unit of payment work on shard ``shard`` (see the module docstring); result:
    ``PaymentWriteResult``. A row with expected version None is inserted (refused if its
    id exists); else it replaces the row whose version is the one expected, and its own
    ``version`` must be that plus one."""

    shard: str
    payment: PaymentRow | None = None
    payment_version: int | None = None
    refund: RefundRow | None = None
    refund_version: int | None = None
    payout: PayoutRow | None = None
    payout_version: int | None = None
    refund_delta: RefundDelta | None = None
    accounts: tuple[AccountCheck, ...] = ()
    ensure_accounts: tuple[AccountRequest, ...] = ()
    transfers: tuple[TransferRequest, ...] = ()
    expire_holds: tuple[str, ...] = ()
    attempts: tuple[AttemptRow, ...] = ()
    events: tuple[EventRow, ...] = ()
    key: KeyWrite | None = None
    fence: Fence | None = None


class PaymentWriteResult(msgspec.Struct, frozen=True):
    """What a ``PaymentWrite`` did: ``ok``, or refused with nothing written because
    ``conflict`` (a version moved, an id exists), ``key_taken`` (the key's live record:
    fingerprint and answer) or ``code`` (an account check, a refund bound, a transfer)."""

    ok: bool
    conflict: bool = False
    code: ErrorCode | None = None
    detail: str = ""
    key_taken: tuple[str, StoredResponse] | None = None
    transfers: tuple[Transfer, ...] = ()


class ClaimPaymentEvents(msgspec.Struct, frozen=True):
    """Lease undelivered events of ``shard`` to ``owner``, oldest first; result:
    ``list[EventRow]``. An event is taken when nobody holds it (its lease, or its retry
    delay, passed) or ``owner`` holds it already; each claim counts one attempt."""

    shard: str
    owner: str
    lease_seconds: float = 30.0
    limit: int = 100
    fence: Fence | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit)


class AckPaymentEvents(msgspec.Struct, frozen=True):
    """Record deliveries on ``shard``: ``delivered`` events are done; each ``retry``
    ``(event id, not before ns)`` is released and may be claimed again after that time;
    ``failed`` events are given up (never claimed again); ``deliveries`` upserts what
    each endpoint answered (a ``delivered`` row is never changed after); result: None."""

    shard: str
    delivered: tuple[str, ...] = ()
    retry: tuple[tuple[str, int], ...] = ()
    fence: Fence | None = None
    failed: tuple[str, ...] = ()
    deliveries: tuple[WebhookDeliveryRow, ...] = ()


class RecordProcessorEvent(msgspec.Struct, frozen=True):
    """Keep ``event`` unless its (processor, id) is kept already; result: True when it
    was new, False for a duplicate (which changes nothing). Run it on the store of
    ``shard`` itself (``ShardedStore`` places only the other payment commands)."""

    shard: str
    event: ProcessorEventRow
    fence: Fence | None = None


class PurgePaymentEvents(msgspec.Struct, frozen=True):
    """Delete, at most ``limit`` of each, payment events (with their per-endpoint delivery
    rows) from ``before`` (ns) or earlier that were delivered or given up, or any such
    event when ``undelivered_too`` (no webhook endpoint will ever take them), and
    processor notifications received by then; result: rows deleted. ``published_only``:
    none the event stream has not published yet (its ``payments`` cursor, migration
    0018), so a stream that lags loses nothing."""

    before: int
    limit: int = 10_000
    undelivered_too: bool = False
    fence: Fence | None = None
    published_only: bool = False


PaymentCommand = (
    PaymentWrite | ClaimPaymentEvents | AckPaymentEvents | RecordProcessorEvent | PurgePaymentEvents
)


# -- SQL -----------------------------------------------------------------------------------

R = TypeVar("R", bound=msgspec.Struct)


def _columns(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(cls))


PAYMENT_COLUMNS: Final = _columns(PaymentRow)
ATTEMPT_COLUMNS: Final = _columns(AttemptRow)
REFUND_COLUMNS: Final = _columns(RefundRow)
PAYOUT_COLUMNS: Final = _columns(PayoutRow)
EVENT_COLUMNS: Final = _columns(EventRow)
DELIVERY_COLUMNS: Final = _columns(WebhookDeliveryRow)
PROCESSOR_EVENT_COLUMNS: Final = _columns(ProcessorEventRow)
# The refund counters move only by RefundDelta: a state change never writes them back.
_PAYMENT_STATE_COLUMNS: Final = tuple(
    c for c in PAYMENT_COLUMNS if c not in ("id", "amount_refunded", "amount_refund_pending")
)
_TABLES: Final[dict[type[msgspec.Struct], tuple[str, tuple[str, ...], tuple[str, ...]]]] = {
    # row type -> table, every column, the columns an update sets
    PaymentRow: ("payments", PAYMENT_COLUMNS, _PAYMENT_STATE_COLUMNS),
    RefundRow: ("refunds", REFUND_COLUMNS, tuple(c for c in REFUND_COLUMNS if c != "id")),
    PayoutRow: ("payouts", PAYOUT_COLUMNS, tuple(c for c in PAYOUT_COLUMNS if c != "id")),
}


def _q(n: int) -> str:
    return ", ".join("?" * n)


def _row(cls: type[R], row: Sequence[Any]) -> R:
    return cls(*row)


# -- the writer's side -------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, result: PaymentWriteResult) -> None:
        self.result = result


def _refuse(code: ErrorCode | None = None, detail: str = "", *, conflict: bool = False) -> _Refused:
    return _Refused(PaymentWriteResult(ok=False, conflict=conflict, code=code, detail=detail))


def apply_payment_command(tx: LedgerTx, clock: GroupClock, command: PaymentCommand) -> Any:
    """Run one payment command in the writer's open transaction."""
    if isinstance(command, PurgePaymentEvents):
        return _purge_events(tx, command)
    if isinstance(command, PaymentWrite):
        try:
            return _apply_write(tx, clock, command)
        except _Refused as refused:
            return refused.result
    if isinstance(command, ClaimPaymentEvents):
        until = clock.now + int(command.lease_seconds * 1_000_000_000)
        cols = ", ".join(EVENT_COLUMNS)
        # The picked ids are a MATERIALIZED CTE, computed once: a subquery in ``IN`` may be
        # run again per row of a nested loop (see the outbox claim in ``postgres``), and the
        # UPDATE changes the columns it filters on. The claim's condition is repeated on
        # the UPDATE so that a row changed since it was picked (PostgreSQL rechecks the
        # newest version) is skipped, never taken twice; the shard's write turn already
        # serializes claims, this keeps the statement safe without it.
        claimable = (
            "delivered_at IS NULL AND failed_at IS NULL AND (claimed_until <= ? OR claimed_by = ?)"
        )
        rows = tx.run_sql(
            f"WITH picked AS MATERIALIZED (SELECT id FROM payment_events WHERE {claimable} "
            "ORDER BY timestamp LIMIT ?) "
            "UPDATE payment_events SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1 "
            f"WHERE id IN (SELECT id FROM picked) AND {claimable} RETURNING {cols}",
            (
                clock.now,
                command.owner,
                min(command.limit, 2**62),
                command.owner,
                until,
                clock.now,
                command.owner,
            ),
        )
        return sorted((_row(EventRow, r) for r in rows), key=lambda e: e.timestamp)
    if isinstance(command, RecordProcessorEvent):
        return _record_processor_event(tx, clock, command.event)
    for delivery in command.deliveries:
        _upsert_delivery(tx, clock, delivery)
    for event_id in command.failed:
        tx.run_sql(
            "UPDATE payment_events SET failed_at = ?, claimed_by = NULL "
            "WHERE id = ? AND delivered_at IS NULL",
            (clock.now, event_id),
        )
    for event_id in command.delivered:
        tx.run_sql(
            "UPDATE payment_events SET delivered_at = ?, claimed_by = NULL WHERE id = ?",
            (clock.now, event_id),
        )
    for event_id, not_before in command.retry:
        tx.run_sql(
            "UPDATE payment_events SET claimed_by = NULL, claimed_until = ? "
            "WHERE id = ? AND delivered_at IS NULL",
            (not_before, event_id),
        )
    return None


def _upsert_delivery(tx: LedgerTx, clock: GroupClock, d: WebhookDeliveryRow) -> None:
    """One more attempt of ``d.event_id`` to ``d.endpoint``; a delivered row stays so."""
    tx.run_sql(
        f"INSERT INTO webhook_deliveries ({', '.join(DELIVERY_COLUMNS)}) "
        f"VALUES ({_q(len(DELIVERY_COLUMNS))}) "
        "ON CONFLICT (event_id, endpoint) DO UPDATE SET status = excluded.status, "
        "outcome = excluded.outcome, attempts = webhook_deliveries.attempts + 1, "
        "last_status = excluded.last_status, last_error = excluded.last_error, "
        "updated_at = excluded.updated_at WHERE webhook_deliveries.status <> 'delivered'",
        msgspec.structs.astuple(
            msgspec.structs.replace(d, attempts=1, created_at=clock.now, updated_at=clock.now)
        ),
    )


def _record_processor_event(tx: LedgerTx, clock: GroupClock, event: ProcessorEventRow) -> bool:
    row = msgspec.structs.replace(event, received_at=clock.now)
    inserted = tx.run_sql(
        f"INSERT INTO processor_events ({', '.join(PROCESSOR_EVENT_COLUMNS)}) "
        f"VALUES ({_q(len(PROCESSOR_EVENT_COLUMNS))}) "
        "ON CONFLICT (processor, id) DO NOTHING RETURNING id",
        msgspec.structs.astuple(row),
    )
    return bool(inserted)


def _apply_write(tx: LedgerTx, clock: GroupClock, w: PaymentWrite) -> PaymentWriteResult:
    """Check everything (reads only), then write everything; a refusal raises ``_Refused``."""
    now = clock.now
    if w.key is not None and w.key.mode != "save":
        seen = tx.idempotency_record(w.key.key)
        taken = seen is not None and seen[2] > now
        if (
            seen is not None
            and taken
            and (w.key.mode == "claim" or seen[1].content_type != POINTER_CONTENT_TYPE)
        ):
            return PaymentWriteResult(ok=False, key_taken=(seen[0], seen[1]))
    rows = ((w.payment, w.payment_version), (w.refund, w.refund_version),
            (w.payout, w.payout_version))  # fmt: skip
    for row, expected in rows:
        if row is not None:
            _check_version(tx, row, expected)
    tenants = _event_tenants(tx, w) if w.events else ()
    counters = _refund_counters(tx, w.refund_delta) if w.refund_delta is not None else None
    if w.accounts:
        _check_accounts(tx, w.accounts)
    # The ledger, in a working set of its own: dropped, not written, if refused.
    ws: WorkingSet | None = None
    created_accounts: list[Account] = []
    transfers: tuple[Transfer, ...] = ()
    if w.transfers or w.expire_holds or w.ensure_accounts:
        ws, created_accounts = _working_set(tx, clock, w)
        if w.expire_holds:
            _expire(ws, w.expire_holds)
        results = ws.apply_transfers(w.transfers, settlement=True)  # payments' own holds
        for result in results:
            if not result.ok or result.exists:
                raise _refuse(
                    result.code or ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS,
                    result.detail or f"transfer {result.id!r}",
                )
        transfers = tuple(r.transfer for r in results if r.transfer is not None)
    # -- every check passed: write.
    if ws is not None:
        if created_accounts:
            tx.insert_accounts(created_accounts)
        tx.write(ws)
        clock.last_timestamp = ws.last_timestamp
    for row, expected in rows:
        if row is not None:
            _write_row(tx, row, expected)
    if w.refund_delta is not None and counters is not None:
        tx.run_sql(
            "UPDATE payments SET amount_refunded = ?, amount_refund_pending = ? WHERE id = ?",
            (*counters, w.refund_delta.payment_id),
        )
    for attempt in w.attempts:
        _upsert_attempt(tx, attempt)
    for event, tenant in zip(w.events, tenants, strict=True):
        values = msgspec.structs.replace(event, timestamp=clock.next_timestamp(), tenant=tenant)
        tx.run_sql(
            f"INSERT INTO payment_events ({', '.join(EVENT_COLUMNS)}) "
            f"VALUES ({_q(len(EVENT_COLUMNS))})",
            msgspec.structs.astuple(values),
        )
    if w.key is not None:
        expires_at = min(now + w.key.retention_seconds * 1_000_000_000, 2**63 - 1)
        tx.save_idempotency(w.key.key, w.key.fingerprint, w.key.response, now, expires_at)
    return PaymentWriteResult(ok=True, transfers=transfers)


def _refund_counters(tx: LedgerTx, delta: RefundDelta) -> tuple[int, int]:
    """The payment's (refunded, pending) after ``delta``; refused past what it captured."""
    found = tx.run_sql(
        "SELECT amount_captured, amount_refunded, amount_refund_pending FROM payments WHERE id = ?",
        (delta.payment_id,),
    )
    if not found:
        raise _refuse(ErrorCode.PAYMENT_NOT_FOUND, f"payment {delta.payment_id!r}")
    captured, refunded, pending = found[0]
    if (
        refunded + delta.refunded < 0
        or pending + delta.pending < 0
        or refunded + delta.refunded + pending + delta.pending > captured
    ):
        raise _refuse(
            ErrorCode.REFUND_EXCEEDS_CAPTURED,
            f"captured {captured}, refunded {refunded}, pending {pending}; "
            f"asked {delta.pending + delta.refunded}",
        )
    return refunded + delta.refunded, pending + delta.pending


def _event_tenants(tx: LedgerTx, w: PaymentWrite) -> tuple[str, ...]:
    """The tenant of each of ``w``'s events: the one of the account that owns its object
    (``paycore.payments.service.PaymentService.check_owner`` draws the same line). The
    object is the write's own row, or one stored already; refused when it has no owner
    here, since an event nobody owns could not be sent to the right endpoints."""

    def one(sql: str, key: str | None) -> str | None:
        found = tx.run_sql(sql, (key,)) if key is not None else []
        return str(found[0][0]) if found else None

    merchants = {w.payment.id: w.payment.merchant_account_id} if w.payment else {}
    wallets = {w.payout.id: w.payout.wallet_account_id} if w.payout else {}
    refunds = {w.refund.id: w.refund.payment_id} if w.refund else {}
    owners: list[str | None] = []
    for event in w.events:
        kind, object_id = event.type.partition(".")[0], event.object_id
        if kind == "payout":
            owner = wallets.get(object_id) or one(
                "SELECT wallet_account_id FROM payouts WHERE id = ?", object_id
            )
        else:
            payment_id: str | None = object_id
            if kind == "refund":
                payment_id = refunds.get(object_id) or one(
                    "SELECT payment_id FROM refunds WHERE id = ?", object_id
                )
            elif kind != "payment":
                payment_id = None
            owner = (merchants.get(payment_id) if payment_id is not None else None) or one(
                "SELECT merchant_account_id FROM payments WHERE id = ?", payment_id
            )
        owners.append(owner)
    accounts = tx.accounts_by_ids({o for o in owners if o is not None}, with_metadata=False)
    tenants: list[str] = []
    for event, owner in zip(w.events, owners, strict=True):
        account = accounts.get(owner) if owner is not None else None
        if account is None:
            raise _refuse(
                ErrorCode.INTERNAL_ERROR,
                f"event {event.type} of {event.object_id!r}: no owning account on this shard",
            )
        tenants.append(account.tenant)
    return tuple(tenants)


def _check_accounts(tx: LedgerTx, checks: Sequence[AccountCheck]) -> None:
    accounts = tx.accounts_by_ids({c.account_id for c in checks}, with_metadata=False)
    for check in checks:
        account = accounts.get(check.account_id)
        if account is None:
            raise _refuse(ErrorCode.ACCOUNT_NOT_FOUND, f"account {check.account_id!r} not found")
        if account.currency != check.currency:
            raise _refuse(
                ErrorCode.CURRENCY_MISMATCH,
                f"account {check.account_id!r} is {account.currency}, not {check.currency}",
            )
        if account.flags.closed:
            raise _refuse(ErrorCode.ACCOUNT_CLOSED, f"account {check.account_id!r} is closed")


def _check_version(tx: LedgerTx, row: msgspec.Struct, expected: int | None) -> None:
    table = _TABLES[type(row)][0]
    row_id = row.id  # type: ignore[attr-defined]
    found = tx.run_sql(f"SELECT version FROM {table} WHERE id = ?", (row_id,))
    current = found[0][0] if found else None
    if current != expected:
        what = "exists" if expected is None else f"is at version {current}, not {expected}"
        raise _refuse(detail=f"{table} {row_id!r} {what}", conflict=True)
    if row.version != (expected or 0) + 1:  # type: ignore[attr-defined]
        raise ValueError(f"{table} {row_id!r}: a write must bump the version by one")


def _write_row(tx: LedgerTx, row: msgspec.Struct, expected: int | None) -> None:
    table, columns, updated = _TABLES[type(row)]
    if expected is None:
        tx.run_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_q(len(columns))})",
            msgspec.structs.astuple(row),
        )
        return
    values = [getattr(row, c) for c in updated]
    tx.run_sql(
        f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in updated)} WHERE id = ? AND version = ?",
        (*values, row.id, expected),  # type: ignore[attr-defined]
    )


def _upsert_attempt(tx: LedgerTx, attempt: AttemptRow) -> None:
    cols = ATTEMPT_COLUMNS
    changing = [c for c in cols if c not in ("parent_id", "seq", "created_at")]
    tx.run_sql(
        f"INSERT INTO payment_attempts ({', '.join(cols)}) VALUES ({_q(len(cols))}) "
        "ON CONFLICT (parent_id, seq) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in changing),
        msgspec.structs.astuple(attempt),
    )


def _working_set(
    tx: LedgerTx, clock: GroupClock, w: PaymentWrite
) -> tuple[WorkingSet, list[Account]]:
    """Load what ``w``'s transfers and holds touch; create its missing system accounts."""
    ids: set[str] = set()
    pending_ids: set[str] = set(w.expire_holds)
    account_ids: set[str] = {a.id for a in w.ensure_accounts}
    for r in w.transfers:
        ids.add(r.id)
        if r.pending_id is not None:
            pending_ids.add(r.pending_id)
        for account_id in (r.debit_account_id, r.credit_account_id):
            if account_id is not None:
                account_ids.add(account_id)
    stored = tx.transfers_by_ids(ids | pending_ids)
    holds = [t for t in stored if t.flags.pending and t.id in pending_ids]
    for t in holds:
        account_ids.update((t.debit_account_id, t.credit_account_id))
    status = tx.pending_statuses(t.id for t in holds) if holds else {}
    accounts = tx.accounts_by_ids(account_ids, with_metadata=False)
    created: list[Account] = []
    for request in w.ensure_accounts:
        if request.id not in accounts:
            made = new_account(request, None, clock.next_timestamp())
            if made.account is None:
                raise _refuse(made.code, made.detail)
            accounts[request.id] = made.account
            created.append(made.account)
    ws = WorkingSet(
        accounts.values(),
        stored,
        [(t, *status[t.id]) for t in holds if t.id in status],
        now=clock.now,
        last_timestamp=clock.last_timestamp,
    )
    # Rows of a ``history`` account show its holds in flight across shards as posted.
    load_saga_holds(tx.run_sql, ws, pending_ids)
    return ws, created


def _expire(ws: WorkingSet, hold_ids: Iterable[str]) -> None:
    """Expire the holds ``hold_ids`` in ``ws``; each must be due or expired already."""
    for hold_id in hold_ids:
        state = ws.pendings.get(hold_id)
        if state is None:
            raise _refuse(ErrorCode.PENDING_TRANSFER_NOT_FOUND, f"hold {hold_id!r}")
        due = state.transfer.expires_at
        if state.status is PendingStatus.PENDING and (due is None or due > ws.now):
            raise _refuse(detail=f"hold {hold_id!r} has not expired yet", conflict=True)
    ws.expire_due()


# -- reads ---------------------------------------------------------------------------------


class PaymentReads:
    """Committed payment rows of one shard, read through its ``fetch`` (read pool)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def _one(self, cls: type[R], table: str, columns: Sequence[str], key: str) -> R | None:
        rows = await self._fetch(f"SELECT {', '.join(columns)} FROM {table} WHERE id = ?", (key,))
        return _row(cls, rows[0]) if rows else None

    async def payment(self, payment_id: str) -> PaymentRow | None:
        return await self._one(PaymentRow, "payments", PAYMENT_COLUMNS, payment_id)

    async def refund(self, refund_id: str) -> RefundRow | None:
        return await self._one(RefundRow, "refunds", REFUND_COLUMNS, refund_id)

    async def payout(self, payout_id: str) -> PayoutRow | None:
        return await self._one(PayoutRow, "payouts", PAYOUT_COLUMNS, payout_id)

    async def attempts(self, parent_id: str) -> list[AttemptRow]:
        rows = await self._fetch(
            f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM payment_attempts "
            "WHERE parent_id = ? ORDER BY seq",
            (parent_id,),
        )
        return [_row(AttemptRow, r) for r in rows]

    async def refunds_of(self, payment_id: str) -> list[RefundRow]:
        rows = await self._fetch(
            f"SELECT {', '.join(REFUND_COLUMNS)} FROM refunds WHERE payment_id = ? "
            "ORDER BY created_at, id",
            (payment_id,),
        )
        return [_row(RefundRow, r) for r in rows]

    async def payments_in(
        self, status: str, updated_before: int, limit: int, after: tuple[int, str] | None = None
    ) -> list[PaymentRow]:
        """Payments in ``status`` last changed at or before ``updated_before``, oldest first,
        from after ``after`` = (updated_at, id) of the previous page's last row."""
        return await self._rows_in(
            PaymentRow,
            "payments",
            PAYMENT_COLUMNS,
            status=status,
            before=updated_before,
            limit=limit,
            after=after,
        )

    async def _rows_in(
        self,
        cls: type[R],
        table: str,
        columns: Sequence[str],
        *,
        status: str,
        before: int,
        limit: int,
        after: tuple[int, str] | None,
    ) -> list[R]:
        # Keyset pages over (updated_at, id): a pass of the resolver reaches every open
        # row, however many at the head of the line cannot be resolved now.
        where = "status = ? AND updated_at <= ?"
        params: list[Any] = [status, before]
        if after is not None:
            where += " AND (updated_at, id) > (?, ?)"
            params += [after[0], after[1]]
        rows = await self._fetch(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {where} "
            "ORDER BY updated_at, id LIMIT ?",
            (*params, limit),
        )
        return [_row(cls, r) for r in rows]

    async def authorizations_due(self, now: int, limit: int) -> list[PaymentRow]:
        """``requires_capture`` payments whose authorization ended at or before ``now``."""
        rows = await self._fetch(
            f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM payments WHERE status = ? "
            "AND authorized_until <= ? ORDER BY authorized_until LIMIT ?",
            ("requires_capture", now, limit),
        )
        return [_row(PaymentRow, r) for r in rows]

    async def refunds_in(
        self, status: str, updated_before: int, limit: int, after: tuple[int, str] | None = None
    ) -> list[RefundRow]:
        return await self._rows_in(
            RefundRow,
            "refunds",
            REFUND_COLUMNS,
            status=status,
            before=updated_before,
            limit=limit,
            after=after,
        )

    async def payouts_in(
        self, status: str, updated_before: int, limit: int, after: tuple[int, str] | None = None
    ) -> list[PayoutRow]:
        return await self._rows_in(
            PayoutRow,
            "payouts",
            PAYOUT_COLUMNS,
            status=status,
            before=updated_before,
            limit=limit,
            after=after,
        )

    async def events(self, *, after: int = -1, limit: int = 100) -> list[EventRow]:
        """Events in shard order, from after timestamp ``after``."""
        rows = await self._fetch(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM payment_events WHERE timestamp > ? "
            "ORDER BY timestamp LIMIT ?",
            (after, limit),
        )
        return [_row(EventRow, r) for r in rows]

    async def webhook_deliveries(self, event_ids: Sequence[str]) -> list[WebhookDeliveryRow]:
        """What each endpoint made of these events so far (no row: never attempted)."""
        if not event_ids:
            return []
        rows = await self._fetch(
            f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM webhook_deliveries "
            f"WHERE event_id IN ({_q(len(event_ids))}) ORDER BY event_id, endpoint",
            tuple(event_ids),
        )
        return [_row(WebhookDeliveryRow, r) for r in rows]

    async def event(self, event_id: str) -> EventRow | None:
        return await self._one(EventRow, "payment_events", EVENT_COLUMNS, event_id)

    async def processor_event(self, processor: str, event_id: str) -> ProcessorEventRow | None:
        rows = await self._fetch(
            f"SELECT {', '.join(PROCESSOR_EVENT_COLUMNS)} FROM processor_events "
            "WHERE processor = ? AND id = ?",
            (processor, event_id),
        )
        return _row(ProcessorEventRow, rows[0]) if rows else None

    async def key_record(self, key: str) -> tuple[str, StoredResponse, int] | None:
        """(fingerprint, answer, expires_at) stored under an Idempotency-Key."""
        rows = await self._fetch(
            "SELECT fingerprint, status, body, content_type, expires_at FROM idempotency "
            "WHERE key = ?",
            (key,),
        )
        if not rows:
            return None
        fingerprint, status, body, content_type, expires_at = rows[0]
        return fingerprint, StoredResponse(status, bytes(body), content_type), expires_at


def _purge_events(tx: LedgerTx, command: PurgePaymentEvents) -> int:
    done = (
        ""
        if command.undelivered_too
        else "(delivered_at IS NOT NULL OR failed_at IS NOT NULL) AND "
    )
    if command.published_only:
        done += (
            "timestamp <= COALESCE((SELECT seq FROM event_stream_cursors "
            "WHERE log = 'payments'), 0) AND "
        )
    events = [
        r[0]
        for r in tx.run_sql(
            f"SELECT id FROM payment_events WHERE {done}timestamp <= ? ORDER BY timestamp LIMIT ?",
            (command.before, command.limit),
        )
    ]
    deleted = 0
    if events:
        marks = ", ".join("?" * len(events))
        tx.run_sql(f"DELETE FROM webhook_deliveries WHERE event_id IN ({marks})", events)
        deleted += len(
            tx.run_sql(f"DELETE FROM payment_events WHERE id IN ({marks}) RETURNING id", events)
        )
    deleted += len(
        tx.run_sql(
            "DELETE FROM processor_events WHERE (processor, id) IN (SELECT processor, id "
            "FROM processor_events WHERE received_at <= ? ORDER BY received_at LIMIT ?) "
            "RETURNING id",
            (command.before, command.limit),
        )
    )
    return deleted
