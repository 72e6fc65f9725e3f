"""Each listing reads one index range per page (issue 18: a page costs the same on a large
ledger): SQLite's plan for every list query, with every filter the API sends, searches an
index of migration 0015 (or the account's own index) from the cursor, never scans a table
and sorts at most two short pages (an account's debit and credit sides), so its cost does
not grow with the shard."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from paycore.storage.listing import (
    AccountFilter,
    Dialect,
    ListReads,
    Page,
    PaymentFilter,
    PayoutFilter,
    RefundFilter,
    TransferFilter,
)
from paycore.storage.sqlite import SQLiteStore

PAGES = [Page(10), Page(10, (1_700_000_000_000_000_000, "x"), descending=True)]
LISTINGS: list[tuple[str, Any, str]] = [
    ("accounts", AccountFilter("alice", currency="USD", history=True), "accounts_by_tenant"),
    ("accounts", AccountFilter("default", metadata=(("team", "a"),)), "accounts_by_tenant"),
    ("transfers", TransferFilter("alice/", status="pending", created_lt=9), "transfers_by_owner"),
    ("transfers", TransferFilter("", account_id="alice/a", status="posted"), "transfers_by_debit"),
    ("payments", PaymentFilter("alice/", status="succeeded"), "payments_by_owner"),
    ("payments", PaymentFilter("", merchant_account_id="m"), "payments_by_merchant"),
    ("payouts", PayoutFilter("alice/"), "payouts_by_owner"),
    ("payouts", PayoutFilter("", wallet_account_id="w", status="paid"), "payouts_by_wallet"),
    ("refunds", RefundFilter("alice/"), "refunds_by_time"),
    ("refunds", RefundFilter("", payment_id="p"), "refunds_by_payment"),
]  # fmt: skip


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    store = SQLiteStore(tmp_path / "shard.sqlite3")
    await store.start()  # migrated
    await store.stop()
    return tmp_path / "shard.sqlite3"


@pytest.mark.parametrize("page", PAGES, ids=["first", "after_desc"])
@pytest.mark.parametrize(
    ("listing", "f", "index"), LISTINGS, ids=[f"{x[0]}-{x[2]}" for x in LISTINGS]
)
async def test_each_listing_walks_an_index_from_the_cursor(
    db: Path, listing: str, f: Any, index: str, page: Page
) -> None:
    """The plan walks ``index`` and scans no table; it sorts no more than two pages."""
    plans: list[str] = []
    conn = sqlite3.connect(db)

    async def explain(query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        plans.extend(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, params))
        return []

    try:
        await getattr(ListReads(explain, Dialect.SQLITE), listing)(f, page)
    finally:
        conn.close()
    assert any(
        f"USING INDEX {index}" in p or f"USING COVERING INDEX {index}" in p for p in plans
    ), plans
    for step in plans:
        # Allowed scans: an ordered walk of the listing's index (LIMIT stops it), the
        # JSON of one row's metadata (json_each), the two sides' short pages (d, c).
        if step.startswith("SCAN") and step not in ("SCAN d", "SCAN c", "SCAN dm", "SCAN cm"):
            assert "USING INDEX" in step or "VIRTUAL TABLE" in step, plans
        if "TEMP B-TREE" in step:  # only to merge the two sides' pages of an account
            assert getattr(f, "account_id", None) is not None, plans
