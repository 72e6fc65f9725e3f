"""Known failures, replayed exactly, so that a fix shows (these are strict xfails: each
fails the suite once its bug is gone, and then moves to the test it belongs to).

The cluster state machine's example is replayed with the blob Hypothesis printed for it
(reproduce_failure; valid for the Hypothesis version named, the one pinned by this
environment when it was found).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from cluster_support import ClusterDatabases
from hypothesis import HealthCheck, reproduce_failure, settings
from hypothesis.stateful import run_state_machine_as_test

from cluster.test_cluster_stateful import PHASES, STEPS, ClusterMachine

# Found on 2026-12-07 on 4 PostgreSQL shards, accounts spread (KNOWN_CHAIN_ID_BUG in
# test_cluster_stateful.py); the same blob fails on the code that landed at stop 22.
_BLOB = (
    b"AXicNVI7TsUwENy1k5dHeI8CIfEoED3iEuMTcAgaqKgpKWkRNZdBlBScgI5rMDM2ijaOd73zWSeixTtK"
    b"IhO7AFesKHwHplAmuFud70/BwtyKCeEnUZ0tgU2qp0KRLa8QbGjxolq0fDJujQ6bJpjUidJy5jIZTMBl"
    b"QDwwK/jJbYRbJWzJjHB44Ykto2LmyT12FHfH7+jQrBWp+OUBUYjxiCHupeWjuxQEymFAOsl+L1Q5pPgb"
    b"fXF9NpNOB+aU5WN1bDwViTvHpuXPGI/89ELBBWrL17Hp73XI7NOUjUTn7zcROKje8s2Jf0yRaXcgGZ19"
    b"jbTvjEUhX9rpNfE10GoeidnjDHPLw5hXeBhdTA/6seLZtzG7aW7xPYrpQjXXihOVPnzSv4CxgukV2xaf"
    b"Q1UOr8WwvfeUShbc2oZupP4BSVdYtw=="
)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="a linked chain's transfer sent again alone is refused as taken on another shard",
)
def test_a_chains_transfer_sent_again_alone_answers_exists(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A transfer made by an item of a linked chain across shards, sent again later on its
    own with the same fields, answers as one shard would: it exists."""
    server = request.getfixturevalue("postgres_server")
    runs = itertools.count()

    def machine() -> ClusterMachine:
        databases = ClusterDatabases("postgres", tmp_path / f"run{next(runs)}", server)
        return ClusterMachine(databases, "spread", strict=True)

    run_state_machine_as_test(
        reproduce_failure("6.170.27", _BLOB)(machine),
        settings=settings(
            settings.default,
            max_examples=1,
            stateful_step_count=STEPS,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
