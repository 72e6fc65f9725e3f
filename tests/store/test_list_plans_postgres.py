"""Each listing reads one index range per page on PostgreSQL too (issue 18: a page costs
the same on a large ledger), checked on the planner's own choices over real rows.

Two migrated ledger databases are filled with the same shape of rows (``_fill``), one
ten times the other (10^5 transfers, 2 x 10^4 accounts, payments, payouts and refunds),
and ANALYZEd. Every list query, with each filter the API sends, is run as
``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` exactly as ``ListReads`` writes it, at the
first page, after a cursor in the middle, and descending from there:

* on the large one, the plan walks the listing's index, never scans (sequentially or by
  bitmap) one of the big tables, and sorts no more than the short pages of an account's
  sides;
* the rows its scans meet on the large one (kept or filtered out, index entries of a
  bitmap included) are at most twice those on the small one, plus a page: the cost of a
  page does not grow with the ledger (a scan of a table or of a filter's every row
  would meet ten times as many);
* ``GET /v1/accounts/{id}/transfers`` (its own query) walks the account's side indexes
  the same way;
* the same holds for the generic plan PostgreSQL may cache for a prepared statement
  (psycopg prepares a query it has run five times on a connection): no big table is
  scanned whatever the parameters turn out to be.

The store's own planner setting (``random_page_cost``) is applied as its readers apply it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fix_postgres import PostgresServer
from paycore.storage import postgres as postgres_module
from paycore.storage.listing import (
    AccountFilter,
    Dialect,
    Keyset,
    ListReads,
    Page,
    PaymentFilter,
    PayoutFilter,
    RefundFilter,
    TransferFilter,
)
from paycore.storage.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LARGE = 100_000  # transfers; the other tables hold a fifth of it each
SMALL = LARGE // 10
LIMIT = 20
T0 = 1_700_000_000_000_000_000  # the first row's time (ns); rows are STEP apart
STEP = 1_000
# Tables a list query must never read whole.
BIG = frozenset(
    {
        "accounts",
        "account_metadata",
        "transfers",
        "transfer_metadata",
        "pending_transfers",
        "payments",
        "payouts",
        "refunds",
    }
)
# Values for NOT NULL columns the fill does not name, by type (a new column gets one).
_FILLER = {"text": "'x'", "integer": "1", "bigint": "1", "boolean": "false", "bytea": "''::bytea"}


def _insert(conn: psycopg.Connection[Any], table: str, count: int, values: dict[str, str]) -> None:
    """``count`` rows into ``table``: ``values`` are SQL expressions of ``g`` (0, 1, ...)."""
    required = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL",
        (table,),
    ).fetchall()
    exprs = dict(values)
    for column, data_type in required:
        exprs.setdefault(column, _FILLER[data_type])
    query = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM generate_series(0::bigint, {}) g").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in exprs),
        sql.SQL(", ").join(sql.SQL(e) for e in exprs.values()),
        sql.Literal(count - 1),
    )
    conn.execute(query)


def _fill(dsn: str, transfers: int) -> None:
    """A ledger of ``transfers`` transfers: 80% the default tenant's, 10% tenant alice's,
    10% paycore's own (``xs.``); an account ``hot`` on every tenth; 10% holds, in each
    status by turns (half of alice's); metadata on a tenth of them. A fifth as many
    accounts (a quarter alice's, metadata on half), payments (10 merchants a tenant),
    payouts (10 wallets a tenant) and refunds."""
    n = transfers // 5
    t = f"{T0} + g * {STEP}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        _insert(conn, "accounts", n, {
            "id": "CASE WHEN g % 4 = 3 THEN 'alice/acct-' ELSE 'acct-' END || g",
            "tenant": "CASE WHEN g % 4 = 3 THEN 'alice' ELSE 'default' END",
            "currency": "CASE WHEN g % 3 = 0 THEN 'EUR' ELSE 'USD' END",
            "code": "g % 5", "flags": "g % 8", "timestamp": t,
        })  # fmt: skip
        conn.execute("INSERT INTO accounts (id, currency, code, flags, timestamp) "
                     "VALUES ('hot', 'USD', 0, 0, %s)", (T0 - 1,))  # fmt: skip
        _insert(conn, "account_metadata", n // 2, {
            "id": "CASE WHEN (2 * g) % 4 = 3 THEN 'alice/acct-' ELSE 'acct-' END || 2 * g",
            "metadata": "'{\"team\": \"' || (ARRAY['a', 'b', 'c'])[g % 3 + 1] || '\"}'",
        })  # fmt: skip
        debit = f"'acct-' || (g * 7919) % {n}"
        credit = f"'acct-' || (g * 104729 + 1) % {n}"
        _insert(conn, "transfers", transfers, {
            "timestamp": t,
            "id": "CASE g % 10 WHEN 7 THEN 'alice/t-' WHEN 8 THEN 'xs.' ELSE 't-' END || g",
            "debit_account_id": f"CASE WHEN g % 20 = 0 THEN 'hot' ELSE {debit} END",
            "credit_account_id": f"CASE WHEN g % 20 = 10 THEN 'hot' ELSE {credit} END",
            "amount": "1 + g % 1000", "currency": "'USD'", "code": "1",
            "flags": "CASE WHEN g % 20 IN (5, 7) THEN 1 ELSE 0 END", "timeout_seconds": "0",
            "chain_seq": "g + 1",
        })  # fmt: skip
        conn.execute(
            "INSERT INTO pending_transfers (id, status) SELECT id, "
            "(ARRAY['pending', 'posted', 'voided', 'expired'])[(timestamp / %s) %% 4 + 1] "
            "FROM transfers WHERE flags = 1",
            (STEP * 20,),
        )
        conn.execute(
            "INSERT INTO transfer_metadata (id, metadata) "
            "SELECT id, '{\"order\": 1}' FROM transfers WHERE (timestamp / %s) %% 10 = 3",
            (STEP,),
        )
        merchant = "CASE WHEN g % 4 = 3 THEN 'alice/m-' ELSE 'm-' END || g % 10"
        _insert(conn, "payments", n, {
            "id": "'pay_' || g", "merchant_account_id": merchant, "amount": "1 + g % 1000",
            "currency": "'USD'", "capture_method": "'automatic'", "source_type": "'card'",
            "status": "(ARRAY['processing', 'requires_capture', 'succeeded', 'failed', "
                      "'canceled'])[g % 5 + 1]",
            "created_at": t, "updated_at": t,
        })  # fmt: skip
        _insert(conn, "payouts", n, {
            "id": "'po_' || g",
            "wallet_account_id": "CASE WHEN g % 4 = 3 THEN 'alice/w-' ELSE 'w-' END || g % 10",
            "amount": "1 + g % 1000", "currency": "'USD'", "destination": "'bank'",
            "status": "(ARRAY['processing', 'paid', 'failed'])[g % 3 + 1]",
            "created_at": t, "updated_at": t,
        })  # fmt: skip
        _insert(conn, "refunds", n, {
            "id": "'re_' || g", "payment_id": f"'pay_' || (g * 7) % {n}",
            "amount": "1", "currency": "'USD'", "status": "'succeeded'",
            "created_at": t, "updated_at": t,
        })  # fmt: skip
        conn.execute("VACUUM ANALYZE")


@dataclass(frozen=True)
class Ledger:
    small: str
    large: str


@pytest.fixture(scope="module")
def ledger(postgres_server: PostgresServer) -> Iterator[Ledger]:
    """Two filled, ANALYZEd ledger databases (dropped after the module: not reusable)."""
    dsns = [postgres_server.ledger_database() for _ in range(2)]
    try:
        for dsn, size in zip(dsns, (SMALL, LARGE), strict=True):
            _fill(dsn, size)
        yield Ledger(*dsns)
    finally:
        for dsn in dsns:
            postgres_server.drop_database(dsn)


def _middle(listing: str, size: int) -> Keyset:
    """A key halfway through the listing's table (transfers: ``size`` rows, the others
    a fifth of it)."""
    rows = size if listing == "transfers" else size // 5
    return T0 + rows // 2 * STEP, "m"


# (listing, filter, the indexes its walk may use: any one of them is enough)
LISTINGS: list[tuple[str, Any, set[str]]] = [
    ("accounts", AccountFilter("default"), {"accounts_by_tenant"}),
    ("accounts", AccountFilter("alice", currency="USD", history=True), {"accounts_by_tenant"}),
    ("accounts", AccountFilter("default", metadata=(("team", "a"),)), {"accounts_by_tenant"}),
    # The default tenant's, 80% of the rows: its index, or the time order (the primary key).
    ("transfers", TransferFilter(""), {"transfers_by_owner", "transfers_pkey"}),
    ("transfers", TransferFilter("alice/", status="pending"), {"transfers_by_owner"}),
    # An account on every tenth transfer: its own indexes, or the time order (the
    # primary key) while one row in ten is its own.
    ("transfers", TransferFilter("", account_id="hot"),
     {"transfers_by_debit", "transfers_by_credit", "transfers_pkey"}),
    # An account on about ten transfers: its own indexes only.
    ("transfers", TransferFilter("", account_id="acct-1", status="posted"),
     {"transfers_by_debit", "transfers_by_credit"}),
    ("payments", PaymentFilter("alice/", status="succeeded"), {"payments_by_owner"}),
    ("payments", PaymentFilter("", merchant_account_id="m-1"), {"payments_by_merchant"}),
    ("payouts", PayoutFilter("alice/"), {"payouts_by_owner"}),
    ("payouts", PayoutFilter("", wallet_account_id="w-1", status="paid"), {"payouts_by_wallet"}),
    ("refunds", RefundFilter("alice/"), {"refunds_by_time"}),
    ("refunds", RefundFilter("", payment_id="pay_7"), {"refunds_by_payment"}),
]  # fmt: skip
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(LISTINGS)]
PAGES = ["first", "middle", "middle_desc"]


def _page(which: str, listing: str, size: int) -> Page:
    if which == "first":
        return Page(LIMIT)
    return Page(LIMIT, _middle(listing, size), descending=which == "middle_desc")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _explain(dsn: str, listing: str, f: Any, page: Page, *, generic: bool = False) -> Any:
    """The plan of the listing's query (each listing sends one), as ``ListReads`` writes
    it: run with ANALYZE and BUFFERS, or (``generic``) the generic plan of its prepared
    statement, which does not depend on the parameters."""
    plans: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(postgres_module._PLANNER_SETTINGS)

        async def explain(query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            if generic:
                conn.execute("SET plan_cache_mode = force_generic_plan")
                parts = query.split("?")
                numbered = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
                conn.execute(sql.SQL("PREPARE listing AS {}").format(sql.SQL(numbered)))
                values = sql.SQL(", ").join(sql.Literal(p) for p in params)
                cur = conn.execute(
                    sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE listing ({})").format(values)
                )
            else:
                cur = conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query.replace("?", "%s"),
                    params,
                )
            row = cur.fetchone()
            assert row is not None
            plans.append(json.loads(row[0]) if isinstance(row[0], str) else row[0])
            return []

        await getattr(ListReads(explain, Dialect.POSTGRES), listing)(f, page)
    assert len(plans) == 1, plans
    return plans[0][0]


_SCANS = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan")


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of the big tables met, kept or filtered out, over all loops."""
    return sum(
        round(
            (
                node["Actual Rows"]
                + node.get("Rows Removed by Filter", 0)
                + node.get("Rows Removed by Index Recheck", 0)
            )
            * node["Actual Loops"]
        )
        for node in _nodes(plan["Plan"])
        if (node["Node Type"] in _SCANS and node.get("Relation Name") in BIG)
        or node["Node Type"] == "Bitmap Index Scan"  # entries of an index, to AND or read
    )


def _scans_of_big_tables(plan: dict[str, Any]) -> list[str]:
    return [
        f"{node['Node Type']} on {node['Relation Name']}"
        for node in _nodes(plan["Plan"])
        if node["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")
        and node.get("Relation Name") in BIG
    ]


def _indexes(plan: dict[str, Any]) -> set[str]:
    return {node["Index Name"] for node in _nodes(plan["Plan"]) if "Index Name" in node}


def _show(plan: dict[str, Any]) -> str:
    def lines(node: dict[str, Any], depth: int) -> Iterator[str]:
        what = node.get("Index Name") or node.get("Relation Name") or ""
        rows = node.get("Actual Rows", node.get("Plan Rows"))
        yield f"{'  ' * depth}{node['Node Type']} {what} rows={rows}"
        for child in node.get("Plans", []):
            yield from lines(child, depth + 1)

    return "\n".join(lines(plan["Plan"], 0))


def _check_page(large: dict[str, Any], small: dict[str, Any], indexes: set[str]) -> None:
    """The large ledger's plan walks one of ``indexes``, scans no big table and sorts at
    most the sides' short pages; it meets about as many rows as the small one's."""
    shown = _show(large)
    assert _indexes(large) & indexes, shown
    assert not _scans_of_big_tables(large), shown
    for node in _nodes(large["Plan"]):
        if node["Node Type"] in ("Sort", "Incremental Sort"):
            sorted_rows = sum(c["Actual Rows"] * c["Actual Loops"] for c in node["Plans"])
            assert sorted_rows <= 4 * (LIMIT + 1), shown
    large_rows, small_rows = _rows_read(large), _rows_read(small)
    assert large_rows <= 2 * small_rows + LIMIT, (large_rows, small_rows, shown, _show(small))


@pytest.mark.parametrize("which", PAGES)
@pytest.mark.parametrize(("listing", "f", "indexes"), LISTINGS, ids=IDS)
async def test_a_page_walks_an_index_and_costs_the_same_on_a_ledger_ten_times_larger(
    ledger: Ledger, listing: str, f: Any, indexes: set[str], which: str
) -> None:
    """On the large ledger the plan walks the listing's index, scans no big table and
    sorts at most the sides' short pages; it meets about as many rows as on the small
    one."""
    large = await _explain(ledger.large, listing, f, _page(which, listing, LARGE))
    small = await _explain(ledger.small, listing, f, _page(which, listing, SMALL))
    _check_page(large, small, indexes)


async def _explain_account_transfers(
    dsn: str, account_id: str, which: str, size: int, side: str
) -> Any:
    """The plan of ``GET /v1/accounts/{id}/transfers`` (``PostgresStore.account_transfers``,
    its own query) at a page, run with ANALYZE and BUFFERS."""
    plans: list[Any] = []
    store = PostgresStore(dsn, migrate=False)  # never started: only its query is wanted
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(postgres_module._PLANNER_SETTINGS)

        async def explain(query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params)
            found = row.fetchone()
            assert found is not None
            plans.append(json.loads(found[0]) if isinstance(found[0], str) else found[0])
            return []

        store._fetch = explain  # type: ignore[method-assign]
        cursor = None if which == "first" else _middle("transfers", size)[0]
        await store.account_transfers(
            account_id, limit=LIMIT, cursor=cursor, descending=which == "middle_desc", side=side
        )
    assert len(plans) == 1, plans
    return plans[0][0]


@pytest.mark.parametrize("which", PAGES)
@pytest.mark.parametrize("side", ["both", "debits"])
@pytest.mark.parametrize("account_id", ["hot", "acct-1"])
async def test_an_accounts_own_transfers_walk_its_indexes(
    ledger: Ledger, account_id: str, side: str, which: str
) -> None:
    """An account's transfers page (busy or quiet account, both sides or one) walks the
    account's side indexes from the cursor, as the listings do."""
    large = await _explain_account_transfers(ledger.large, account_id, which, LARGE, side)
    small = await _explain_account_transfers(ledger.small, account_id, which, SMALL, side)
    _check_page(large, small, {"transfers_by_debit", "transfers_by_credit"})


@pytest.mark.parametrize(("listing", "f", "indexes"), LISTINGS, ids=IDS)
async def test_the_generic_plan_of_a_listing_scans_no_big_table(
    ledger: Ledger, listing: str, f: Any, indexes: set[str]
) -> None:
    """The plan a prepared listing may cache for any parameters walks an index too."""
    plan = await _explain(ledger.large, listing, f, _page("middle", listing, LARGE), generic=True)
    assert _indexes(plan) & indexes, _show(plan)
    assert not _scans_of_big_tables(plan), _show(plan)
