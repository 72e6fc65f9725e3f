"""Filtered listings of one shard's rows, a page at a time (the ``GET /v1/<resources>``).

Every listing is ordered by ``(time, id)``: a row's *key* (``Keyset``), its creation time
in ns and its id. A page is read with keyset pagination: the rows strictly after the key
of the previous page's last row (before it, descending), ``ORDER BY`` the key, ``LIMIT``
the page size plus one (the extra row only says whether there is more). Each query walks
an index whose leading columns are its equality filters and whose next column is the
time (migration 0015), so a page costs the same however large the shard is; no query
uses ``OFFSET``. Filters that no index leads with (a status, a currency, metadata) are
checked on the rows the index walk meets.

The key carries the id as well as the time so that the pages of several shards, merged
by the cluster's router, have one total order: two shards may stamp rows with the same
time.

Scoping: accounts carry their tenant. Transfers, payments and payouts are scoped by the
*owner* of an id (``owner_sql``): the tenant prefix of the id as the store keeps it
(``"<tenant>/"``, ``""`` for the default tenant, see ``paycore.ledger.tenancy``), and for
transfers, ``"."`` for paycore's own (``xs.``, ``pm.``), which no tenant lists. The
expression is the one migration 0015 indexes, written the same way here.

SQL is written once for both backends with ``?`` placeholders (the PostgreSQL store
substitutes them); only the functions that differ come from the ``Dialect``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar

import msgspec

from paycore.ledger.model import Account, TransferView
from paycore.storage.base import Fetch
from paycore.storage.codec import A_COLUMNS, T_COLUMNS, account_from_row, view_from_row
from paycore.storage.payments import (
    ATTEMPT_COLUMNS,
    PAYMENT_COLUMNS,
    PAYOUT_COLUMNS,
    REFUND_COLUMNS,
    AttemptRow,
    PaymentRow,
    PayoutRow,
    RefundRow,
)

__all__ = [
    "MAX_TIME",
    "SYSTEM_OWNER",
    "AccountFilter",
    "Dialect",
    "Keyset",
    "ListPage",
    "ListReads",
    "Page",
    "PaymentFilter",
    "PayoutFilter",
    "RefundFilter",
    "TransferFilter",
    "cut_page",
    "key_of_account",
    "key_of_row",
    "key_of_view",
    "merge_pages",
    "owner_sql",
]

T = TypeVar("T")
Keyset = tuple[int, str]  # (time in ns, id): a row's place in a listing

MAX_TIME: Final = 2**63 - 1  # times are signed 64-bit in both backends
# The owner of paycore's own transfers (``xs.``, ``pm.``): no tenant prefix ends in ".".
SYSTEM_OWNER: Final = "."


class Dialect(Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


def owner_sql(dialect: Dialect, column: str, *, system_transfers: bool = False) -> str:
    """The owner of the id in ``column`` (see the module docstring), as migration 0015
    indexes it: the expression must read exactly so for the planner to use the index."""
    position = "instr" if dialect is Dialect.SQLITE else "strpos"
    prefix = f"substr({column}, 1, {position}({column}, '/'))"
    if not system_transfers:
        return prefix
    return f"CASE WHEN substr({column}, 1, 3) IN ('xs.', 'pm.') THEN '.' ELSE {prefix} END"


class Page(msgspec.Struct, frozen=True):
    """Which page: at most ``limit`` rows after ``after`` (None: from the start), by
    ascending key unless ``descending``."""

    limit: int
    after: Keyset | None = None
    descending: bool = False

    def __post_init__(self) -> None:
        if type(self.limit) is not int or self.limit < 1:
            raise ValueError(f"limit must be a positive integer, not {self.limit!r}")


@dataclass(frozen=True, slots=True)
class ListPage(Generic[T]):
    """Up to ``limit`` items, and the key to pass as ``after`` for the next page (None:
    this was the last). A presented page may hold fewer items than the rows it read
    (the cluster hides a saga's second copy); ``next_after`` is the last row read."""

    items: list[T]
    next_after: Keyset | None


def cut_page(rows: list[T], page: Page, key: Callable[[T], Keyset]) -> ListPage[T]:
    """The first ``page.limit`` of ``rows`` (read with one extra) and the next key."""
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return ListPage(rows, key(rows[-1]) if more else None)


class AccountFilter(msgspec.Struct, frozen=True):
    """Accounts of ``tenant`` (paycore's own never: their tenant is the system's)."""

    tenant: str
    currency: str | None = None
    code: int | None = None
    no_overdraft: bool | None = None
    history: bool | None = None
    closed: bool | None = None
    # (key, value) pairs that must all be top-level string entries of the metadata.
    metadata: tuple[tuple[str, str], ...] = ()
    created_gte: int | None = None
    created_lt: int | None = None


class TransferFilter(msgspec.Struct, frozen=True):
    """Transfers whose id ``owner`` owns (never paycore's own), touching ``account_id``
    on either side when set, in ``status`` when set (as one store shows it)."""

    owner: str
    account_id: str | None = None
    status: str | None = None
    # Set by the cluster's router, which shows a saga's stored rows under other statuses
    # (``paycore.cluster.settlement.present_view``): match every stored status a row may
    # be shown as ``status`` from, and let the router check the status it shows.
    saga_statuses: bool = False
    created_gte: int | None = None
    created_lt: int | None = None


class PaymentFilter(msgspec.Struct, frozen=True):
    """Payments crediting an account of ``owner``."""

    owner: str
    merchant_account_id: str | None = None
    status: str | None = None
    created_gte: int | None = None
    created_lt: int | None = None


class RefundFilter(msgspec.Struct, frozen=True):
    """Refunds of payments crediting an account of ``owner``."""

    owner: str
    payment_id: str | None = None
    status: str | None = None
    created_gte: int | None = None
    created_lt: int | None = None


class PayoutFilter(msgspec.Struct, frozen=True):
    """Payouts from a wallet of ``owner``."""

    owner: str
    wallet_account_id: str | None = None
    status: str | None = None
    created_gte: int | None = None
    created_lt: int | None = None


# Stored statuses a transfer shown as ``status`` may have: on one store, exactly its own
# (``TransferView.of``: a hold's row in pending_transfers, else voided for a void, posted
# for the rest); in a cluster, a saga's hold pending is shown in flight, and a credit leg
# voided when its source expired is shown expired.
_ONE_STORE: Final = {
    "posted": ("posted",),
    "pending": ("pending",),
    "voided": ("voided",),
    "expired": ("expired",),
    "in_flight": (),
}
_SAGA: Final = {**_ONE_STORE, "in_flight": ("pending",), "expired": ("expired", "voided")}


def _status_sql(statuses: Sequence[str]) -> str:
    parts = []
    for status in statuses:
        if status == "posted":
            parts.append("(p.status = 'posted' OR (p.status IS NULL AND (t.flags & 4) = 0))")
        elif status == "voided":
            parts.append("(p.status = 'voided' OR (p.status IS NULL AND (t.flags & 4) <> 0))")
        else:
            parts.append(f"p.status = '{status}'")  # one of the fixed names above
    return "(" + " OR ".join(parts) + ")" if parts else "1 = 0"


class _Where:
    """A WHERE clause built a condition at a time, with its parameters in order."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, *params: Any) -> None:
        self.conditions.append(condition)
        self.params.extend(params)

    def created(self, column: str, gte: int | None, lt: int | None) -> None:
        if gte is not None:
            self.add(f"{column} >= ?", _clamp(gte))
        if lt is not None:
            self.add(f"{column} < ?", _clamp(lt))

    def keyset(self, time: str, id_: str, page: Page) -> None:
        if page.after is None:
            return
        at, after_id = _clamp(page.after[0]), page.after[1]
        # The plain range on the time column first: an index walk starts there whatever
        # the planner makes of the row value.
        if page.descending:
            self.add(f"{time} <= ? AND ({time}, {id_}) < (?, ?)", at, at, after_id)
        else:
            self.add(f"{time} >= ? AND ({time}, {id_}) > (?, ?)", at, at, after_id)

    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "1 = 1"


def _clamp(value: int) -> int:
    """Keep caller-given times inside bigint, so a wild one reads nothing, not a 500."""
    return max(-1, min(value, MAX_TIME))


def _order(page: Page, *columns: str) -> str:
    direction = " DESC" if page.descending else ""
    return ", ".join(c + direction for c in columns)


def _columns(alias: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


class ListReads:
    """The listings of one shard, read through its ``fetch`` (its read connections)."""

    def __init__(self, fetch: Fetch, dialect: Dialect) -> None:
        self._fetch = fetch
        self.dialect = dialect

    def _metadata_sql(self) -> str:
        if self.dialect is Dialect.SQLITE:
            return (
                "EXISTS (SELECT 1 FROM json_each(m.metadata) j "
                "WHERE j.key = ? AND j.type = 'text' AND j.value = ?)"
            )
        # Wrapped in a CASE, which PostgreSQL neither estimates as rare (it has no
        # statistics for the JSON: as a comparison it would guess 1 row in 40,000 and
        # read every account's metadata to sort the few it expects) nor takes as strict
        # (which would turn the LEFT JOIN into a join it may start from the metadata):
        # the plan walks accounts_by_tenant from the cursor and checks each row's
        # metadata, as the other filters are checked (tests/store/test_list_plans_postgres.py).
        return (
            "CASE WHEN jsonb_typeof(m.metadata::jsonb -> ?) = 'string' "
            "AND m.metadata::jsonb ->> ? = ? THEN true ELSE false END"
        )

    async def accounts(self, f: AccountFilter, page: Page) -> ListPage[Account]:
        where = _Where()
        where.add("a.tenant = ?", f.tenant)  # index accounts_by_tenant: (tenant, timestamp, id)
        where.keyset("a.timestamp", "a.id", page)
        where.created("a.timestamp", f.created_gte, f.created_lt)
        if f.currency is not None:
            where.add("a.currency = ?", f.currency)
        if f.code is not None:
            where.add("a.code = ?", f.code)
        for bit, wanted in ((1, f.no_overdraft), (2, f.history), (4, f.closed)):
            if wanted is not None:
                where.add(f"(a.flags & {bit}) {'<>' if wanted else '='} 0")
        for key, value in f.metadata:
            if self.dialect is Dialect.SQLITE:
                where.add(self._metadata_sql(), key, value)
            else:
                where.add(self._metadata_sql(), key, key, value)
        rows = await self._fetch(
            f"SELECT {A_COLUMNS}, m.metadata FROM accounts a "
            f"LEFT JOIN account_metadata m ON m.id = a.id WHERE {where.sql()} "
            f"ORDER BY {_order(page, 'a.timestamp', 'a.id')} LIMIT ?",
            (*where.params, page.limit + 1),
        )
        return cut_page([account_from_row(r, r[11]) for r in rows], page, key_of_account)

    async def transfers(self, f: TransferFilter, page: Page) -> ListPage[TransferView]:
        where = _Where()
        if f.account_id is None:
            owner = owner_sql(self.dialect, "t.id", system_transfers=True)
            where.add(f"{owner} = ?", f.owner)
        else:
            # The API lists only its caller's own accounts, which only the caller's and
            # paycore's transfers touch. Not the owner expression: the planner would
            # then be free to walk its index instead of the account's.
            where.add("substr(t.id, 1, 3) NOT IN ('xs.', 'pm.')")
        where.keyset("t.timestamp", "t.id", page)
        where.created("t.timestamp", f.created_gte, f.created_lt)
        if f.status is not None:
            where.add(_status_sql((_SAGA if f.saga_statuses else _ONE_STORE)[f.status]))
        # A shard's transfer timestamps are unique: the time alone orders its rows.
        order = _order(page, "t.timestamp")
        select = (
            f"SELECT {T_COLUMNS}, m.metadata, p.status, p.resolved_by FROM transfers t "
            "LEFT JOIN transfer_metadata m ON m.id = t.id "
            "LEFT JOIN pending_transfers p ON p.id = t.id"
        )
        limit = page.limit + 1
        if f.account_id is None:  # index transfers_by_owner: (owner, timestamp)
            rows = await self._fetch(
                f"{select} WHERE {where.sql()} ORDER BY {order} LIMIT ?", (*where.params, limit)
            )
        else:  # indexes transfers_by_debit and _by_credit: (account, timestamp)
            # and the history that moved in with the account (migration 0022): ``p`` is
            # the row itself there, which keeps its hold's final status.
            moved = (
                f"SELECT {T_COLUMNS}, t.metadata, p.status, p.resolved_by FROM moved_transfers t "
                "JOIN moved_transfers p ON p.source = t.source AND p.id = t.id"
            )
            sides = [
                f"SELECT * FROM ({source} WHERE t.{side}_account_id = ? AND {where.sql()} "
                f"ORDER BY {order} LIMIT ?) {side[0]}{alias}"
                for alias, source in (("", select), ("m", moved))
                for side in ("debit", "credit")
            ]
            params = [f.account_id, *where.params, limit] * 4
            merged_order = _order(page, "timestamp")
            rows = await self._fetch(
                f"SELECT * FROM ({' UNION ALL '.join(sides)}) u ORDER BY {merged_order} LIMIT ?",
                (*params, limit),
            )
        return cut_page([view_from_row(r) for r in rows], page, key_of_view)

    async def payments(self, f: PaymentFilter, page: Page) -> ListPage[PaymentRow]:
        where = _Where()
        if f.merchant_account_id is not None:  # payments_by_merchant
            where.add("merchant_account_id = ?", f.merchant_account_id)
        else:  # payments_by_owner
            where.add(f"{owner_sql(self.dialect, 'merchant_account_id')} = ?", f.owner)
        return await self._rows(
            PaymentRow, "payments", PAYMENT_COLUMNS, where, status=f.status,
            created_gte=f.created_gte, created_lt=f.created_lt, page=page,
        )  # fmt: skip

    async def payouts(self, f: PayoutFilter, page: Page) -> ListPage[PayoutRow]:
        where = _Where()
        if f.wallet_account_id is not None:  # payouts_by_wallet
            where.add("wallet_account_id = ?", f.wallet_account_id)
        else:  # payouts_by_owner
            where.add(f"{owner_sql(self.dialect, 'wallet_account_id')} = ?", f.owner)
        return await self._rows(
            PayoutRow, "payouts", PAYOUT_COLUMNS, where, status=f.status,
            created_gte=f.created_gte, created_lt=f.created_lt, page=page,
        )  # fmt: skip

    async def refunds(self, f: RefundFilter, page: Page) -> ListPage[RefundRow]:
        # A refund belongs to its payment's merchant: the payment row (same shard) says
        # whose it is. Without payment_id, refunds_by_time is walked and each row's
        # payment looked up by its primary key.
        where = _Where()
        if f.payment_id is not None:  # refunds_by_payment
            where.add("r.payment_id = ?", f.payment_id)
        # A check per row, not a join: the planner then walks the refunds' index in order.
        owner = owner_sql(self.dialect, "p.merchant_account_id")
        where.add(f"EXISTS (SELECT 1 FROM payments p WHERE p.id = r.payment_id AND {owner} = ?)",
                  f.owner)  # fmt: skip
        where.keyset("r.created_at", "r.id", page)
        where.created("r.created_at", f.created_gte, f.created_lt)
        if f.status is not None:
            where.add("r.status = ?", f.status)
        rows = await self._fetch(
            f"SELECT {_columns('r', REFUND_COLUMNS)} FROM refunds r WHERE {where.sql()} "
            f"ORDER BY {_order(page, 'r.created_at', 'r.id')} LIMIT ?",
            (*where.params, page.limit + 1),
        )
        return cut_page([RefundRow(*r) for r in rows], page, key_of_row)

    async def _rows(
        self,
        cls: type[T],
        table: str,
        columns: Sequence[str],
        where: _Where,
        *,
        status: str | None,
        created_gte: int | None,
        created_lt: int | None,
        page: Page,
    ) -> ListPage[T]:
        where.keyset("created_at", "id", page)
        where.created("created_at", created_gte, created_lt)
        if status is not None:
            where.add("status = ?", status)
        rows = await self._fetch(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {where.sql()} "
            f"ORDER BY {_order(page, 'created_at', 'id')} LIMIT ?",
            (*where.params, page.limit + 1),
        )
        items: list[Any] = [cls(*r) for r in rows]
        return cut_page(items, page, key_of_row)

    async def attempts_of(self, parent_ids: Sequence[str]) -> dict[str, list[AttemptRow]]:
        """The processor attempts of each of ``parent_ids`` (a page's), in one read."""
        return await self._children(
            AttemptRow, "payment_attempts", ATTEMPT_COLUMNS, parent_ids,
            parent="parent_id", order="parent_id, seq",
        )  # fmt: skip

    async def refunds_of(self, payment_ids: Sequence[str]) -> dict[str, list[RefundRow]]:
        """The refunds of each of ``payment_ids``, oldest first (as ``refunds_of`` of
        ``PaymentReads``), in one read."""
        return await self._children(
            RefundRow, "refunds", REFUND_COLUMNS, payment_ids,
            parent="payment_id", order="created_at, id",
        )  # fmt: skip

    async def _children(
        self,
        cls: type[T],
        table: str,
        columns: Sequence[str],
        parent_ids: Sequence[str],
        *,
        parent: str,
        order: str,
    ) -> dict[str, list[T]]:
        """The rows of ``table`` whose ``parent`` column is one of ``parent_ids``, read in
        ``order``, by parent."""
        if not parent_ids:
            return {}
        marks = ", ".join("?" * len(parent_ids))
        rows = await self._fetch(
            f"SELECT {', '.join(columns)} FROM {table} "
            f"WHERE {parent} IN ({marks}) ORDER BY {order}",
            tuple(parent_ids),
        )
        found: dict[str, list[T]] = {}
        for r in rows:
            child = cls(*r)
            found.setdefault(getattr(child, parent), []).append(child)
        return found


def merge_pages(
    parts: Sequence[ListPage[T]], page: Page, key: Callable[[T], Keyset]
) -> ListPage[T]:
    """The pages of one query on several shards (each read with the same ``page``) as one
    page: the first ``page.limit`` of all their items by key. There is more if any shard
    had more, or if the shards had more than a page between them; the next page starts
    after the last item kept (a shard's items past it are read again then)."""
    rows = sorted((item for part in parts for item in part.items), key=key,
                  reverse=page.descending)  # fmt: skip
    kept = page.limit
    # Items of one key on several shards are copies of one thing (a saga's transfer on
    # its source and its credit leg, same id and time): a page keeps them together, or
    # the next page, which starts after that key, would lose the ones left out.
    while rows[kept : kept + 1] and key(rows[kept]) == key(rows[kept - 1]):
        kept += 1
    more = len(rows) > kept or any(part.next_after is not None for part in parts)
    rows = rows[:kept]
    return ListPage(rows, key(rows[-1]) if more and rows else None)


def key_of_account(a: Account) -> Keyset:
    return a.timestamp, a.id


def key_of_view(v: TransferView) -> Keyset:
    return v.transfer.timestamp, v.transfer.id


def key_of_row(row: PaymentRow | RefundRow | PayoutRow) -> Keyset:
    return row.created_at, row.id
