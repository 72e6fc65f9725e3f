"""``python -m paycore.tools.bench.listing`` at tiny sizes: it runs end to end on SQLite
and on its own throwaway PostgreSQL and prints a row per listing and page, and the plan of
each list query; what a page costs is the bench's own report, never asserted here (nor
the plans: at these sizes PostgreSQL rightly scans; ``tests/store/test_list_plans_postgres``
checks them on real sizes)."""

from __future__ import annotations

import re

import pytest

from paycore.tools.bench.listing import main

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LISTINGS = ("transfers", "transfers?account_id", "accounts", "accounts?metadata")


def test_the_listing_bench_reports_every_listing_and_page_on_both_backends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every listing's first, middle and last page has a line in both tables, and the
    PostgreSQL part explains each list query, the metadata filter's included."""
    argv = ["--transfers", "600", "--small", "300", "--accounts", "90", "--limit", "10",
            "--repeat", "1", "--postgres"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for title in ("SQLite, one embedded shard", "PostgreSQL, one shard"):
        table = out.split(title, 1)[1]
        for listing in LISTINGS:
            for page in ("first", "middle", "last"):
                row = rf"^{re.escape(listing)} +{page} +[\d.]+ \( *[\d.]+\) +[\d.]+ \( *[\d.]+\)"
                assert re.search(row, table, re.MULTILINE), (title, listing, page)
    assert "EXPLAIN (ANALYZE, BUFFERS) of GET /v1/accounts?metadata[team]=a" in out
